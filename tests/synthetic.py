"""Generated inputs for tests and benchmarks that must run everywhere (no ../shared).

Frames and videos: scikit-image's astronaut (Eileen Collins, a NASA photo in the public domain,
shipped in the scikit-image wheel), moved, scaled and turned a little per frame so mediapipe sees a
real face in a real video; audio is a sine tone. Landmarks: hand-drawn dlib-68 faces and a BODY_25
T-pose with hands and face (135 points), with no detector involved.
"""

import math
import wave
from pathlib import Path

import cv2
import numpy as np

from tsnet_hf import layouts


def astronaut(size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the astronaut photo, resized."""
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def moving_face_frames(num_frames: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """(T, size, size, 3) uint8 RGB: the astronaut drifting, zooming and tilting smoothly."""
    base = astronaut(size)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi, 3)
    frames = []
    for t in range(num_frames):
        angle = 6 * math.sin(0.21 * t + phase[0])
        scale = 1.0 + 0.06 * math.sin(0.13 * t + phase[1])
        shift = 0.04 * size * math.sin(0.17 * t + phase[2])
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
        matrix[0, 2] += shift
        frames.append(cv2.warpAffine(base, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def write_tone(path: Path, seconds: float, rate: int = 16000, hz: float = 440.0) -> Path:
    """A mono 16-bit sine-tone wav file."""
    samples = (0.3 * 32767 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, audio: bool = False) -> Path:
    """Write frames with tsnet_hf's writer, with a sine tone as audio if asked."""
    from tsnet_hf.video import VideoWriter

    tone = write_tone(path.with_suffix(".wav"), len(frames) / fps + 0.5) if audio else None
    with VideoWriter(path, fps, audio_from=tone) as writer:
        for frame in frames:
            writer.write(frame)
    return path


# ----- landmarks ------------------------------------------------------------------------------------------


def ellipse_by_count(center, width, height, start, count, clockwise=True):
    """`count` points on an ellipse from angle `start` (radians, 0 = +x), y pointing down."""
    step = 2 * math.pi / count * (1 if clockwise else -1)
    angles = start + step * np.arange(count)
    return np.stack([center[0] + width / 2 * np.cos(angles), center[1] + height / 2 * np.sin(angles)], -1)


def face_shape(eye=18.0, mouth=40.0, jaw=(100.0, 60.0), nose=1.0, brow=30.0, mouth_open=6.0):
    """(68, 2) dlib-layout face, upright, centred near the origin, ~100 px wide."""
    jaw_angles = np.linspace(math.pi, 0, 17)
    jaw_pts = np.stack([jaw[0] / 2 * np.cos(jaw_angles), jaw[1] * np.sin(jaw_angles)], -1)
    brow_x = np.linspace(0, brow, 5)
    right_brow = np.stack([-10 - brow + brow_x, -25 - 3 * np.sin(brow_x / brow * math.pi)], -1)
    left_brow = np.stack([10 + brow_x, -25 - 3 * np.sin(brow_x / brow * math.pi)], -1)
    bridge = np.stack([np.zeros(4), np.linspace(-15, 15, 4) * nose], -1)
    base_x = np.linspace(-10, 10, 5) * nose
    base = np.stack([base_x, 20 * nose + 2 * np.cos(np.linspace(-1, 1, 5))], -1)
    right_eye = ellipse_by_count((-22, -8), eye, eye / 3, math.pi, 6)  # outer corner, upper lid, ...
    left_eye = ellipse_by_count((22, -8), eye, eye / 3, math.pi, 6)  # inner corner first
    outer = ellipse_by_count((0, 38), mouth, 14, math.pi, 12)
    inner = ellipse_by_count((0, 38), 0.75 * mouth, mouth_open, math.pi, 8)
    return np.concatenate([jaw_pts, right_brow, left_brow, bridge, base, right_eye, left_eye, outer, inner]).astype(
        np.float64
    )


def place(shape, scale, center, angle=0.0):
    """(68, 2) shape scaled, rotated by `angle` radians and moved to `center`, as (68, 3)."""
    cos, sin = math.cos(angle), math.sin(angle)
    xy = scale * shape @ np.array([[cos, sin], [-sin, cos]]) + np.asarray(center)
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def ellipse_by_degrees(cx, cy, rx, ry, degrees):
    """Points on an ellipse at the given angles (degrees, counter-clockwise as seen on screen)."""
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], axis=1)


def synthetic_face(cx=127.5, cy=128.0, s=60.0) -> np.ndarray:
    """(68, 3) float32 dlib-layout face, mirror-symmetric about x = cx, all confidences 1."""
    t = np.linspace(0, np.pi, 17)
    parts = [
        np.stack([cx - s * np.cos(t), cy + 0.9 * s * np.sin(t)], axis=1),  # jaw 0-16
        np.stack([np.linspace(cx - 0.75 * s, cx - 0.15 * s, 5), np.full(5, cy - 0.55 * s)], 1),
        np.stack([np.linspace(cx + 0.15 * s, cx + 0.75 * s, 5), np.full(5, cy - 0.55 * s)], 1),
        np.stack([np.full(4, cx), np.linspace(cy - 0.4 * s, cy + 0.05 * s, 4)], axis=1),
        np.stack([np.linspace(cx - 0.2 * s, cx + 0.2 * s, 5), np.full(5, cy + 0.15 * s)], 1),
        ellipse_by_degrees(cx - 0.4 * s, cy - 0.3 * s, 0.15 * s, 0.07 * s, [180, 120, 60, 0, -60, -120]),
        ellipse_by_degrees(cx + 0.4 * s, cy - 0.3 * s, 0.15 * s, 0.07 * s, [180, 120, 60, 0, -60, -120]),
        ellipse_by_degrees(cx, cy + 0.45 * s, 0.35 * s, 0.15 * s, np.arange(180, -180, -30)),  # outer lips
        ellipse_by_degrees(cx, cy + 0.45 * s, 0.25 * s, 0.06 * s, np.arange(180, -180, -45)),  # inner lips
    ]
    xy = np.concatenate(parts)
    return np.concatenate([xy, np.ones((68, 1))], axis=1).astype(np.float32)


BODY25_XY = [
    (127.5, 40),
    (127.5, 70),
    (97.5, 70),
    (67.5, 70),
    (37.5, 70),
    (157.5, 70),
    (187.5, 70),
    (217.5, 70),
    (127.5, 140),
    (112.5, 140),
    (107.5, 185),
    (102.5, 222),
    (142.5, 140),
    (147.5, 185),
    (152.5, 222),
    (121.5, 35),
    (133.5, 35),
    (115.5, 38),
    (139.5, 38),
    (164.5, 240),
    (172.5, 236),
    (150.5, 236),
    (90.5, 240),
    (82.5, 236),
    (104.5, 236),
]


def synthetic_hand(wrist, direction) -> np.ndarray:
    """(21, 2) hand: five straight fingers fanned 20 degrees apart, 6 px per segment."""
    points = [wrist]
    for finger in range(5):
        angle = np.radians((finger - 2) * 20)
        unit = np.array([direction * np.cos(angle), np.sin(angle)])
        points += [np.asarray(wrist) + unit * 6 * k for k in range(1, 5)]
    return np.asarray(points)


def synthetic_body(with_face=True) -> np.ndarray:
    """(135, 3) float32 T-pose person in a 256x256 canvas, mirror-symmetric about x = 127.5."""
    xy = np.concatenate(
        [
            np.asarray(BODY25_XY),
            synthetic_hand(BODY25_XY[7], 1),
            synthetic_hand(BODY25_XY[4], -1),
            synthetic_face(127.5, 40, 14)[:, :2],
        ]
    )
    confidence = np.ones((135, 1))
    if not with_face:
        confidence[layouts.FACE_SLICE] = 0
    return np.concatenate([xy, confidence], axis=1).astype(np.float32)
