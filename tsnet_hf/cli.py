"""`tsnet-retarget SUBJECT DRIVING -o OUT.mp4`: the retargeting pipeline from the command line.

Exit status 0 only when OUT.mp4 was written; on bad input, 1 with one line on stderr and no
output file; 2 for a wrong command line.
"""

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import TSNetError
from .options import MISSING_POLICIES, RUN_MODES, SELECTIONS, RunOptions
from .pipeline import RetargetPipeline
from .utils import set_cpu_threads

# Where the shipped checkpoints are: inside the installed package (a wheel maps the repository's
# checkpoints/ to tsnet_hf/checkpoints, see pyproject.toml), else beside the package in a checkout
# or an editable install.
CHECKPOINT_DIRS = (
    Path(__file__).resolve().parent / "checkpoints",
    Path(__file__).resolve().parent.parent / "checkpoints",
)


def shipped_checkpoints(mode: str) -> list[Path]:
    """Shipped checkpoint folders for `mode` ("face" or "body"), best first: the first location of
    CHECKPOINT_DIRS that has any, folders named '<mode>-*' with a config.json, largest resolution
    first (the resolution is read from config.json)."""
    for root in CHECKPOINT_DIRS:
        found = [folder for folder in sorted(root.glob(f"{mode}-*")) if (folder / "config.json").is_file()]
        if found:
            return sorted(found, key=lambda folder: -_image_size(folder))
    return []


def _image_size(folder: Path) -> int:
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("image_size", 0))
    except (OSError, ValueError, TypeError):
        return 0


def default_checkpoint(mode: str) -> Path | None:
    """The checkpoint shipped for `mode`, if there is one (see `shipped_checkpoints`)."""
    found = shipped_checkpoints(mode)
    return found[0] if found else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsnet-retarget",
        description="Make SUBJECT (a video or photo) move like the person in DRIVING (a video), with TS-Net.",
    )
    parser.add_argument("subject", help="subject video or photo")
    parser.add_argument("driving", help="driving video (its audio goes to the output)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4")
    parser.add_argument("--checkpoint", help="checkpoint folder or Hub id (default: the shipped one for the mode)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_run_options(parser.add_argument_group("run options (tsnet_hf.RunOptions)"))
    _add_device_options(parser.add_argument_group("device and speed"))
    _add_extra_outputs(parser.add_argument_group("extra outputs"))
    return parser


def _add_run_options(group):
    group.add_argument("--mode", choices=RUN_MODES, default=RunOptions.mode)
    group.add_argument(
        "-k",
        "--subject-frames",
        type=int,
        default=RunOptions.num_subject_frames,
        metavar="K",
        help="subject frames per output frame (default: min(3, available))",
    )
    group.add_argument(
        "--selection",
        choices=SELECTIONS,
        default=RunOptions.selection,
        help="nearest: the K subject frames nearest in pose; random: K drawn once (paper)",
    )
    group.add_argument("--seed", type=int, default=RunOptions.seed, help="seed of --selection random")
    group.add_argument("--no-align", action="store_true", help="do not rescale the driving landmarks to the subject")
    group.add_argument("--no-smooth", action="store_true", help="do not smooth the landmark tracks")
    group.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default=RunOptions.missing,
        help="what to do with frames where nothing is detected",
    )
    group.add_argument(
        "--max-frames", type=int, default=RunOptions.max_frames, help="use at most this many driving frames"
    )
    group.add_argument(
        "--batch-size", type=int, default=RunOptions.batch_size, help="driving frames per generator call"
    )
    group.add_argument("--crop-only", action="store_true", help="output the generated crop, not the full frame")
    group.add_argument(
        "--color-match",
        action="store_true",
        help="match output colours to the subject frame (a converted authors' checkpoint always does, their way)",
    )
    group.add_argument(
        "--no-high-res-warp",
        action="store_true",
        help="blend models: paste back the model-size output, not the one recomposed from the larger subject crops",
    )


def _add_device_options(group):
    group.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best there is)")
    group.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="compute dtype (default: bf16/fp16 on CUDA, bf16 on a CPU with native bf16, else fp32)",
    )
    group.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: the cores this process may use)"
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the generator (a compile of one to two minutes first; on a 2-core CPU "
        "it did not pay even for a 10 s clip, see docs/benchmarks.md)",
    )


def _add_extra_outputs(group):
    group.add_argument(
        "--side-by-side", metavar="MP4", help="also write subject | driving | mask | warped | (blend mask |) output"
    )
    group.add_argument("--masks", metavar="MP4", help="also write the aligned driving masks")
    group.add_argument("--warped", metavar="MP4", help="also write the transformation branch's warped subject")
    group.add_argument(
        "--blend-mask",
        metavar="MP4",
        help="blend models: also write the blend mask (white = warped subject, black = decoder)",
    )


@contextlib.contextmanager
def native_stderr_silenced():
    """mediapipe's C++ code logs to file descriptor 2; keep it off the terminal. Yields a text
    stream on the real stderr for our own messages and the progress bar."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    stream = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield stream
    finally:
        stream.flush()
        os.dup2(saved, 2)
        os.close(saved)
        stream.close()


def make_progress(stream, quiet: bool):
    """A `progress(stage, done, total)` callback drawing one tqdm bar per stage."""
    if quiet:
        return lambda *args: None, lambda: None
    bars = {}

    def progress(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.refresh()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="frame", file=stream, leave=True)
        bar.n = done
        bar.refresh()

    return progress, lambda: [bar.close() for bar in bars.values()]


def run_options(args) -> RunOptions:
    """The command line's run options, checked (InputError) before any checkpoint is loaded."""
    return RunOptions(
        mode=args.mode,
        num_subject_frames=args.subject_frames,
        selection=args.selection,
        seed=args.seed,
        align=not args.no_align,
        smooth=not args.no_smooth,
        missing=args.missing,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        paste_back=not args.crop_only,
        color_match=args.color_match,
        high_res_warp=not args.no_high_res_warp,
    )


def run(args, stream) -> int:
    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        raise TSNetError(f"The output must be an .mp4 file, got {output}.")
    if not output.parent.exists():
        raise TSNetError(f"The output folder {output.parent} does not exist.")
    checkpoint = args.checkpoint or default_checkpoint("body" if args.mode == "body" else "face")
    if checkpoint is None:
        raise TSNetError("No checkpoint given and none is shipped in checkpoints/: pass --checkpoint FOLDER_OR_HUB_ID.")
    options = run_options(args)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    set_cpu_threads(args.threads)
    pipe = RetargetPipeline.from_pretrained(checkpoint, device=args.device, dtype=dtype, compile=args.compile)
    if args.blend_mask and pipe.model.config.output != "blend":  # before the run, not after it
        raise TSNetError(
            f"--blend-mask needs a blend model (config output='blend') but {checkpoint} is a "
            "decoder model: leave --blend-mask out."
        )
    progress, close_bars = make_progress(stream, args.quiet)
    try:
        result = pipe(args.subject, args.driving, **asdict(options), progress=progress)
    finally:
        close_bars()
    with result:  # the run's work folder goes even when a copy fails
        result.save(
            output, side_by_side=args.side_by_side, masks=args.masks, warped=args.warped, blend_mask=args.blend_mask
        )
        if not args.quiet:
            print(result.summary(), file=stream)
            print(f"wrote {output}", file=stream)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with native_stderr_silenced() as stream:
        try:
            return run(args, stream)
        except TSNetError as error:
            print(f"error: {error}", file=stream)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=stream)
            return 130
        except Exception as error:  # a bug, not bad input: still one line, no traceback wall
            print(f"error: unexpected {type(error).__name__}: {error} (please report it)", file=stream)
            return 1


if __name__ == "__main__":
    sys.exit(main())
