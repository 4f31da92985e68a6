"""Keypoint layouts used everywhere in tsnet-hf: which point is which, what to connect, which colour.

Pure data and a few numpy helpers; no OpenCV, no torch, nothing runs at import. Landmark arrays are
float32 (N, P, 3) or (P, 3): x, y in frame pixels (origin top-left, pixel centres at integer
coordinates, as OpenCV), then a confidence in [0, 1] where 0 means "missing". Faces have P = 68
(dlib), bodies P = 135 (BODY_25, hands, face); docs/landmarks.md draws both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import InputError

__all__ = [
    "FacePart",
    "FACE_POINTS",
    "FACE_PARTS",
    "FACE_EDGES",
    "FACE_FLIP",
    "BODY25_NAMES",
    "BODY25_POINTS",
    "BODY_POINTS",
    "BODY_SLICE",
    "LEFT_HAND_SLICE",
    "RIGHT_HAND_SLICE",
    "FACE_SLICE",
    "BODY_LIMBS",
    "LIMB_COLORS",
    "HAND_POINTS",
    "FINGER_NAMES",
    "HAND_FINGERS",
    "FINGER_COLORS",
    "FACE_COLOR",
    "BODY25_FLIP",
    "BODY_FLIP",
    "FACE_MASK_CHANNELS",
    "BODY_MASK_CHANNELS",
    "LIMB_LABELS",
    "LEFT_FINGER_LABELS",
    "RIGHT_FINGER_LABELS",
    "FACE_LABEL",
    "chain_edges",
    "flip_permutation",
    "flip_horizontal",
]


# ----------------------------------------------------------------------------------------------
# Face: dlib 68 points. "Right" and "left" are the person's own, as in iBUG: the right brow 17-21 and
# the right eye 36-41 appear on the image's left. Eyes and lips are closed loops.


class FacePart(NamedTuple):
    """One drawn part of the 68-point face: the points in drawing order, closed or not."""

    name: str
    points: tuple[int, ...]
    closed: bool


FACE_POINTS = 68

FACE_PARTS: tuple[FacePart, ...] = (
    FacePart("jaw", tuple(range(0, 17)), False),
    FacePart("right_brow", tuple(range(17, 22)), False),
    FacePart("left_brow", tuple(range(22, 27)), False),
    FacePart("nose_bridge", tuple(range(27, 31)), False),
    FacePart("nose_base", tuple(range(31, 36)), False),
    FacePart("right_eye", tuple(range(36, 42)), True),
    FacePart("left_eye", tuple(range(42, 48)), True),
    FacePart("outer_lips", tuple(range(48, 60)), True),
    FacePart("inner_lips", tuple(range(60, 68)), True),
)


def chain_edges(points: tuple[int, ...], closed: bool) -> list[tuple[int, int]]:
    """The (i, j) point pairs that connect `points` in order; the last to the first when closed."""
    edges = list(zip(points[:-1], points[1:]))
    if closed:
        edges.append((points[-1], points[0]))
    return edges


# Every drawn face segment as a point pair (63 pairs): what tests and helpers check masks against.
FACE_EDGES: tuple[tuple[int, int], ...] = tuple(
    edge for part in FACE_PARTS for edge in chain_edges(part.points, part.closed)
)

# Mirror partner of each face point under a horizontal flip (flipped[i] = original[FACE_FLIP[i]]).
FACE_FLIP: tuple[int, ...] = (
    *range(16, -1, -1),  # jaw 0-16 reversed
    26,
    25,
    24,
    23,
    22,
    21,
    20,
    19,
    18,
    17,  # brows swap, outer end to outer end
    27,
    28,
    29,
    30,  # nose bridge on the mirror axis
    35,
    34,
    33,
    32,
    31,  # nose base reversed
    45,
    44,
    43,
    42,
    47,
    46,  # right eye <-> left eye (corners and lids)
    39,
    38,
    37,
    36,
    41,
    40,
    54,
    53,
    52,
    51,
    50,
    49,
    48,  # outer lips: upper lip reversed
    59,
    58,
    57,
    56,
    55,  # outer lips: lower lip reversed
    64,
    63,
    62,
    61,
    60,
    67,
    66,
    65,  # inner lips likewise
)


# ----------------------------------------------------------------------------------------------
# Body: BODY_25 (0-24, OpenPose order), left hand (25-45), right hand (46-66), face (67-134, dlib 68).
# Hands follow OpenPose's order, which is mediapipe's: wrist, then 4 points per finger (base to tip)
# for thumb, index, middle, ring, pinky.

BODY25_NAMES: tuple[str, ...] = (
    "Nose",
    "Neck",
    "RShoulder",
    "RElbow",
    "RWrist",
    "LShoulder",
    "LElbow",
    "LWrist",
    "MidHip",
    "RHip",
    "RKnee",
    "RAnkle",
    "LHip",
    "LKnee",
    "LAnkle",
    "REye",
    "LEye",
    "REar",
    "LEar",
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
)
BODY25_POINTS = 25
HAND_POINTS = 21
BODY_POINTS = BODY25_POINTS + 2 * HAND_POINTS + FACE_POINTS  # 135

BODY_SLICE = slice(0, 25)
LEFT_HAND_SLICE = slice(25, 46)
RIGHT_HAND_SLICE = slice(46, 67)
FACE_SLICE = slice(67, 135)

# OpenPose's BODY_25 limbs (its render pairs), in label order 1..24.
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 8),
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (8, 9),
    (9, 10),
    (10, 11),
    (8, 12),
    (12, 13),
    (13, 14),
    (1, 0),
    (0, 15),
    (15, 17),
    (0, 16),
    (16, 18),
    (14, 19),
    (19, 20),
    (14, 21),
    (11, 22),
    (22, 23),
    (11, 24),
)

# 24 distinct colours (RGB), hues 15 degrees apart in limb order, like OpenPose's hue sweep
# (OpenPose itself repeats colours across limbs; the one-hot channels need no colour at all,
# these are only for people to look at).
LIMB_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 64, 0),
    (255, 128, 0),
    (255, 191, 0),
    (255, 255, 0),
    (191, 255, 0),
    (128, 255, 0),
    (64, 255, 0),
    (0, 255, 0),
    (0, 255, 64),
    (0, 255, 128),
    (0, 255, 191),
    (0, 255, 255),
    (0, 191, 255),
    (0, 128, 255),
    (0, 64, 255),
    (0, 0, 255),
    (64, 0, 255),
    (128, 0, 255),
    (191, 0, 255),
    (255, 0, 255),
    (255, 0, 191),
    (255, 0, 128),
    (255, 0, 64),
)

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")
# Each finger as a chain of hand-local indices from the wrist: 4 segments per finger.
HAND_FINGERS: tuple[tuple[int, ...], ...] = tuple((0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f) for f in range(5))
FINGER_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 96, 96),
    (255, 224, 96),
    (96, 255, 128),
    (96, 192, 255),
    (208, 96, 255),
)
FACE_COLOR = (255, 255, 255)

# Mirror partner of each BODY_25 point under a horizontal flip (right <-> left).
BODY25_FLIP: tuple[int, ...] = (
    0,
    1,
    5,
    6,
    7,
    2,
    3,
    4,
    8,
    12,
    13,
    14,
    9,
    10,
    11,
    16,
    15,
    18,
    17,
    22,
    23,
    24,
    19,
    20,
    21,
)
# Whole 135-point layout: body, hands swapped as blocks, face mirrored.
BODY_FLIP: tuple[int, ...] = (
    *BODY25_FLIP,
    *range(RIGHT_HAND_SLICE.start, RIGHT_HAND_SLICE.stop),
    *range(LEFT_HAND_SLICE.start, LEFT_HAND_SLICE.stop),
    *(FACE_SLICE.start + i for i in FACE_FLIP),
)


# ----------------------------------------------------------------------------------------------
# Mask channels: face 0 background, 1 edge; body 0 background, 1..24 the BODY_25 limbs in BODY_LIMBS
# order, 25..29 left-hand fingers thumb..pinky, 30..34 right-hand fingers thumb..pinky, 35 face edges.

FACE_MASK_CHANNELS = 2
BODY_MASK_CHANNELS = 36
LIMB_LABELS: tuple[int, ...] = tuple(range(1, 25))
LEFT_FINGER_LABELS: tuple[int, ...] = tuple(range(25, 30))
RIGHT_FINGER_LABELS: tuple[int, ...] = tuple(range(30, 35))
FACE_LABEL = 35


# ----------------------------------------------------------------------------------------------
# Helpers


def flip_permutation(num_points: int) -> np.ndarray:
    """The horizontal-flip permutation for a layout of 68 (face) or 135 (body) points, int64."""
    if num_points == FACE_POINTS:
        return np.asarray(FACE_FLIP, dtype=np.int64)
    if num_points == BODY_POINTS:
        return np.asarray(BODY_FLIP, dtype=np.int64)
    raise InputError(f"Landmarks have {num_points} points; use 68 (face) or 135 (body) points.")


def flip_horizontal(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped frame (what `frame[:, ::-1]` shows).

    Args:
        landmarks: (..., P, 3) float, x, y in pixels, confidence; P = 68 or 135.
        width: width of the frame in pixels.
    Returns:
        (..., P, 3) float32: x -> width - 1 - x, and points renumbered so that a left point
        becomes the matching right point (the person's left hand is their right hand in a mirror).
    """
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim < 2 or points.shape[-1] != 3:
        raise InputError(f"Landmarks have shape {points.shape}; expected (..., P, 3).")
    flipped = points[..., flip_permutation(points.shape[-2]), :].copy()
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped
