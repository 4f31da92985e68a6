"""The shipped checkpoints travel with a non-editable install (a wheel), and the CLI finds them."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tsnet_hf.cli as cli

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(folder: Path, mode: str, size: int):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"mode": mode, "image_size": size}))


def test_shipped_checkpoints_prefer_the_package_then_the_largest_resolution(tmp_path, monkeypatch):
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    write_checkpoint(checkout / "face-blend-128", "face", 128)
    write_checkpoint(checkout / "face-blend-256", "face", 256)
    write_checkpoint(checkout / "body-blend-128", "body", 128)
    (checkout / "face-notes").mkdir()  # no config.json: not a checkpoint
    monkeypatch.setattr(cli, "CHECKPOINT_DIRS", (installed, checkout))
    assert cli.default_checkpoint("face") == checkout / "face-blend-256"
    assert cli.default_checkpoint("body") == checkout / "body-blend-128"
    write_checkpoint(installed / "face-blend-128", "face", 128)
    assert cli.default_checkpoint("face") == installed / "face-blend-128"  # the installed package first
    assert cli.default_checkpoint("body") == checkout / "body-blend-128"  # per mode, the first place that has one
    monkeypatch.setattr(cli, "CHECKPOINT_DIRS", (tmp_path / "none",))
    assert cli.default_checkpoint("face") is None


@pytest.mark.slow
def test_a_wheel_carries_the_shipped_checkpoints_and_finds_them(tmp_path):
    shipped = sorted(p.parent.name for p in (ROOT / "checkpoints").glob("*/config.json"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("tsnet_hf-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in shipped:
        for file in ("config.json", "model.safetensors", "README.md"):
            assert f"tsnet_hf/checkpoints/{name}/{file}" in names
    assert "training/finetune.py" in names and "training/train.py" in names  # for the tsnet-finetune script
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import tsnet_hf.cli as c; print(c.__file__); "
        "print(c.default_checkpoint('face')); print(c.default_checkpoint('body'))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    lines = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert lines[0].startswith(str(target))  # the installed copy, not the checkout
    for mode, found in zip(("face", "body"), lines[1:]):
        expected = [n for n in shipped if n.startswith(f"{mode}-")]
        if expected:
            assert found.startswith(str(target / "tsnet_hf" / "checkpoints" / f"{mode}-"))
        else:
            assert found == "None"
