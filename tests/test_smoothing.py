"""One-Euro smoothing (tsnet_hf.smoothing) on synthetic tracks: runs everywhere, in seconds."""

import math

import numpy as np
import pytest

from tsnet_hf.errors import InputError
from tsnet_hf.smoothing import PRESETS, OneEuroSettings, one_euro_filter, smooth_track, track_size

FPS = 30.0


def reference_one_euro(values, fps, min_cutoff, beta, d_cutoff):
    """The published scalar algorithm (Casiez et al. 2012), one coordinate at a time."""

    def alpha(cutoff):
        return 1.0 / (1.0 + fps / (2 * math.pi * cutoff))

    out, x_hat, dx_hat = [], None, 0.0
    for x in values:
        if x_hat is None:
            x_hat = x
        else:
            dx_hat += alpha(d_cutoff) * ((x - x_hat) * fps - dx_hat)
            x_hat += alpha(min_cutoff + beta * abs(dx_hat)) * (x - x_hat)
        out.append(x_hat)
    return np.array(out)


def face_like_track(num_frames=300, num_points=68, size=200.0, seed=0):
    """(T, P, 3) float32: points spread over a `size`-pixel face, all confidence 1."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, size / math.sqrt(2), (num_points, 2)) + 100  # bbox diagonal ~ size
    points = np.ones((num_frames, num_points, 3), dtype=np.float32)
    points[..., :2] = base
    return points


def test_matches_the_published_scalar_algorithm_for_motion_along_one_axis():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(0, 2, 200)) + 5 * np.sin(np.arange(200) / 5)
    values = np.stack([x, np.zeros_like(x)], axis=-1)[:, None, :]  # (T, 1, 2), y constant
    settings = OneEuroSettings(min_cutoff=1.3, beta=0.05, d_cutoff=1.0)
    ours = one_euro_filter(values, np.arange(200) / FPS, np.ones((200, 1), bool), settings)
    expected = reference_one_euro(x, FPS, 1.3, 0.05, 1.0)
    np.testing.assert_allclose(ours[:, 0, 0], expected, rtol=1e-9, atol=1e-9)


def test_reduces_jitter_of_a_still_track():
    points = face_like_track()
    noisy = points.copy()
    noisy[..., :2] += np.random.default_rng(2).normal(0, 1.0, noisy[..., :2].shape)
    smoothed = smooth_track(noisy, FPS, preset="face")
    raw_jitter = np.std(noisy[30:, :, :2] - points[30:, :, :2])
    jitter = np.std(smoothed[30:, :, :2] - points[30:, :, :2])
    assert jitter < 0.6 * raw_jitter


@pytest.mark.parametrize("preset", ["face", "body"])
def test_reduces_jitter_and_keeps_lag_bounded_on_a_moving_track(preset):
    # A head swaying by 5 % of its size at 0.3-0.4 Hz, with 0.25 % jitter (FaceMesh: ~0.15 %).
    points = face_like_track()
    t = np.arange(len(points)) / FPS
    motion = 10 * np.stack([np.sin(2 * np.pi * 0.3 * t), np.cos(2 * np.pi * 0.4 * t)], -1)  # px
    truth = points.copy()
    truth[..., :2] += motion[:, None]
    noisy = truth.copy()
    noisy[..., :2] += np.random.default_rng(3).normal(0, 0.5, noisy[..., :2].shape)
    smoothed = smooth_track(noisy, FPS, preset=preset)
    jitter = lambda x: np.sqrt(np.mean(np.diff(x[30:, :, :2], 2, axis=0) ** 2))  # noqa: E731
    assert jitter(smoothed) < 0.6 * jitter(noisy)
    # Lag, measured without noise: the filtered track trails the motion by under one frame,
    # for slow head sway and for fast lip-like motion (5 px at 3 Hz).
    for amplitude, frequency in ((10, 0.3), (5, 3.0)):
        motion = amplitude * np.stack([np.sin(2 * np.pi * frequency * t), np.cos(2 * np.pi * 1.3 * frequency * t)], -1)
        clean = points.copy()
        clean[..., :2] += motion[:, None]
        lagging = smooth_track(clean, FPS, preset=preset)
        per_frame_motion = np.sqrt(np.mean(np.sum(np.diff(motion, axis=0) ** 2, axis=-1)))
        error = np.sqrt(np.mean(np.sum((lagging[30:, :, :2] - clean[30:, :, :2]) ** 2, axis=-1)))
        assert error < per_frame_motion


def test_follows_a_step_within_a_few_frames():
    points = face_like_track(num_frames=60)
    points[30:, :, 0] += 100  # half a face size
    smoothed = smooth_track(points, FPS, preset="face")
    reached = (smoothed[:, :, 0] - points[0, :, 0]) / 100  # fraction of the step
    assert np.all(reached[33] > 0.9)
    np.testing.assert_allclose(smoothed[:30], points[:30], atol=1e-4)


def test_resolution_independent():
    points = face_like_track()
    points[..., :2] += np.random.default_rng(4).normal(0, 1.0, points[..., :2].shape)
    big = points.copy()
    big[..., :2] *= 4
    np.testing.assert_allclose(
        smooth_track(big, FPS)[..., :2],
        4 * smooth_track(points, FPS)[..., :2],
        rtol=1e-4,
        atol=1e-3,
    )


def test_missing_points_are_not_smoothed_into():
    points = face_like_track(num_frames=40)
    points[:, 0, 0] += np.arange(40) * 2.0
    points[10:15, 0] = 0.0  # missing
    smoothed = smooth_track(points, FPS, preset="face")
    np.testing.assert_array_equal(smoothed[10:15, 0], 0.0)
    np.testing.assert_allclose(smoothed[15, 0], points[15, 0])  # restarts on the new sample
    np.testing.assert_array_equal(smoothed[..., 2], points[..., 2])  # confidences unchanged


def test_shapes_dtypes_and_two_column_input():
    points = face_like_track(num_frames=10)
    out3 = smooth_track(points.astype(np.float64), FPS, preset="body")
    assert out3.shape == points.shape and out3.dtype == np.float32
    out2 = smooth_track(points[..., :2], FPS, preset="body")
    assert out2.shape == (10, 68, 2)
    np.testing.assert_allclose(out2, out3[..., :2], atol=1e-4)


def test_uneven_times_equal_even_ones_when_consistent():
    points = face_like_track(num_frames=50)
    points[..., 0] += np.random.default_rng(5).normal(0, 1.0, points[..., 0].shape)
    times = np.arange(50) / FPS
    np.testing.assert_allclose(smooth_track(points, FPS, times=times), smooth_track(points, FPS))
    with pytest.raises(InputError):
        smooth_track(points, FPS, times=times[::-1])


def test_track_size_is_the_median_bbox_diagonal():
    points = face_like_track(num_frames=5)
    points[..., :2] = 0
    points[:, 1, :2] = (30, 40)
    assert track_size(points) == pytest.approx(50.0)
    assert track_size(np.zeros((3, 4, 3))) == 1.0  # nothing confident


def test_presets_and_errors():
    assert set(PRESETS) == {"face", "body"}
    points = face_like_track(num_frames=5)
    smooth_track(points, FPS, preset=None)
    smooth_track(points, FPS, preset="face", beta=0.0, normalise=False)
    with pytest.raises(InputError, match="preset"):
        smooth_track(points, FPS, preset="hands")
    with pytest.raises(InputError, match="setting"):
        smooth_track(points, FPS, gamma=1.0)
    with pytest.raises(InputError):
        smooth_track(points, FPS, min_cutoff=0.0)
    with pytest.raises(InputError, match="fps"):
        smooth_track(points, 0)
    with pytest.raises(InputError, match="shape"):
        smooth_track(points[0], FPS)
