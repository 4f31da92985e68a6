"""tsnet-finetune (training/finetune.py): one generated subject clip, a tiny base model, a few
seconds of training; the output loads as a checkpoint and in the app, its card names the base
model; bad input gives one sentence and writes nothing."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training import finetune  # noqa: E402
from tsnet_hf import TSNet, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def subject_video(tmp_path_factory) -> Path:
    from synthetic import moving_face_frames, write_video

    return write_video(tmp_path_factory.mktemp("subject") / "me.mp4", moving_face_frames(30, 256, seed=4))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base") / "face-tiny"
    TSNet(tiny_config("face")).save_pretrained(folder)
    return folder


def finetune_args(video, base, output, *extra):
    return [
        str(video),
        "--from",
        str(base),
        "--minutes",
        "0.2",
        "-o",
        str(output),
        "--no-vgg",
        "--threads",
        "1",
        "--batch-size",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow  # mediapipe, a training run
def test_finetune_writes_a_checkpoint_the_app_loads(subject_video, base, tmp_path, capsys):
    output = tmp_path / "me-face"
    assert finetune.main(finetune_args(subject_video, base, output)) == 0
    assert f"fine-tuned checkpoint: {output}" in capsys.readouterr().out
    assert sorted(p.name for p in output.iterdir()) == ["README.md", "config.json", "model.safetensors", "training"]
    tuned, start = TSNet.from_pretrained(output), TSNet.from_pretrained(base)
    assert tuned.config == start.config
    log = (output / "training" / "log.txt").read_text()
    steps = int(log.split("time budget of 0.2 min reached at step ")[1].split(":")[0])
    assert steps >= 1  # it trained, so the weights moved
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))
    assert "held out by time" in log  # the end of the clip validates

    from huggingface_hub import ModelCard

    card = ModelCard.load(output / "README.md")
    assert card.data.base_model == str(base.resolve())  # a local folder: its full path (tsnet-push refuses it)
    assert card.data.datasets == ["me.mp4"] and card.data.library_name == "tsnet-hf"
    assert {r.metric_type for r in card.data.eval_results} >= {"l1", "l2", "psnr"}
    assert "fine-tuned on one subject" in card.text and "0.2 minutes" in card.text

    from tsnet_hf import demo

    settings = demo.load_settings(
        demo.build_parser().parse_args(["--checkpoint", str(output), "--no-shipped", "--device", "cpu"])
    )
    assert settings.sources == {"face": str(output)}


@pytest.mark.slow  # mediapipe, a training run
def test_a_hub_id_for_the_base_model_goes_into_the_card(subject_video, base, tmp_path):
    from huggingface_hub import ModelCard

    from tsnet_hf import upload

    output = tmp_path / "me-face"
    argv = finetune_args(subject_video, base, output, "--base-model-id", "someone/tsnet-face")
    argv[argv.index("--minutes") + 1] = "0.01"  # no step needed: the card is written all the same
    assert finetune.main(argv) == 0
    assert ModelCard.load(output / "README.md").data.base_model == "someone/tsnet-face"
    assert [p.name for p in upload.upload_plan(output)] == ["config.json", "model.safetensors", "README.md"]


def test_the_progress_bar_counts_minutes():
    bar = finetune.MinutesBar(0.5, disable=True)
    bar.update()
    bar.update()
    assert bar.bar.total == 30 and bar.steps == 2 and 0 <= bar.bar.n <= 1
    bar.close()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"video": "missing.mp4"}, "does not exist"),
        ({"video": "notes.txt"}, "is not a video"),
        ({"minutes": "0"}, "--minutes must be positive"),
        ({"minutes": "-3"}, "--minutes must be positive"),
        ({"hold_out": "1.5"}, "--hold-out is a share"),
        ({"base": "no/such folder"}, "does not exist"),
    ],
)
def test_bad_input_gives_one_sentence_and_writes_nothing(subject_video, base, tmp_path, capsys, change, expected):
    (tmp_path / "notes.txt").write_text("not a video")
    video = tmp_path / change["video"] if "video" in change else subject_video
    output = tmp_path / "out"
    argv = [
        str(video),
        "--from",
        change.get("base", str(base)),
        "--minutes",
        change.get("minutes", "1"),
        "-o",
        str(output),
        "--hold-out",
        change.get("hold_out", "0.1"),
        "--no-vgg",
    ]
    assert finetune.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and expected in error and len(error.splitlines()) == 1
    assert not output.exists()


@pytest.mark.slow  # mediapipe
def test_a_video_without_a_face_leaves_nothing_behind(base, tmp_path, capsys):
    import numpy as np

    from synthetic import write_video

    video = write_video(tmp_path / "wall.mp4", np.full((8, 64, 64, 3), 90, np.uint8))
    output = tmp_path / "new" / "me-face"
    assert finetune.main(finetune_args(video, base, output)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: No usable video") and len(error.splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_an_existing_checkpoint_is_not_overwritten(subject_video, base, tmp_path, capsys):
    assert finetune.main(finetune_args(subject_video, base, base)) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert not (base / "training").exists()


def test_the_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tsnet-finetune"] == "training.finetune:main"
    module, _, function = scripts["tsnet-push"].partition(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_missing_perceptual_weights_fail_before_preprocessing(subject_video, base, tmp_path, capsys):
    output = tmp_path / "out"
    argv = [
        str(subject_video),
        "--from",
        str(base),
        "--minutes",
        "1",
        "-o",
        str(output),
        "--vgg-weights",
        str(tmp_path / "none.safetensors"),
    ]
    assert finetune.main(argv) == 2
    error = capsys.readouterr()
    assert "none.safetensors does not exist" in error.err and len(error.err.strip().splitlines()) == 1
    assert "cached" not in error.out  # no preprocessing ran
    assert not output.exists()
