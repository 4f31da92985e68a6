"""The fast tier's rules (tests/conftest.py) fail a test that breaks them: run in a pytest of its own
on throwaway tests beside a copy of this folder's conftest."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
THROWAWAY = """
import subprocess, sys
import pytest
from tsnet_hf import landmarks

@pytest.mark.slow
def test_slow_may_do_both():  # first: mediapipe is imported before the fast test below makes a detector
    landmarks._solutions()
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_makes_a_detector():
    landmarks._solutions()

def test_starts_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_plain():
    assert sum(range(4)) == 6
"""


@pytest.mark.slow  # a pytest in a Python process of its own, and mediapipe
def test_fast_tests_that_break_the_rules_fail_and_slow_ones_pass(tmp_path):
    for name in ("conftest.py", "helpers.py", "synthetic.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: s\n    shared: s\n    browser: s\n")
    (tmp_path / "test_throwaway.py").write_text(THROWAWAY)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-m", ""],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = run.stdout.splitlines()

    def outcome(test):
        return next(line.split()[0] for line in lines if line.endswith(test) or f"::{test} " in line)

    assert outcome("test_makes_a_detector") == "FAILED", run.stdout[-3000:]
    assert "it ran or imported mediapipe" in run.stdout
    assert outcome("test_starts_python") == "FAILED"
    assert "it started a Python process" in run.stdout
    assert outcome("test_slow_may_do_both") == "PASSED"
    assert outcome("test_plain") == "PASSED"


@pytest.mark.slow  # a pytest in a Python process of its own
def test_a_shared_dir_test_without_its_marker_stops_collection(tmp_path):
    for name in ("conftest.py", "helpers.py", "synthetic.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: s\n    shared: s\n    browser: s\n")
    (tmp_path / "test_throwaway.py").write_text("def test_uses_shared(shared_dir):\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "need @pytest.mark.shared" in run.stdout + run.stderr
