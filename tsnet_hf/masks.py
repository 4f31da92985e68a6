"""Masks drawn from landmarks: the label maps and one-hot tensors TS-Net takes (paper section 3.1).

A mask is drawn as an (H, W) uint8 label map (labels in tsnet_hf.layouts), exactly and
deterministically (no anti-aliasing, 1/16 px precision, a fixed drawing order), then turned into
(C, H, W) float32 one-hot channels. Landmarks are in pixels of the canvas: map frame landmarks into
a crop first with `CropTransform.to_crop`. Line widths and their reasons: docs/landmarks.md.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from . import layouts
from .errors import InputError

__all__ = [
    "draw_face_mask",
    "draw_body_mask",
    "draw_mask",
    "draw_masks",
    "labels_to_onehot",
    "onehot_masks",
    "mask_channels",
    "render_mask_rgb",
    "mask_box",
    "segment_coverage",
    "line_width",
    "FACE_PALETTE",
    "BODY_PALETTE",
]

SHIFT = 4  # fractional bits of the coordinates handed to OpenCV: 1/16 px precision
_SCALE = float(1 << SHIFT)
_MAX_COORD = 1e5  # points further out than this are clamped (keeps int32 maths safe)

# Colours for people to look at (RGB). Face: white edges on black.
FACE_PALETTE = np.array([(0, 0, 0), layouts.FACE_COLOR], dtype=np.uint8)
# Body: limbs in their colours, left-hand fingers bright, right-hand fingers darker, face white.
BODY_PALETTE = np.array(
    [
        (0, 0, 0),
        *layouts.LIMB_COLORS,
        *layouts.FINGER_COLORS,
        *[(c[0] * 5 // 8, c[1] * 5 // 8, c[2] * 5 // 8) for c in layouts.FINGER_COLORS],
        layouts.FACE_COLOR,
    ],
    dtype=np.uint8,
)


def line_width(width_at_256: float, size: tuple[int, int]) -> int:
    """Line width in pixels for a canvas of `size` (H, W): `width_at_256` scaled by min(H, W) / 256.

    At 256 px face edges are 2 px, as the authors' face masks; body limbs 3 px (they train with 2-4 px).
    """
    return max(1, int(round(width_at_256 * min(size) / 256.0)))


# OpenCV strokes are 1, 3, 5... px wide (thickness t >= 2 draws 2 * ceil(t / 2) + 1 px, measured):
# face masks draw an even width one pixel thinner and grow it by a 2x2 dilation; body masks round to
# an odd width, since a dilation would let the larger of two overlapping labels win.
def _odd(width: float) -> int:
    """A stroke width rounded to an odd number of pixels: 2 * floor(width / 2) + 1 (2 -> 3, 4 -> 5)."""
    return 2 * int(width // 2) + 1


def _cv2_thickness(odd_width: int) -> int:
    """OpenCV thickness that draws a stroke `odd_width` pixels wide (1 -> 1, 3 -> 2, 5 -> 4)."""
    return 1 if odd_width <= 1 else odd_width - 1


def _check_landmarks(landmarks: np.ndarray, num_points: int | None = None) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"Landmarks have shape {points.shape}; expected (P, 3) = x, y, confidence.")
    if num_points is not None and points.shape[0] != num_points:
        raise InputError(f"Landmarks have {points.shape[0]} points; this mask needs {num_points}.")
    return points


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
        raise InputError(f"Mask size {size} is invalid; give (height, width) in pixels, both >= 1.")
    return int(size[0]), int(size[1])


def _fixed_point(points: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) int32 coordinates in 1/16 px and the (P,) bool validity of each point."""
    xy = points[:, :2]
    valid = (points[:, 2] >= min_confidence) & np.isfinite(xy).all(axis=1)
    xy = np.nan_to_num(xy, nan=0.0, posinf=_MAX_COORD, neginf=-_MAX_COORD)
    fixed = np.round(np.clip(xy, -_MAX_COORD, _MAX_COORD) * _SCALE).astype(np.int32)
    return fixed, valid


def _valid_runs(chain: tuple[int, ...], valid: np.ndarray, closed: bool) -> list[tuple[list[int], bool]]:
    """Split a chain of point indices at missing points: [(run, closed)], runs of >= 2 points."""
    ok = [bool(valid[i]) for i in chain]
    if all(ok):
        return [(list(chain), closed)]
    if closed:  # start right after a missing point so that no run wraps around the end
        start = ok.index(False) + 1
        chain, ok = chain[start:] + chain[:start], ok[start:] + ok[:start]
    runs, current = [], []
    for index, good in zip(chain, ok):
        if good:
            current.append(index)
        else:
            runs.append(current)
            current = []
    runs.append(current)
    return [(run, False) for run in runs if len(run) >= 2]


def _draw_chains(
    canvas: np.ndarray,
    fixed: np.ndarray,
    valid: np.ndarray,
    chains: list[tuple[tuple[int, ...], bool]],
    label: int,
    thickness: int,
) -> None:
    """Draw point chains into `canvas` with value `label` (in place, no anti-aliasing)."""
    for closed in (False, True):
        lines = [
            fixed[run]
            for chain, is_closed in chains
            for run, run_closed in _valid_runs(chain, valid, is_closed)
            if run_closed == closed
        ]
        if lines:
            cv2.polylines(canvas, lines, closed, int(label), thickness, cv2.LINE_8, SHIFT)


_FACE_CHAINS = [(part.points, part.closed) for part in layouts.FACE_PARTS]
_GROW_KERNEL = np.ones((2, 2), np.uint8)  # anchor (1, 1): grows strokes down and right by 1 px


def draw_face_mask(
    landmarks: np.ndarray, size: tuple[int, int], width: int | None = None, min_confidence: float = 0.5
) -> np.ndarray:
    """Face edge mask: jaw, brows, nose, eyes, outer and inner lips (paper section 4.1).

    Args:
        landmarks: (68, 3) float, dlib layout, x, y in pixels of the canvas, confidence in [0, 1].
        size: (H, W) of the canvas in pixels.
        width: stroke width in pixels; None = 2 px at 256, scaled with min(H, W).
        min_confidence: points below it are not drawn.
    Returns:
        (H, W) uint8 label map: 0 background, 1 edge.
    """
    points = _check_landmarks(landmarks, layouts.FACE_POINTS)
    size = _check_size(size)
    width = line_width(2, size) if width is None else max(1, int(width))
    even = width % 2 == 0
    if even:  # draw one pixel thinner, half a pixel up-left, then grow down-right by one pixel
        points = points.copy()
        points[:, :2] -= 0.5
    canvas = np.zeros(size, dtype=np.uint8)
    fixed, valid = _fixed_point(points, min_confidence)
    _draw_chains(canvas, fixed, valid, _FACE_CHAINS, 1, _cv2_thickness(width - even))
    if even:
        canvas = cv2.dilate(canvas, _GROW_KERNEL)
    return canvas


def draw_body_mask(
    landmarks: np.ndarray, size: tuple[int, int], width: int | None = None, min_confidence: float = 0.5
) -> np.ndarray:
    """Body mask: BODY_25 limbs, face edges, then hand fingers on top.

    Args:
        landmarks: (135, 3) float, BODY_25 + left hand + right hand + dlib face
            (tsnet_hf.layouts), x, y in pixels of the canvas, confidence in [0, 1].
        size: (H, W) of the canvas in pixels.
        width: limb stroke width in pixels; None = 3 px at 256, scaled with min(H, W). Fingers
            and face edges are a third of it (at least 1 px). Widths are rounded to odd numbers.
        min_confidence: points below it are not drawn.
    Returns:
        (H, W) uint8 label map with values in [0, 35] (layouts.BODY_MASK_CHANNELS labels).
    """
    points = _check_landmarks(landmarks, layouts.BODY_POINTS)
    size = _check_size(size)
    limb_width = _odd(line_width(3, size) if width is None else max(1, int(width)))
    detail_width = _odd(max(1, round(limb_width / 3)))
    canvas = np.zeros(size, dtype=np.uint8)
    fixed, valid = _fixed_point(points, min_confidence)
    for label, (i, j) in zip(layouts.LIMB_LABELS, layouts.BODY_LIMBS):
        if valid[i] and valid[j]:
            cv2.line(canvas, tuple(fixed[i]), tuple(fixed[j]), label, _cv2_thickness(limb_width), cv2.LINE_8, SHIFT)
    face = layouts.FACE_SLICE.start
    face_chains = [(tuple(face + i for i in chain), closed) for chain, closed in _FACE_CHAINS]
    _draw_chains(canvas, fixed, valid, face_chains, layouts.FACE_LABEL, _cv2_thickness(detail_width))
    for hand, labels in (
        (layouts.LEFT_HAND_SLICE, layouts.LEFT_FINGER_LABELS),
        (layouts.RIGHT_HAND_SLICE, layouts.RIGHT_FINGER_LABELS),
    ):
        for label, finger in zip(labels, layouts.HAND_FINGERS):
            chain = tuple(hand.start + i for i in finger)
            _draw_chains(canvas, fixed, valid, [(chain, False)], label, _cv2_thickness(detail_width))
    return canvas


def draw_mask(landmarks: np.ndarray, size: tuple[int, int], **kwargs) -> np.ndarray:
    """`draw_face_mask` for 68 points, `draw_body_mask` for 135; same arguments and return."""
    points = _check_landmarks(landmarks)
    if points.shape[0] == layouts.FACE_POINTS:
        return draw_face_mask(points, size, **kwargs)
    if points.shape[0] == layouts.BODY_POINTS:
        return draw_body_mask(points, size, **kwargs)
    raise InputError(f"Landmarks have {points.shape[0]} points; use 68 (face) or 135 (body) points.")


def draw_masks(track: np.ndarray, size: tuple[int, int], **kwargs) -> np.ndarray:
    """Label maps of a landmark track: (T, P, 3) float -> (T, H, W) uint8 (see `draw_mask`)."""
    track = np.asarray(track, dtype=np.float32)
    if track.ndim != 3:
        raise InputError(f"Landmark track has shape {track.shape}; expected (T, P, 3).")
    size = _check_size(size)
    labels = np.empty((track.shape[0], *size), dtype=np.uint8)
    for t, landmarks in enumerate(track):
        labels[t] = draw_mask(landmarks, size, **kwargs)
    return labels


def mask_channels(num_points: int) -> int:
    """One-hot channels of the mask drawn from `num_points` landmarks (68 -> 2, 135 -> 36)."""
    if num_points == layouts.FACE_POINTS:
        return layouts.FACE_MASK_CHANNELS
    if num_points == layouts.BODY_POINTS:
        return layouts.BODY_MASK_CHANNELS
    raise InputError(f"Landmarks have {num_points} points; use 68 (face) or 135 (body) points.")


def labels_to_onehot(labels: np.ndarray | torch.Tensor, channels: int) -> np.ndarray | torch.Tensor:
    """One-hot channels of label maps.

    Args:
        labels: (H, W) or (N, H, W) integer labels in [0, channels), numpy or torch.
        channels: number of channels C (layouts.FACE_MASK_CHANNELS or BODY_MASK_CHANNELS).
    Returns:
        (C, H, W) or (N, C, H, W) float32 in {0, 1}, summing to 1 at every pixel; a torch
        tensor (on the labels' device) for torch input, a numpy array for numpy input.
    """
    if labels.ndim not in (2, 3):
        raise InputError(f"Labels have shape {tuple(labels.shape)}; expected (H, W) or (N, H, W).")
    count = labels.numel() if torch.is_tensor(labels) else labels.size
    if count:
        top = int(labels.max())
        if top >= channels or int(labels.min()) < 0:
            raise InputError(
                f"Labels reach {top}, outside [0, {channels}); draw face masks with 2 channels and body masks with 36."
            )
    if torch.is_tensor(labels) and labels.device.type != "cpu":
        onehot = torch.nn.functional.one_hot(labels.long(), channels)  # (..., H, W, C)
        return onehot.movedim(-1, -3).to(torch.float32).contiguous()  # (..., C, H, W)
    if torch.is_tensor(labels):
        return torch.from_numpy(_onehot_numpy(labels.numpy(), channels))
    return _onehot_numpy(np.asarray(labels), channels)


def _onehot_numpy(labels: np.ndarray, channels: int) -> np.ndarray:
    # Fancy-index assignment: about 1 ms for a 36-channel 256x256 mask, where a broadcast
    # comparison takes 25 ms and torch's scatter_ on CPU 23 ms (measured on this 2-core machine).
    lead, (height, width) = labels.shape[:-2], labels.shape[-2:]
    flat = labels.reshape(-1, height * width).astype(np.intp)  # (N, HW)
    onehot = np.zeros((flat.shape[0], channels, height * width), np.float32)  # (N, C, HW)
    rows = np.arange(flat.shape[0])[:, None]
    onehot[rows, flat, np.arange(height * width)[None, :]] = 1.0
    return onehot.reshape(*lead, channels, height, width)  # (..., C, H, W)


def onehot_masks(
    track: np.ndarray, size: tuple[int, int], device: torch.device | str | None = None, **kwargs
) -> torch.Tensor:
    """The model's mask input for a landmark track.

    Args:
        track: (T, 68, 3) or (T, 135, 3) float landmarks in pixels of the (H, W) canvas.
        size: (H, W) of the masks in pixels (the model's image_size, e.g. (256, 256)).
        device: where to put the result.
        **kwargs: width, min_confidence (see `draw_face_mask` / `draw_body_mask`).
    Returns:
        (T, C, H, W) float32 torch tensor in {0, 1}, C = 2 (face) or 36 (body).
    """
    track = np.asarray(track, dtype=np.float32)
    if track.ndim != 3:
        raise InputError(f"Landmark track has shape {track.shape}; expected (T, P, 3).")
    channels = mask_channels(track.shape[1])
    onehot = _onehot_numpy(draw_masks(track, size, **kwargs), channels)  # (T, C, H, W)
    return torch.from_numpy(onehot).to(device)


def render_mask_rgb(labels: np.ndarray, mode: str) -> np.ndarray:
    """Colour picture of a label map for people to look at.

    Args:
        labels: (H, W) integer label map (from `draw_face_mask` / `draw_body_mask`).
        mode: "face" (white edges on black) or "body" (limbs in layouts.LIMB_COLORS, fingers in
            layouts.FINGER_COLORS, right hand darker, face edges white).
    Returns:
        (H, W, 3) uint8 RGB in [0, 255].
    """
    palettes = {"face": FACE_PALETTE, "body": BODY_PALETTE}
    if mode not in palettes:
        raise InputError(f"Mask mode {mode!r} is unknown; use 'face' or 'body'.")
    labels = np.asarray(labels)
    palette = palettes[mode]
    if labels.ndim != 2:
        raise InputError(f"Labels have shape {labels.shape}; expected (H, W).")
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise InputError(
            f"Labels reach {labels.max()}, outside the {mode} palette of "
            f"{len(palette)} labels; pass the mode the mask was drawn with."
        )
    return palette[labels.astype(np.intp)]


def mask_box(
    landmarks: np.ndarray,
    size: tuple[int, int],
    margin: float = 1 / 16,
    min_confidence: float = 0.5,
    authors: bool = False,
) -> tuple[float, float, float, float]:
    """The mask-aware bounding box of the paper (section 3.1, Fig. 3).

    As the authors: min/max of the landmarks plus `margin` times the image width (x) or height
    (y) on every side, clipped to the image. The model derives the same kind of box from one-hot
    masks (tsnet_hf.similarity.boxes_from_masks) when it is given none.

    Args:
        landmarks: (P, 3) float, x, y in pixels of the (H, W) canvas, confidence in [0, 1].
        size: (H, W) of the canvas in pixels.
        margin: fraction of the image side added on every side.
        min_confidence: points below it are ignored.
        authors: their box exactly (get_bbox_image of their dataset code): the margin in whole
            pixels (W // 16 for 1/16) and the clipped edges truncated to whole pixels, the box
            covering pixels x0 <= x < x1 (box_membership(authors=True) reads it so).
    Returns:
        (x0, y0, x1, y1) floats in pixels, 0 <= x0 <= x1 <= W, 0 <= y0 <= y1 <= H; (0, 0, 0, 0)
        when no point is confident (as boxes_from_masks for an empty mask).
    """
    points = _check_landmarks(landmarks)
    height, width = _check_size(size)
    valid = (points[:, 2] >= min_confidence) & np.isfinite(points[:, :2]).all(axis=1)
    if not valid.any():
        return (0.0, 0.0, 0.0, 0.0)
    xs, ys = points[valid, 0], points[valid, 1]
    pad_x, pad_y = margin * width, margin * height
    if authors:
        pad_x, pad_y = math.floor(pad_x), math.floor(pad_y)
    box = (
        np.clip(xs.min() - pad_x, 0, width),
        np.clip(ys.min() - pad_y, 0, height),
        np.clip(xs.max() + pad_x, 0, width),
        np.clip(ys.max() + pad_y, 0, height),
    )
    return tuple(float(math.floor(v)) if authors else float(v) for v in box)


def segment_coverage(
    labels: np.ndarray,
    landmarks: np.ndarray,
    edges: tuple[tuple[int, int], ...] = layouts.FACE_EDGES,
    min_confidence: float = 0.5,
    samples: int = 5,
) -> float:
    """Fraction of points sampled along the landmark segments that fall on drawn pixels.

    A check that a mask shows the structure it should (for example the 68-point face on a real
    frame): sample `samples` points on each segment (i, j) of `edges` whose two ends are
    confident, round to the nearest pixel, and count those with a non-zero label.

    Args:
        labels: (H, W) label map.
        landmarks: (P, 3) float landmarks the mask was drawn from (pixels of the canvas).
        edges: point pairs to check; layouts.FACE_EDGES by default.
        min_confidence: segments touching a point below it are skipped.
        samples: points per segment, ends included.
    Returns:
        Coverage in [0, 1]; 0.0 when no segment is confident or none lies in the canvas.
    """
    points = _check_landmarks(landmarks)
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    valid = points[:, 2] >= min_confidence
    pairs = pairs[valid[pairs[:, 0]] & valid[pairs[:, 1]]]
    steps = np.linspace(0.0, 1.0, samples, dtype=np.float32)[None, :, None]  # (1, S, 1)
    start, end = points[pairs[:, 0], None, :2], points[pairs[:, 1], None, :2]  # (E, 1, 2)
    sampled = np.rint(start + (end - start) * steps).reshape(-1, 2).astype(np.int64)
    height, width = np.asarray(labels).shape[:2]
    inside = (sampled[:, 0] >= 0) & (sampled[:, 0] < width) & (sampled[:, 1] >= 0) & (sampled[:, 1] < height)
    sampled = sampled[inside]
    if len(sampled) == 0:
        return 0.0
    return float((np.asarray(labels)[sampled[:, 1], sampled[:, 0]] > 0).mean())
