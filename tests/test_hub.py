"""save_pretrained / from_pretrained / push_to_hub: exact, strict, offline."""

import json
import shutil
from pathlib import Path

import huggingface_hub.hub_mixin as hub_mixin
import pytest
import torch
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file, save_file

from tsnet_hf import CheckpointError, ConfigError, TSNet, TSNetConfig, cards, tiny_config, upload
from tsnet_hf.hub import evaluation_results

from helpers import random_inputs, seeded_model


@pytest.fixture
def saved(tmp_path):
    config = tiny_config("body", combine="matting", authors_mean_bgr=(1.0, 2.0, 3.0))
    model = seeded_model(config, seed=3)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    return model, folder


def test_save_writes_config_weights_and_card(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == json.loads(json.dumps(model.config.to_dict()))
    card = (folder / "README.md").read_text()
    for needle in (
        "library_name: tsnet-hf",
        "license: mit",
        "motion-retargeting",
        "WACV2023",
        "## Intended use",
        "## Misuse",
        "fake news",
        "| combine | matting |",
    ):
        assert needle in card, needle


def test_round_trip_is_exact_offline(saved, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model, folder = saved
    loaded = TSNet.from_pretrained(folder)
    assert loaded.config == model.config
    assert isinstance(loaded.config.authors_mean_bgr, tuple)
    subject, subject_masks, driving_masks = random_inputs(model.config, frames=2, driving=3)
    with torch.no_grad():
        expected = model(subject, subject_masks, driving_masks)
        got = loaded(subject, subject_masks, driving_masks)
    assert (expected.image - got.image).abs().max() == 0
    assert (expected.warped - got.warped).abs().max() == 0


def test_fp16_checkpoint_loads(tmp_path):
    model = seeded_model(tiny_config("face"))
    model.half().save_pretrained(tmp_path)
    assert load_file(str(tmp_path / "model.safetensors"))["decoder.head.1.weight"].dtype == torch.float16
    loaded = TSNet.from_pretrained(tmp_path)
    assert loaded.decoder.head[1].weight.dtype == torch.float32
    assert torch.equal(loaded.decoder.head[1].weight, model.decoder.head[1].weight.float())


def edit_config(folder, change):
    values = json.loads((folder / "config.json").read_text())
    change(values)
    (folder / "config.json").write_text(json.dumps(values))


def test_config_with_unknown_or_missing_field_is_refused(saved):
    _, folder = saved
    edit_config(folder, lambda v: v.update(heads=8))
    with pytest.raises(ConfigError, match="unknown field.*heads"):
        TSNet.from_pretrained(folder)
    edit_config(folder, lambda v: (v.pop("heads"), v.pop("temperature")))
    with pytest.raises(ConfigError, match="missing field.*temperature"):
        TSNet.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TSNet.from_pretrained(folder)


def test_weights_with_missing_or_unexpected_keys_are_refused(saved):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    extra = {**state, "decoder.extra.weight": torch.zeros(1)}
    save_file(extra, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 unexpected"):
        TSNet.from_pretrained(folder)
    state.pop("decoder.head.1.bias")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing"):
        TSNet.from_pretrained(folder)


def test_wrong_shapes_are_refused(saved):
    _, folder = saved
    edit_config(folder, lambda v: v.update(base_channels=16))
    with pytest.raises(CheckpointError, match="has shape"):
        TSNet.from_pretrained(folder)


def test_pickle_is_never_loaded(saved):
    model, folder = saved
    torch.save(model.state_dict(), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        TSNet.from_pretrained(folder)


def test_missing_folder_and_offline_hub_id_fail_fast(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        TSNet.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        TSNet.from_pretrained(tmp_path / "empty")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="Cannot download 'someone/tsnet-face'"):
        TSNet.from_pretrained("someone/tsnet-face", cache_dir=tmp_path / "cache")


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(CheckpointError, match="Cannot reach the Hugging Face Hub"):
        TSNet.from_pretrained("someone/tsnet-face", cache_dir=tmp_path)


def test_push_to_hub_uploads_a_loadable_folder(tmp_path, monkeypatch):
    """push_to_hub is the mixin's: it saves the folder and uploads it (HfApi replaced by a recorder)."""
    uploaded = tmp_path / "uploaded"

    class RecordingApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            shutil.copytree(folder_path, uploaded)
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(hub_mixin, "HfApi", RecordingApi)
    model = seeded_model(tiny_config("face"))
    assert model.push_to_hub("me/tsnet-tiny").endswith("commit/0")
    assert TSNet.from_pretrained(uploaded).config == model.config


def test_config_json_round_trip_keeps_types():
    config = TSNetConfig(authors_mean_bgr=(1, 2, 3))
    again = TSNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again.authors_mean_bgr, tuple)


def test_card_metadata_is_the_hubs_form(tmp_path):
    """save_pretrained's card: library name, licence, tags; with results, datasets and a base model,
    the Hub's model-index (task, dataset, metrics), grouped per evaluation setting."""
    model = seeded_model(tiny_config("face"))
    model.save_pretrained(tmp_path / "plain")
    plain = ModelCard.load(tmp_path / "plain" / "README.md").data
    assert (plain.library_name, plain.license, plain.pipeline_tag) == ("tsnet-hf", "mit", "image-to-video")
    assert {"motion-retargeting", "face-reenactment", "tsnet"} <= set(plain.tags)
    assert plain.eval_results is None and plain.base_model is None

    results = [
        *evaluation_results(
            {"l1": 0.05, "lpips": 0.2, "psnr": None, "other": 1.0},
            "Self-reconstruction",
            "face",
            "face",
            config="K = 1 (nearest)",
        ),
        *evaluation_results({"l1": 0.04}, "Self-reconstruction", "face", "face", config="K = 3 (nearest)"),
    ]
    model.save_pretrained(
        tmp_path / "tuned",
        model_card_kwargs={
            "title": "Tuned",
            "datasets": ["face"],
            "eval_results": results,
            "base_model": "someone/tsnet-face",
        },
    )
    text = (tmp_path / "tuned" / "README.md").read_text()
    assert "model-index:" in text and "base_model: someone/tsnet-face" in text
    card = ModelCard.load(tmp_path / "tuned" / "README.md").data
    assert card.datasets == ["face"] and card.base_model == "someone/tsnet-face" and card.model_name == "Tuned"
    found = {(r.dataset_config, r.metric_type): r.metric_value for r in card.eval_results}
    assert found == {
        ("K = 1 (nearest)", "l1"): 0.05,
        ("K = 1 (nearest)", "lpips"): 0.2,
        ("K = 3 (nearest)", "l1"): 0.04,
    }
    assert all(r.task_type == "image-to-video" and r.dataset_split == "held-out" for r in card.eval_results)


@pytest.mark.parametrize("name", ["face-blend-128", "body-blend-128"])
def test_shipped_cards_carry_their_held_out_results(name):
    folder = Path(__file__).resolve().parents[1] / "checkpoints" / name
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "tsnet-hf" and data.license == "mit" and data.datasets and "tsnet" in data.tags
    by_k = {}
    for result in data.eval_results:
        by_k.setdefault(result.dataset_config, {})[result.metric_type] = result.metric_value
    assert sorted(by_k) == ["K = 1 (nearest)", "K = 3 (nearest)"]
    for k, metrics in by_k.items():  # the same numbers as the card's held-out table
        block = card.text.split(k, 1)[1].split("**Self-reconstruction**", 1)[1]
        assert f"| lpips | {metrics['lpips']:.4f} |" in block and f"| l1 | {metrics['l1']:.4f} |" in block


def test_push_dry_run_lists_the_checkpoint_and_nothing_else(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "me-face"
    seeded_model(tiny_config("face")).save_pretrained(folder, model_card_kwargs={"base_model": "someone/tsnet-face"})
    (folder / "training").mkdir()
    (folder / "training" / "log.txt").write_text("a run's log stays local")
    assert upload.main([str(folder), "--repo-id", "me/tsnet-me", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would upload to https://huggingface.co/me/tsnet-me:"
    assert [line.split()[0] for line in out[1:]] == ["config.json", "model.safetensors", "README.md"]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert upload.main([str(folder), "--repo-id", "me/tsnet-me"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: HF_HUB_OFFLINE is set") and "\n" not in error

    seeded_model(tiny_config("face")).save_pretrained(
        tmp_path / "local-base", model_card_kwargs={"base_model": str(tmp_path / "face-blend-128")}
    )
    for argv, expected in (
        ([str(tmp_path / "local-base"), "--repo-id", "me/x", "--dry-run"], "is not a Hub id"),
        ([str(tmp_path / "none"), "--repo-id", "me/x", "--dry-run"], "does not exist"),
        ([str(folder), "--repo-id", "not an id"], "is not a Hub repository id"),
    ):
        assert upload.main(argv) == 1
        error = capsys.readouterr().err.strip()
        assert expected in error and "\n" not in error


def test_shipped_cards_are_current_with_the_template():
    """checkpoints/*/README.md say what tsnet_hf/model_card_template.md renders today; after an edit of
    the template, `python -m tsnet_hf.cards checkpoints/*/` brings them up to date."""
    folders = sorted(p for p in (Path(__file__).resolve().parents[1] / "checkpoints").iterdir() if p.is_dir())
    assert folders and cards.main(["--check", *map(str, folders)]) == 0


def test_a_refreshed_card_keeps_what_the_checkpoint_recorded(tmp_path, capsys):
    results = evaluation_results({"l1": 0.05, "lpips": 0.2}, "Self-reconstruction", "face", "face", config="K = 1")
    seeded_model(tiny_config("face")).save_pretrained(
        tmp_path,
        model_card_kwargs={
            "title": "Tuned",
            "description": "One paragraph.\n\nAnd another.",
            "checkpoint_id": "me/tsnet-me",
            "training": "2 steps.\n\n### Data\n\n| video | use |\n|---|---|\n| a | training |",
            "evaluation": "Fine.",
            "datasets": ["face"],
            "eval_results": results,
            "base_model": "someone/tsnet-face",
        },
    )
    card = (tmp_path / "README.md").read_text()
    assert cards.same_card(cards.refresh_model_card(tmp_path), card)

    (tmp_path / "README.md").write_text(card.replace("## Limitations", "## Old limitations"))
    assert cards.main(["--check", str(tmp_path)]) == 1
    assert cards.main([str(tmp_path)]) == 0 and "1 of 1 card(s) rewritten" in capsys.readouterr().out
    assert cards.same_card((tmp_path / "README.md").read_text(), card)


def test_refreshing_a_folder_that_is_not_a_carded_checkpoint_is_one_sentence(tmp_path, capsys):
    assert cards.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cards.main([str(tmp_path)]) == 2
    assert "it has no config.json" in capsys.readouterr().err
    seeded_model(tiny_config("face")).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "README.md").unlink()
    assert cards.main([str(tmp_path / "model")]) == 2
    error = capsys.readouterr().err
    assert "has no README.md" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
