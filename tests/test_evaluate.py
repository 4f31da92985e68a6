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

from training import evaluate, preprocess  # noqa: E402
from tsnet_hf import TSNet, tiny_config  # noqa: E402

from helpers import SIZE, random_lpips_files, run_training, train_args, write_face_videos  # noqa: E402


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


@pytest.mark.slow  # mediapipe (the cache fixture)
def test_evaluation_of_a_tiny_checkpoint_reports_every_metric(cache, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    alexnet, linear = random_lpips_files(tmp_path)
    output = tmp_path / "eval"
    code = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(cache),
            "--output",
            str(output),
            "--lpips-alexnet",
            str(alexnet),
            "--lpips-lin",
            str(linear),
            "--frames",
            "6",
            "--device",
            "cpu",
        ]
    )
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
    for needle in (
        "| l1 |",
        "| lpips |",
        "| psnr |",
        "| landmark_distance |",
        "baseline (nearest subject frame)",
        "**Cross-identity**",
    ):
        assert needle in table


@pytest.mark.slow  # mediapipe (the cache fixture)
def test_missing_lpips_weights_are_one_clear_error(cache, tmp_path, capsys):
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    code = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(cache),
            "--output",
            str(tmp_path / "e"),
            "--lpips-alexnet",
            str(tmp_path / "none.safetensors"),
            "--lpips-lin",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "does not exist" in error and len(error.splitlines()) == 1


@pytest.mark.shared
def test_evaluation_with_the_real_lpips_weights(cache, shared_dir, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny"
    TSNet(tiny_config("face")).save_pretrained(checkpoint)
    weights = shared_dir / "weights"
    code = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(cache),
            "--output",
            str(tmp_path / "eval"),
            "--lpips-alexnet",
            str(weights / "alexnet_imagenet_features.safetensors"),
            "--lpips-lin",
            str(weights / "lpips_v0.1_lin_alex.safetensors"),
            "--frames",
            "4",
            "--no-cross",
            "--no-landmarks",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    own = json.loads((tmp_path / "eval" / "metrics.json").read_text())["self_reconstruction"]
    assert 0 < own["baseline"]["lpips"] < own["model"]["lpips"] < 1.5


class CopyFirstFrame(torch.nn.Module):
    """A stand-in generator that outputs the first of the K subject frames it is given."""

    def __init__(self, config):
        super().__init__()
        self.model = TSNet(config)
        self.config = config

    def encode_subject(self, frames, masks):
        return self.model.encode_subject(frames, masks)

    def generate(self, memory, driving_masks):
        from tsnet_hf.modeling import TSNetOutput

        return TSNetOutput(
            image=memory.frames[:, 0].expand(driving_masks.shape[0] // memory.num_subjects, -1, -1, -1)
            if memory.num_subjects == 1
            else memory.frames[:, 0]
        )


@pytest.mark.slow  # mediapipe (the cache fixture)
def test_nearest_selection_gives_the_model_the_frame_the_baseline_copies(cache):
    """K = 1 nearest: a generator that copies its subject frame equals the baseline exactly; drawn
    once at random, it does not."""
    from training.data import open_cache

    videos = open_cache(cache, "face", SIZE)
    copier = CopyFirstFrame(tiny_config("face"))
    nearest = evaluate.Evaluator(copier, torch.device("cpu"), None, num_subject=1, frames=8, landmarks=False)
    result = nearest.self_reconstruction(videos[0])
    assert np.array_equal(result["model"]["l1"], result["baseline"]["l1"])
    drawn = evaluate.Evaluator(
        copier, torch.device("cpu"), None, num_subject=1, frames=8, landmarks=False, selection="random", seed=3
    )
    result = drawn.self_reconstruction(videos[0])
    assert result["model"]["l1"].mean() > result["baseline"]["l1"].mean()
    with pytest.raises(Exception, match="selection must be one of"):
        evaluate.Evaluator(copier, torch.device("cpu"), selection="best")


@pytest.mark.slow  # mediapipe (the cache fixture), a training run
def test_a_blend_checkpoint_is_evaluated_and_exported_with_its_card(cache, tmp_path):
    from training import export

    run = tmp_path / "run"
    run_training(train_args(cache, run, "--steps", "2", "--output-path", "blend", "--holdout", "face1"))
    alexnet, linear = random_lpips_files(tmp_path)
    evals = []
    for k in (1, 3):
        evals.append(tmp_path / f"eval-k{k}")
        assert (
            evaluate.main(
                [
                    "--checkpoint",
                    str(run / "final"),
                    "--data",
                    str(cache),
                    "--output",
                    str(evals[-1]),
                    "--lpips-alexnet",
                    str(alexnet),
                    "--lpips-lin",
                    str(linear),
                    "--frames",
                    "4",
                    "--k",
                    str(k),
                    "--videos",
                    "face1",
                    "--no-cross",
                    "--no-landmarks",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("file\tsource_repo\tpath_in_repo\tlicense\nface/face0.mp4\tsomeone/repo\tface0.mp4\tMIT\n")
    shipped = tmp_path / "face-blend-64"
    assert export.main([str(run), str(shipped), "--eval", *map(str, evals), "--manifest", str(manifest)]) == 0
    from safetensors import safe_open

    with safe_open(str(shipped / "model.safetensors"), "pt") as weights:
        assert all(weights.get_tensor(key).dtype == torch.float16 for key in weights.keys())
    model = TSNet.from_pretrained(shipped)
    trained = TSNet.from_pretrained(run / "final")
    assert model.config == trained.config
    assert all(
        torch.allclose(a, b.half().float()) for a, b in zip(model.state_dict().values(), trained.state_dict().values())
    )
    card = (shipped / "README.md").read_text()
    for needle in (
        "| face0 | training | someone/repo `face0.mp4` | MIT |",
        "held out (validation and evaluation)",
        "K = 1 (nearest)",
        "K = 3 (nearest)",
        "baseline (nearest subject frame)",
        "TS-Net K = 3 | 0.0271",
        "## Misuse",
        "blend output, 64 px",
    ):
        assert needle in card, needle
    from huggingface_hub import ModelCard

    data = ModelCard.load(shipped / "README.md").data  # the Hub's metadata: model-index of the held-out table
    assert data.datasets == [cache.name] and data.library_name == "tsnet-hf" and data.base_model is None
    reports = {k: json.loads((tmp_path / f"eval-k{k}" / "metrics.json").read_text()) for k in (1, 3)}
    for k, report in reports.items():
        found = {r.metric_type: r.metric_value for r in data.eval_results if r.dataset_config == f"K = {k} (nearest)"}
        assert found == {
            name: round(value, 4)
            for name, value in report["self_reconstruction"]["model"].items()
            if name in ("l1", "l2", "psnr", "lpips")
        }


def test_inference_ablations_take_a_blend_output_apart():
    torch.manual_seed(0)
    model = TSNet(tiny_config("face", output="blend")).eval()
    frames = torch.rand(1, 3, 3, SIZE, SIZE) * 2 - 1
    masks = torch.zeros(1, 3, 2, SIZE, SIZE)
    masks[:, :, 0] = 1
    driving = masks[0, :2].clone()
    with torch.no_grad():
        memory = model.encode_subject(frames, masks)
        out = model.generate(memory, driving)
        assert torch.equal(evaluate.ablated_image(out, memory, "none"), out.image)
        assert torch.equal(evaluate.ablated_image(out, memory, "warp-only"), out.sharp)
        assert torch.equal(evaluate.ablated_image(out, memory, "decoder-only"), out.decoded)
        mean = evaluate.ablated_image(out, memory, "mean-weights")
    from tsnet_hf.modeling import pixel_warp

    sharp = pixel_warp(frames, out.grid).mean(dim=1)
    assert torch.allclose(mean, out.blend_mask * sharp + (1 - out.blend_mask) * out.decoded, atol=1e-6)
    assert not torch.allclose(mean, out.image, atol=1e-4)  # learned weights differ from the mean
    with pytest.raises(Exception, match="takes apart a blend model"):
        evaluate.Evaluator(TSNet(tiny_config("face")), torch.device("cpu"), ablation="warp-only")


@pytest.mark.slow  # mediapipe (the cache fixture)
def test_precision_option_runs_the_model_in_bf16_and_bench_precision_compares_it(cache, tmp_path, capsys):
    """--precision bf16 changes the model's arithmetic only (metrics stay fp32); bench_precision
    reports both precisions and the LPIPS between them on the same frames."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny-blend"
    TSNet(tiny_config("face", output="blend")).save_pretrained(checkpoint)
    alexnet, linear = random_lpips_files(tmp_path)
    reports = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / precision
        assert (
            evaluate.main(
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--data",
                    str(cache),
                    "--output",
                    str(output),
                    "--lpips-alexnet",
                    str(alexnet),
                    "--lpips-lin",
                    str(linear),
                    "--frames",
                    "4",
                    "--no-cross",
                    "--no-landmarks",
                    "--device",
                    "cpu",
                    "--precision",
                    precision,
                ]
            )
            == 0
        )
        reports[precision] = json.loads((output / "metrics.json").read_text())["self_reconstruction"]["model"]
    assert reports["fp32"]["l1"] != reports["bf16"]["l1"]  # bf16 really ran
    assert abs(reports["fp32"]["l1"] - reports["bf16"]["l1"]) < 0.05  # and stays close on the same frames
    assert "bf16 autocast" in (tmp_path / "bf16" / "metrics.md").read_text()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_precision

    capsys.readouterr()
    assert (
        bench_precision.main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(cache),
                "--frames",
                "4",
                "--lpips-alexnet",
                str(alexnet),
                "--lpips-lin",
                str(linear),
            ]
        )
        == 0
    )
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| `{checkpoint}`")]
    cells = [cell.strip() for cell in row[0].strip("|").split("|")]
    assert cells[1:3] == ["2", "8"]  # 2 videos, 4 driving frames each
    fp32, bf16, between = float(cells[3]), float(cells[4]), float(cells[6])
    assert 0 < fp32 and 0 < bf16 and 0 <= between < 0.5 and cells[-1] in ("yes", "no")
    assert bench_precision.main(["--checkpoint", str(checkpoint), "--data", str(cache), "--videos", "nobody"]) == 2
    assert capsys.readouterr().err.strip() == "error: No video to measure: check --data and --videos."
