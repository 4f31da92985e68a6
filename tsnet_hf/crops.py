"""Square crops around a face or a person, and the transforms that paste model outputs back.

Landmarks are in frame pixels with pixel centres at integer coordinates (as OpenCV); a crop box
(x0, y0, x1, y1) is in corner coordinates (the frame is (0, 0, W, H)), square, and may reach outside
the frame (`crop_frame` repeats the border pixels there). A crop of side S maps a frame point p to
s * (p + 0.5 - x0) - 0.5 with s = S / (x1 - x0), so landmarks mapped with `CropTransform.to_crop`
sit exactly on the pixels `crop_frame` puts there. Boxes are smoothed over time against jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from . import layouts
from .errors import DetectionError, InputError

__all__ = ["CropTransform", "face_crop_boxes", "body_crop_boxes", "transforms_from_boxes", "crop_frame"]


@dataclass(frozen=True)
class CropTransform:
    """The mapping from frame pixels to the pixels of a square crop (scale + offset, no rotation).

    Attributes:
        box: (x0, y0, x1, y1) square box in frame corner coordinates (module docstring); floats.
        out_size: side S of the crop in pixels.
        frame_size: (H, W) of the frame in pixels.
    """

    box: tuple[float, float, float, float]
    out_size: int
    frame_size: tuple[int, int]

    def __post_init__(self):
        x0, y0, x1, y1 = (float(v) for v in self.box)
        side = x1 - x0
        if not (math.isfinite(side) and side > 0 and abs((y1 - y0) - side) <= 1e-3 * side):
            raise InputError(
                f"Crop box {self.box} is not a square of positive size; "
                "give (x0, y0, x1, y1) with x1 - x0 == y1 - y0 > 0."
            )
        if int(self.out_size) < 1:
            raise InputError(f"Crop size {self.out_size} is invalid; give a side of at least 1 px.")
        object.__setattr__(self, "box", (x0, y0, x1, y1))
        object.__setattr__(self, "out_size", int(self.out_size))
        object.__setattr__(self, "frame_size", (int(self.frame_size[0]), int(self.frame_size[1])))

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.out_size / (self.box[2] - self.box[0])

    @property
    def matrix(self) -> np.ndarray:
        """(2, 3) float64 affine matrix from frame pixel coordinates to crop pixel coordinates."""
        s = self.scale
        return np.array([[s, 0.0, s * (0.5 - self.box[0]) - 0.5], [0.0, s, s * (0.5 - self.box[1]) - 0.5]])

    def resized(self, out_size: int) -> CropTransform:
        """The same box cropped to a different side (a model output at another resolution)."""
        return CropTransform(self.box, out_size, self.frame_size)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map (..., P, 2 or 3) float points from frame pixels to crop pixels; confidence is kept."""
        mapped = np.array(points, dtype=np.float64)
        _check_points(mapped)
        s = self.scale
        mapped[..., 0] = s * (mapped[..., 0] + 0.5 - self.box[0]) - 0.5
        mapped[..., 1] = s * (mapped[..., 1] + 0.5 - self.box[1]) - 0.5
        return mapped.astype(np.float32)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Map (..., P, 2 or 3) float points from crop pixels back to frame pixels (inverse of to_crop)."""
        mapped = np.array(points, dtype=np.float64)
        _check_points(mapped)
        s = self.scale
        mapped[..., 0] = (mapped[..., 0] + 0.5) / s + self.box[0] - 0.5
        mapped[..., 1] = (mapped[..., 1] + 0.5) / s + self.box[1] - 0.5
        return mapped.astype(np.float32)

    def paste_back(self, crop_rgb: np.ndarray, frame_rgb: np.ndarray, feather: float = 0.1) -> np.ndarray:
        """Warp an output crop back into a copy of the full frame, with a soft edge.

        Args:
            crop_rgb: (S', S', 3) uint8 RGB crop of this box at any side S' (the model output).
            frame_rgb: (H, W, 3) uint8 RGB frame of `frame_size`.
            feather: width of the soft edge as a fraction of the crop side (0 = hard edge): the
                crop's weight rises linearly from 0 at its border to 1 that far inside.
        Returns:
            (H, W, 3) uint8 RGB: the frame with the crop blended in where the box lies.
        """
        crop = _check_image(crop_rgb, "crop")
        frame = _check_image(frame_rgb, "frame")
        if crop.shape[0] != crop.shape[1] or frame.shape[:2] != self.frame_size:
            raise InputError(
                f"Crop {crop.shape[:2]} must be square and frame {frame.shape[:2]} must "
                f"match the transform's frame size {self.frame_size}."
            )
        transform = self.resized(crop.shape[0])
        result = frame.copy()
        roi = _box_in_frame(self.box, self.frame_size)
        if roi is None:
            return result
        x0, y0, x1, y1 = roi
        matrix = transform.matrix.copy()
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)  # ROI -> crop
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpAffine(
            crop, matrix, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        weight = cv2.warpAffine(
            _feather_weight(crop.shape[0], feather),
            matrix,
            (x1 - x0, y1 - y0),
            flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        region = result[y0:y1, x0:x1].astype(np.float32)
        blended = region + (warped.astype(np.float32) - region) * weight[..., None]
        result[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return result


def _check_points(points: np.ndarray) -> None:
    if points.ndim < 1 or points.shape[-1] not in (2, 3):
        raise InputError(f"Points have shape {points.shape}; expected (..., 2) or (..., 3).")


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"The {name} is {image.dtype} with shape {image.shape}; expected HxWx3 uint8 RGB.")
    return image


def _box_in_frame(box, frame_size) -> tuple[int, int, int, int] | None:
    """Integer pixel range (x0, y0, x1, y1) of the frame that the box touches; None if none."""
    height, width = frame_size
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _feather_weight(side: int, feather: float) -> np.ndarray:
    """(side, side) float32 weight in [0, 1]: 1 inside, falling linearly to 0 at the border."""
    if feather <= 0:
        return np.ones((side, side), np.float32)
    centres = np.arange(side, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(centres, side - centres) / (feather * side), 0.0, 1.0)  # (side,)
    return np.outer(ramp, ramp).astype(np.float32)


def crop_frame(
    frame: np.ndarray, transform: CropTransform, out_size: int | None = None, border: str = "replicate"
) -> np.ndarray:
    """Cut the square crop of `transform` out of a frame and resize it.

    Args:
        frame: (H, W, C) or (H, W) uint8 or float32 image of `transform.frame_size` (RGB for
            colour frames; the channel order is kept).
        transform: the crop (see CropTransform).
        out_size: side of the result; None = transform.out_size.
        border: how parts of the box outside the frame are filled: "replicate" (repeat the edge
            pixels; the model sees no hard black edge) or "constant" (zeros).
    Returns:
        (S, S, C) or (S, S) crop of the same dtype. Strong downscales (below 1/2) first shrink the
        frame with area averaging, so the crop is not aliased.
    """
    if border not in ("replicate", "constant"):
        raise InputError(f"Border {border!r} is unknown; use 'replicate' or 'constant'.")
    image = np.asarray(frame)
    if image.ndim not in (2, 3) or image.shape[:2] != transform.frame_size:
        raise InputError(
            f"Frame of shape {image.shape} does not match the crop's frame size "
            f"{transform.frame_size}; crop each frame with its own video's boxes."
        )
    if out_size is not None:
        transform = transform.resized(out_size)
    matrix = np.vstack([transform.matrix, [0.0, 0.0, 1.0]])  # (3, 3) frame -> crop
    if transform.scale < 0.5:
        factor = int(1.0 / transform.scale)
        height, width = transform.frame_size
        small = (max(1, width // factor), max(1, height // factor))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        ratio_x, ratio_y = width / small[0], height / small[1]
        # A pixel q of the shrunk frame is centred on frame pixel ratio * q + (ratio - 1) / 2.
        matrix = matrix @ np.array(
            [[ratio_x, 0.0, (ratio_x - 1) / 2], [0.0, ratio_y, (ratio_y - 1) / 2], [0.0, 0.0, 1.0]]
        )
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    size = transform.out_size
    return cv2.warpAffine(image, matrix[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)


def transforms_from_boxes(boxes: np.ndarray, frame_size: tuple[int, int], out_size: int) -> list[CropTransform]:
    """One CropTransform per (x0, y0, x1, y1) row of `boxes` (T, 4), each cropped to `out_size`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"Boxes have shape {boxes.shape}; expected (T, 4) = x0, y0, x1, y1.")
    return [CropTransform(tuple(box), out_size, frame_size) for box in boxes]


# ----------------------------------------------------------------------------------------------
# Boxes from landmark tracks


def _check_track(track: np.ndarray, num_points: int, frame_size) -> np.ndarray:
    track = np.asarray(track, dtype=np.float32)
    if track.ndim != 3 or track.shape[1:] != (num_points, 3):
        raise InputError(f"Landmark track has shape {track.shape}; expected (T, {num_points}, 3).")
    if track.shape[0] == 0:
        raise InputError("Landmark track is empty; give at least one frame.")
    if len(frame_size) != 2 or min(frame_size) < 1:
        raise InputError(f"Frame size {frame_size} is invalid; give (height, width) in pixels.")
    return track


def _fill_missing(values: np.ndarray, present: np.ndarray, what: str) -> np.ndarray:
    """Linear interpolation over frames where `present` is False; (T, K) float64."""
    if not present.any():
        raise DetectionError(
            f"No {what} landmarks are confident in any frame; "
            "use a video where the subject is visible, or lower min_confidence."
        )
    frames = np.arange(len(values))
    return np.stack([np.interp(frames, frames[present], column[present]) for column in values.T], axis=1)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over axis 0 of (T, K) values; the window shrinks at both ends."""
    half = max(0, int(window) // 2)
    if half == 0 or len(values) == 1:
        return values
    sums = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values]), axis=0)  # (T + 1, K)
    index = np.arange(len(values))
    lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def _smoothed_boxes(track: np.ndarray, frame_box, min_confidence: float, smooth: int, what: str) -> np.ndarray:
    """Per-frame square boxes from `frame_box(points, valid, low, high) -> (cx, cy, side)` (low,
    high: the confident points' extent), filled over frames with fewer than 3 confident points,
    smoothed with a centred moving average of `smooth` frames. Returns (T, 4) float32."""
    center_side = np.zeros((len(track), 3))
    present = np.zeros(len(track), dtype=bool)
    for t, points in enumerate(track):
        valid = points[:, 2] >= min_confidence
        if valid.sum() < 3:
            continue
        low, high = points[valid, :2].min(axis=0), points[valid, :2].max(axis=0)
        center_side[t] = frame_box(points, valid, low, high)
        present[t] = True
    center_side = _moving_average(_fill_missing(center_side, present, what), smooth)
    return _square_boxes(center_side)


def _square_boxes(center_side: np.ndarray) -> np.ndarray:
    """(T, 3) centre x, centre y, side -> (T, 4) float32 boxes (x0, y0, x1, y1)."""
    cx, cy, half = center_side[:, 0], center_side[:, 1], center_side[:, 2] / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def face_crop_boxes(
    track: np.ndarray,
    frame_size: tuple[int, int],
    scale: float = 2.0,
    lift: float = 0.125,
    smooth: int = 9,
    min_confidence: float = 0.5,
) -> np.ndarray:
    """Square face crop boxes per frame, smoothed over time.

    Args:
        track: (T, 68, 3) float face landmarks in frame pixels (dlib layout), confidence in [0, 1].
        frame_size: (H, W) of the frames.
        scale: crop side / landmark extent (the larger of width and height); 2.0 as the authors
            (dataset_video_face.py of their repository), so the crop shows hair and chin.
        lift: upward shift of the crop centre, as a fraction of the side (0.125 as the authors:
            the crop runs from 1.25 extents above the landmarks' centre to 0.75 below).
        smooth: window of the centred moving average over frames (1 = none).
        min_confidence: points below it are ignored; frames with fewer than 3 confident points
            take their box from the neighbouring frames.
    Returns:
        (T, 4) float32 boxes (x0, y0, x1, y1) in frame corner coordinates; square, and they may
        reach outside the frame.
    Raises:
        DetectionError: no frame has a usable face.
    """
    track = _check_track(track, layouts.FACE_POINTS, frame_size)

    def frame_box(points, valid, low, high):
        side = scale * max(float((high - low).max()), 1.0)
        center = (low + high) / 2
        return center[0], center[1] - lift * side, side

    return _smoothed_boxes(track, frame_box, min_confidence, smooth, "face")


def _head_top(points: np.ndarray, valid: np.ndarray) -> float | None:
    """Estimated y of the top of the head: 0.6 nose-to-neck distances above the nose.

    BODY_25 has no point on the crown; the crown is about 0.6 of the nose-neck distance above the
    nose for an upright adult (head height ~ 1.1 nose-neck distances, nose at about mid-head).
    """
    nose, neck = 0, 1
    if not (valid[nose] and valid[neck]):
        return None
    distance = float(np.linalg.norm(points[nose, :2] - points[neck, :2]))
    return float(points[nose, 1]) - 0.6 * distance


def body_crop_boxes(
    track: np.ndarray, frame_size: tuple[int, int], margin: float = 0.1, smooth: int = 9, min_confidence: float = 0.5
) -> np.ndarray:
    """Square body crop boxes per frame from the person's extent, smoothed over time.

    Args:
        track: (T, 135, 3) float body landmarks in frame pixels (tsnet_hf.layouts body layout).
        frame_size: (H, W) of the frames.
        margin: added on every side, as a fraction of the person's extent (the larger of width
            and height), so feet and the top of the head stay inside.
        smooth: window of the centred moving average over frames (1 = none).
        min_confidence: points below it are ignored; frames with fewer than 3 confident points
            take their box from the neighbouring frames.
    Returns:
        (T, 4) float32 square boxes (x0, y0, x1, y1) in frame corner coordinates, centred on the
        person; they may reach outside the frame.
    Raises:
        DetectionError: no frame has a usable person.
    """
    track = _check_track(track, layouts.BODY_POINTS, frame_size)

    def frame_box(points, valid, low, high):
        top = _head_top(points, valid)
        if top is not None:
            low[1] = min(low[1], top)
        extent = max(float((high - low).max()), 1.0)
        center = (low + high) / 2
        return center[0], center[1], extent * (1 + 2 * margin)

    return _smoothed_boxes(track, frame_box, min_confidence, smooth, "body")


def track_crop_boxes(points: np.ndarray, frame_size: tuple[int, int], mode: str) -> np.ndarray:
    """`face_crop_boxes` or `body_crop_boxes` with their defaults, by mode ("face" / "body"): the
    one framing the pipeline (inference) and training/preprocess.py (training) share."""
    if mode not in ("face", "body"):
        raise InputError(f"mode must be 'face' or 'body', got {mode!r}.")
    return (face_crop_boxes if mode == "face" else body_crop_boxes)(points, frame_size)
