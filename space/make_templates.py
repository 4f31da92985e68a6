"""Regenerate the motion templates shipped in tsnet_hf/assets/templates/ (and their SOURCES.md).

    python space/make_templates.py [--shared ../shared]

A motion template is a landmark track only (no pixels): the project's own detector
(`tsnet_hf.landmarks.detect`, mediapipe, One-Euro smoothing on) run over a few seconds of a
permissively licensed clip listed in ../shared/data/MANIFEST.tsv. The demo offers them as
driving motions that work on a fresh clone with no video at hand.

Stored compactly, and still readable by `LandmarkTrack.load`: the points are rescaled so that
the frame's longer side is 512 px (the pipeline re-crops and aligns them to the subject anyway),
rounded to 0.5 px (1/1024 of the frame), confidences rounded to 1/16 (masks threshold them at
0.5), and written as float16 in time-major (Fortran) order, which deflate compresses best
(measured on liveportrait_d3, 5 s: 75 KB as float32, 26 KB as float16, 19 KB rounded).
Two extra keys, `label` and `source`, describe the template; `LandmarkTrack.load` ignores them.
"""

import argparse
import csv
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsnet_hf.landmarks import LandmarkTrack, detect
from tsnet_hf.video import iter_frames, probe_video

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tsnet_hf" / "assets" / "templates"
STORED_SIDE = 512  # px, the stored frame's longer side
POINT_STEP = 0.5  # px, rounding of stored coordinates
CONFIDENCE_STEP = 1 / 16


@dataclass(frozen=True)
class Template:
    name: str  # file stem
    clip: str  # path under ../shared/data
    mode: str  # "face" or "body"
    start: float  # seconds into the clip
    seconds: float  # length kept
    label: str  # what the demo's menu shows


TEMPLATES = (
    Template("face_expressions", "face/liveportrait_d0.mp4", "face", 0.0, 3.1, "Face: smile, eye and head turns (3 s)"),
    Template("face_frown", "face/liveportrait_d3.mp4", "face", 0.0, 5.0, "Face: frown and head tilt (5 s)"),
    Template("face_talking", "face/moore_talkinghead_1.mp4", "face", 0.0, 5.0, "Face: talking (5 s)"),
    Template("body_arm_dance", "dance/musev_dance_boy.mp4", "body", 0.0, 4.0, "Body: arm-wave dance, full body (4 s)"),
    Template(
        "body_kpop", "dance/musev_bilibili_queencard_s2_8s.mp4", "body", 0.0, 4.0, "Body: K-pop dance, full body (4 s)"
    ),
)


def read_manifest(shared: Path) -> dict:
    """file (relative to data/) -> its MANIFEST.tsv row (source_repo, path_in_repo, commit, license, ...)."""
    with open(shared / "data" / "MANIFEST.tsv", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def extract(template: Template, shared: Path):
    """The template's LandmarkTrack, in the clip's own pixels."""
    path = shared / "data" / template.clip
    fps = probe_video(path, require_video=True).fps
    first, count = round(template.start * fps), round(template.seconds * fps)
    frames = itertools.islice(iter_frames(path), first, first + count)
    return detect(frames, mode=template.mode, policy="interpolate", smooth=True, fps=fps)


def compact_arrays(track, label: str, source: str) -> dict:
    """The arrays `LandmarkTrack.save` writes, made small (module docstring), plus label and source."""
    height, width = track.frame_size
    scale = STORED_SIDE / max(height, width)
    points = track.points.copy()  # (T, P, 3) x, y in pixels, confidence
    points[..., :2] = np.round(points[..., :2] * scale / POINT_STEP) * POINT_STEP
    points[..., 2] = np.round(points[..., 2] / CONFIDENCE_STEP) * CONFIDENCE_STEP
    report = track.report
    return dict(
        points=np.asfortranarray(points.astype(np.float16)),  # time-major on disk
        mode=track.mode,
        frame_size=np.array([round(height * scale), round(width * scale)]),
        fps=track.fps,
        frame_indices=track.frame_indices.astype(np.int32),
        detected=report.detected,
        filled=np.asarray(report.filled),
        policy=report.policy,
        points_filled=report.points_filled,
        smoothed=track.smoothed,
        label=label,
        source=source,
    )


def source_line(row: dict) -> str:
    return f"{row['source_repo']} {row['path_in_repo']} @ {row['commit'][:12]} ({row['license']})"


def write_sources(rows: list, path: Path):
    lines = [
        "# Motion templates: sources",
        "",
        "Each .npz here is a landmark track only (no pixels), computed by this project's own code",
        "(`tsnet_hf.landmarks.detect`: mediapipe, mapped to the dlib-68 / OpenPose layouts, One-Euro",
        "smoothing) from the first seconds of a clip in a permissively licensed public repository.",
        "Regenerate them with `python space/make_templates.py` (needs ../shared/data; the files come out",
        "byte-identical). Stored small: the frame rescaled to 512 px on its longer side, points rounded to",
        "0.5 px and confidences to 1/16, float16; `tsnet_hf.landmarks.LandmarkTrack.load` reads them.",
        "",
        "| template | mode | frames | fps | size | source repository | path | commit | licence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for template, row, track, size in rows:
        lines.append(
            f"| {template.name}.npz | {template.mode} | {len(track)} | {track.fps:g} | {size / 1024:.1f} KB "
            f"| https://github.com/{row['source_repo']} | {row['path_in_repo']} | {row['commit']} "
            f"| {row['license']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared folder (../shared)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the .npz files go")
    args = parser.parse_args(argv)
    if not (args.shared / "data" / "MANIFEST.tsv").is_file():
        print(f"error: {args.shared}/data/MANIFEST.tsv not found: pass --shared PATH_TO_SHARED.", file=sys.stderr)
        return 1
    manifest = read_manifest(args.shared)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for template in TEMPLATES:
        row = manifest[template.clip]
        track = extract(template, args.shared)
        path = args.out / f"{template.name}.npz"
        np.savez_compressed(path, **compact_arrays(track, template.label, source_line(row)))
        loaded = LandmarkTrack.load(path)  # the shipped file must load with the public loader
        assert loaded.mode == template.mode and len(loaded) == len(track)
        size = path.stat().st_size
        written.append((template, row, track, size))
        print(f"{path.name}: {len(track)} frames, {size / 1024:.1f} KB; {track.report.summary()}")
    write_sources(written, args.out / "SOURCES.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
