"""Cross-identity stills for the docs: what the model saw and did, without the source frames.

    python training/stills.py --checkpoint checkpoints/face-blend-128 SUBJECT.mp4 DRIVING.mp4 \\
        -o docs/images/face-cross-1.png --frames 10 40

Runs RetargetPipeline (alignment, nearest-pose subject frames, as a user would) and writes one
PNG: a row per chosen driving frame of aligned driving mask | sharp warp | blend mask | output
crop. The subject and driving frames themselves are not shown (footage may not be redistributed;
the generated panels are derived images).
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tsnet_hf import RetargetPipeline
from tsnet_hf.errors import TSNetError

PANELS = ("aligned_masks", "warped", "blend_mask", "crop")
LABELS = ("aligned driving mask", "sharp warp", "blend mask", "output")


def stills(pipe: RetargetPipeline, subject, driving, frames: list[int], max_frames: int) -> np.ndarray:
    """(rows * S, 4 * S, 3) uint8 RGB: one row of PANELS per driving frame index in `frames`."""
    result = pipe(subject, driving, max_frames=max_frames, paste_back=False)
    try:
        videos = {name: result.read(name) for name in PANELS}
    finally:
        result.cleanup()
    count = len(videos["crop"])
    rows = [np.concatenate([videos[name][min(f, count - 1)] for name in PANELS], axis=1) for f in frames]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Cross-identity stills: mask, sharp warp, blend mask, output.")
    parser.add_argument("subject")
    parser.add_argument("driving")
    parser.add_argument("--checkpoint", required=True, help="a blend-model checkpoint folder")
    parser.add_argument("--frames", type=int, nargs="+", default=[0], help="driving frame rows to show")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        pipe = RetargetPipeline.from_pretrained(args.checkpoint, device="cpu")
        picture = stills(pipe, args.subject, args.driving, args.frames, max(args.frames) + 1)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.output, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.output} ({' | '.join(LABELS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
