"""Test tiers, their rules, and the fixtures every tier shares.

Tiers, chosen by markers (pyproject.toml's addopts runs the fast tier; README says how to run each):
- fast (no marker; `python -m pytest -q`): tiny seeded models and generated inputs, pure numpy and
  torch, a few seconds each. A fast test never imports mediapipe, never starts a Python process
  (scripts, servers, pip; ffmpeg on a few frames is fine) and ends within FAST_LIMIT_S seconds, setup
  included; the hooks below fail one that breaks these rules, so that a slow test cannot hide there.
- slow: mediapipe on generated videos, subprocesses, the app server, training runs, larger models.
- browser: drives a real Chromium page.
- shared: needs ../shared beside the project (or $TSNET_SHARED_DIR) and skips where it is absent;
  a test that asks for the `shared_dir` fixture must carry this marker.

A fast test that makes a mediapipe detector (tsnet_hf.landmarks._solutions) fails in every run,
whichever test imported mediapipe first.
"""

import os
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest

from tsnet_hf import landmarks
from tsnet_hf.landmarks import detect

from helpers import find_shared_dir

TIER_MARKERS = ("slow", "browser", "shared")
# Seconds a fast test may take, setup included: a generous bound for a loaded 2-core machine, meant to
# catch a test that belongs in `slow`; TSNET_FAST_LIMIT_S=0 turns it off.
FAST_LIMIT_S = float(os.environ.get("TSNET_FAST_LIMIT_S", "20"))


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

    @cache
    def get(path: str, mode: str, max_frames: int | None = None):
        return detect(str(path), mode=mode, max_frames=max_frames)

    return get


# ----- the fast tier's rules ------------------------------------------------------------------------------


def is_fast(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(name) for name in TIER_MARKERS)


def pytest_collection_modifyitems(config, items):
    unmarked = [
        item.nodeid for item in items if "shared_dir" in item.fixturenames and not item.get_closest_marker("shared")
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the shared_dir fixture need @pytest.mark.shared: " + ", ".join(unmarked)
        )


class FastTierGuard:
    """Watches one fast test from its setup to its end: Python processes started, mediapipe
    imported, seconds taken."""

    def __init__(self):
        self.start = time.perf_counter()
        self.had_mediapipe = "mediapipe" in sys.modules
        self.python_commands: list[str] = []
        self.mediapipe_calls = 0
        self.original_init = subprocess.Popen.__init__
        self.original_solutions = landmarks._solutions
        guard = self

        def recording_solutions():  # every mediapipe detector is made through it, imported first or not
            guard.mediapipe_calls += 1
            return guard.original_solutions()

        def recording_init(popen, args, *rest, **kwargs):
            program = args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]
            if str(program) == sys.executable or Path(str(program)).name.startswith("python"):
                guard.python_commands.append(" ".join(map(str, args)) if isinstance(args, (list, tuple)) else args)
            guard.original_init(popen, args, *rest, **kwargs)

        subprocess.Popen.__init__ = recording_init
        landmarks._solutions = recording_solutions

    def stop(self):
        subprocess.Popen.__init__ = self.original_init
        landmarks._solutions = self.original_solutions

    def broken_rules(self) -> list[str]:
        broken = []
        if self.python_commands:
            broken.append(f"it started a Python process ({self.python_commands[0][:200]})")
        if self.mediapipe_calls or (not self.had_mediapipe and "mediapipe" in sys.modules):
            broken.append("it ran or imported mediapipe")
        seconds = time.perf_counter() - self.start
        if FAST_LIMIT_S and seconds > FAST_LIMIT_S:
            broken.append(f"it took {seconds:.1f} s (over {FAST_LIMIT_S:g} s, setup included)")
        return broken


GUARD = pytest.StashKey[FastTierGuard]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if is_fast(item):
        item.stash[GUARD] = FastTierGuard()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    guard = item.stash.get(GUARD, None)
    broken = guard.broken_rules() if guard is not None else []
    if broken:
        pytest.fail(
            "a fast test (no slow, browser or shared marker) broke the fast tier's rules: "
            + "; ".join(broken)
            + ". Mark it @pytest.mark.slow (tests/conftest.py says why).",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        guard = item.stash.get(GUARD, None)
        if guard is not None:
            guard.stop()
