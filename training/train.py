"""Train a TS-Net generator on a folder of videos (paper section 3.2), on a CPU or one or many GPUs.

    python training/train.py --data VIDEOS --mode face --preset small --output runs/face-small
    accelerate launch --multi_gpu --num_processes 4 training/train.py --data VIDEOS ... --mixed-precision bf16
    python training/train.py --output runs/face-small --resume                 # continue exactly
    python training/train.py --data SUBJECT_VIDEOS --init-from runs/face-small/final ...   # fine-tune

`--data` is a folder of videos (preprocessed first into `--cache-dir`, see training/preprocess.py)
or a cache folder. One step, as the authors: generate B*T frames from B clips (K subject frames
and T targets each), one discriminator update, then one generator update (losses in
training/losses.py), with Adam (0.5, 0.999), G lr 2e-4 and D lr 1e-4, constant and then decaying
linearly to 0. Everything a run writes lives in `--output`:

    log.txt, metrics.jsonl        readable log and one JSON line per log step / validation
    images/step-NNNNNNN.png       subject frames | driving mask | warped subject | output | truth
    checkpoints/step-NNNNNNN/     a `TSNet.from_pretrained` folder (config.json, model.safetensors,
                                  README.md) + training_state/ (discriminators, optimisers, step)
    final/                        the same, after the last step
    training_args.json            every setting of the run

Checkpoints are written under a temporary name and renamed when complete, so a run killed at any
moment leaves its previous checkpoint intact; `--resume` continues from the newest one and draws the
same clips an uninterrupted run would (training/data.py), so on a CPU the next losses are equal.
Settings may come from a JSON file (`--config run.json`, keys are the option names with
underscores); options given on the command line win.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python training/train.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tsnet_hf.config import FRAME_WEIGHTS, OUTPUTS as OUTPUT_PATHS  # noqa: E402
from tsnet_hf.errors import CheckpointError, ConfigError, TSNetError  # noqa: E402

STATE_DIR = "training_state"
CHECKPOINTS = "checkpoints"
# Settings a resumed run may change; any other difference from the checkpoint is an error.
FREE_ON_RESUME = frozenset({
    "config", "data", "cache_dir", "output", "resume", "steps", "save_every", "log_every", "image_every",
    "val_every", "workers", "push_to_hub", "hub_private", "keep_checkpoints", "tensorboard", "quiet",
    "mixed_precision", "cpu", "lpips_alexnet", "lpips_lin", "vgg_weights", "time_budget", "threads",
    "channels_last", "warmup_steps"})
PAPER_BATCH = {"face": 15, "body": 10}


# ----- options --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a TS-Net generator on a folder of videos (tsnet-hf).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of option values (keys with underscores); the command line wins")
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="folder of videos, or a cache made by training/preprocess.py")
    group.add_argument("--mode", choices=("face", "body"), help="face (68 landmarks) or body (pose, hands, face)")
    group.add_argument("--cache-dir", help="where videos are preprocessed (default cache/<data>-<mode>-<size>)")
    group.add_argument("--frame-stride", type=int, default=1, help="preprocessing: keep every n-th frame")
    group.add_argument("--max-frames", type=int, default=None, help="preprocessing: at most this many frames per video")
    group.add_argument("--k", type=int, default=3, help="subject frames K per clip")
    group.add_argument("--targets", type=int, default=1, help="target frames T per clip (one subject encoding each)")
    group.add_argument("--span", type=int, default=30, help="clip window in frames, cut into subject and target segments")
    group.add_argument("--val-fraction", type=float, default=0.1, help="share of videos held out for validation")
    group.add_argument("--val-split", choices=("video", "time"), default="video",
                       help="hold out whole videos, or the end of every video (one-video fine-tuning)")
    group.add_argument("--holdout", nargs="+", metavar="NAME",
                       help="hold out (for validation, never trained on) the cached videos whose names contain "
                            "one of these; replaces --val-fraction's random draw")
    group.add_argument("--no-augment", action="store_true", help="no crop, colour or flip augmentation")
    group.add_argument("--jitter-scale", type=float, default=0.1, help="crop side jitter (authors: 0.2)")
    group.add_argument("--jitter-offset", type=float, default=0.05, help="crop centre jitter, times the side (authors: 0.1)")
    group.add_argument("--workers", type=int, default=2, help="data loader processes (0: in the training process)")
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=("paper", "small", "tiny"), help="architecture (default paper)")
    group.add_argument("--resolution", type=int,
                       help="frame side in pixels (default: a cache's resolution, else the preset's, 256)")
    group.add_argument("--init-from", help="start from this checkpoint folder or Hub id (fine-tuning, or the next "
                                           "resolution of a progressive run with --resolution)")
    group.add_argument("--output-path", choices=OUTPUT_PATHS, default="decoder",
                       help="decoder: the paper's output; blend: warp the subject pixels and blend them with the "
                            "decoder's frame (faster to learn on a CPU)")
    group.add_argument("--frame-weights", choices=FRAME_WEIGHTS, default="learned",
                       help="blend: combine the K warped frames by learned per-pixel weights or by their mean")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--output", help="run folder (logs, images, checkpoints)")
    group.add_argument("--steps", type=int, default=63000, help="training steps (authors: 63k)")
    group.add_argument("--batch-size", type=int, help="clips per step and process (authors: 15 face, 10 body)")
    group.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    group.add_argument("--lr-d", type=float, default=1e-4, help="discriminator learning rate")
    group.add_argument("--beta1", type=float, default=0.5)
    group.add_argument("--beta2", type=float, default=0.999)
    group.add_argument("--decay-start", type=float, default=4 / 9,
                       help="fraction of --steps after which both rates fall linearly to 0 (authors: 400 of 900 epochs)")
    group.add_argument("--lambda-fm", type=float, default=10.0, help="feature matching weight")
    group.add_argument("--lambda-vgg", type=float, default=10.0, help="perceptual (VGG) weight")
    group.add_argument("--lambda-tra", type=float, default=10.0, help="transformation-branch (L_TRA) weight")
    group.add_argument("--lambda-grad", type=float, default=10.0, help="image-gradient weight (faces)")
    group.add_argument("--lambda-l1", type=float, default=0.0, help="pixel L1 weight (not in the paper)")
    group.add_argument("--warmup-steps", type=int, default=0,
                       help="first steps without the discriminators (no GAN or feature-matching loss, no D "
                            "update): a reconstruction warm-up, as FOMM trains its face model first")
    group.add_argument("--vgg-weights", default="auto",
                       help="'auto' (torchvision VGG19 ImageNet) or a safetensors file of VGG16/19 conv weights")
    group.add_argument("--no-vgg", action="store_true", help="train without the perceptual loss")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no",
                       help="autocast precision (bf16 also on CPUs: 1.5-1.7x per step on AVX512-BF16 ones)")
    group.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    group.add_argument("--channels-last", action="store_true", help="channels_last memory format for the models")
    group.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's choice)")
    group.add_argument("--time-budget", type=float, metavar="MINUTES",
                       help="stop when the run (all its invocations together) has taken this many minutes, "
                            "with a complete checkpoint (the schedule still follows --steps)")
    group = parser.add_argument_group("logs and checkpoints")
    group.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    group.add_argument("--image-every", type=int, default=500, help="steps between image grids")
    group.add_argument("--val-every", type=int, default=1000, help="steps between validations (0: only at the end)")
    group.add_argument("--val-clips", type=int, default=16, help="validation clips (fixed, not augmented)")
    group.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints")
    group.add_argument("--keep-checkpoints", type=int, default=3, help="newest step checkpoints kept (0: all)")
    group.add_argument("--resume", nargs="?", const="latest",
                       help="continue from the newest checkpoint in --output, or from this checkpoint folder")
    group.add_argument("--lpips-alexnet", help="AlexNet weights (safetensors) for LPIPS in validation")
    group.add_argument("--lpips-lin", help="LPIPS linear weights (safetensors) for validation")
    group.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    group.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final checkpoint to this Hub repository")
    group.add_argument("--hub-private", action="store_true", help="make the Hub repository private")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


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
        raise ConfigError(f"Cannot read the config file {path} ({error}): give a JSON object of option values.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a JSON object such as {{\"mode\": \"face\", \"steps\": 1000}}.")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known - {"config"})
    if unknown:
        raise ConfigError(f"{path} has unknown option(s) {unknown}: use option names with underscores, "
                          "as `python training/train.py --help` lists them.")
    return values


# ----- small helpers -----------------------------------------------------------------------------------


def learning_rate(base: float, step: int, total: int, decay_start: float) -> float:
    """The authors' schedule: `base` until decay_start * total, then linear to 0 at `total`."""
    start = int(round(decay_start * total))
    if step < start:
        return base
    return base * max(0.0, 1.0 - (step - start) / max(1, total - start))


def write_atomically(target: Path, write) -> Path:
    """Run `write(folder)` on a temporary folder beside `target`, then rename it to `target`.

    A run killed before the rename leaves `target` as it was (an older complete copy or
    nothing), never a half-written one; the files are flushed to disk before the rename.
    """
    target = Path(target)
    partial = target.with_name(f".partial-{target.name}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write(partial)
        for path in partial.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def clean_interrupted_writes(folder: Path) -> None:
    """Tidy what a killed `write_atomically` left in `folder`: partial folders are removed, and an
    `.old-` copy is put back where the kill came between its two renames."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".partial-"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".old-"):
            original = folder / path.name[len(".old-"):].rsplit("-", 1)[0]
            if original.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.rename(original)


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(output) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary folders are ignored)."""
    folder = Path(output) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _requires_grad(modules, flag: bool):
    for module in modules:
        if module is not None:
            for parameter in module.parameters():
                parameter.requires_grad_(flag)


def optimisation_step(accelerator, losses, model, d, face_d, opt_g, opt_d, batch,
                      adversarial: bool = True) -> tuple[dict, object]:
    """One discriminator update, then one generator update, as the authors (adversarial=False: the
    generator update alone, without discriminator terms: the reconstruction warm-up).

    Args:
        accelerator: an accelerate.Accelerator (autocast, backward, unwrapping).
        losses: training.losses.Losses. model: the generator. d, face_d: discriminators
            (face_d None for faces), as returned by `accelerator.prepare`.
        opt_g, opt_d: their optimisers. batch: a training.data.Batch on the device.
    Returns:
        (detached loss parts incl. "l1" of the output in [0, 1], the generator's TSNetOutput).
    """
    with accelerator.autocast():
        output = model(batch.subject_frames, batch.subject_masks, batch.driving_masks)
    d_parts = {}
    if adversarial:
        _requires_grad([d, face_d], True)
        with accelerator.autocast():
            d_loss, d_parts = losses.discriminator(d, face_d, output.image, batch.targets, batch.driving_masks,
                                                   batch.face_boxes)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        opt_d.step()
    _requires_grad([d, face_d], False)  # the generator step only reads them, through the plain modules
    plain_d = accelerator.unwrap_model(d)
    plain_face_d = accelerator.unwrap_model(face_d) if face_d is not None else None
    with accelerator.autocast():
        g_loss, g_parts = losses.generator(plain_d, plain_face_d, output, batch.targets, batch.driving_masks,
                                           batch.face_boxes, adversarial=adversarial)
    opt_g.zero_grad(set_to_none=True)
    accelerator.backward(g_loss)
    opt_g.step()
    l1 = (output.image.detach().float().clamp(-1, 1) - batch.targets).abs().mean() / 2  # images in [0, 1]
    return {**d_parts, **g_parts, "l1": l1}, output


def _cache_resolution(data) -> int | None:
    """The training resolution a cache folder was made for (None for a folder of videos)."""
    index = Path(data) / "index.json" if data else None
    if index is None or not index.is_file():
        return None
    return json.loads(index.read_text(encoding="utf-8")).get("settings", {}).get("size")


def _data_name(cache: Path) -> str:
    """The name of the videos a cache was made from (its folder, or the one video), for model cards."""
    try:
        source = json.loads((Path(cache) / "index.json").read_text(encoding="utf-8")).get("data_dir")
    except (OSError, ValueError):
        source = None
    return Path(source or cache).name


def _machine() -> str:
    """'N CPU threads (model name)' or the GPU's name: where a run's wall time was spent."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU") if Path("/proc/cpuinfo").is_file() else "CPU"
    return f"{os.cpu_count()} CPU cores ({model}), {torch.get_num_threads()} torch threads"


def _markdown_table(rows: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


# ----- the run -------------------------------------------------------------------------------------------


class Trainer:
    """One training run: data, models, optimisers, the step, validation, logs and checkpoints."""

    def __init__(self, args: argparse.Namespace):
        from accelerate import Accelerator

        self.args = args
        from training.preprocess import make_writable_dir

        self.output = make_writable_dir(args.output, "output folder", "--output")
        self.resume_from = self._find_resume() if args.resume else None
        if self.resume_from is not None:
            self._adopt_saved_settings()
        if args.mixed_precision == "fp16" and (args.cpu or not torch.cuda.is_available()):
            raise ConfigError("fp16 mixed precision needs a GPU: use --mixed-precision no (or bf16).")
        if args.threads:
            torch.set_num_threads(args.threads)
        self.accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
        self.main = self.accelerator.is_main_process
        if self.main:
            for folder in (self.output, self.output / CHECKPOINTS):
                clean_interrupted_writes(folder)
        self.accelerator.wait_for_everyone()
        self.step = 0
        self.history = []  # validation results, newest last
        self.seconds = 0.0  # wall time of all invocations of this run, saved in the training state
        self.started = time.monotonic()
        self._build()

    # ----- setup ---------------------------------------------------------------------------------------

    def _find_resume(self) -> Path:
        if self.args.resume != "latest":
            folder = Path(self.args.resume)
            if not (folder / STATE_DIR / "state.json").is_file():
                raise CheckpointError(f"{folder} is not a training checkpoint (no {STATE_DIR}/state.json): give a "
                                      f"folder from {Path(self.args.output) / CHECKPOINTS}, or --resume alone.")
            return folder
        found = list_checkpoints(self.output)
        if not found:
            raise CheckpointError(f"{self.output / CHECKPOINTS} holds no checkpoint to resume from: "
                                  "start without --resume, or point --output at the run to continue.")
        return found[-1]

    def _adopt_saved_settings(self):
        """Continue with the checkpoint's settings where none is given; refuse changed ones.

        An option left at its default counts as not given. Options in FREE_ON_RESUME (more steps,
        other log intervals, another data path...) may change; any other change is an error.
        """
        saved = json.loads((self.resume_from / STATE_DIR / "state.json").read_text(encoding="utf-8"))["args"]
        defaults = vars(build_parser().parse_args([]))
        for key, value in vars(self.args).items():
            if key in ("output", "resume", "config") or key not in saved:
                continue
            if value is None or value == defaults.get(key):
                setattr(self.args, key, saved[key])
            elif saved[key] != value and key not in FREE_ON_RESUME:
                option = "--" + key.replace("_", "-")
                raise ConfigError(f"Cannot resume from {self.resume_from}: it was trained with {option} "
                                  f"{saved[key]} but this run asks for {value}; use the same settings or a new "
                                  "--output folder.")

    def _build(self):
        args = self.args
        self.model, config = self._build_generator()
        self.config = config
        args.mode = config.mode
        args.resolution = config.image_size
        if args.batch_size is None:
            args.batch_size = PAPER_BATCH[config.mode]
        self._build_losses()  # before the data: a missing weights file fails at once, not after preprocessing
        self.lpips = self._build_lpips()
        self._build_data()
        self._build_optimisers()
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        if args.channels_last:
            for module in (self.model, self.d, self.face_d):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        (self.model, self.d, self.face_d, self.opt_g, self.opt_d) = self.accelerator.prepare(
            self.model, self.d, self.face_d, self.opt_g, self.opt_d)
        if self.main:
            self._write_json(self.output / "training_args.json", vars(args))
        self.tensorboard = self._build_tensorboard() if args.tensorboard and self.main else None

    def _build_generator(self):
        from tsnet_hf import TSNet, preset_config

        args = self.args
        torch.manual_seed(args.seed)
        if self.resume_from is not None:  # the architecture of the checkpoint; its weights come later
            from tsnet_hf import TSNetConfig

            config = TSNetConfig.from_json_file(self.resume_from / "config.json")
            return TSNet(config).train(), config
        if args.init_from:
            model = TSNet.from_pretrained(args.init_from)
            config = model.config
            if args.mode and args.mode != config.mode:
                raise ConfigError(f"{args.init_from} is a {config.mode} model but --mode is {args.mode}: "
                                  f"fine-tune it with --mode {config.mode}.")
            size = args.resolution or _cache_resolution(args.data)
            if size and size != config.image_size:  # progressive resolution: the convs do not depend on it
                config = dataclasses.replace(config, image_size=size)
                resized = TSNet(config)
                resized.load_state_dict(model.state_dict())
                model = resized
            return model.train(), config
        size = args.resolution or _cache_resolution(args.data)
        overrides = {"image_size": size} if size else {}
        if args.output_path != "decoder":
            overrides.update(output=args.output_path, frame_weights=args.frame_weights)
        config = preset_config(args.preset or "paper", args.mode, **overrides)
        return TSNet(config).train(), config

    def _build_data(self):
        from training import data
        from training.preprocess import CacheSettings, is_cache_dir, preprocess_folder

        args = self.args
        cache = Path(args.data)
        if not is_cache_dir(cache):
            cache = Path(args.cache_dir or Path("cache") / f"{Path(args.data).resolve().name}-{args.mode}-{args.resolution}")
            args.cache_dir = str(cache)
            if self.main:
                settings = CacheSettings(args.mode, args.resolution, frame_stride=args.frame_stride,
                                         max_frames=args.max_frames)
                print(preprocess_folder(args.data, cache, settings, progress=print).summary(), flush=True)
            self.accelerator.wait_for_everyone()
        videos = data.open_cache(cache, args.mode, args.resolution)
        if args.holdout:
            self.train_sources, self.val_sources = data.split_by_name(videos, args.holdout)
        else:
            self.train_sources, self.val_sources = data.split_sources(videos, args.val_fraction, args.seed,
                                                                      args.val_split)
        self.split = ("none" if not self.val_sources else "name (--holdout)" if args.holdout else
                      "time" if args.val_split == "time" or len(videos) < 2 else "video")
        self.video_names = sorted(v.name for v in videos)
        self.data_name = _data_name(cache)
        augment = data.Augment.none() if args.no_augment else data.Augment(scale=args.jitter_scale,
                                                                            offset=args.jitter_offset)
        self.dataset = data.ClipDataset(self.train_sources, args.resolution, args.k, args.targets, args.span,
                                        augment, seed=args.seed)
        self.val_dataset = (data.ClipDataset(self.val_sources, args.resolution, args.k, args.targets, args.span,
                                             data.Augment.none(), seed=args.seed + 1) if self.val_sources else None)

    def _build_losses(self):
        from training.discriminators import PatchDiscriminator, face_crop_size
        from training.losses import Losses, LossWeights
        from training.vision import load_vgg

        args, config = self.args, self.config
        vgg = None if args.no_vgg else load_vgg(args.vgg_weights).to(self.accelerator.device)
        self.vgg_name = "none (--no-vgg)" if vgg is None else vgg.name
        weights = LossWeights(feature_matching=args.lambda_fm, perceptual=args.lambda_vgg,
                              transformation=args.lambda_tra, gradient=args.lambda_grad, l1=args.lambda_l1)
        self.losses = Losses(config.mode, weights, vgg, face_crop_size(config.image_size))
        self.d = PatchDiscriminator(3 + config.mask_channels)
        self.face_d = PatchDiscriminator(3) if config.mode == "body" else None
        if args.init_from and self.resume_from is None:
            self._load_discriminators_from(args.init_from)

    def _build_optimisers(self):
        args = self.args
        betas = (args.beta1, args.beta2)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=args.lr_g, betas=betas)
        d_params = list(self.d.parameters()) + (list(self.face_d.parameters()) if self.face_d else [])
        self.opt_d = torch.optim.Adam(d_params, lr=args.lr_d, betas=betas)

    def _build_lpips(self):
        """LPIPS for validation, when weights are given or available offline; else None."""
        from training.lpips import load_lpips

        args = self.args
        try:
            metric = load_lpips(args.lpips_alexnet or "auto", args.lpips_lin)
        except TSNetError as error:
            if args.lpips_alexnet or args.lpips_lin:
                raise
            self._say(f"validation without LPIPS: {error}")
            return None
        return metric.to(self.accelerator.device)

    def _build_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              "(the plain logs in --output are always written).") from None
        return SummaryWriter(str(self.output / "tensorboard"))

    def _load_discriminators_from(self, source):
        """Fine-tuning: take the discriminators too when the checkpoint folder has them."""
        from safetensors.torch import load_file

        path = Path(source) / STATE_DIR / "discriminators.safetensors"
        if path.is_file():
            self._load_discriminator_state(load_file(str(path)), str(path))

    # ----- checkpoints ---------------------------------------------------------------------------------

    def _load_discriminator_state(self, state: dict, source: str):
        from tsnet_hf.hub import load_state_strict

        for prefix, module in (("d.", self.d), ("face_d.", self.face_d)):
            if module is None:
                continue
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            load_state_strict(module, part, source)

    def _load_state(self, folder: Path):
        """Generator, discriminators, optimisers and step of a checkpoint (before `prepare`)."""
        from safetensors.torch import load_file

        from tsnet_hf.hub import load_state_strict, load_weights

        state = json.loads((folder / STATE_DIR / "state.json").read_text(encoding="utf-8"))
        if state.get("videos") != self.video_names:
            raise ConfigError(f"Cannot resume from {folder}: it was trained on {len(state.get('videos', []))} cached "
                              f"videos and this cache holds {len(self.video_names)} others; resume with the same data.")
        load_state_strict(self.model, load_weights(folder / "model.safetensors"), str(folder))
        self._load_discriminator_state(load_file(str(folder / STATE_DIR / "discriminators.safetensors")), str(folder))
        optimisers = torch.load(folder / STATE_DIR / "optimizers.pt", map_location="cpu", weights_only=True)
        self.opt_g.load_state_dict(optimisers["generator"])
        self.opt_d.load_state_dict(optimisers["discriminator"])
        self.step, self.history = int(state["step"]), state.get("history", [])
        self.seconds = float(state.get("seconds", 0.0))
        if state.get("world_size", 1) != self.accelerator.num_processes:
            self._say(f"note: {folder} was trained on {state.get('world_size')} process(es), this run uses "
                      f"{self.accelerator.num_processes}: the clips drawn from now on differ from an uninterrupted run.")
        self._forget_logs_after(self.step)
        self._say(f"resumed from {folder} at step {self.step}")

    def _forget_logs_after(self, step: int):
        """Drop metrics.jsonl lines of steps after `step` (logged by the run that was interrupted)."""
        path = self.output / "metrics.jsonl"
        if not self.main or not path.is_file():
            return
        def kept(line):
            try:
                return json.loads(line)["step"] <= step
            except (ValueError, KeyError, TypeError):
                return False  # a line cut short by the kill

        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if kept(line)]
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(partial, path)

    def _write_checkpoint(self, folder: Path):
        """save_pretrained folder + training_state/ (called on the main process only)."""
        from safetensors.torch import save_file

        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(folder, model_card_kwargs=self._card())
        state_dir = folder / STATE_DIR
        state_dir.mkdir()
        tensors = {f"d.{k}": v for k, v in self.accelerator.unwrap_model(self.d).state_dict().items()}
        if self.face_d is not None:
            tensors.update({f"face_d.{k}": v for k, v in self.accelerator.unwrap_model(self.face_d).state_dict().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(state_dir / "discriminators.safetensors"))
        torch.save({"generator": self.opt_g.state_dict(), "discriminator": self.opt_d.state_dict()},
                   state_dir / "optimizers.pt")
        self._write_json(state_dir / "state.json", {
            "step": self.step, "args": vars(self.args), "videos": self.video_names, "history": self.history,
            "seconds": self.elapsed(),
            "world_size": self.accelerator.num_processes, "torch": torch.__version__,
            "tsnet_hf": __import__("tsnet_hf").__version__})

    def save(self, final: bool = False) -> Path | None:
        """Write a checkpoint atomically (main process); the final one also goes to output/final."""
        self.accelerator.wait_for_everyone()
        target = None
        if self.main:
            target = write_atomically(self.output / CHECKPOINTS / step_name(self.step), self._write_checkpoint)
            if final:
                target = write_atomically(self.output / "final", self._write_checkpoint)
            (self.output / CHECKPOINTS / "latest.txt").write_text(step_name(self.step) + "\n", encoding="utf-8")
            keep = self.args.keep_checkpoints
            for old in (list_checkpoints(self.output)[:-keep] if keep else []):
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return target

    def _card(self) -> dict:
        args, config = self.args, self.config
        frames = sum(len(s.rows) for s in self.train_sources)
        settings = {
            "mode": config.mode, "preset": args.preset or ("from " + str(args.init_from) if args.init_from else "paper"),
            "resolution": f"{config.image_size} px", "steps": f"{self.step} of {args.steps}",
            "clips per step": f"{args.batch_size} x {self.accelerator.num_processes} process(es), K = {args.k}, "
                              f"T = {args.targets}",
            "training data": f"{len(self.train_sources)} video(s), {frames} frames (validation: "
                             f"{len(self.val_sources)} video(s), held out by {self.split})",
            "optimiser": f"Adam ({args.beta1}, {args.beta2}), G lr {args.lr_g:g}, D lr {args.lr_d:g}, linear decay "
                         f"to 0 from {args.decay_start:.3f} of the steps",
            "losses": f"LSGAN + {args.lambda_fm:g} FM" + ("" if args.no_vgg else f" + {args.lambda_vgg:g} VGG "
                      f"({self.vgg_name})") + f" + {args.lambda_tra:g} L_TRA" + (
                      f" + {args.lambda_grad:g} gradient" if config.mode == "face" else " + face discriminator"),
            "augmentation": "none" if args.no_augment else
                            f"crop scale +-{args.jitter_scale}, offset +-{args.jitter_offset}, colour, flip",
            "mixed precision": args.mixed_precision, "seed": args.seed,
            "output path": config.output + (f" ({config.frame_weights} frame weights)" if config.output == "blend" else ""),
            "warm-up without discriminators": f"{args.warmup_steps} steps",
            "wall time": f"{self.elapsed() / 60:.1f} min on {_machine()}",
        }
        evaluation, results = "No validation yet.", []
        if self.history:
            from tsnet_hf.hub import evaluation_results

            latest = self.history[-1]
            metrics = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in latest.items()}
            evaluation = (f"Self-reconstruction on held-out clips at step {latest['step']} "
                          f"(images in [0, 1]; L2 = mean squared error):\n\n{_markdown_table(metrics)}")
            results = evaluation_results(latest, f"Self-reconstruction, held out by {self.split}", self.data_name,
                                         self.data_name, split="validation")
        return {"title": f"TS-Net {config.mode} generator trained with tsnet-hf",
                "description": f"Trained with `python training/train.py` of tsnet-hf ({config.mode} mode).",
                "training": _markdown_table(settings), "evaluation": evaluation, "datasets": [self.data_name],
                "eval_results": results, "base_model": args.init_from}

    # ----- one step ---------------------------------------------------------------------------------------

    def _set_learning_rates(self):
        args = self.args
        for optimizer, base in ((self.opt_g, args.lr_g), (self.opt_d, args.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(base, self.step, args.steps, args.decay_start)

    def train_step(self, batch) -> tuple[dict, object]:
        """One optimisation step at the scheduled learning rates (see `optimisation_step`)."""
        self._set_learning_rates()
        return optimisation_step(self.accelerator, self.losses, self.model, self.d, self.face_d, self.opt_g,
                                 self.opt_d, batch, adversarial=self.step >= self.args.warmup_steps)

    # ----- validation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict | None:
        """Self-reconstruction metrics on the fixed validation clips, averaged over all processes."""
        from training.data import to_model_inputs
        from training.evaluate import image_metrics

        if self.val_dataset is None:
            return None
        accelerator, args = self.accelerator, self.args
        self.model.eval()
        indices = list(range(args.val_clips))[accelerator.process_index::accelerator.num_processes]
        # A process with no clip still runs one (and drops it): gathering needs every process.
        chunks = [indices[i:i + args.batch_size] for i in range(0, len(indices), args.batch_size)] or [[0]]
        sums = {}
        for chunk in chunks:
            items = torch.utils.data.default_collate([self.val_dataset[i] for i in chunk])
            batch = to_model_inputs(items, accelerator.device, self.config.mask_channels)
            with accelerator.autocast():
                output = self.model(batch.subject_frames, batch.subject_masks, batch.driving_masks)
            for name, values in image_metrics(output.image, batch.targets, self.lpips).items():
                sums.setdefault(name, []).append(values if indices else values[:0])
        self.model.train()
        result = {"step": self.step}
        for name, values in sums.items():  # sum and count over processes (their clip counts differ)
            values = torch.cat(values).float()
            total = accelerator.reduce(torch.stack([values.sum(), values.new_tensor(len(values))]), reduction="sum")
            result[name] = float(total[0] / total[1])
        self.history.append(result)
        return result

    # ----- logs -------------------------------------------------------------------------------------------------

    def _say(self, line: str):
        if self.accelerator.is_main_process:
            print(line, flush=True)
            with open(self.output / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def _write_json(self, path: Path, value):
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
        os.replace(partial, path)

    def _record(self, kind: str, values: dict):
        if not self.main:
            return
        line = json.dumps({"kind": kind, "step": self.step, "minutes": round(self.elapsed() / 60, 3), **values},
                          default=float)
        with open(self.output / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and name != "step":
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, self.step)

    def save_grid(self, batch, output, name: str):
        """A PNG of up to 4 rows: K subject frames | driving mask | patch-warped subject (mean over K) |
        [blend path: sharp warp | blend mask | decoder's frame] | output | ground truth."""
        import cv2

        from training.data import render_labels

        if not self.main:
            return
        k, t = batch.subject_frames.shape[1], batch.targets.shape[0] // batch.subject_frames.shape[0]
        to_image = lambda x: ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()  # noqa: E731
        rows = []
        for n in range(min(4, batch.targets.shape[0])):
            panels = [to_image(batch.subject_frames[n // t, i]) for i in range(k)]
            panels.append(render_labels(batch.target_labels[n].cpu().numpy(), self.config.mode))
            warped = output.warped[n].mean(dim=0) if output.warped is not None else torch.zeros_like(output.image[n])
            panels.append(to_image(warped))
            if output.sharp is not None:  # blend path: sharp warp, blend mask (white = warp), decoder
                panels += [to_image(output.sharp[n]), to_image(output.blend_mask[n].expand(3, -1, -1) * 2 - 1),
                           to_image(output.decoded[n])]
            panels += [to_image(output.image[n]), to_image(batch.targets[n])]
            rows.append(np.concatenate(panels, axis=1))
        folder = self.output / "images"
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))

    def _log_losses(self, sums: dict, counts: dict, count: int, seconds: float):
        """Log the mean of each loss part over the `counts[part]` steps that had it (discriminator terms
        are missing from warm-up steps), and the samples per second of `count` steps in `seconds`."""
        accelerator = self.accelerator
        means = {k: float(accelerator.reduce(v / counts[k], reduction="mean")) for k, v in sums.items()}
        samples = count * self.args.batch_size * self.args.targets * accelerator.num_processes / max(seconds, 1e-9)
        lr = self.opt_g.param_groups[0]["lr"]
        self._record("train", {**means, "lr_g": lr, "samples_per_s": samples})
        d_parts = " ".join(f"{k[2:] if k.startswith('d_') else k} {v:.3f}" for k, v in means.items()
                           if k.startswith(("d_", "df_")))
        g_parts = " ".join(f"{k} {v:.3f}" for k, v in means.items() if k not in ("g", "d", "l1")
                           and not k.startswith(("d_", "df_")))
        d_text = f"D {means['d']:.3f} ({d_parts})" if "d" in means else "D off (warm-up)"
        self._say(f"step {self.step}/{self.args.steps} | {d_text} | G {means['g']:.3f} "
                  f"({g_parts}) | L1 {means['l1']:.4f} | lr {lr:.2e} | {samples:.2f} samples/s")
        return means

    def _log_validation(self):
        result = self.validate()
        if result is None:
            return
        self._record("val", {k: v for k, v in result.items() if k != "step"})
        text = " ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "step")
        self._say(f"validation at step {self.step}: {text}")

    # ----- the loop -------------------------------------------------------------------------------------------

    def loader(self):
        from training.data import StepSampler

        args, accelerator = self.args, self.accelerator
        sampler = StepSampler(self.step, args.steps, args.batch_size, accelerator.process_index,
                              accelerator.num_processes)
        return torch.utils.data.DataLoader(self.dataset, batch_size=args.batch_size, sampler=sampler,
                                           num_workers=args.workers, pin_memory=accelerator.device.type == "cuda",
                                           persistent_workers=False)

    def elapsed(self) -> float:
        """Wall seconds of this run so far, over all its invocations (setup and saving included)."""
        return self.seconds + time.monotonic() - self.started

    def _out_of_time(self, deadline: float) -> bool:
        """Whether the budget is spent; all processes agree (any process past the deadline stops them all)."""
        late = torch.tensor(float(time.monotonic() >= deadline), device=self.accelerator.device)
        return bool(self.accelerator.reduce(late, reduction="sum") > 0) if self.accelerator.num_processes > 1 else bool(late)

    def progress_bar(self):
        """The bar `run` advances by one per step: steps done of --steps."""
        from tqdm.auto import tqdm

        return tqdm(total=self.args.steps, initial=self.step, disable=not self.main or self.args.quiet,
                    dynamic_ncols=True)

    def run(self) -> Path | None:
        """Train from the current step to --steps (or until --time-budget); returns the final
        checkpoint folder (main process)."""
        from training.data import to_model_inputs

        args = self.args
        params = sum(p.numel() for p in self.accelerator.unwrap_model(self.model).parameters()) / 1e6
        self._say(f"training a {self.config.mode} TS-Net ({params:.1f} M parameters, {self.config.image_size} px) on "
                  f"{len(self.train_sources)} video(s) ({len(self.val_sources)} for validation, held out by {self.split}), "
                  f"{self.accelerator.num_processes} process(es) on {self.accelerator.device}, steps {self.step} -> {args.steps}")
        bar = self.progress_bar()
        sums, counts, count, busy = {}, {}, 0, 0.0  # busy: seconds in steps (not saving or validation)
        # The budget covers the whole run: a resumed run gets what its earlier invocations left.
        deadline = None if args.time_budget is None else time.monotonic() + 60 * args.time_budget - self.elapsed()
        for items in self.loader():
            if deadline is not None and self._out_of_time(deadline):
                self._say(f"time budget of {args.time_budget:g} min reached at step {self.step}: saving; "
                          "continue with --resume")
                break
            started = time.perf_counter()
            batch = to_model_inputs(items, self.accelerator.device, self.config.mask_channels)
            parts, output = self.train_step(batch)
            self.step += 1
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
                counts[name] = counts.get(name, 0) + 1
            count += 1
            busy += time.perf_counter() - started
            bar.update(1)
            if self.step % args.log_every == 0 or self.step == args.steps:
                means = self._log_losses(sums, counts, count, busy)
                bar.set_postfix({k: f"{means[k]:.3f}" for k in ("d", "g", "l1") if k in means})
                sums, counts, count, busy = {}, {}, 0, 0.0
            if self.step % args.image_every == 0:
                self.save_grid(batch, output, step_name(self.step))
            if args.val_every and self.step % args.val_every == 0 and self.step < args.steps:
                self._log_validation()
            if self.step % args.save_every == 0 and self.step < args.steps:
                self.save()
        bar.close()
        if count:
            self._log_losses(sums, counts, count, busy)
        if not self.history or self.history[-1]["step"] != self.step:
            self._log_validation()
        final = self.save(final=True)
        if final is not None:
            self._say(f"final checkpoint: {final}")
        return final


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload a checkpoint folder (without its training state) to a Hub model repository.

    Raises:
        CheckpointError: the upload failed (not logged in, no network, no permission).
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 ignore_patterns=[f"{STATE_DIR}/*"], commit_message="Upload TS-Net checkpoint (tsnet-hf)")
    except Exception as error:
        raise CheckpointError(f"Could not push {folder} to the Hub repository {repo_id} ({type(error).__name__}); log in "
                              f"with `hf auth login`, check the network, then run `hf upload {repo_id} {folder}`.") from None
    return str(getattr(info, "commit_url", info))


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        trainer = Trainer(args)
        final = trainer.run()
        if args.push_to_hub and final is not None:
            print(f"pushed to {push_to_hub(final, args.push_to_hub, args.hub_private)}", flush=True)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
