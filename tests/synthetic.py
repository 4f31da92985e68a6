"""Generated media for tests that must run everywhere (no ../shared).

The face is scikit-image's astronaut (Eileen Collins, a NASA photo in the public domain, shipped in
the scikit-image wheel), moved, scaled and turned a little per frame so mediapipe sees a real face
in a real video. Audio is a generated sine tone.
"""

import math
import wave
from pathlib import Path

import cv2
import numpy as np


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
