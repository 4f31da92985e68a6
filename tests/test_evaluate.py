"""training/evaluate.py: metric definitions, and a full evaluation of a tiny checkpoint that must
produce every metric for the model and for the nearest-frame baseline."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(ROOT))

from test_losses import random_lpips_files  # noqa: E402
from test_training import SIZE, write_face_videos  # noqa: E402

from training import evaluate, preprocess  # noqa: E402
from tsnet_hf import TSNet, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    videos = write_face_videos(tmp_path_factory.mktemp("eval-videos"), count=2, frames=24, noise=False)
    folder = tmp_path_factory.mktemp("eval-cache") / "face-64"
    preprocess.preprocess_folder(videos, folder, preprocess.CacheSettings("face", SIZE), progress=None)
    return folder


def test_image_metrics_definitions():
    target = torch.zeros(2, 3, 4, 4)  # 0.5 grey in [0, 1]
    output = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.2)])  # second: +0.1 in [0, 1]
    metrics = evaluate.image_metrics(output, target)
    assert metrics["l1"].tolist() == pytest.approx([0.0, 0.1])
    assert metrics["l2"].tolist() == pytest.approx([0.0, 0.01])
    assert metrics["psnr"].tolist() == pytest.approx([evaluate.PSNR_CAP, 20.0])
    assert "lpips" not in metrics


def test_landmark_distance_uses_points_confident_in_both():
    reference = np.zeros((2, 3, 3), np.float32)
    reference[..., 2] = 1
    found = reference.copy()
    found[0, :, 0] += 6.4  # every point 6.4 px off on a 64 px crop: 0.1
    found[1, :, 2] = 0  # nothing detected
    distance = evaluate.landmark_distance(found, reference, 64)
    assert distance[0] == pytest.approx(0.1) and math.isnan(distance[1])


def test_evaluation_of_a_tiny_checkpoint_reports_every_metric(cache, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    alexnet, linear = random_lpips_files(tmp_path)
    output = tmp_path / "eval"
    code = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(cache), "--output", str(output),
                          "--lpips-alexnet", str(alexnet), "--lpips-lin", str(linear), "--frames", "6",
                          "--device", "cpu"])
    assert code == 0
    report = json.loads((output / "metrics.json").read_text())
    own = report["self_reconstruction"]
    assert own["videos"] == 2 and own["frames"] == 12
    for who in ("model", "baseline"):
        assert set(own[who]) == {*evaluate.IMAGE_METRICS, *evaluate.LANDMARK_METRICS}
        assert all(own[who][name] is not None for name in evaluate.IMAGE_METRICS)
        assert set(report["cross_identity"][who]) == set(evaluate.LANDMARK_METRICS)
    baseline = own["baseline"]
    assert baseline["landmark_detected"] == 1.0 and baseline["landmark_distance"] < 0.05  # real frames, copied
    assert baseline["l1"] < own["model"]["l1"]  # an untrained model loses to copying a frame
    assert report["cross_identity"]["pairs"] == 2 and len(report["per_video"]) == 2
    table = (output / "metrics.md").read_text()
    for needle in ("| l1 |", "| lpips |", "| psnr |", "| landmark_distance |", "baseline (nearest subject frame)",
                   "**Cross-identity**"):
        assert needle in table


def test_missing_lpips_weights_are_one_clear_error(cache, tmp_path, capsys):
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    code = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(cache), "--output", str(tmp_path / "e"),
                          "--lpips-alexnet", str(tmp_path / "none.safetensors"), "--lpips-lin", str(tmp_path / "x")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "does not exist" in error and len(error.splitlines()) == 1


@pytest.mark.shared
def test_evaluation_with_the_real_lpips_weights(cache, shared_dir, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    weights = shared_dir / "weights"
    code = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(cache), "--output", str(tmp_path / "eval"),
                          "--lpips-alexnet", str(weights / "alexnet_imagenet_features.safetensors"),
                          "--lpips-lin", str(weights / "lpips_v0.1_lin_alex.safetensors"), "--frames", "4",
                          "--no-cross", "--no-landmarks", "--device", "cpu"])
    assert code == 0
    own = json.loads((tmp_path / "eval" / "metrics.json").read_text())["self_reconstruction"]
    assert 0 < own["baseline"]["lpips"] < own["model"]["lpips"] < 1.5
