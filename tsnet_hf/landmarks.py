"""2-D landmarks for TS-Net masks: faces in the 68-point dlib layout, bodies in an OpenPose layout.

mediapipe's legacy FaceMesh and Holistic (their models ship in the wheel, so detection runs offline)
are mapped onto the paper's layouts (section 4.1) by FACEMESH_TO_DLIB68 and POSE33_TO_BODY25.
Frames in are HxWx3 uint8 RGB; landmarks out are float32 (T, P, 3): x, y in frame pixels, then a
confidence in [0, 1] (0 = missing). docs/landmarks.md explains the mappings, the missing-detection
policies (POLICIES) and mode="auto".
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import DetectionError, InputError, TSNetError
from .layouts import (
    BODY_POINTS,
    BODY_SLICE,
    FACE_POINTS,
    FACE_SLICE,
    LEFT_HAND_SLICE,
    RIGHT_HAND_SLICE,
)
from .smoothing import smooth_track
from .video import iter_frames, open_video

__all__ = [
    "FACEMESH_TO_DLIB68",
    "POSE33_TO_BODY25",
    "POLICIES",
    "DetectionReport",
    "LandmarkTrack",
    "detect",
    "detect_face",
    "detect_body",
    "detect_image",
    "choose_mode",
    "fill_missing",
    "fill_point_gaps",
]

# FaceMesh index of each dlib-68 point, in dlib's order (docs/landmarks.md spells it out).
FACEMESH_TO_DLIB68 = (
    162,
    234,
    93,
    58,
    172,
    136,
    149,
    148,
    152,
    377,
    378,
    365,
    397,
    288,
    323,
    454,
    389,  # jaw
    71,
    63,
    105,
    66,
    107,  # image-left brow, outer to inner
    336,
    296,
    334,
    293,
    301,  # image-right brow, inner to outer
    168,
    197,
    5,
    4,  # nose bridge, top to tip
    75,
    97,
    2,
    326,
    305,  # nose base, left to right
    33,
    160,
    158,
    133,
    153,
    144,  # image-left eye: outer corner, upper lid, inner corner, lower
    362,
    385,
    387,
    263,
    373,
    380,  # image-right eye: inner corner, upper lid, outer corner, lower
    61,
    39,
    37,
    0,
    267,
    269,
    291,
    405,
    314,
    17,
    84,
    181,  # outer lips from the left corner
    78,
    82,
    13,
    312,
    308,
    317,
    14,
    87,  # inner lips from the left corner
)

# Mediapipe pose points averaged into each BODY_25 joint; () = no counterpart (always missing).
POSE33_TO_BODY25 = (
    (0,),  # 0 Nose
    (11, 12),  # 1 Neck = mid-shoulders
    (12,),
    (14,),
    (16,),  # 2-4 RShoulder, RElbow, RWrist
    (11,),
    (13,),
    (15,),  # 5-7 LShoulder, LElbow, LWrist
    (23, 24),  # 8 MidHip = mid-hips
    (24,),
    (26,),
    (28,),  # 9-11 RHip, RKnee, RAnkle
    (23,),
    (25,),
    (27,),  # 12-14 LHip, LKnee, LAnkle
    (5,),
    (2,),
    (8,),
    (7,),  # 15-18 REye, LEye, REar, LEar
    (31,),
    (),
    (29,),  # 19-21 LBigToe (foot index), LSmallToe (none), LHeel
    (32,),
    (),
    (30,),  # 22-24 RBigToe (foot index), RSmallToe (none), RHeel
)

POLICIES = ("interpolate", "hold", "drop")
FILL_KINDS = ("none", "interpolated", "held", "dropped")


@dataclass
class DetectionReport:
    """What was detected in each input frame and what was filled in.

    detected: (N,) bool, one per input frame (N counts every frame read, dropped ones too).
    filled: N strings, each "none" (detected), "interpolated", "held" or "dropped".
    policy: the missing-detection policy used.
    points_filled: number of single points (hands, face in body tracks) interpolated across
        short gaps inside detected frames.
    """

    detected: np.ndarray
    filled: tuple[str, ...]
    policy: str
    points_filled: int = 0

    def __post_init__(self):
        self.detected = np.asarray(self.detected, dtype=bool)
        self.filled = tuple(self.filled)
        if len(self.filled) != len(self.detected) or not set(self.filled) <= set(FILL_KINDS):
            raise InputError(
                f"A DetectionReport needs one fill kind from {FILL_KINDS} per frame; build it with fill_missing."
            )

    @property
    def num_frames(self) -> int:
        return len(self.detected)

    @property
    def num_detected(self) -> int:
        return int(self.detected.sum())

    @property
    def detection_rate(self) -> float:
        """Fraction of input frames with a detection, in [0, 1]."""
        return self.num_detected / max(self.num_frames, 1)

    def counts(self) -> dict[str, int]:
        """Number of frames per fill kind ("none" = detected), plus "detected" and "frames"."""
        counts = {kind: self.filled.count(kind) for kind in FILL_KINDS}
        counts.update(detected=self.num_detected, frames=self.num_frames)
        return counts

    def summary(self) -> str:
        """One line: detection rate, what was filled, and the first missing frame ranges."""
        c = self.counts()
        text = (
            f"{c['detected']}/{c['frames']} frames detected ({100 * self.detection_rate:.1f}%); "
            f"{c['interpolated']} interpolated, {c['held']} held, {c['dropped']} dropped "
            f"(policy {self.policy!r})"
        )
        if self.points_filled:
            text += f"; {self.points_filled} hand/face points filled across short gaps"
        missing = _ranges(np.flatnonzero(~self.detected))
        if missing:
            shown = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in missing[:5])
            text += f"; missing frames: {shown}{', ...' if len(missing) > 5 else ''}"
        return text + "."


def _ranges(indices: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive integers in sorted `indices`, as (first, last) pairs."""
    runs = []
    for index in indices.tolist():
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


@dataclass
class LandmarkTrack:
    """Landmarks of one face or person over a video.

    points: (T, P, 3) float32; x, y in pixels of the frame, confidence in [0, 1] (0 = missing).
        P = 68 (mode "face", dlib layout) or 135 (mode "body", BODY_25 + hands + face).
    mode: "face" or "body".
    frame_size: (H, W) of the frames, in pixels.
    fps: frames per second of the source.
    report: per input frame, what was detected and filled (see DetectionReport).
    frame_indices: (T,) int64, the input frame each row belongs to (differs from arange(T)
        only with the "drop" policy).
    smoothed: whether the One-Euro filter was applied.
    """

    points: np.ndarray
    mode: str
    frame_size: tuple[int, int]
    fps: float
    report: DetectionReport
    frame_indices: np.ndarray = None
    smoothed: bool = False

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32)
        if self.mode not in ("face", "body"):
            raise InputError(f"Unknown landmark mode {self.mode!r}; use 'face' or 'body'.")
        expected = FACE_POINTS if self.mode == "face" else BODY_POINTS
        if self.points.ndim != 3 or self.points.shape[1:] != (expected, 3):
            raise InputError(
                f"A {self.mode!r} LandmarkTrack needs points of shape (T, {expected}, 3), got "
                f"{self.points.shape}; pass x, y, confidence for each of the {expected} points."
            )
        if self.frame_indices is None:
            self.frame_indices = np.arange(len(self.points))
        self.frame_indices = np.asarray(self.frame_indices, dtype=np.int64)
        self.frame_size = tuple(int(v) for v in self.frame_size)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def times(self) -> np.ndarray:
        """(T,) float64 time of each row in seconds."""
        return self.frame_indices / float(self.fps)

    def save(self, path: str | os.PathLike) -> None:
        """Write the track to a .npz file (numbers only, no pickles)."""
        np.savez_compressed(
            path,
            points=self.points,
            mode=self.mode,
            frame_size=np.asarray(self.frame_size),
            fps=self.fps,
            frame_indices=self.frame_indices,
            detected=self.report.detected,
            filled=np.asarray(self.report.filled),
            policy=self.report.policy,
            points_filled=self.report.points_filled,
            smoothed=self.smoothed,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> LandmarkTrack:
        """Read a track written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                report = DetectionReport(
                    data["detected"],
                    tuple(data["filled"].tolist()),
                    str(data["policy"]),
                    int(data["points_filled"]),
                )
                return cls(
                    data["points"],
                    str(data["mode"]),
                    tuple(data["frame_size"].tolist()),
                    float(data["fps"]),
                    report,
                    data["frame_indices"],
                    bool(data["smoothed"]),
                )
        except (OSError, ValueError, KeyError) as error:
            raise InputError(
                f"Cannot read a landmark track from {path} ({error}); pass a .npz written by LandmarkTrack.save."
            ) from None


# ----------------------------------------------------------------------------------------------
# Missing detections


def fill_missing(
    points: np.ndarray, detected: np.ndarray, policy: str = "interpolate"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Fill (or drop) the frames without a detection.

    points: (N, P, 3) float32 per input frame; rows of undetected frames are ignored.
    detected: (N,) bool, at least one True.
    policy: "interpolate", "hold" or "drop" (see the module docstring).
    Returns (points (T, P, 3) float32, frame_indices (T,) int64, filled: N fill kinds).
    """
    if policy not in POLICIES:
        raise InputError(f"Unknown missing-detection policy {policy!r}; use one of {POLICIES}.")
    detected = np.asarray(detected, dtype=bool)
    found = np.flatnonzero(detected)
    if found.size == 0:
        raise DetectionError("Nothing was detected in any frame; use a video that shows the subject.")
    points = np.asarray(points, dtype=np.float32)
    frames = np.arange(len(detected))
    if policy == "drop":
        filled = np.where(detected, "none", "dropped")
        return points[found], found, tuple(filled.tolist())
    # Index of the last detection at or before each frame, and the next one at or after it.
    prev = np.maximum.accumulate(np.where(detected, frames, -1))
    nxt = np.minimum.accumulate(np.where(detected, frames, len(frames))[::-1])[::-1]
    inside = (prev >= 0) & (nxt < len(frames)) & ~detected
    held_from = np.where(prev >= 0, prev, found[0])  # before the first detection: hold it
    out = points[held_from].copy()
    filled = np.where(detected, "none", "held").astype(object)  # object: room for "interpolated"
    if policy == "interpolate" and inside.any():
        out[inside] = _lerp_frames(points, prev[inside], nxt[inside], frames[inside])
        filled[inside] = "interpolated"
    return out, frames, tuple(filled.tolist())


def _lerp_frames(points: np.ndarray, prev: np.ndarray, nxt: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(K, P, 3) points at frames `at`, linear between frames `prev` and `nxt` (all (K,)).

    A point missing (confidence 0) at either end stays missing.
    """
    w = ((at - prev) / (nxt - prev))[:, None, None].astype(np.float32)  # (K, 1, 1) in (0, 1)
    a, b = points[prev], points[nxt]  # (K, P, 3)
    out = (1 - w) * a + w * b
    both = (a[..., 2] > 0) & (b[..., 2] > 0)  # (K, P)
    out[~both] = 0.0
    return out


def fill_point_gaps(points: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """Interpolate single points missing for at most `max_gap` frames between two sightings.

    points: (T, P, 3) float32, confidence 0 = missing. Gaps at the start or end stay missing.
    Returns (filled copy (T, P, 3) float32, number of point-frames filled).
    """
    out = np.array(points, dtype=np.float32)
    if max_gap <= 0 or len(out) < 3:
        return out, 0
    count = 0
    for p in range(out.shape[1]):
        present = out[:, p, 2] > 0
        seen = np.flatnonzero(present)
        if seen.size < 2:
            continue
        gaps = np.diff(seen) - 1  # missing frames between consecutive sightings
        for i in np.flatnonzero((gaps > 0) & (gaps <= max_gap)):
            start, end = seen[i], seen[i + 1]
            w = (np.arange(1, end - start, dtype=np.float32) / (end - start))[:, None]  # (gap, 1)
            out[start + 1 : end, p] = (1 - w) * out[start, p] + w * out[end, p]
            count += int(end - start - 1)
    return out, count


# ----------------------------------------------------------------------------------------------
# Frames in


DEFAULT_FPS = 30.0  # assumed for frames given without an fps


@dataclass
class _Source:
    """Frames to detect on: an iterator of HxWx3 uint8 RGB arrays, their fps and a name."""

    frames: Iterator[np.ndarray]
    fps: float
    name: str


def _open_source(source, fps: float | None, max_frames: int | None) -> _Source:
    """A _Source from a video path, a (T, H, W, 3) uint8 array or an iterable of frames."""
    if isinstance(source, (str, os.PathLike)):
        info, frames = open_video(source, max_frames=max_frames)
        return _Source(
            frames,
            fps or info.fps or DEFAULT_FPS,  # info.fps is None for an image
            os.path.basename(source),
        )
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise InputError(
            f"Expected frames of shape (T, H, W, 3), got {source.shape}; for a single photo use detect_image."
        )
    if not isinstance(source, Iterable):
        raise InputError(
            f"Cannot read frames from a {type(source).__name__}; pass a video path, a "
            "(T, H, W, 3) uint8 RGB array or an iterable of HxWx3 uint8 RGB frames."
        )
    frames = iter(source)
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
    return _Source(frames, fps or DEFAULT_FPS, "the given frames")


def _check_frame(frame, size: tuple[int, int] | None, index: int) -> tuple[int, int]:
    """Check one HxWx3 uint8 RGB frame (same size as the previous ones); return (H, W)."""
    frame_ok = isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
    if not frame_ok or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InputError(
            f"Frame {index} has shape {shape} and dtype {dtype}; landmarks need HxWx3 uint8 RGB "
            "frames (convert with np.clip(x * 255, 0, 255).astype(np.uint8) if in [0, 1])."
        )
    if size is not None and frame.shape[:2] != size:
        raise InputError(
            f"Frame {index} is {frame.shape[1]}x{frame.shape[0]} but earlier frames are "
            f"{size[1]}x{size[0]}; resize all frames of a video to one size."
        )
    return frame.shape[:2]


def _read_image(image) -> np.ndarray:
    """An HxWx3 uint8 RGB image from an array or a file (an image, or a video's first frame)."""
    if not isinstance(image, (str, os.PathLike)):
        _check_frame(image, None, 0)
        return image
    return next(iter(iter_frames(image, max_frames=1)))


# ----------------------------------------------------------------------------------------------
# Mediapipe, imported lazily


def _solutions():
    """mediapipe.python.solutions, or an error saying how to install it."""
    try:  # lazy: importing mediapipe takes 0.9 s and `import tsnet_hf` must not load it
        from mediapipe.python import solutions
    except ImportError:
        raise TSNetError(
            "Landmark detection needs mediapipe's legacy solutions; install them with pip install mediapipe==0.10.21."
        ) from None
    return solutions


def _to_pixels(landmarks, size: tuple[int, int]) -> np.ndarray:
    """(K, 2) float32 pixel x, y of a mediapipe NormalizedLandmarkList on an (H, W) frame."""
    xy = np.array([(p.x, p.y) for p in landmarks.landmark], dtype=np.float32)
    return xy * np.array([size[1], size[0]], dtype=np.float32)


def _with_confidence(xy: np.ndarray, confidence) -> np.ndarray:
    """(K, 2) pixels + a confidence (scalar or (K,)) -> (K, 3) float32."""
    conf = np.broadcast_to(np.asarray(confidence, dtype=np.float32), (len(xy),))
    return np.concatenate([xy, conf[:, None]], axis=1).astype(np.float32)


def _box(xy: np.ndarray) -> np.ndarray:
    """(4,) x0, y0, x1, y1 bounding box of (K, 2) points."""
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(F,) intersection over union of one (4,) box with (F, 4) boxes."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-6)


def _pick_face(boxes: np.ndarray, previous: np.ndarray | None) -> int:
    """Index of the most prominent face among (F, 4) boxes: the one overlapping the previous
    choice most, or the largest when there is no previous choice or no overlap."""
    if previous is not None:
        overlap = _iou(previous, boxes)
        if overlap.max() > 0.1:
            return int(overlap.argmax())
    return int(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1).argmax())


class _FaceMeshDetector:
    """FaceMesh on HxWx3 uint8 RGB frames -> (68, 3) dlib points of the most prominent face."""

    def __init__(self, static: bool, max_faces: int, min_detection: float, min_tracking: float):
        self._mesh = _solutions().face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_detection,
            min_tracking_confidence=min_tracking,
        )
        self._previous_box = None  # box of the face chosen in the last frame with a face

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(frame)
        if not result.multi_face_landmarks:
            return None
        faces = [_to_pixels(face, frame.shape[:2]) for face in result.multi_face_landmarks]
        boxes = np.stack([_box(face) for face in faces])  # (F, 4)
        chosen = _pick_face(boxes, self._previous_box)
        self._previous_box = boxes[chosen]
        return _with_confidence(faces[chosen][list(FACEMESH_TO_DLIB68)], 1.0)

    def close(self) -> None:
        self._mesh.close()


class _HolisticDetector:
    """Holistic on HxWx3 uint8 RGB frames -> (135, 3) body points (None: no person)."""

    def __init__(self, static: bool, min_detection: float, min_tracking: float):
        self._holistic = _solutions().holistic.Holistic(
            static_image_mode=static,
            model_complexity=1,  # 0 and 2 download a model: only 1 runs offline
            smooth_landmarks=False,  # smoothing happens once, in tsnet_hf.smoothing
            refine_face_landmarks=False,  # the dlib-68 subset needs no iris points
            min_detection_confidence=min_detection,
            min_tracking_confidence=min_tracking,
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        result = self._holistic.process(frame)
        if result.pose_landmarks is None:
            return None
        size = frame.shape[:2]
        points = np.zeros((BODY_POINTS, 3), dtype=np.float32)
        points[BODY_SLICE] = _pose_to_body25(result.pose_landmarks, size)
        for part, hand in (
            (LEFT_HAND_SLICE, result.left_hand_landmarks),
            (RIGHT_HAND_SLICE, result.right_hand_landmarks),
        ):
            if hand is not None:
                points[part] = _with_confidence(_to_pixels(hand, size), 1.0)
        if result.face_landmarks is not None:
            face = _to_pixels(result.face_landmarks, size)[list(FACEMESH_TO_DLIB68)]
            points[FACE_SLICE] = _with_confidence(face, 1.0)
        return points

    def close(self) -> None:
        self._holistic.close()


def _pose_to_body25(pose, size: tuple[int, int]) -> np.ndarray:
    """(25, 3) BODY_25 points from mediapipe's 33 pose landmarks (confidence = visibility)."""
    xy = _to_pixels(pose, size)  # (33, 2)
    visibility = np.array([p.visibility for p in pose.landmark], dtype=np.float32)
    body = np.zeros((25, 3), dtype=np.float32)
    for joint, sources in enumerate(POSE33_TO_BODY25):
        if sources:
            body[joint, :2] = xy[list(sources)].mean(axis=0)
            body[joint, 2] = visibility[list(sources)].min()
    return body


def _run_detector(detector, source: _Source, num_points: int):
    """Run `detector` on every frame of `source`, one frame in memory at a time.

    Returns (points (N, num_points, 3) float32, zero where not detected; detected (N,) bool;
    frame size (H, W)).
    """
    rows, detected, size = [], [], None
    for index, frame in enumerate(source.frames):
        size = _check_frame(frame, size, index)
        found = detector(frame)
        detected.append(found is not None)
        rows.append(found if found is not None else np.zeros((num_points, 3), np.float32))
    if not rows:
        raise InputError(f"{source.name} has no frames; pass a video or at least one frame.")
    return np.stack(rows), np.asarray(detected), size


# ----------------------------------------------------------------------------------------------
# Public entry points


DETECTOR_OPTIONS = ("max_faces", "max_point_gap", "min_detection_confidence", "min_tracking_confidence")


def _make_detector(mode: str, static: bool, options: dict):
    """The mediapipe wrapper for `mode` ("face" or "body") with the caller's options."""
    detection = options.get("min_detection_confidence", 0.5)
    tracking = options.get("min_tracking_confidence", 0.5)
    if mode == "face":
        return _FaceMeshDetector(static, options.get("max_faces", 3), detection, tracking)
    return _HolisticDetector(static, detection, tracking)


def _track(source: _Source, mode: str, policy: str, smooth: bool, static=False, **options):
    """Detect, fill, smooth and wrap into a LandmarkTrack (see detect_face / detect_body)."""
    if policy not in POLICIES:
        raise InputError(f"Unknown missing-detection policy {policy!r}; use one of {POLICIES}.")
    unknown = set(options) - set(DETECTOR_OPTIONS)
    if unknown:
        raise InputError(f"Unknown detector option(s) {sorted(unknown)}; use {DETECTOR_OPTIONS}.")
    detector = _make_detector(mode, static, options)
    num_points = FACE_POINTS if mode == "face" else BODY_POINTS
    try:
        raw, detected, size = _run_detector(detector, source, num_points)
    finally:
        detector.close()
    if not detected.any():
        what = "face" if mode == "face" else "person"
        where = f"{source.name}" if static else f"any of the {len(detected)} frames of {source.name}"
        raise DetectionError(
            f"No {what} was found in {where}; use a {'photo' if static else 'video'} in which "
            f"one {what} is clearly visible."
        )
    points, frame_indices, filled = fill_missing(raw, detected, policy)
    max_gap = options.get("max_point_gap", 5) if mode == "body" else 0
    points, points_filled = fill_point_gaps(points, max_gap)
    if smooth and len(points) > 1:
        points = smooth_track(points, source.fps, preset=mode, times=frame_indices / source.fps)
    report = DetectionReport(detected, filled, policy, points_filled)
    return LandmarkTrack(points, mode, size, source.fps, report, frame_indices, bool(smooth))


def detect_face(
    frames,
    policy: str = "interpolate",
    smooth: bool = True,
    max_frames: int | None = None,
    *,
    fps: float | None = None,
    max_faces: int = 3,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
) -> LandmarkTrack:
    """68 dlib-layout face landmarks of the most prominent face in every frame of a video.

    frames: a video path, a (T, H, W, 3) uint8 RGB array, or an iterable of HxWx3 uint8 RGB
        frames (streamed: a generator is read one frame at a time).
    policy: for frames without a face: "interpolate", "hold" or "drop" (module docstring).
    smooth: apply the One-Euro filter with the "face" preset (tsnet_hf.smoothing).
    max_frames: read at most this many frames.
    fps: frames per second; read from the file for a path, else 30 when not given.
    max_faces: faces FaceMesh looks for; the most prominent one is kept.
    min_detection_confidence, min_tracking_confidence: FaceMesh's thresholds, in [0, 1].
    Returns a LandmarkTrack with points (T, 68, 3) float32 (x, y pixels; confidence 1 or 0).
    Raises DetectionError when no frame has a face.
    """
    return _track(
        _open_source(frames, fps, max_frames),
        "face",
        policy,
        smooth,
        max_faces=max_faces,
        min_detection_confidence=min_detection_confidence,
        min_tracking_confidence=min_tracking_confidence,
    )


def detect_body(
    frames,
    policy: str = "interpolate",
    smooth: bool = True,
    max_frames: int | None = None,
    *,
    fps: float | None = None,
    max_point_gap: int = 5,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
) -> LandmarkTrack:
    """135 OpenPose-layout body landmarks (BODY_25, hands, face) of one person in a video.

    frames, policy, max_frames, fps: as in detect_face; smooth uses the "body" preset.
    max_point_gap: hand or face points missing for at most this many frames between two
        sightings are interpolated (0 = never).
    min_detection_confidence, min_tracking_confidence: Holistic's thresholds, in [0, 1].
    Returns a LandmarkTrack with points (T, 135, 3) float32 (x, y pixels; pose confidence =
    mediapipe visibility, hands and face 1 or 0). Raises DetectionError when no frame has a person.
    """
    return _track(
        _open_source(frames, fps, max_frames),
        "body",
        policy,
        smooth,
        max_point_gap=max_point_gap,
        min_detection_confidence=min_detection_confidence,
        min_tracking_confidence=min_tracking_confidence,
    )


def detect(
    frames,
    mode: str = "auto",
    policy: str = "interpolate",
    smooth: bool = True,
    max_frames: int | None = None,
    *,
    fps: float | None = None,
    probe_frames: int = 5,
    **detector_options,
) -> LandmarkTrack:
    """Face or body landmarks of a video, as detect_face or detect_body.

    mode: "face", "body", or "auto": `choose_mode` on the first `probe_frames` frames (which are
        then detected like the rest; the stream is not read twice).
    detector_options: max_faces (face), max_point_gap (body), min_detection_confidence,
        min_tracking_confidence. Other arguments as in detect_face.
    Returns a LandmarkTrack whose `mode` says which was chosen.
    """
    if mode not in ("auto", "face", "body"):
        raise InputError(f"Unknown landmark mode {mode!r}; use 'auto', 'face' or 'body'.")
    source = _open_source(frames, fps, max_frames)
    if mode == "auto":
        probe = list(itertools.islice(source.frames, probe_frames))
        mode = choose_mode(probe) if probe else "face"
        source.frames = itertools.chain(probe, source.frames)
    return _track(source, mode, policy, smooth, **detector_options)


def choose_mode(frames: Iterable[np.ndarray]) -> str:
    """ "body" or "face" for a few HxWx3 uint8 RGB frames: body when, in most of them, both hips
    are visible (mediapipe visibility >= 0.5) and the largest face is under a quarter of the
    frame height."""
    solutions = _solutions()
    pose = solutions.pose.Pose(static_image_mode=True, model_complexity=1)
    mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3)
    votes = []
    try:
        for index, frame in enumerate(frames):
            _check_frame(frame, None, index)
            votes.append(_looks_like_body(frame, pose, mesh))
    finally:
        pose.close()
        mesh.close()
    return "body" if 2 * sum(votes) > len(votes) else "face"


def _looks_like_body(frame: np.ndarray, pose, mesh) -> bool:
    """Whether one frame shows a person down to the hips with a face under 1/4 of its height."""
    result = pose.process(frame)
    if result.pose_landmarks is None:
        return False
    visibility = [result.pose_landmarks.landmark[i].visibility for i in (23, 24)]  # hips
    if min(visibility) < 0.5:
        return False
    faces = mesh.process(frame).multi_face_landmarks or []
    heights = [np.ptp(_to_pixels(face, frame.shape[:2])[:, 1]) for face in faces]
    return max(heights, default=0.0) < 0.25 * frame.shape[0]


def detect_image(image, mode: str = "auto", *, max_faces: int = 3) -> LandmarkTrack:
    """Landmarks of one photo (mediapipe in static-image mode).

    image: an HxWx3 uint8 RGB array or an image file path.
    mode: "face", "body" or "auto" (choose_mode on the image).
    Returns a LandmarkTrack of one frame: points (1, 68, 3) or (1, 135, 3) float32.
    Raises DetectionError when the photo has no face / no person.
    """
    image = _read_image(image)
    if mode not in ("auto", "face", "body"):
        raise InputError(f"Unknown landmark mode {mode!r}; use 'auto', 'face' or 'body'.")
    if mode == "auto":
        mode = choose_mode([image])
    return _track(
        _Source(iter([image]), DEFAULT_FPS, "the image"), mode, "hold", False, static=True, max_faces=max_faces
    )
