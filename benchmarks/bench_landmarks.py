"""Landmark speed: per-frame time of detection (face on a 512x512 clip, body on a 720p dance clip),
One-Euro smoothing and driving-to-subject alignment. Prints a markdown table naming the machine.

Detection needs the real clips of ../shared (or $TSNET_SHARED_DIR); without them only smoothing
and alignment are timed, on synthetic tracks of the same shapes.

    python benchmarks/bench_landmarks.py                       # 120 face frames, 60 body frames
    python benchmarks/bench_landmarks.py --face-frames 300 --write docs/benchmarks.md
"""

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tsnet_hf.alignment import align_body, align_face
from tsnet_hf.landmarks import detect_body, detect_face
from tsnet_hf.smoothing import smooth_track
from tsnet_hf.video import iter_frames, read_frames

from common import append_report, best_time, cpu_name, markdown_table

FACE_CLIP = "face/liveportrait_d14.mp4"  # 512x512, 30 fps
FACE_SUBJECT = "face/liveportrait_d19.mp4"
BODY_CLIP = "dance/hybrik_taiji.mp4"  # 1280x720, 24 fps
BODY_SUBJECT = "dance/musev_dance_boy.mp4"


def shared_dir() -> Path | None:
    override = os.environ.get("TSNET_SHARED_DIR")
    path = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared"
    return path if path.is_dir() else None


def machine() -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} threads; mediapipe "
        f"{importlib.metadata.version('mediapipe')}, numpy {np.__version__}"
    )


def per_frame_ms(function, frames: int, repeats: int = 1) -> float:
    """Milliseconds per frame of `function`: one call, or the best of `repeats` after a warm-up."""
    if repeats == 1:
        start = time.perf_counter()
        function()
        return 1000 * (time.perf_counter() - start) / frames
    return 1000 * best_time(function, repeats=repeats) / frames


def detection_rows(path: Path, detect, frames: int, label: str) -> tuple[list[list], np.ndarray]:
    """Rows for decoding, the detector alone and the whole call; and the track's points."""
    images, fps = read_frames(path, max_frames=frames)
    count = len(images)
    size = f"{images.shape[2]}x{images.shape[1]}"
    decode = per_frame_ms(lambda: sum(1 for _ in iter_frames(path, max_frames=frames)), count, 2)
    detector = per_frame_ms(lambda: detect(images, smooth=False, fps=fps), count, 2)
    track = None

    def whole():
        nonlocal track
        track = detect(path, max_frames=frames)

    total = per_frame_ms(whole, count, 2)
    rows = [
        [f"{label}: decode ({path.name}, {size})", count, f"{decode:.1f}"],
        [f"{label}: mediapipe + mapping, frames in memory (incl. graph start)", count, f"{detector:.1f}"],
        [f"{label}: whole call from the file (decode, detect, fill, smooth)", count, f"{total:.1f}"],
    ]
    return rows, track.points


def synthetic_track(frames: int, points: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    track = np.ones((frames, points, 3), dtype=np.float32)
    track[..., :2] = rng.uniform(100, 400, (points, 2)) + rng.normal(0, 1, (frames, points, 2))
    return track


def post_rows(face, face_subject, body, body_subject) -> list[list]:
    """Rows for smoothing and alignment of the given tracks (repeated, best time)."""
    rows = []
    for name, track, preset in (("face", face, "face"), ("body", body, "body")):
        ms = per_frame_ms(
            lambda track=track, preset=preset: smooth_track(track, 30.0, preset=preset), len(track), repeats=5
        )
        rows.append([f"smoothing, One-Euro {name} preset ({track.shape[1]} points)", len(track), f"{ms:.3f}"])
    ms = per_frame_ms(lambda: align_face(face, face_subject), len(face), repeats=5)
    rows.append(["alignment, face (68 points)", len(face), f"{ms:.3f}"])
    ms = per_frame_ms(lambda: align_body(body, body_subject), len(body), repeats=5)
    rows.append(["alignment, body (135 points)", len(body), f"{ms:.3f}"])
    return rows


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face-frames", type=int, default=120)
    parser.add_argument("--body-frames", type=int, default=60)
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    shared = shared_dir()
    rows = []
    if shared is not None:
        data = shared / "data"
        face_rows, face = detection_rows(data / FACE_CLIP, detect_face, args.face_frames, "face")
        body_rows, body = detection_rows(data / BODY_CLIP, detect_body, args.body_frames, "body")
        rows += face_rows + body_rows
        face_subject = detect_face(data / FACE_SUBJECT, max_frames=args.face_frames).points
        body_subject = detect_body(data / BODY_SUBJECT, max_frames=args.body_frames).points
    else:
        print("../shared is absent: detection not timed; smoothing and alignment timed on synthetic tracks")
        face, face_subject = synthetic_track(args.face_frames, 68, 0), synthetic_track(100, 68, 1)
        body, body_subject = synthetic_track(args.body_frames, 135, 2), synthetic_track(60, 135, 3)
    rows += post_rows(face, face_subject, body, body_subject)
    table = markdown_table(["stage", "frames", "ms / frame"], rows)
    report = f"Machine: {machine()}\n\n{table}"
    print(report)
    if args.write:
        append_report(args.write, "Landmarks, smoothing, alignment (bench_landmarks.py)", report)
    return report


if __name__ == "__main__":
    main()
