"""A folder of videos -> one training cache per video, with the code the pipeline runs at inference.

    python training/preprocess.py VIDEOS --mode face --size 256 --cache-dir cache/face-256
    python training/preprocess.py VIDEOS --mode face --size 128 --storage webp --cache-dir cache/face-128-webp
    python training/preprocess.py cache/face-128 --storage webp --cache-dir cache/face-128-webp   # convert

For each video: landmarks, smoothed crop boxes and masks made by the same tsnet_hf functions the
pipeline runs at inference, stored as one cache folder (its files are listed in training/README.md,
"Cache folder format"). A cache is written under a temporary name and renamed when complete, so an
interrupted run never leaves a half-written cache that looks finished.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # `python training/preprocess.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tsnet_hf import __version__
from tsnet_hf.crops import crop_frame, track_crop_boxes, transforms_from_boxes
from tsnet_hf.errors import DetectionError, InputError, TSNetError, VideoError
from tsnet_hf.landmarks import detect
from tsnet_hf.video import iter_frames

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg"})
INDEX_NAME = "index.json"
META_NAME = "meta.json"
RAW_FRAMES, IMAGE_FRAMES, VIDEO_FRAMES = "frames.npy", "frames.npz", "frames.mp4"
RAW_POINTS, COMPACT_POINTS = "landmarks.npy", "landmarks.npz"
FORMAT_VERSION = 1  # compact storages add files, not a new layout: format-1 readers of raw caches still work
MIN_DETECTED = 2  # a video needs at least a subject frame and a target frame
# Compact storages, all written and read by OpenCV alone (no ffmpeg executable, no imageio), measured
# on the face and dance clips (training/README.md). Images, cv2.imencode / imdecode, one per row:
# (file extension, quality flag, default quality); WebP 80 is half the bytes of JPEG 80 at the same
# error (1.9 KiB a 160 px frame, 38 dB). "mp4v": one MPEG-4 part 2 video per cache video through the
# FFmpeg inside OpenCV's wheels, 0.8-1.4 KiB a 160 px frame at 36-37 dB and 2-3.7 KiB at 320 px,
# the smallest, but with no quality setting and unreadable by an OpenCV built without FFmpeg.
IMAGE_CODECS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY, 80), "jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)}
STORAGES = ("raw", *IMAGE_CODECS, "mp4v")
# Settings of caches made before the storage option existed: their meta.json lacks these keys.
LEGACY_SETTINGS = {"storage": "raw", "quality": None}


@dataclass
class CacheSettings:
    """What a cache is made with; a cached video is reused only when these are equal.

    Attributes:
        mode: "face" or "body".
        size: training resolution S (the model's image_size).
        context: the stored crop covers `context` times the inference box (room for crop jitter).
        frame_stride: keep every n-th frame (landmarks are still detected and smoothed on all).
        max_frames: read at most this many frames of each video (None: all).
        storage: "raw" (frames.npy, memory-mapped), "webp" or "jpeg" (frames.npz), "mp4v"
            (frames.mp4); the last three are lossy and decoded when training starts.
        quality: 1-100 for webp / jpeg (None: 80 for webp, 90 for jpeg); None for raw and mp4v.
    """

    mode: str = "face"
    size: int = 256
    context: float = 1.25
    frame_stride: int = 1
    max_frames: int | None = None
    storage: str = "raw"
    quality: int | None = None

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
            raise InputError(
                f"max_frames must be an integer of at least {MIN_DETECTED}, or None, got {self.max_frames!r}."
            )
        self.context = float(self.context)
        self._check_storage()

    def _check_storage(self) -> None:
        if self.storage not in STORAGES:
            raise InputError(f"storage must be one of {', '.join(STORAGES)}, got {self.storage!r}.")
        if self.storage == "mp4v" and self.stored_size % 2:
            raise InputError(
                f"mp4v needs an even crop side, and size {self.size} x context {self.context} gives "
                f"{self.stored_size} px: change the size, or choose another storage."
            )
        if self.storage not in IMAGE_CODECS:
            if self.quality is not None:
                raise InputError(
                    f"quality applies to the {' and '.join(IMAGE_CODECS)} storages only, not to "
                    f"{self.storage}: choose one of those, or leave the quality out."
                )
            return
        if self.quality is None:
            self.quality = IMAGE_CODECS[self.storage][2]
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise InputError(f"quality must be an integer from 1 to 100, got {self.quality!r}.")

    @property
    def stored_size(self) -> int:
        """Side S' of the stored crops: round(size * context)."""
        return int(round(self.size * self.context))

    @classmethod
    def from_dict(cls, recorded: dict) -> "CacheSettings":
        """The settings a meta.json or index.json records (caches older than `storage` are raw)."""
        return cls(**{**LEGACY_SETTINGS, **recorded})


def settings_record(settings: CacheSettings) -> dict:
    """`settings` as meta.json and index.json record them; a raw cache's without storage and
    quality, as before they existed, so that older checkouts still find it current."""
    recorded = asdict(settings)
    if settings.storage == "raw":
        for key in LEGACY_SETTINGS:
            del recorded[key]
    return recorded


def _same_settings(recorded, settings: CacheSettings) -> bool:
    """Whether settings recorded in a meta.json / index.json are `settings`."""
    return isinstance(recorded, dict) and {**LEGACY_SETTINGS, **recorded} == asdict(settings)


def check_encoder(settings: CacheSettings) -> None:
    """Raises InputError when this OpenCV cannot write (and read back) the storage's frames; called
    before any detection."""
    if settings.storage != "raw":
        with tempfile.TemporaryDirectory() as folder:
            writer = frame_writer(folder, 2, 16, settings)
            for row in range(2):
                writer[row] = np.zeros((16, 16, 3), np.uint8)
            writer.close()


# ----- frame and landmark storage -------------------------------------------------------------------


def encode_frame(image: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (N,) uint8 bytes of one WebP / JPEG image (handed to OpenCV's encoder
    as BGR, its order, so that cv2.imdecode + BGR2RGB gives RGB back).

    Raises:
        InputError: this OpenCV cannot write that codec.
    """
    extension, flag, _ = IMAGE_CODECS[codec]
    try:
        ok, data = cv2.imencode(
            extension, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), [flag, int(quality)]
        )
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"OpenCV {cv2.__version__} cannot write {codec} images: choose another --storage.")
    return data.reshape(-1)


class _RawWriter:
    """Rows straight into a memory-mapped frames.npy."""

    def __init__(self, folder: Path, shape: tuple, settings: CacheSettings):
        self._rows = np.lib.format.open_memmap(folder / RAW_FRAMES, mode="w+", dtype=np.uint8, shape=shape)

    def __setitem__(self, row: int, image: np.ndarray) -> None:
        self._rows[row] = image

    def close(self) -> None:
        self._rows.flush()
        self._rows = None


class _ImageWriter:
    """Rows encoded at once, written as one frames.npz by `close` (every row must be set by then)."""

    def __init__(self, folder: Path, shape: tuple, settings: CacheSettings):
        self.path, self.shape, self.settings = folder / IMAGE_FRAMES, shape, settings
        self._rows = [None] * shape[0]

    def __setitem__(self, row: int, image: np.ndarray) -> None:
        self._rows[row] = encode_frame(image, self.settings.storage, self.settings.quality)

    def close(self) -> None:
        offsets = np.cumsum([0] + [len(data) for data in self._rows], dtype=np.int64)
        np.savez(
            self.path,
            data=np.concatenate(self._rows),
            offsets=offsets,
            shape=np.array(self.shape, np.int64),
            codec=np.array(self.settings.storage),
        )
        self._rows = None


class _VideoWriter:
    """Rows in order (0, 1, 2, ...) into frames.mp4 (MPEG-4 part 2, the one video codec OpenCV's
    wheels both write and read: no H.264 writer there); `close` reads it back and checks the count."""

    def __init__(self, folder: Path, shape: tuple, settings: CacheSettings):
        self.path, self.shape, self._next = folder / VIDEO_FRAMES, shape, 0
        self._writer = cv2.VideoWriter(
            str(self.path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, shape[2:0:-1]
        )
        if not self._writer.isOpened():
            raise InputError(
                f"OpenCV {cv2.__version__} cannot write mp4v videos (it has no FFmpeg): choose another --storage."
            )

    def __setitem__(self, row: int, image: np.ndarray) -> None:
        if row != self._next:
            raise ValueError(f"mp4v frames are written in order: row {row} came, {self._next} was due.")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        self._next += 1

    def close(self) -> None:
        self._writer.release()
        _read_video(self.path, self.shape)  # fail now, not when training starts


def frame_writer(folder, count: int, side: int, settings: CacheSettings):
    """A writer of a cache's (count, side, side, 3) uint8 RGB frames in `settings.storage`:
    `writer[row] = image` for each row (in order for mp4v), then `writer.close()`."""
    kind = {"raw": _RawWriter, "mp4v": _VideoWriter}.get(settings.storage, _ImageWriter)
    return kind(Path(folder), (count, side, side, 3), settings)


def read_frames(folder) -> np.ndarray:
    """A cache folder's (T, S', S', 3) uint8 RGB frames, read-only: frames.npy memory-mapped, or
    frames.npz / frames.mp4 decoded whole (0.2-0.5 ms a 160 px frame on 2 CPU cores, README).

    Raises:
        InputError: the frames cannot be decoded (damaged file, or an OpenCV without the codec).
    """
    folder = Path(folder)
    if (folder / RAW_FRAMES).is_file():
        return np.load(folder / RAW_FRAMES, mmap_mode="r")
    if (folder / VIDEO_FRAMES).is_file():
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
        side = int(meta["stored_size"])
        frames = _read_video(folder / VIDEO_FRAMES, (int(meta["num_frames"]), side, side, 3))
    else:
        frames = _decode_images(folder / IMAGE_FRAMES)
    frames.flags.writeable = False  # as the read-only memory map of a raw cache
    return frames


def _decode_images(path: Path) -> np.ndarray:
    """frames.npz -> (T, S', S', 3) uint8 RGB."""
    with np.load(path) as store:
        data, offsets, shape, codec = store["data"], store["offsets"], tuple(store["shape"]), str(store["codec"])
    frames = np.empty(shape, np.uint8)
    for row in range(shape[0]):
        image = cv2.imdecode(data[offsets[row] : offsets[row + 1]], cv2.IMREAD_COLOR)
        if image is None or image.shape != shape[1:]:
            raise InputError(
                f"Frame {row} of {path} cannot be decoded as {codec} by OpenCV {cv2.__version__}: "
                "remake this cache, or make it with another --storage."
            )
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=frames[row])
    return frames


def _read_video(path: Path, shape: tuple) -> np.ndarray:
    """frames.mp4 -> `shape` (T, S', S', 3) uint8 RGB, read front to back."""
    frames = np.empty(shape, np.uint8)
    capture, count = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG), 0
    try:
        while count < shape[0]:
            ok, image = capture.read()
            if not ok or image.shape != shape[1:]:
                break
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=frames[count])
            count += 1
    finally:
        capture.release()
    if count != shape[0]:
        raise InputError(
            f"OpenCV {cv2.__version__} read {count} of the {shape[0]} frames of {path} (an OpenCV "
            "without FFmpeg reads none): remake this cache, or make it with another --storage."
        )
    return frames


def read_points(folder) -> np.ndarray:
    """A cache folder's (T, P, 3) float32 landmarks (landmarks.npy, or landmarks.npz when compact)."""
    folder = Path(folder)
    if (folder / RAW_POINTS).is_file():
        return np.load(folder / RAW_POINTS)
    with np.load(folder / COMPACT_POINTS) as store:
        return store["landmarks"]


def _write_arrays(folder: Path, settings: CacheSettings, points, detected, boxes, frame_indices) -> None:
    """The per-row arrays of a cache: landmarks (zipped when compact: lossless, 42 % smaller on the
    face and dance clips, where they are then a quarter of a WebP 80 cache at 128 px), detected,
    boxes, frame numbers (boxes / frame numbers None: not written)."""
    points = np.asarray(points, np.float32)
    if settings.storage == "raw":
        np.save(folder / RAW_POINTS, points)
    else:
        np.savez_compressed(folder / COMPACT_POINTS, landmarks=points)
    np.save(folder / "detected.npy", np.asarray(detected, bool))
    if boxes is not None:
        np.save(folder / "boxes.npy", np.asarray(boxes, np.float32))
    if frame_indices is not None:
        np.save(folder / "frame_indices.npy", np.asarray(frame_indices, np.int64))


# ----- preprocessing --------------------------------------------------------------------------------


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
        text = (
            f"{len(self.usable)} video(s) cached in {self.cache_dir} ({len(self.made)} new, {len(self.reused)} "
            f"reused, {self.bytes / 2**20:.1f} MiB), {len(self.skipped)} skipped"
        )
        return text + "".join(f"\n  skipped {path}: {reason}" for path, reason in self.skipped)


def find_videos(folder) -> list[Path]:
    """Video files under `folder` (recursively, hidden folders skipped), sorted; a video file alone
    is a list of itself.

    Raises:
        InputError: the folder does not exist or holds no video file.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() in VIDEO_SUFFIXES:
        return [folder]
    if not folder.is_dir():
        raise InputError(f"Data folder {folder} does not exist: give a folder of videos (mp4, mov, webm, ...).")
    videos = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not videos:
        raise InputError(
            f"Data folder {folder} holds no video file ({', '.join(sorted(VIDEO_SUFFIXES))}): "
            "give a folder of videos of faces or of people dancing."
        )
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


def _is_current(folder: Path, stamp: dict, settings: CacheSettings) -> bool:
    """A complete cache of the video file `stamp` (_source_stamp) with these settings exists."""
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        meta.get("format") == FORMAT_VERSION
        and _same_settings(meta.get("settings"), settings)
        and meta.get("source") == stamp
    )


def _crop_boxes(track, mode: str) -> np.ndarray:
    """(T, 4) inference crop boxes in frame pixels: the pipeline's own functions and defaults."""
    return track_crop_boxes(track.points, track.frame_size, mode)


def _enlarge(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Square boxes (T, 4) scaled by `factor` about their centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def preprocess_video(video: Path, folder: Path, settings: CacheSettings, name: str | None = None) -> dict:
    """Detect, crop and write one video's cache into `folder` (which must not exist yet).

    name: the cache's final folder name, recorded in meta.json (default: folder's name).
    Returns the meta dict written to meta.json.
    Raises:
        DetectionError: nothing (or fewer than 2 frames) detected. VideoError: unreadable file.
    """
    track = detect(str(video), mode=settings.mode, policy="interpolate", smooth=True, max_frames=settings.max_frames)
    detected = track.report.detected[track.frame_indices]
    if detected.sum() < MIN_DETECTED:
        raise DetectionError(
            f"only {int(detected.sum())} frame(s) with a {settings.mode} detected; "
            f"training needs at least {MIN_DETECTED}."
        )
    boxes = _crop_boxes(track, settings.mode)
    rows = np.arange(0, len(track), settings.frame_stride)
    stored = settings.stored_size
    transforms = transforms_from_boxes(_enlarge(boxes[rows], settings.context), track.frame_size, stored)
    folder.mkdir(parents=True)
    frames = frame_writer(folder, len(rows), stored, settings)
    wanted = {int(track.frame_indices[row]): i for i, row in enumerate(rows)}
    written = 0
    for index, frame in enumerate(iter_frames(video, max_frames=settings.max_frames)):
        if index in wanted:
            frames[wanted[index]] = crop_frame(frame, transforms[wanted[index]])
            written += 1
    if written != len(rows):
        raise VideoError(f"{video.name} gave {written} frames on the second read but {len(rows)} on the first.")
    frames.close()
    points = np.stack([t.to_crop(track.points[row]) for t, row in zip(transforms, rows)])
    _write_arrays(folder, settings, points, detected[rows], boxes[rows], track.frame_indices[rows])
    meta = {
        "format": FORMAT_VERSION,
        "tsnet_hf_version": __version__,
        "source": _source_stamp(video),
        "name": name or folder.name,
        "settings": settings_record(settings),
        "fps": float(track.fps),
        "frame_size": list(track.frame_size),
        "num_frames": int(len(rows)),
        "stored_size": stored,
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


def _build(folder: Path, make) -> None:
    """Run `make(partial)` on a temporary folder beside `folder`, then rename it to `folder`; on
    any error the temporary folder is removed and `folder` is left as it was."""
    partial = folder.with_name(f".partial-{folder.name}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        make(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _replace_folder(partial, folder)


def _process_one(video: Path, folder: Path, settings: CacheSettings) -> str | None:
    """Make one cache; returns None on success or the one-line reason the video is skipped."""
    try:
        _build(folder, lambda partial: preprocess_video(video, partial, settings, name=folder.name))
    except (DetectionError, VideoError) as error:
        return str(error)
    return None


def _start_cache_dir(cache_dir: Path) -> None:
    make_writable_dir(cache_dir, "cache folder", "--cache-dir")
    for leftover in cache_dir.glob(".partial-*"):  # from an interrupted run
        shutil.rmtree(leftover, ignore_errors=True)


def preprocess_folder(
    data_dir, cache_dir, settings: CacheSettings, force: bool = False, progress=print
) -> PreprocessReport:
    """Make (or reuse) the cache of every video under `data_dir` in `cache_dir`.

    Args:
        data_dir: folder of videos (searched recursively), or one video file.
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
    root = data_dir.parent if data_dir.is_file() else data_dir  # cache names are relative to it
    check_encoder(settings)
    _start_cache_dir(cache_dir)
    report = PreprocessReport(cache_dir)
    failed_before = {} if force else _failed_before(cache_dir, settings)
    say = progress or (lambda line: None)
    stamps = {}
    for number, video in enumerate(videos, 1):
        name, start = cache_name(video, root), time.perf_counter()
        folder = cache_dir / name
        relative = video.relative_to(root).as_posix()
        stamps[relative] = _source_stamp(video)
        previous = failed_before.get(relative)
        if previous is not None and previous["source"] == stamps[relative]:
            report.skipped.append((relative, previous["reason"]))
            say(f"[{number}/{len(videos)}] {relative}: skipped, as in the last run ({previous['reason']})")
            continue
        if not force and _is_current(folder, stamps[relative], settings):
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
            say(
                f"[{number}/{len(videos)}] {relative}: {meta['num_frames']} frames, "
                f"{meta['detection']['summary']} ({time.perf_counter() - start:.1f} s)"
            )
        report.bytes += _folder_bytes(folder)
    _write_json(
        cache_dir / INDEX_NAME,
        {
            "format": FORMAT_VERSION,
            "data_dir": str(data_dir.resolve()),
            "settings": settings_record(settings),
            "videos": report.usable,
            "bytes": report.bytes,
            "skipped": [{"video": v, "reason": r, "source": stamps[v]} for v, r in report.skipped],
        },
    )
    if not report.usable:
        raise InputError(
            f"No usable video in {data_dir}: landmark detection failed in all {len(videos)} "
            f"({report.skipped[0][1]}); use videos in which one {settings.mode} is clearly visible."
        )
    return report


def _failed_before(cache_dir: Path, settings: CacheSettings) -> dict:
    """Videos the last run with these settings skipped: {relative path: {"reason", "source"}}; a
    video is not detected again while its file is unchanged (use --force to retry)."""
    try:
        index = json.loads((cache_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if index.get("format") != FORMAT_VERSION or not _same_settings(index.get("settings"), settings):
        return {}
    return {entry["video"]: entry for entry in index.get("skipped", []) if "source" in entry}


# ----- conversion -----------------------------------------------------------------------------------


def read_cache_settings(cache_dir) -> CacheSettings:
    """The CacheSettings a cache's index.json records.

    Raises:
        InputError: `cache_dir` is not a cache.
    """
    cache_dir = Path(cache_dir)
    if not is_cache_dir(cache_dir):
        raise InputError(
            f"{cache_dir} is not a training cache (no {INDEX_NAME}): give a folder made by training/preprocess.py."
        )
    index = json.loads((cache_dir / INDEX_NAME).read_text(encoding="utf-8"))
    return CacheSettings.from_dict(index["settings"])


def convert_cache(
    source,
    cache_dir,
    storage: str = "webp",
    quality: int | None = None,
    frame_stride: int = 1,
    force: bool = False,
    progress=print,
) -> PreprocessReport:
    """Store an existing cache's frames in another storage without detecting again (detection is
    the slow part of preprocessing): the frames are re-encoded, the landmarks, detection flags,
    boxes and frame numbers copied as they are. The result is the cache preprocess_folder would
    make from the same videos with these settings (meta.json keeps the video's stamp, so a later
    run on the videos reuses it), plus "converted_from" in its meta.json and index.json.

    Args:
        source: a cache folder (raw or compact).
        cache_dir: output folder (not `source`); videos already converted with these settings are reused.
        storage, quality: as CacheSettings.
        frame_stride: keep every n-th row of `source` (the new cache's frame_stride is the product).
        force: convert again videos that are current.
        progress: called with one line of text per video (None: silent).
    Raises:
        InputError: `source` is not a cache, `cache_dir` is `source`, or bad settings.
    """
    source, cache_dir = Path(source), Path(cache_dir)
    old = read_cache_settings(source)
    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise InputError(f"frame_stride must be a positive integer, got {frame_stride!r}.")
    settings = CacheSettings(
        **{**asdict(old), "storage": storage, "quality": quality, "frame_stride": old.frame_stride * frame_stride}
    )
    if cache_dir.resolve() == source.resolve():
        raise InputError(f"Cannot convert {source} into itself: give another --cache-dir.")
    check_encoder(settings)
    index = json.loads((source / INDEX_NAME).read_text(encoding="utf-8"))
    _start_cache_dir(cache_dir)
    report, say = PreprocessReport(cache_dir), progress or (lambda line: None)
    names = [name for name in index.get("videos", []) if (source / name / META_NAME).is_file()]
    for number, name in enumerate(names, 1):
        folder, start = cache_dir / name, time.perf_counter()
        stamp = json.loads((source / name / META_NAME).read_text(encoding="utf-8")).get("source")
        if not force and _is_current(folder, stamp, settings):
            report.reused.append(name)
            say(f"[{number}/{len(names)}] {name}: converted already")
        else:
            _build(
                folder, lambda partial, name=name: _convert_video(source / name, partial, settings, frame_stride, name)
            )
            report.made.append(name)
            say(
                f"[{number}/{len(names)}] {name}: {_folder_bytes(source / name) / 2**20:.1f} -> "
                f"{_folder_bytes(folder) / 2**20:.2f} MiB ({time.perf_counter() - start:.1f} s)"
            )
        report.bytes += _folder_bytes(folder)
    skipped = index.get("skipped", [])
    report.skipped = [(entry["video"], entry["reason"]) for entry in skipped]
    _write_json(
        cache_dir / INDEX_NAME,
        {
            "format": FORMAT_VERSION,
            "data_dir": index.get("data_dir"),
            "settings": settings_record(settings),
            "videos": report.usable,
            "bytes": report.bytes,
            "skipped": skipped,
            "converted_from": str(source.resolve()),
        },
    )
    return report


def _convert_video(source: Path, folder: Path, settings: CacheSettings, stride: int, name: str) -> dict:
    """Write every `stride`-th row of the cache `source` into `folder` (new) with `settings`."""
    meta = json.loads((source / META_NAME).read_text(encoding="utf-8"))
    points, frames = read_points(source), read_frames(source)
    rows = np.arange(0, len(points), stride)
    folder.mkdir(parents=True)
    writer = frame_writer(folder, len(rows), int(meta["stored_size"]), settings)
    for i, row in enumerate(rows):
        writer[i] = frames[row]
    writer.close()
    optional = {
        key: np.load(source / f"{key}.npy")[rows] if (source / f"{key}.npy").is_file() else None
        for key in ("boxes", "frame_indices")
    }
    _write_arrays(folder, settings, points[rows], np.load(source / "detected.npy")[rows], **optional)
    meta.update(
        name=name,
        settings=settings_record(settings),
        num_frames=int(len(rows)),
        converted_from=str(source.resolve()),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    _write_json(folder / META_NAME, meta)  # last: a folder with meta.json is complete
    return meta


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
        raise InputError(
            f"Cannot write to the {what} {folder} ({error.strerror or error}): choose a folder you can write to{hint}."
        ) from None
    return folder


# ----- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Turn a folder of videos into TS-Net training caches (crops, landmarks, detection report), "
        "or convert a cache to another --storage / --frame-stride without detecting again."
    )
    parser.add_argument("data", help="folder of videos (searched recursively), or a cache to convert")
    parser.add_argument("--mode", choices=("face", "body"), default=None, help="required for videos")
    parser.add_argument("--cache-dir", required=True, help="output folder (one sub-folder per video)")
    parser.add_argument("--size", type=int, default=None, help="training resolution in pixels (default 256)")
    parser.add_argument(
        "--context",
        type=float,
        default=None,
        help="stored crop = this times the inference crop box, room for crop jitter (default 1.25)",
    )
    parser.add_argument(
        "--frame-stride",
        type=int,
        default=1,
        help="keep every n-th frame (of a cache: every n-th of its rows) (default 1)",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default="raw",
        help="frames as raw uint8 (memory-mapped; default), webp / jpeg images or an mp4v "
        "video (about 30 / 15 / 50 times smaller), decoded when training starts",
    )
    parser.add_argument(
        "--quality", type=int, default=None, help="webp / jpeg quality 1-100 (default 80 for webp, 90 for jpeg)"
    )
    parser.add_argument("--force", action="store_true", help="remake caches that are already current")
    return parser


def _convert_from_args(args) -> PreprocessReport:
    """`preprocess.py CACHE ...`: options that would need detecting again are refused."""
    old = read_cache_settings(args.data)
    for option, key in (("--mode", "mode"), ("--size", "size"), ("--context", "context")):
        value = getattr(args, key)
        if value is not None and value != getattr(old, key):
            raise InputError(
                f"{args.data} is a cache made with {option} {getattr(old, key)}, not {value}: "
                f"preprocess the videos again for another {option}."
            )
    if args.max_frames is not None:
        raise InputError(
            f"{args.data} is a cache, which --max-frames cannot shorten: preprocess the videos again with --max-frames."
        )
    return convert_cache(args.data, args.cache_dir, args.storage, args.quality, args.frame_stride, args.force)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if is_cache_dir(args.data):
            report = _convert_from_args(args)
        else:
            if args.mode is None:
                raise InputError("--mode (face or body) is required to preprocess a folder of videos.")
            settings = CacheSettings(
                args.mode,
                256 if args.size is None else args.size,
                1.25 if args.context is None else args.context,
                args.frame_stride,
                args.max_frames,
                args.storage,
                args.quality,
            )
            report = preprocess_folder(args.data, args.cache_dir, settings, force=args.force)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
