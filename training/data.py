"""Training clips from the caches of training/preprocess.py: self-supervised sampling (paper 3.2).

A clip is K subject frames and T target frames from two different segments of one video: the
target frames are the ground truth of the frames generated from their masks (self-reconstruction).
As the authors: a window of `span` consecutive usable frames (30, the length of the paper's
clips), cut in two; K subject frames from one part, T targets from the other (which part comes
first is random). Only frames where the detector found the face / person are used.

Augmentation, the same for the whole clip (authors' dataset code): the crop box jittered in scale
(per axis) and offset around the inference box, which is derived from the landmarks; brightness,
contrast, saturation and hue jitter; a horizontal flip, with the landmarks mirrored and renumbered
left <-> right (tsnet_hf.layouts.flip_horizontal). Masks are drawn after augmentation from the
moved landmarks with tsnet_hf.masks, the code the pipeline draws with at inference; body masks
get a limb width of 2-4 px at 256 (the authors' range; inference draws 3).

Every clip is a pure function of (seed, index): a run resumed at step s draws exactly the clips an
uninterrupted run would have drawn, whatever the number of loader workers.

Arrays are HWC uint8 RGB in the cache and (3, S, S) uint8 in a clip; `to_model_inputs` turns a
batch into the model's float tensors on the device.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tsnet_hf import layouts
from tsnet_hf.errors import InputError
from tsnet_hf.masks import draw_masks, line_width, render_mask_rgb

from .preprocess import INDEX_NAME, META_NAME, is_cache_dir, read_frames, read_points

MIN_CONFIDENCE = 0.5


@dataclass
class Augment:
    """Augmentation ranges (0 turns one off). `Augment.none()` is the validation setting.

    Attributes:
        scale: crop side multiplied by U(1 - scale, 1 + scale), per axis (authors: 0.2).
        offset: crop centre moved by U(-offset, offset) times the side, per axis (authors: 0.1).
        flip: probability of a horizontal flip (0.5).
        brightness, contrast, saturation: factors U(1 - v, 1 + v) (authors: 64/255, 0.25, 0.25).
        hue: shift U(-hue, hue) of a full turn (authors: 0.04).
        body_width: (min, max) limb width of body masks in pixels at 256 (authors: 2-4).
    """

    scale: float = 0.1
    offset: float = 0.05
    flip: float = 0.5
    brightness: float = 64 / 255
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.04
    body_width: tuple[int, int] = (2, 4)

    @classmethod
    def none(cls) -> "Augment":
        return cls(
            scale=0.0, offset=0.0, flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, body_width=(3, 3)
        )


# ----- caches -------------------------------------------------------------------------------------


class CachedVideo:
    """One video's cache (training/preprocess.py). The frames are read on first use, in each loader
    worker separately (they are never pickled): a raw cache's frames.npy is memory-mapped, a
    compact (webp / jpeg) cache's frames are all decoded then and kept in memory (T x S'^2 x 3
    bytes: 1.05 GiB for the 14k frames of the face clips at 128 px, per worker).

    Attributes:
        name, folder, meta: folder name, path, meta.json contents.
        points: (T, P, 3) float32 landmarks in stored-crop pixels. detected: (T,) bool.
        size: training resolution S; stored_size: S' of the stored crops; context: S' / S.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_NAME).read_text(encoding="utf-8"))
        self.name = self.folder.name
        self.points = read_points(self.folder)
        self.detected = np.load(self.folder / "detected.npy")
        settings = self.meta["settings"]
        self.mode, self.size, self.context = settings["mode"], int(settings["size"]), float(settings["context"])
        self.stored_size = int(self.meta["stored_size"])
        self._frames = None

    def __len__(self) -> int:
        return len(self.points)

    @property
    def frames(self) -> np.ndarray:
        """(T, S', S', 3) uint8 RGB, read-only: memory-mapped, or decoded once (compact caches)."""
        if self._frames is None:
            self._frames = read_frames(self.folder)
        return self._frames

    @property
    def usable_rows(self) -> np.ndarray:
        """Rows whose frame had a detection (int64)."""
        return np.flatnonzero(self.detected)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_frames"] = None
        return state


def open_cache(cache_dir, mode: str, size: int) -> list[CachedVideo]:
    """The videos of a cache made for `mode` at resolution `size`.

    Raises:
        InputError: not a cache, no usable video in it, or made for another mode or size.
    """
    cache_dir = Path(cache_dir)
    if not is_cache_dir(cache_dir):
        raise InputError(
            f"{cache_dir} is not a training cache (no {INDEX_NAME}): make one with "
            "python training/preprocess.py VIDEOS --mode MODE --cache-dir DIR."
        )
    index = json.loads((cache_dir / INDEX_NAME).read_text(encoding="utf-8"))
    settings = index.get("settings", {})
    if settings.get("mode") != mode or settings.get("size") != size:
        raise InputError(
            f"{cache_dir} was made for mode {settings.get('mode')!r} at {settings.get('size')} px but "
            f"this run needs {mode!r} at {size} px: preprocess into another --cache-dir."
        )
    videos = [
        CachedVideo(cache_dir / name) for name in index.get("videos", []) if (cache_dir / name / META_NAME).is_file()
    ]
    videos = [v for v in videos if len(v.usable_rows) >= 2]
    if not videos:
        raise InputError(
            f"{cache_dir} holds no usable video (every video was skipped: see its {INDEX_NAME}); "
            "add videos in which one face or person is clearly visible."
        )
    return videos


@dataclass
class Source:
    """A video and the rows of it a dataset may use (int64, sorted)."""

    video: CachedVideo
    rows: np.ndarray


def cache_resolution(folder) -> int | None:
    """The training resolution a cache folder was made for (None for a folder of videos)."""
    index = Path(folder) / INDEX_NAME if folder else None
    if index is None or not index.is_file():
        return None
    return json.loads(index.read_text(encoding="utf-8")).get("settings", {}).get("size")


def cache_source_name(cache) -> str:
    """The name of the videos a cache was made from (its folder, or the one video), for model cards."""
    try:
        source = json.loads((Path(cache) / INDEX_NAME).read_text(encoding="utf-8")).get("data_dir")
    except (OSError, ValueError):
        source = None
    return Path(source or cache).name


def split_sources(
    videos: list[CachedVideo], val_fraction: float, seed: int = 0, by: str = "video"
) -> tuple[list[Source], list[Source]]:
    """Training and validation sources.

    Args:
        videos: from `open_cache`.
        val_fraction: share held out for validation (0: none).
        by: "video" (whole videos held out; the paper's split) or "time" (the last
            `val_fraction` of every video's usable frames held out; for one-video fine-tuning).
            "video" with a single video falls back to "time".
    Returns:
        (train sources, validation sources); validation may be empty.
    """
    if by not in ("video", "time"):
        raise InputError(f"Validation split must be 'video' or 'time', got {by!r}.")
    if val_fraction <= 0:
        return [Source(v, v.usable_rows) for v in videos], []
    if by == "time" or len(videos) < 2:
        train, val = [], []
        for video in videos:
            rows = video.usable_rows
            if len(rows) < 4:  # too short to split: both parts need 2 frames
                train.append(Source(video, rows))
                continue
            cut = min(len(rows) - 2, max(2, round(len(rows) * (1 - val_fraction))))
            train.append(Source(video, rows[:cut]))
            val.append(Source(video, rows[cut:]))
        return train, val
    order = np.random.default_rng(seed).permutation(len(videos))
    held = max(1, int(round(len(videos) * val_fraction)))
    val_ids = set(order[:held].tolist())
    train = [Source(v, v.usable_rows) for i, v in enumerate(videos) if i not in val_ids]
    val = [Source(v, v.usable_rows) for i, v in enumerate(videos) if i in val_ids]
    return train, val


def split_by_name(videos: list[CachedVideo], holdout: list[str]) -> tuple[list[Source], list[Source]]:
    """Hold out whole videos by name: those whose cache name contains one of `holdout` validate,
    the others train. Give every clip of a person, so that validation measures people never seen.

    Raises:
        InputError: no video matches, or every video does.
    """
    held = [v for v in videos if any(part in v.name for part in holdout)]
    if not held:
        raise InputError(
            f"No cached video matches --holdout {' '.join(holdout)}: give parts of the names listed "
            "in the cache's index.json."
        )
    if len(held) == len(videos):
        raise InputError(f"--holdout {' '.join(holdout)} matches every cached video: nothing is left to train on.")
    train = [Source(v, v.usable_rows) for v in videos if v not in held]
    return train, [Source(v, v.usable_rows) for v in held]


# ----- sampling -----------------------------------------------------------------------------------


def sample_clip_rows(
    rows: np.ndarray, rng: np.random.Generator, num_subject: int, num_targets: int, span: int
) -> tuple[np.ndarray, np.ndarray]:
    """K subject rows and T target rows from two segments of a window of `span` usable rows.

    Returns (subject rows (K,), target rows (T,)), int64, each sorted; rows repeat only when a
    segment holds fewer frames than asked.
    """
    width = min(max(span, 2), len(rows))
    start = int(rng.integers(0, len(rows) - width + 1))
    window = rows[start : start + width]
    low, high = (num_subject, width - num_targets) if width >= num_subject + num_targets else (1, width - 1)
    cut = int(rng.integers(low, high + 1))
    first, second = window[:cut], window[cut:]
    if rng.random() < 0.5 and len(first) >= num_targets and len(second) >= num_subject:
        first, second = second, first  # subject segment after the targets
    subject = np.sort(rng.choice(first, num_subject, replace=len(first) < num_subject))
    targets = np.sort(rng.choice(second, num_targets, replace=len(second) < num_targets))
    return subject, targets


def crop_matrix(stored_size: int, context: float, size: int, scale=(1.0, 1.0), offset=(0.0, 0.0)) -> np.ndarray:
    """(2, 3) affine from stored-crop pixels to training-crop pixels (pixel centres at integers).

    The training crop is the inference box (the centred 1 / context of the stored crop) with its
    sides multiplied by `scale` (x, y) and its centre moved by `offset` (x, y) times its side.
    """
    side = stored_size / context
    widths = side * np.asarray(scale, dtype=np.float64)
    corners = stored_size / 2 - widths / 2 + side * np.asarray(offset, dtype=np.float64)
    gains = size / widths
    return np.array(
        [[gains[0], 0.0, gains[0] * (0.5 - corners[0]) - 0.5], [0.0, gains[1], gains[1] * (0.5 - corners[1]) - 0.5]]
    )


def warp_clip(images: np.ndarray, points: np.ndarray, matrix: np.ndarray, size: int):
    """Apply a (2, 3) affine to (F, S', S', 3) uint8 images and (F, P, 3) points -> size x size."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.warpAffine(
            np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    moved = points.copy()
    moved[..., :2] = points[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    return out, moved


def jitter_colors(images: np.ndarray, rng: np.random.Generator, augment: Augment) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter with one draw for all (F, H, W, 3) uint8 RGB
    frames of a clip (the order and formulas of torchvision's functional adjust_*)."""
    factor = lambda v: rng.uniform(max(0.0, 1 - v), 1 + v) if v else 1.0  # noqa: E731
    brightness, contrast, saturation = factor(augment.brightness), factor(augment.contrast), factor(augment.saturation)
    hue = rng.uniform(-augment.hue, augment.hue) if augment.hue else 0.0
    if (brightness, contrast, saturation, hue) == (1.0, 1.0, 1.0, 0.0):
        return images
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    x = np.clip(images.astype(np.float32) * brightness, 0, 255)
    mean = (x @ luma).mean(axis=(1, 2))[:, None, None, None]  # (F, 1, 1, 1)
    x = np.clip((x - mean) * contrast + mean, 0, 255)
    gray = (x @ luma)[..., None]
    x = np.clip((x - gray) * saturation + gray, 0, 255).astype(np.uint8)
    if hue:
        for i, frame in enumerate(x):
            hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)  # H in [0, 180)
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(hue * 180))) % 180
            x[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return x


def face_boxes(points: np.ndarray, size: int) -> np.ndarray:
    """(T, 4) float32 square boxes (x0, y0, x1, y1) around the face in (T, 135, 3) body landmarks,
    for the face discriminator (the authors' rule): centred between the face's left and right
    extremes, 2/5 of the way down, side 2.5 face widths (at least size/8), kept inside the image.
    Falls back to the head joints (nose, eyes, ears), then to the top centre of the image."""
    head = [0, 15, 16, 17, 18]
    boxes = np.empty((len(points), 4), np.float32)
    for t, frame in enumerate(points):
        face = frame[layouts.FACE_SLICE]
        face = face[face[:, 2] >= MIN_CONFIDENCE]
        if len(face) < 3:
            face = frame[head][frame[head, 2] >= MIN_CONFIDENCE]
        if len(face) >= 2:
            (x0, y0), (x1, y1) = face[:, :2].min(axis=0), face[:, :2].max(axis=0)
            centre = np.array([(x0 + x1) / 2, (3 * y0 + 2 * y1) / 5])
            side = float(np.clip(2.5 * (x1 - x0), size / 8, size))
        else:
            centre, side = np.array([size / 2, size / 4]), size / 4
        centre = np.clip(centre, side / 2, size - side / 2)
        boxes[t] = (*(centre - side / 2), *(centre + side / 2))
    return boxes


class ClipDataset(torch.utils.data.Dataset):
    """Clip number `index` -> dict of numpy arrays (a pure function of seed and index):

        subject_images (K, 3, S, S) uint8 RGB   subject_labels (K, S, S) uint8 mask labels
        target_images  (T, 3, S, S) uint8 RGB   target_labels  (T, S, S) uint8
        target_points  (T, P, 3) float32 landmarks in crop pixels
        face_boxes     (T, 4) float32 (bodies; zeros for faces)
        video (int), rows (K + T,) int64 cache rows used

    Args:
        sources: from `split_sources`; a video is picked uniformly, then a clip in it.
        size: training resolution S. num_subject: K. num_targets: T. span: window (frames).
        augment: Augment (Augment.none() for validation). seed: base of every draw.
    """

    def __init__(
        self,
        sources: list[Source],
        size: int,
        num_subject: int = 3,
        num_targets: int = 1,
        span: int = 30,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        if not sources:
            raise InputError("No video to sample clips from: give at least one usable video.")
        self.sources, self.size, self.seed = sources, size, seed
        self.num_subject, self.num_targets, self.span = num_subject, num_targets, span
        self.augment = augment or Augment()
        self.mode = sources[0].video.mode

    def __len__(self) -> int:
        return 2**62  # clips are drawn by index; the sampler decides how many

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        source_id = int(rng.integers(len(self.sources)))
        source = self.sources[source_id]
        subject, targets = sample_clip_rows(source.rows, rng, self.num_subject, self.num_targets, self.span)
        rows = np.concatenate([subject, targets])
        images, points = self._geometry(source.video, rows, rng)
        images = jitter_colors(images, rng, self.augment)
        labels = self._labels(points, rng)
        k, size = self.num_subject, self.size
        chw = images.transpose(0, 3, 1, 2)
        boxes = face_boxes(points[k:], size) if self.mode == "body" else np.zeros((len(targets), 4), np.float32)
        return {
            "subject_images": np.ascontiguousarray(chw[:k]),
            "subject_labels": labels[:k],
            "target_images": np.ascontiguousarray(chw[k:]),
            "target_labels": labels[k:],
            "target_points": points[k:].astype(np.float32),
            "face_boxes": boxes,
            "video": source_id,
            "rows": rows,
        }

    def _geometry(self, video: CachedVideo, rows: np.ndarray, rng: np.random.Generator):
        a = self.augment
        scale = rng.uniform(1 - a.scale, 1 + a.scale, 2) if a.scale else (1.0, 1.0)
        offset = rng.uniform(-a.offset, a.offset, 2) if a.offset else (0.0, 0.0)
        matrix = crop_matrix(video.stored_size, video.context, self.size, scale, offset)
        images, points = warp_clip(video.frames[rows], video.points[rows], matrix, self.size)
        if a.flip and rng.random() < a.flip:
            images = np.ascontiguousarray(images[:, :, ::-1])
            points = layouts.flip_horizontal(points, self.size)
        return images, points

    def _labels(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = (self.size, self.size)
        if self.mode == "face":
            return draw_masks(points, size)
        low, high = (line_width(w, size) for w in self.augment.body_width)
        return draw_masks(points, size, width=int(rng.integers(low, high + 1)))


def central_view(video: CachedVideo, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The inference crop of some rows, without augmentation: ((N, S, S, 3) uint8 RGB, (N, P, 3)
    float32 landmarks in crop pixels). Used by validation and evaluation."""
    matrix = crop_matrix(video.stored_size, video.context, size)
    return warp_clip(video.frames[np.asarray(rows)], video.points[np.asarray(rows)], matrix, size)


# ----- batches --------------------------------------------------------------------------------------


class StepSampler(torch.utils.data.Sampler):
    """Clip indices for training steps [start, stop): step s of process p (of `world`) takes
    indices (s * world + p) * batch + j for j < batch, so that a resumed run and every process
    draw their own, reproducible clips."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch

    def __iter__(self):
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)


@dataclass
class Batch:
    """A batch on the device, in the model's formats (B clips of K subject frames and T targets).

    subject_frames (B, K, 3, S, S) float RGB in [-1, 1]; subject_masks (B, K, C, S, S) one-hot;
    driving_masks (B*T, C, S, S) one-hot; targets (B*T, 3, S, S) in [-1, 1]; face_boxes (B*T, 4);
    target_labels (B*T, S, S) long; target_points (B*T, P, 3).
    """

    subject_frames: torch.Tensor
    subject_masks: torch.Tensor
    driving_masks: torch.Tensor
    targets: torch.Tensor
    face_boxes: torch.Tensor
    target_labels: torch.Tensor
    target_points: torch.Tensor


def to_model_inputs(batch: dict, device, channels: int) -> Batch:
    """Collated ClipDataset items -> a Batch on `device` (one-hot masks made there)."""

    def frames(images):  # uint8 (..., 3, S, S) -> float in [-1, 1]
        return images.to(device, non_blocking=True).float() / 127.5 - 1

    def onehot(labels):  # (..., S, S) -> (..., C, S, S)
        return F.one_hot(labels.to(device, non_blocking=True).long(), channels).movedim(-1, -3).float()

    target_labels = batch["target_labels"].flatten(0, 1)
    return Batch(
        subject_frames=frames(batch["subject_images"]),
        subject_masks=onehot(batch["subject_labels"]),
        driving_masks=onehot(target_labels),
        targets=frames(batch["target_images"].flatten(0, 1)),
        face_boxes=batch["face_boxes"].flatten(0, 1).to(device).float(),
        target_labels=target_labels.to(device).long(),
        target_points=batch["target_points"].flatten(0, 1).to(device),
    )


def render_labels(labels: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 RGB picture (tsnet_hf.masks.render_mask_rgb)."""
    return render_mask_rgb(labels, mode)
