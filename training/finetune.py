"""Adapt a trained TS-Net to one person in a few CPU minutes.

    tsnet-finetune me.mp4 --from checkpoints/face-blend-128 --minutes 30 -o my-face
    python app.py --checkpoint my-face

The subject video is preprocessed as for training (training/preprocess.py, at the checkpoint's mode
and resolution), then the checkpoint is trained on it for --minutes of wall time by
training/train.py's Trainer: reconstruction losses only (as the shipped CPU models were trained:
the warm-up covers every step), the learning rate held constant. The last --hold-out share of the
video is never trained on; it validates. DIR ends up a `TSNet.from_pretrained` folder
(config.json, model.safetensors, README.md whose metadata names the base model); the run's log,
cache and training state stay in DIR/training.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python training/finetune.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tqdm.auto import tqdm

from training.options import parse_args
from training.preprocess import VIDEO_SUFFIXES, CacheSettings, preprocess_folder
from training.train import Trainer
from training.vision import load_vgg
from tsnet_hf import TSNetConfig
from tsnet_hf.cli import default_checkpoint
from tsnet_hf.errors import InputError, TSNetError
from tsnet_hf.hub import resolve_checkpoint

RUN_DIR = "training"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md")
# The schedule follows --steps; a time budget ends the run long before this many.
UNBOUNDED_STEPS = 10**7


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsnet-finetune",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Fine-tune a TS-Net checkpoint on one subject video for a number of minutes (tsnet-hf).",
    )
    parser.add_argument("video", metavar="SUBJECT_VIDEO", help="a video of the person (one face or body in view)")
    parser.add_argument(
        "--from",
        dest="base",
        metavar="CHECKPOINT",
        help="checkpoint folder or Hub id to start from (default: the shipped face model)",
    )
    parser.add_argument(
        "--base-model-id",
        metavar="USER/NAME",
        help="the Hub id of the --from model, for the card's base_model (default: --from as given, "
        "a local folder as its full path)",
    )
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock minutes of training")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the fine-tuned checkpoint")
    parser.add_argument(
        "--hold-out",
        type=float,
        default=0.1,
        help="share of the video, at its end, kept out of training for validation",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="generator learning rate (held constant)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (faster only on CPUs with AVX512-BF16 or AMX, and on GPUs)"
    )
    parser.add_argument(
        "--vgg-weights",
        default="auto",
        help="'auto' (torchvision VGG19 ImageNet) or a safetensors file of VGG16/19 conv weights",
    )
    parser.add_argument("--no-vgg", action="store_true", help="no perceptual loss (faster steps)")
    parser.add_argument("--lpips-alexnet", help="AlexNet weights (safetensors) for LPIPS in validation")
    parser.add_argument("--lpips-lin", help="LPIPS linear weights (safetensors) for validation")
    parser.add_argument("--max-frames", type=int, help="read at most this many frames of the video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check(args) -> None:
    """Refuse bad input in one sentence before anything is written."""
    video = Path(args.video)
    if not video.is_file():
        raise InputError(f"Subject video {video} does not exist: give a video file of the person.")
    if video.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{video} is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}): give a video of the person.")
    if not args.minutes > 0:
        raise InputError(f"--minutes must be positive, got {args.minutes:g}.")
    if not 0 < args.hold_out < 1:
        raise InputError(f"--hold-out is a share of the video in (0, 1), got {args.hold_out:g}.")
    output = Path(args.output)
    if output.is_file() or (output / RUN_DIR).is_dir() or (output / "model.safetensors").exists():
        raise InputError(f"{output} already holds a checkpoint or run (or is a file): give a new folder with -o.")
    if not args.no_vgg:  # the perceptual loss's weights, before minutes of preprocessing (offline: one sentence)
        load_vgg(args.vgg_weights)


def _base_checkpoint(args) -> str:
    if args.base is None:
        shipped = default_checkpoint("face")
        if shipped is None:
            raise InputError("No shipped checkpoint found: give the model to start from with --from CHECKPOINT.")
        return str(shipped)
    resolve_checkpoint(args.base)  # a missing folder or unknown Hub id fails here, in one sentence
    return args.base


def trainer_options(args, base: str, cache: Path, run: Path) -> list[str]:
    """training/train.py options for this fine-tuning run."""
    options = [
        "--data",
        str(cache),
        "--init-from",
        base,
        "--output",
        str(run),
        "--steps",
        str(UNBOUNDED_STEPS),
        "--decay-start",
        "1",
        "--warmup-steps",
        str(UNBOUNDED_STEPS),
        "--time-budget",
        str(args.minutes),
        "--val-split",
        "time",
        "--val-fraction",
        str(args.hold_out),
        "--batch-size",
        str(args.batch_size),
        "--lr-g",
        str(args.lr),
        "--lambda-l1",
        "10",
        "--workers",
        "0",
        "--log-every",
        "10",
        "--image-every",
        str(UNBOUNDED_STEPS),
        "--val-every",
        "0",
        "--save-every",
        "200",
        "--keep-checkpoints",
        "1",
        "--cpu",
        "--mixed-precision",
        "bf16" if args.bf16 else "no",
        "--seed",
        str(args.seed),
        "--vgg-weights",
        args.vgg_weights,
    ]
    for flag, value in (
        ("--threads", args.threads),
        ("--lpips-alexnet", args.lpips_alexnet),
        ("--lpips-lin", args.lpips_lin),
    ):
        if value is not None:
            options += [flag, str(value)]
    options += ["--no-vgg"] * args.no_vgg + ["--quiet"] * args.quiet
    return options


def _cache_subject(args, base: str, cache: Path) -> None:
    config = TSNetConfig.from_json_file(resolve_checkpoint(base) / "config.json")
    settings = CacheSettings(config.mode, config.image_size, max_frames=args.max_frames)
    print(preprocess_folder(args.video, cache, settings, progress=print).summary(), flush=True)


def finetune(args) -> Path:
    """Preprocess, train for --minutes, write DIR; returns DIR. On a TSNetError (a video with no
    face, unusable weights...) what this call created is removed again."""
    _check(args)
    base = _base_checkpoint(args)
    output = Path(args.output)
    created = [folder for folder in (output, *output.parents) if not folder.exists()]
    run = output / RUN_DIR
    try:
        _cache_subject(args, base, run / "cache")
        card_base = args.base_model_id or (str(Path(base).resolve()) if Path(base).exists() else base)
        trainer = FinetuneTrainer(parse_args(trainer_options(args, base, run / "cache", run)), card_base)
        final = trainer.run()
    except TSNetError:
        shutil.rmtree(created[-1] if created else run, ignore_errors=True)
        raise
    for name in CHECKPOINT_FILES:
        shutil.copy2(final / name, output / name)
    return output


class FinetuneTrainer(Trainer):
    """The Trainer with a bar in minutes and a model card that names the base model."""

    def __init__(self, args, base: str):
        self.base = base  # as the card names it: a Hub id, or a local folder's full path
        super().__init__(args)

    def progress_bar(self):
        return MinutesBar(self.args.time_budget, disable=self.args.quiet)

    def _card(self) -> dict:
        card = super()._card()
        card["title"] = f"TS-Net {self.config.mode} generator fine-tuned on one subject (tsnet-hf)"
        card["description"] = (
            f"Fine-tuned from `{self.base}` with `tsnet-finetune` for {self.args.time_budget:g} minutes of wall time."
        )
        card["base_model"] = self.base
        return card


class MinutesBar:
    """A tqdm bar over wall-clock minutes that `Trainer.run` advances step by step."""

    def __init__(self, minutes: float, disable: bool = False):
        self.started = time.monotonic()
        self.bar = tqdm(
            total=round(minutes * 60),
            unit="s",
            disable=disable,
            dynamic_ncols=True,
            bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s{postfix}",
        )
        self.steps = 0

    def update(self, steps: int = 1):
        self.steps += steps
        self.bar.n = min(self.bar.total, round(time.monotonic() - self.started))
        self.bar.set_description(f"step {self.steps}", refresh=False)
        self.bar.refresh()

    def set_postfix(self, values: dict):
        self.bar.set_postfix(values)

    def close(self):
        self.bar.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output = finetune(args)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"fine-tuned checkpoint: {output} (load it with TSNet.from_pretrained, or python app.py --checkpoint {output})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
