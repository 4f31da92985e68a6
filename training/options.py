"""The options of training/train.py: the argparse parser, a JSON config file under the command
line, the checks run once before anything is built, and which settings a resumed run may change."""

import argparse
import json
from pathlib import Path

from tsnet_hf.config import FRAME_WEIGHTS
from tsnet_hf.config import OUTPUTS as OUTPUT_PATHS
from tsnet_hf.errors import ConfigError

# Settings a resumed run may change; any other difference from the checkpoint is an error.
FREE_ON_RESUME = frozenset(
    {
        "config",
        "data",
        "cache_dir",
        "output",
        "resume",
        "steps",
        "save_every",
        "log_every",
        "image_every",
        "val_every",
        "workers",
        "push_to_hub",
        "hub_private",
        "keep_checkpoints",
        "tensorboard",
        "quiet",
        "mixed_precision",
        "cpu",
        "lpips_alexnet",
        "lpips_lin",
        "vgg_weights",
        "time_budget",
        "threads",
        "channels_last",
        "warmup_steps",
    }
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a TS-Net generator on a folder of videos (tsnet-hf).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="JSON file of option values (keys with underscores); the command line wins")
    _add_data_options(parser.add_argument_group("data"))
    _add_model_options(parser.add_argument_group("model"))
    _add_optimisation_options(parser.add_argument_group("optimisation"))
    _add_log_options(parser.add_argument_group("logs and checkpoints"))
    return parser


def _add_data_options(group) -> None:
    group.add_argument("--data", help="folder of videos, or a cache made by training/preprocess.py")
    group.add_argument("--mode", choices=("face", "body"), help="face (68 landmarks) or body (pose, hands, face)")
    group.add_argument("--cache-dir", help="where videos are preprocessed (default cache/<data>-<mode>-<size>)")
    group.add_argument("--frame-stride", type=int, default=1, help="preprocessing: keep every n-th frame")
    group.add_argument("--max-frames", type=int, default=None, help="preprocessing: at most this many frames per video")
    group.add_argument("--k", type=int, default=3, help="subject frames K per clip")
    group.add_argument("--targets", type=int, default=1, help="target frames T per clip (one subject encoding each)")
    group.add_argument(
        "--span", type=int, default=30, help="clip window in frames, cut into subject and target segments"
    )
    group.add_argument("--val-fraction", type=float, default=0.1, help="share of videos held out for validation")
    group.add_argument(
        "--val-split",
        choices=("video", "time"),
        default="video",
        help="hold out whole videos, or the end of every video (one-video fine-tuning)",
    )
    group.add_argument(
        "--holdout",
        nargs="+",
        metavar="NAME",
        help="hold out (for validation, never trained on) the cached videos whose names contain "
        "one of these; replaces --val-fraction's random draw",
    )
    group.add_argument("--no-augment", action="store_true", help="no crop, colour or flip augmentation")
    group.add_argument("--jitter-scale", type=float, default=0.1, help="crop side jitter (authors: 0.2)")
    group.add_argument(
        "--jitter-offset", type=float, default=0.05, help="crop centre jitter, times the side (authors: 0.1)"
    )
    group.add_argument("--workers", type=int, default=2, help="data loader processes (0: in the training process)")


def _add_model_options(group) -> None:
    group.add_argument("--preset", choices=("paper", "small", "tiny"), help="architecture (default paper)")
    group.add_argument(
        "--resolution", type=int, help="frame side in pixels (default: a cache's resolution, else the preset's, 256)"
    )
    group.add_argument(
        "--init-from",
        help="start from this checkpoint folder or Hub id (fine-tuning, or the next "
        "resolution of a progressive run with --resolution)",
    )
    group.add_argument(
        "--output-path",
        choices=OUTPUT_PATHS,
        default="decoder",
        help="decoder: the paper's output; blend: warp the subject pixels and blend them with the "
        "decoder's frame (faster to learn on a CPU)",
    )
    group.add_argument(
        "--frame-weights",
        choices=FRAME_WEIGHTS,
        default="learned",
        help="blend: combine the K warped frames by learned per-pixel weights or by their mean",
    )


def _add_optimisation_options(group) -> None:
    group.add_argument("--output", help="run folder (logs, images, checkpoints)")
    group.add_argument("--steps", type=int, default=63000, help="training steps (authors: 63k)")
    group.add_argument("--batch-size", type=int, help="clips per step and process (authors: 15 face, 10 body)")
    group.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    group.add_argument("--lr-d", type=float, default=1e-4, help="discriminator learning rate")
    group.add_argument("--beta1", type=float, default=0.5)
    group.add_argument("--beta2", type=float, default=0.999)
    group.add_argument(
        "--decay-start",
        type=float,
        default=4 / 9,
        help="fraction of --steps after which both rates fall linearly to 0 (authors: 400 of 900 epochs)",
    )
    group.add_argument("--lambda-fm", type=float, default=10.0, help="feature matching weight")
    group.add_argument("--lambda-vgg", type=float, default=10.0, help="perceptual (VGG) weight")
    group.add_argument("--lambda-tra", type=float, default=10.0, help="transformation-branch (L_TRA) weight")
    group.add_argument("--lambda-grad", type=float, default=10.0, help="image-gradient weight (faces)")
    group.add_argument("--lambda-l1", type=float, default=0.0, help="pixel L1 weight (not in the paper)")
    group.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="first steps without the discriminators (no GAN or feature-matching loss, no D "
        "update): a reconstruction warm-up, as FOMM trains its face model first",
    )
    group.add_argument(
        "--vgg-weights",
        default="auto",
        help="'auto' (torchvision VGG19 ImageNet) or a safetensors file of VGG16/19 conv weights",
    )
    group.add_argument("--no-vgg", action="store_true", help="train without the perceptual loss")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default="no",
        help="autocast precision (bf16 also on CPUs: 1.5-1.7x per step on AVX512-BF16 ones)",
    )
    group.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    group.add_argument("--channels-last", action="store_true", help="channels_last memory format for the models")
    group.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's choice)")
    group.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop when the run (all its invocations together) has taken this many minutes, "
        "with a complete checkpoint (the schedule still follows --steps)",
    )


def _add_log_options(group) -> None:
    group.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    group.add_argument("--image-every", type=int, default=500, help="steps between image grids")
    group.add_argument("--val-every", type=int, default=1000, help="steps between validations (0: only at the end)")
    group.add_argument("--val-clips", type=int, default=16, help="validation clips (fixed, not augmented)")
    group.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints")
    group.add_argument("--keep-checkpoints", type=int, default=3, help="newest step checkpoints kept (0: all)")
    group.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="continue from the newest checkpoint in --output, or from this checkpoint folder",
    )
    group.add_argument("--lpips-alexnet", help="AlexNet weights (safetensors) for LPIPS in validation")
    group.add_argument("--lpips-lin", help="LPIPS linear weights (safetensors) for validation")
    group.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    group.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final checkpoint to this Hub repository")
    group.add_argument("--hub-private", action="store_true", help="make the Hub repository private")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_args(argv=None) -> argparse.Namespace:
    """Options from `argv`, over the values of `--config` (a JSON object), over the defaults.

    Raises:
        ConfigError: unreadable config file, unknown keys, or missing / inconsistent options.
    """
    parser = build_parser()
    first = parser.parse_args(argv)
    if first.config:
        parser.set_defaults(**_read_config(first.config, parser))
    args = parser.parse_args(argv)
    if args.output is None:
        raise ConfigError("Give the run folder with --output (logs, images and checkpoints go there).")
    if args.resume is None and (args.data is None or (args.mode is None and args.init_from is None)):
        raise ConfigError("Give --data (a folder of videos) and --mode (face or body), or --resume a run.")
    if args.time_budget is not None and args.time_budget <= 0:
        raise ConfigError(f"--time-budget is in minutes and must be positive, got {args.time_budget}.")
    if args.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be 0 or more, got {args.warmup_steps}.")
    for name in ("steps", "k", "targets", "span", "log_every", "image_every", "save_every", "val_clips"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if not 0 <= args.decay_start <= 1:
        raise ConfigError(f"--decay-start is a fraction of --steps in [0, 1], got {args.decay_start}.")
    if not 0 <= args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}.")
    if args.init_from and args.preset:
        raise ConfigError("--init-from takes the architecture from the checkpoint: leave out --preset.")
    return args


def _read_config(path, parser) -> dict:
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"Cannot read the config file {path} ({error}): give a JSON object of option values."
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f'{path} must hold a JSON object such as {{"mode": "face", "steps": 1000}}.')
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known - {"config"})
    if unknown:
        raise ConfigError(
            f"{path} has unknown option(s) {unknown}: use option names with underscores, "
            "as `python training/train.py --help` lists them."
        )
    return values


def adopt_saved_settings(args: argparse.Namespace, saved: dict, checkpoint: Path) -> None:
    """Continue with a checkpoint's settings (`saved`, its training args) where `args` gives none;
    refuse changed ones. An option left at its default counts as not given. Options in
    FREE_ON_RESUME (more steps, other log intervals, another data path...) may change.

    Raises:
        ConfigError: `args` changes a setting outside FREE_ON_RESUME.
    """
    defaults = vars(build_parser().parse_args([]))
    for key, value in vars(args).items():
        if key in ("output", "resume", "config") or key not in saved:
            continue
        if value is None or value == defaults.get(key):
            setattr(args, key, saved[key])
        elif saved[key] != value and key not in FREE_ON_RESUME:
            option = "--" + key.replace("_", "-")
            raise ConfigError(
                f"Cannot resume from {checkpoint}: it was trained with {option} "
                f"{saved[key]} but this run asks for {value}; use the same settings or a new "
                "--output folder."
            )
