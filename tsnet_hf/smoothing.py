"""Temporal smoothing of landmark tracks with the One-Euro filter (Casiez et al., CHI 2012).

Points are filtered as 2-D vectors in units of the track's size, so one preset fits any resolution;
missing points are never smoothed into. docs/landmarks.md gives the filter's equations, why it is
not the `oneeurofilter` package, and how the "face" and "body" presets were measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError

__all__ = ["OneEuroSettings", "PRESETS", "one_euro_filter", "smooth_track", "track_size"]


@dataclass(frozen=True)
class OneEuroSettings:
    """Settings of the One-Euro filter.

    min_cutoff: cutoff frequency at rest, in Hz (lower = smoother, more lag when slow).
    beta: how fast the cutoff rises with speed, in Hz per (size units per second); the size
        unit is the track size (see `track_size`), or 1 pixel when `normalise` is False.
    d_cutoff: cutoff frequency used to low-pass the velocity, in Hz.
    normalise: divide coordinates by the track size before filtering.
    """

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    normalise: bool = True

    def __post_init__(self):
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise InputError(
                f"One-Euro settings need min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {self}; "
                "change the offending value."
            )


PRESETS = {
    "face": OneEuroSettings(min_cutoff=1.0, beta=40.0, d_cutoff=1.0),
    "body": OneEuroSettings(min_cutoff=1.0, beta=20.0, d_cutoff=1.0),
}


def track_size(points: np.ndarray) -> float:
    """The size of a landmark track, in pixels.

    points: (T, P, 3) float, x and y in pixels and confidence in [0, 1] (0 = missing).
    Returns the median over frames of the diagonal of the bounding box of the points with
    confidence > 0 (frames with fewer than 2 such points are skipped); 1.0 when no frame counts.
    """
    valid = points[..., 2] > 0  # (T, P)
    xy = np.where(valid[..., None], points[..., :2], np.nan)
    counted = valid.sum(axis=1) >= 2
    if not counted.any():
        return 1.0
    xy = xy[counted]
    extent = np.nanmax(xy, axis=1) - np.nanmin(xy, axis=1)  # (T', 2)
    size = float(np.median(np.hypot(extent[:, 0], extent[:, 1])))
    return size if size > 0 else 1.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of an exponential low-pass filter with `cutoff` Hz at time step dt."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


def one_euro_filter(values: np.ndarray, times: np.ndarray, valid: np.ndarray, settings: OneEuroSettings) -> np.ndarray:
    """Filter (T, P, D) values in time, each point's D coordinates as one vector.

    values: (T, P, D) float, any units (the speed in `settings.beta` is in these units / s).
    times: (T,) float seconds, strictly increasing.
    valid: (T, P) bool; invalid samples are returned unchanged and restart that point's filter.
    Returns (T, P, D) float64.
    """
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    x_hat = np.zeros(values.shape[1:])  # (P, D) last filtered value
    dx_hat = np.zeros(values.shape[1:])  # (P, D) last filtered velocity
    started = np.zeros(values.shape[1], dtype=bool)  # (P,) filter has a previous sample
    for t in range(values.shape[0]):
        now = valid[t]
        cont = now & started  # points with a previous sample to filter against
        if t > 0 and cont.any():
            dt = float(times[t] - times[t - 1])
            velocity = (values[t, cont] - x_hat[cont]) / dt  # (K, D)
            dx_hat[cont] += _alpha(settings.d_cutoff, dt) * (velocity - dx_hat[cont])
            cutoff = settings.min_cutoff + settings.beta * np.linalg.norm(dx_hat[cont], axis=-1)
            x_hat[cont] += _alpha(cutoff, dt)[:, None] * (values[t, cont] - x_hat[cont])
            out[t, cont] = x_hat[cont]
        fresh = now & ~started
        x_hat[fresh] = values[t, fresh]
        dx_hat[fresh] = 0.0
        started = now
    return out


def smooth_track(
    points: np.ndarray,
    fps: float,
    preset: str | None = "face",
    times: np.ndarray | None = None,
    **overrides,
) -> np.ndarray:
    """Smooth a landmark track in time with the One-Euro filter.

    points: (T, P, 3) float, x and y in pixels, confidence in [0, 1] (0 = missing, such points
        are passed through and not smoothed into); or (T, P, 2) with every point present.
    fps: frames per second of the track (used when `times` is None).
    preset: "face", "body", or None for the filter's published defaults (min_cutoff 1 Hz,
        beta 0, d_cutoff 1 Hz) in size units.
    times: optional (T,) frame times in seconds, for tracks with dropped frames.
    overrides: any `OneEuroSettings` field, e.g. `beta=20.0`.
    Returns an array of the same shape as `points`, float32; confidences are unchanged.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[-1] not in (2, 3):
        raise InputError(
            f"smooth_track needs a (T, P, 2) or (T, P, 3) array, got shape {points.shape}; "
            "pass landmarks as frames x points x (x, y[, confidence])."
        )
    settings = _settings(preset, overrides)
    times = _frame_times(points.shape[0], fps, times)
    out = points.astype(np.float32)  # a copy; confidences stay as they are
    if points.shape[-1] == 2:
        points = np.concatenate([points, np.ones(points.shape[:2] + (1,))], axis=-1)
    valid = points[..., 2] > 0  # (T, P)
    size = track_size(points) if settings.normalise else 1.0
    out[..., :2] = one_euro_filter(points[..., :2] / size, times, valid, settings) * size
    return out


def _settings(preset: str | None, overrides: dict) -> OneEuroSettings:
    """The preset's settings with `overrides` applied; errors name the valid choices."""
    if preset is None:
        base = OneEuroSettings()
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise InputError(f"Unknown smoothing preset {preset!r}; use one of {sorted(PRESETS)} or None.")
    unknown = set(overrides) - set(OneEuroSettings.__dataclass_fields__)
    if unknown:
        raise InputError(
            f"Unknown smoothing setting(s) {sorted(unknown)}; valid ones are min_cutoff, beta, d_cutoff and normalise."
        )
    return replace(base, **overrides)


def _frame_times(num_frames: int, fps: float, times: np.ndarray | None) -> np.ndarray:
    """(T,) frame times in seconds: `times` checked, or frame index / fps."""
    if times is None:
        if not fps or fps <= 0:
            raise InputError(f"fps must be a positive number, got {fps!r}; pass the video's fps.")
        return np.arange(num_frames, dtype=np.float64) / float(fps)
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (num_frames,) or (num_frames > 1 and np.any(np.diff(times) <= 0)):
        raise InputError(
            f"times must be {num_frames} strictly increasing seconds, got shape {times.shape}; "
            "pass one time per frame of the track."
        )
    return times
