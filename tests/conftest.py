"""Shared pytest fixtures.

`shared_dir`: the ../shared folder beside the project (real clips, photos, weights), or the folder
named by the TSNET_SHARED_DIR environment variable. Tests that use it are marked
@pytest.mark.shared and skip where it is absent (a user's fresh clone has no ../shared).
"""

import os
from pathlib import Path

import pytest


def find_shared_dir() -> Path | None:
    """The shared folder if it exists: $TSNET_SHARED_DIR, else ../shared beside the repository."""
    override = os.environ.get("TSNET_SHARED_DIR")
    path = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ../shared (or $TSNET_SHARED_DIR); skips the test when it is absent."""
    path = find_shared_dir()
    if path is None:
        pytest.skip("../shared is absent (set TSNET_SHARED_DIR to point at it)")
    return path


@pytest.fixture(scope="session")
def landmark_cache():
    """`get(path, mode, max_frames=None) -> LandmarkTrack`: mediapipe runs once per clip, mode and
    length per test run (default policy "interpolate", smoothing on), however many tests ask."""
    from functools import lru_cache

    from tsnet_hf.landmarks import detect

    @lru_cache(maxsize=None)
    def get(path: str, mode: str, max_frames: int | None = None):
        return detect(str(path), mode=mode, max_frames=max_frames)

    return get
