"""Reduced precision on trained weights: a checkpoint's outputs under bf16 (or fp16) autocast
against fp32, on real held-out frames (speed: benchmarks/bench_pipeline.py --variants default fp32).

    python benchmarks/bench_precision.py --checkpoint checkpoints/face-blend-128 \\
        --data cache/heldout-face-128 [--precision bf16] [--write docs/benchmarks.md]

--data is a training cache (training/preprocess.py) or a folder of videos, as for
training/evaluate.py, whose self-reconstruction split it uses: the first half of each video is the
subject, the second the driving frames and ground truth. For every frame: LPIPS of each precision's
output against the ground truth, and LPIPS between the two outputs. The reduced precision passes
where both the mean LPIPS to the ground truth moves by at most TOLERANCE and the mean LPIPS
between the two outputs stays within it (RetargetPipeline's CPU default follows this check).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from training.data import central_view  # noqa: E402
from training.evaluate import PRECISIONS, Evaluator, open_videos  # noqa: E402
from training.lpips import load_lpips  # noqa: E402
from tsnet_hf import TSNet  # noqa: E402
from tsnet_hf.errors import TSNetError  # noqa: E402
from tsnet_hf.utils import to_model_frames  # noqa: E402

from common import append_report, machine_line, markdown_table  # noqa: E402

TOLERANCE = 0.005  # LPIPS


def compare(model, videos, lpips, precision: str, k: int, frames: int, batch: int) -> dict:
    """Per-frame LPIPS (fp32 vs truth, reduced vs truth, reduced vs fp32) and grey-level gaps,
    over the self-reconstruction split of `videos`."""
    runs = {
        name: Evaluator(model, torch.device("cpu"), None, k, frames, batch, landmarks=False, precision=name)
        for name in ("fp32", precision)
    }
    scores = {"fp32": [], precision: [], "between": [], "max_grey": [], "mean_grey": []}
    count = 0
    for video in videos:
        subject_rows, driving_rows = runs["fp32"].split(video)
        if len(subject_rows) < 1 or len(driving_rows) < 1:
            continue
        pool_images, pool_points = central_view(video, subject_rows, model.config.image_size)
        truth_images, truth_points = central_view(video, driving_rows, model.config.image_size)
        truth = to_model_frames(truth_images, "cpu")
        outputs = {name: run.generate(pool_images, pool_points, truth_points) for name, run in runs.items()}
        with torch.no_grad():
            for name in runs:
                scores[name].append(lpips(outputs[name][1], truth).float().numpy())
            scores["between"].append(lpips(outputs[precision][1], outputs["fp32"][1]).float().numpy())
        gap = np.abs(outputs[precision][0].astype(np.int16) - outputs["fp32"][0].astype(np.int16))
        scores["max_grey"].append(gap.reshape(len(gap), -1).max(axis=1).astype(np.float64))
        scores["mean_grey"].append(gap.reshape(len(gap), -1).mean(axis=1))
        count += len(truth_images)
    means = {name: float(np.concatenate(values).mean()) for name, values in scores.items()}
    return {"means": means, "frames": count}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, help="a training cache or a folder of videos (held-out people)")
    parser.add_argument("--cache-dir", help="where --data videos are preprocessed (as training/evaluate.py)")
    parser.add_argument("--videos", nargs="+", help="only the cached videos whose names contain one of these")
    parser.add_argument("--precision", choices=[p for p in PRECISIONS if p != "fp32"], default="bf16")
    parser.add_argument("--k", type=int, default=3, help="subject frames K")
    parser.add_argument("--frames", type=int, default=30, help="driving frames per video at most")
    parser.add_argument("--batch", type=int, default=8, help="driving frames per model call")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--lpips-alexnet", default="auto", help="'auto' (torchvision) or a safetensors file")
    parser.add_argument("--lpips-lin", help="LPIPS linear weights (safetensors); default: the lpips package's")
    parser.add_argument("--write", metavar="MARKDOWN", help="append the table to this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = TSNet.from_pretrained(args.checkpoint).eval()
        videos = open_videos(args, model.config.mode, model.config.image_size)
        if args.videos:
            videos = [v for v in videos if any(name in v.name for name in args.videos)]
        if not videos:
            raise TSNetError("No video to measure: check --data and --videos.")
        lpips = load_lpips(args.lpips_alexnet, args.lpips_lin)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = compare(model, videos, lpips, args.precision, args.k, args.frames, args.batch)
    means, reduced = result["means"], args.precision
    shift = means[reduced] - means["fp32"]
    passed = abs(shift) <= TOLERANCE and means["between"] <= TOLERANCE
    rows = [
        [
            f"`{args.checkpoint}`",
            len(videos),
            result["frames"],
            f"{means['fp32']:.4f}",
            f"{means[reduced]:.4f}",
            f"{shift:+.5f}",
            f"{means['between']:.5f}",
            f"{means['mean_grey']:.2f}",
            f"{means['max_grey']:.1f}",
            "yes" if passed else "no",
        ]
    ]
    header = [
        "checkpoint",
        "videos",
        "frames",
        "LPIPS fp32 vs truth",
        f"LPIPS {reduced} vs truth",
        "change",
        f"LPIPS {reduced} vs fp32",
        "mean grey-level gap",
        "max grey-level gap (mean over frames)",
        f"within {TOLERANCE}",
    ]
    command = " ".join(argv if argv is not None else sys.argv[1:])
    body = (
        f"Machine: {machine_line()}.\n\nModel outputs at its own resolution, K = {args.k}, nearest-pose "
        f"subject frames, self-reconstruction split of `{args.data}`. Command: "
        f"`python benchmarks/bench_precision.py {command}`\n\n{markdown_table(header, rows)}"
    )
    print(body)
    if args.write:
        append_report(args.write, f"Reduced precision on trained weights: {reduced} vs fp32", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
