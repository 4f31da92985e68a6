"""A folder of videos -> one training cache per video, with the code the pipeline runs at inference.

    python training/preprocess.py VIDEOS --mode face --size 256 --cache-dir cache/face-256

For each video: landmarks (tsnet_hf.landmarks.detect, missing frames interpolated, One-Euro
smoothed), square crop boxes smoothed over time (tsnet_hf.crops.face_crop_boxes /
body_crop_boxes), exactly as `RetargetPipeline` does at inference, so that the crops and masks the
model trains on are the ones it will see. Each cache folder holds:

    frames.npy      (T, S', S', 3) uint8 RGB crops, read as a memory map during training
    landmarks.npy   (T, P, 3) float32 x, y in pixels of those crops, confidence in [0, 1]
    detected.npy    (T,) bool, whether the detector found the face/person in that frame (others
                    were interpolated; training samples detected frames only)
    boxes.npy       (T, 4) float32 the inference crop box (x0, y0, x1, y1) in frame pixels
    frame_indices.npy (T,) int64 frame numbers in the source video
    meta.json       source, fps, frame size, settings, detection report, tsnet-hf version

The crops cover `context` (1.25) times the inference box, at S' = round(size * context) pixels, so
that training can jitter the crop's scale and offset around the inference box (training/data.py)
without inventing pixels. Size on disk: T x S'^2 x 3 bytes (307 KB per frame at size 256), so
`--frame-stride` and `--max-frames` exist to keep a cache small enough to carry to another
machine. A video whose detection fails is skipped and listed in index.json (and not tried again
while the file is unchanged, unless --force); a video already cached with the same settings is
reused; a cache is written under a temporary name and renamed when complete, so an interrupted run
never leaves a half-written cache that looks finished.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python training/preprocess.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tsnet_hf.errors import DetectionError, InputError, TSNetError, VideoError  # noqa: E402

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg"})
INDEX_NAME = "index.json"
META_NAME = "meta.json"
FORMAT_VERSION = 1
MIN_DETECTED = 2  # a video needs at least a subject frame and a target frame


@dataclass
class CacheSettings:
    """What a cache is made with; a cached video is reused only when these are equal.

    Attributes:
        mode: "face" or "body".
        size: training resolution S (the model's image_size).
        context: the stored crop covers `context` times the inference box (room for crop jitter).
        frame_stride: keep every n-th frame (landmarks are still detected and smoothed on all).
        max_frames: read at most this many frames of each video (None: all).
    """

    mode: str = "face"
    size: int = 256
    context: float = 1.25
    frame_stride: int = 1
    max_frames: int | None = None

    def __post_init__(self):
        if self.mode not in ("face", "body"):
            raise InputError(f"mode must be 'face' or 'body', got {self.mode!r}.")
        if not isinstance(self.size, int) or self.size < 16:
            raise InputError(f"size must be an integer of at least 16 pixels, got {self.size!r}.")
        if not 1.0 <= float(self.context) <= 2.0:
            raise InputError(f"context must be between 1 and 2 (times the crop box), got {self.context!r}.")
        if not isinstance(self.frame_stride, int) or self.frame_stride < 1:
            raise InputError(f"frame_stride must be a positive integer, got {self.frame_stride!r}.")
        if self.max_frames is not None and (not isinstance(self.max_frames, int) or self.max_frames < MIN_DETECTED):
            raise InputError(f"max_frames must be an integer of at least {MIN_DETECTED}, or None, got {self.max_frames!r}.")
        self.context = float(self.context)

    @property
    def stored_size(self) -> int:
        """Side S' of the stored crops: round(size * context)."""
        return int(round(self.size * self.context))


@dataclass
class PreprocessReport:
    """What `preprocess_folder` did: folder names made, reused, and (video, reason) skipped."""

    cache_dir: Path
    made: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0

    @property
    def usable(self) -> list[str]:
        return sorted(self.made + self.reused)

    def summary(self) -> str:
        text = (f"{len(self.usable)} video(s) cached in {self.cache_dir} ({len(self.made)} new, {len(self.reused)} "
                f"reused, {self.bytes / 2**20:.1f} MiB), {len(self.skipped)} skipped")
        return text + "".join(f"\n  skipped {path}: {reason}" for path, reason in self.skipped)


def find_videos(folder) -> list[Path]:
    """Video files under `folder` (recursively, hidden folders skipped), sorted.

    Raises:
        InputError: the folder does not exist or holds no video file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Data folder {folder} does not exist: give a folder of videos (mp4, mov, webm, ...).")
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not videos:
        raise InputError(f"Data folder {folder} holds no video file ({', '.join(sorted(VIDEO_SUFFIXES))}): "
                         "give a folder of videos of faces or of people dancing.")
    return videos


def cache_name(video: Path, root: Path) -> str:
    """A folder name unique per video path under `root`: '<stem>-<8 hex of the relative path>'."""
    relative = video.relative_to(root).as_posix()
    return f"{video.stem}-{hashlib.sha1(relative.encode()).hexdigest()[:8]}"


def is_cache_dir(folder) -> bool:
    """Whether `folder` is a training cache made by this module (it has an index.json)."""
    return (Path(folder) / INDEX_NAME).is_file()


def _source_stamp(video: Path) -> dict:
    stat = video.stat()
    return {"path": str(video.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime}


def _is_current(folder: Path, video: Path, settings: CacheSettings) -> bool:
    """A complete cache of this very file with these settings already exists."""
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (meta.get("format") == FORMAT_VERSION and meta.get("settings") == asdict(settings)
            and meta.get("source") == _source_stamp(video))


def _crop_boxes(track, mode: str) -> np.ndarray:
    """(T, 4) inference crop boxes in frame pixels: the pipeline's own functions and defaults."""
    from tsnet_hf.crops import track_crop_boxes

    return track_crop_boxes(track.points, track.frame_size, mode)


def _enlarge(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Square boxes (T, 4) scaled by `factor` about their centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def preprocess_video(video: Path, folder: Path, settings: CacheSettings) -> dict:
    """Detect, crop and write one video's cache into `folder` (which must not exist yet).

    Returns the meta dict written to meta.json.
    Raises:
        DetectionError: nothing (or fewer than 2 frames) detected. VideoError: unreadable file.
    """
    from tsnet_hf import __version__
    from tsnet_hf.crops import crop_frame, transforms_from_boxes
    from tsnet_hf.landmarks import detect
    from tsnet_hf.video import iter_frames

    track = detect(str(video), mode=settings.mode, policy="interpolate", smooth=True,
                   max_frames=settings.max_frames)
    detected = track.report.detected[track.frame_indices]
    if detected.sum() < MIN_DETECTED:
        raise DetectionError(f"only {int(detected.sum())} frame(s) with a {settings.mode} detected; "
                             f"training needs at least {MIN_DETECTED}.")
    boxes = _crop_boxes(track, settings.mode)
    rows = np.arange(0, len(track), settings.frame_stride)
    stored = settings.stored_size
    transforms = transforms_from_boxes(_enlarge(boxes[rows], settings.context), track.frame_size, stored)
    folder.mkdir(parents=True)
    frames = np.lib.format.open_memmap(folder / "frames.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(rows), stored, stored, 3))
    wanted = {int(track.frame_indices[row]): i for i, row in enumerate(rows)}
    written = 0
    for index, frame in enumerate(iter_frames(video, max_frames=settings.max_frames)):
        if index in wanted:
            frames[wanted[index]] = crop_frame(frame, transforms[wanted[index]])
            written += 1
    frames.flush()
    del frames
    if written != len(rows):
        raise VideoError(f"{video.name} gave {written} frames on the second read but {len(rows)} on the first.")
    points = np.stack([t.to_crop(track.points[row]) for t, row in zip(transforms, rows)]).astype(np.float32)
    np.save(folder / "landmarks.npy", points)
    np.save(folder / "detected.npy", detected[rows])
    np.save(folder / "boxes.npy", boxes[rows].astype(np.float32))
    np.save(folder / "frame_indices.npy", track.frame_indices[rows].astype(np.int64))
    meta = {
        "format": FORMAT_VERSION, "tsnet_hf_version": __version__, "source": _source_stamp(video),
        "name": folder.name, "settings": asdict(settings), "fps": float(track.fps),
        "frame_size": list(track.frame_size), "num_frames": int(len(rows)), "stored_size": stored,
        "detection": {"summary": track.report.summary(), **track.report.counts()},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_json(folder / META_NAME, meta)  # last: a folder with meta.json is complete
    return meta


def _write_json(path: Path, value) -> None:
    """Write JSON atomically (temporary file + rename)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(partial, path)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _replace_folder(partial: Path, target: Path) -> None:
    """Move a finished `partial` folder to `target`, replacing an older one, never leaving neither."""
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(target)


def _process_one(video: Path, folder: Path, settings: CacheSettings) -> str | None:
    """Make one cache; returns None on success or the one-line reason the video is skipped."""
    partial = folder.with_name(f".partial-{folder.name}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        preprocess_video(video, partial, settings)
    except (DetectionError, VideoError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        return str(error)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _replace_folder(partial, folder)
    return None


def preprocess_folder(data_dir, cache_dir, settings: CacheSettings, force: bool = False,
                      progress=print) -> PreprocessReport:
    """Make (or reuse) the cache of every video under `data_dir` in `cache_dir`.

    Args:
        data_dir: folder of videos (searched recursively).
        cache_dir: output folder; one sub-folder per video plus index.json.
        settings: CacheSettings.
        force: remake caches even when they are current.
        progress: called with one line of text per video (None: silent).
    Returns:
        PreprocessReport.
    Raises:
        InputError: no video in `data_dir`, or none of them is usable (each skipped with a reason).
    """
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    videos = find_videos(data_dir)
    make_writable_dir(cache_dir, "cache folder", "--cache-dir")
    for leftover in cache_dir.glob(".partial-*"):  # from an interrupted run
        shutil.rmtree(leftover, ignore_errors=True)
    report = PreprocessReport(cache_dir)
    failed_before = {} if force else _failed_before(cache_dir, settings)
    say = progress or (lambda line: None)
    stamps = {}
    for number, video in enumerate(videos, 1):
        name, start = cache_name(video, data_dir), time.perf_counter()
        folder = cache_dir / name
        relative = video.relative_to(data_dir).as_posix()
        stamps[relative] = _source_stamp(video)
        previous = failed_before.get(relative)
        if previous is not None and previous["source"] == stamps[relative]:
            report.skipped.append((relative, previous["reason"]))
            say(f"[{number}/{len(videos)}] {relative}: skipped, as in the last run ({previous['reason']})")
            continue
        if not force and _is_current(folder, video, settings):
            report.reused.append(name)
            say(f"[{number}/{len(videos)}] {relative}: cached already")
        else:
            reason = _process_one(video, folder, settings)
            if reason is not None:
                report.skipped.append((relative, reason))
                say(f"[{number}/{len(videos)}] {relative}: skipped ({reason})")
                continue
            report.made.append(name)
            meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
            say(f"[{number}/{len(videos)}] {relative}: {meta['num_frames']} frames, "
                f"{meta['detection']['summary']} ({time.perf_counter() - start:.1f} s)")
        report.bytes += _folder_bytes(folder)
    _write_json(cache_dir / INDEX_NAME, {
        "format": FORMAT_VERSION, "data_dir": str(data_dir.resolve()), "settings": asdict(settings),
        "videos": report.usable, "bytes": report.bytes,
        "skipped": [{"video": v, "reason": r, "source": stamps[v]} for v, r in report.skipped]})
    if not report.usable:
        raise InputError(f"No usable video in {data_dir}: landmark detection failed in all {len(videos)} "
                         f"({report.skipped[0][1]}); use videos in which one {settings.mode} is clearly visible.")
    return report


def _failed_before(cache_dir: Path, settings: CacheSettings) -> dict:
    """Videos the last run with these settings skipped: {relative path: {"reason", "source"}}; a
    video is not detected again while its file is unchanged (use --force to retry)."""
    try:
        index = json.loads((cache_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if index.get("format") != FORMAT_VERSION or index.get("settings") != asdict(settings):
        return {}
    return {entry["video"]: entry for entry in index.get("skipped", []) if "source" in entry}


def make_writable_dir(folder, what: str = "folder", option: str | None = None) -> Path:
    """Create `folder` and check that a file can be written in it; returns it as a Path.

    what, option: name the folder and the command-line option that sets it in the message.
    Raises:
        InputError: it cannot be created or written to.
    """
    folder = Path(folder)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        hint = f" with {option}" if option else ""
        raise InputError(f"Cannot write to the {what} {folder} ({error.strerror or error}): "
                         f"choose a folder you can write to{hint}.") from None
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Turn a folder of videos into TS-Net training caches (crops, landmarks, detection report).")
    parser.add_argument("data", help="folder of videos (searched recursively)")
    parser.add_argument("--mode", choices=("face", "body"), required=True)
    parser.add_argument("--cache-dir", required=True, help="output folder (one sub-folder per video)")
    parser.add_argument("--size", type=int, default=256, help="training resolution in pixels (default 256)")
    parser.add_argument("--context", type=float, default=1.25,
                        help="stored crop = this times the inference crop box, room for crop jitter (default 1.25)")
    parser.add_argument("--frame-stride", type=int, default=1, help="keep every n-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    parser.add_argument("--force", action="store_true", help="remake caches that are already current")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = CacheSettings(args.mode, args.size, args.context, args.frame_stride, args.max_frames)
        report = preprocess_folder(args.data, args.cache_dir, settings, force=args.force)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
