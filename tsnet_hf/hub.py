"""Loading checkpoints strictly (safetensors only) and rendering the model card.

A checkpoint is a folder with config.json (a `TSNetConfig`) and model.safetensors, locally or in a
Hub model repository. Pickles are never loaded. Offline, a Hub id fails at once with one sentence.
"""

import copy
import os
import re
import socket
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import EvalResult, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file

from .config import TSNetConfig
from .errors import CheckpointError

PAPER_URL = (
    "https://openaccess.thecvf.com/content/WACV2023/html/Ni_Cross-Identity_Video_Motion_Retargeting_With_"
    "Joint_Transformation_and_Synthesis_WACV_2023_paper.html"
)
REPO_URL = "https://github.com/tsnet-hf/tsnet-hf"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def resolve_checkpoint(
    name_or_path, revision=None, cache_dir=None, force_download=False, token=None, local_files_only=False
) -> Path:
    """The local folder holding config.json and model.safetensors, downloading a Hub id if needed.

    Raises:
        CheckpointError: the folder does not exist or lacks a file; the Hub id cannot be fetched.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"{path} is a file: give the checkpoint folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}."
            )
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise CheckpointError(
                    f"{path} is not a TS-Net checkpoint: it has no {name} (expected {CONFIG_NAME} + {WEIGHTS_NAME})."
                )
        return path
    text = str(name_or_path)
    if not _REPO_ID.match(text) or text.startswith(".") or os.sep in text.replace("/", "", 1):
        raise CheckpointError(f"Checkpoint folder {text} does not exist (and it is not a Hub id like 'user/model').")
    return _download(text, revision, cache_dir, force_download, token, local_files_only)


def _download(repo_id, revision, cache_dir, force_download, token, local_files_only) -> Path:
    offline = local_files_only or constants.HF_HUB_OFFLINE
    if not offline and not host_reachable(constants.ENDPOINT):
        raise CheckpointError(
            f"Cannot reach the Hugging Face Hub to download {repo_id!r} (no network?): "
            "give a local checkpoint folder instead."
        )
    files = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            files.append(
                hf_hub_download(
                    repo_id,
                    name,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        except LocalEntryNotFoundError:
            raise CheckpointError(
                f"Cannot download {repo_id!r}: offline (HF_HUB_OFFLINE or local_files_only) "
                "and it is not in the local Hub cache; give a local checkpoint folder, "
                "or go online."
            ) from None
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"Hub repository {repo_id!r} does not exist or is private (log in with `hf auth login`)."
            ) from None
        except EntryNotFoundError:
            raise CheckpointError(
                f"Hub repository {repo_id!r} has no {name}: tsnet-hf loads only config.json + "
                "model.safetensors checkpoints."
            ) from None
        except Exception as error:  # offline mode, connection errors: one sentence, no traceback
            raise CheckpointError(
                f"Cannot download {repo_id!r} from the Hugging Face Hub "
                f"({type(error).__name__}): give a local checkpoint folder, or go online."
            ) from None
    return Path(files[0]).parent


def host_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A quick TCP check of a URL's host, so an offline machine fails in seconds instead of
    ~25 s of retries (used before Hub and torchvision weight downloads)."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is a CheckpointError."""
    try:
        return load_file(str(path))
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); tsnet-hf never loads "
            "pickles: convert them with `tsnet-convert-authors`."
        ) from None


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str):
    """Copy `state` into `model`, refusing missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise CheckpointError(f"{source} does not match its config.json: {' and '.join(parts)} tensors.")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(value.shape)} but the config needs "
                f"{tuple(expected[key].shape)}."
            )
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: tensor {key} has dtype {value.dtype}, expected floating point.")
    model.load_state_dict(state, strict=True)


def load_checkpoint(cls, name_or_path, map_location="cpu", **download) -> torch.nn.Module:
    """Build `cls` from config.json and load model.safetensors strictly (see `TSNet.from_pretrained`)."""
    folder = resolve_checkpoint(name_or_path, **download)
    config = TSNetConfig.from_json_file(folder / CONFIG_NAME)
    model = cls(config)
    load_state_strict(model, load_weights(folder / WEIGHTS_NAME), str(folder / WEIGHTS_NAME))
    return model.to(map_location).eval()


# evaluate.py / validation metric -> the name the card's model-index gives it
METRIC_NAMES = {
    "l1": "L1",
    "l2": "L2 (mean squared error)",
    "psnr": "PSNR (dB)",
    "lpips": "LPIPS (AlexNet)",
    "landmark_distance": "landmark distance (fraction of the crop side)",
}


def evaluation_results(
    metrics: dict,
    task_name: str,
    dataset_name: str,
    dataset_type: str,
    split: str = "held-out",
    config: str | None = None,
) -> list:
    """`huggingface_hub.EvalResult`s (the Hub's model-index form) for the metrics in `metrics`
    ({"l1": 0.05, "lpips": 0.2, ...}, images in [0, 1]); unknown names and missing values are left out.

    config: what tells this evaluation from others of the same data (e.g. "K = 3 (nearest)"); the
    Hub groups results by task, dataset, config and split, so without it they would merge.
    """
    return [
        EvalResult(
            task_type="image-to-video",
            task_name=task_name,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            dataset_config=config,
            metric_type=name,
            metric_name=METRIC_NAMES[name],
            metric_value=round(float(metrics[name]), 4),
        )
        for name in METRIC_NAMES
        if metrics.get(name) is not None
    ]


def render_model_card(model, base_model=None, datasets=None, eval_results=None, **kwargs) -> ModelCard:
    """A `huggingface_hub.ModelCard` from tsnet_hf/model_card_template.md, filled with the model's config.

    base_model: the checkpoint this one was fine-tuned from (Hub id or folder), for the card's
        `base_model` metadata. datasets: data set names or Hub ids, for `datasets`.
    eval_results: `huggingface_hub.EvalResult`s, written as the Hub's `model-index` metadata.
    Extra keyword arguments reach the template: `title`, `description`, `checkpoint_id`,
    `training` and `evaluation` (markdown) are used by it.
    """
    card_data = copy.deepcopy(model._hub_mixin_info.model_card_data)
    if base_model:
        card_data.base_model = str(base_model)
    if datasets:
        card_data.datasets = list(datasets)
    if eval_results:
        card_data.eval_results = list(eval_results)
        card_data.model_name = card_data.model_name or kwargs.get("title") or "TS-Net generator (tsnet-hf)"
    return fill_model_card(card_data, model.config, sum(p.numel() for p in model.parameters()), **kwargs)


def fill_model_card(card_data, config: TSNetConfig, num_parameters: int, **kwargs) -> ModelCard:
    """tsnet_hf/model_card_template.md rendered with this metadata (`ModelCardData`), config and
    parameter count; keyword arguments as in `render_model_card`."""
    template = resources.files("tsnet_hf").joinpath("model_card_template.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data=card_data,
        template_str=template,
        repo_url=REPO_URL,
        paper_url=PAPER_URL,
        config=config.to_dict(),
        num_parameters=f"{num_parameters / 1e6:.1f} M",
        **kwargs,
    )
