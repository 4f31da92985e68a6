"""What a training run writes to disk, and how a run picks it up again. The run folder (`--output`):

    OUTPUT/
      training_args.json            every setting of the run
      log.txt, metrics.jsonl        readable log; one JSON line per log step / validation
      images/step-NNNNNNN.png       image grids (training/logs.py `RunLog.save_grid`)
      checkpoints/
        step-NNNNNNN/               the newest --keep-checkpoints of them; `--resume` takes the last
          config.json, model.safetensors, README.md     a `TSNet.from_pretrained` folder
          training_state/
            discriminators.safetensors                  d.* and (body) face_d.* weights
            optimizers.pt                               both Adam states
            state.json                                  step, args, videos, history, seconds, ...
      final/                        the same, after the last step

Folders are written under a temporary name and renamed when complete (`write_atomically`), so a
run killed at any moment leaves its previous checkpoint intact.
"""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tsnet_hf.errors import CheckpointError, ConfigError
from tsnet_hf.hub import load_state_strict, load_weights

STATE_DIR = "training_state"
CHECKPOINTS = "checkpoints"


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(output) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary folders are ignored)."""
    folder = Path(output) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def find_resume(output: Path, resume: str) -> Path:
    """The checkpoint `--resume` names: the newest one in `output` for "latest", else the folder given.

    Raises:
        CheckpointError: no checkpoint there, or the folder has no training state.
    """
    if resume != "latest":
        folder = Path(resume)
        if not (folder / STATE_DIR / "state.json").is_file():
            raise CheckpointError(
                f"{folder} is not a training checkpoint (no {STATE_DIR}/state.json): give a "
                f"folder from {Path(output) / CHECKPOINTS}, or --resume alone."
            )
        return folder
    found = list_checkpoints(output)
    if not found:
        raise CheckpointError(
            f"{Path(output) / CHECKPOINTS} holds no checkpoint to resume from: "
            "start without --resume, or point --output at the run to continue."
        )
    return found[-1]


def read_state(folder: Path) -> dict:
    """A checkpoint's training_state/state.json."""
    return json.loads((Path(folder) / STATE_DIR / "state.json").read_text(encoding="utf-8"))


def write_json(path: Path, value) -> None:
    """Write `value` as JSON to `path` by a rename: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
    os.replace(partial, path)


# ----- atomic folders -----------------------------------------------------------------------------


def write_atomically(target: Path, write) -> Path:
    """Run `write(folder)` on a temporary folder beside `target`, then rename it to `target`.

    A run killed before the rename leaves `target` as it was (an older complete copy or
    nothing), never a half-written one; the files are flushed to disk before the rename.
    """
    target = Path(target)
    partial = target.with_name(f".partial-{target.name}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write(partial)
        for path in partial.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def clean_interrupted_writes(folder: Path) -> None:
    """Tidy what a killed `write_atomically` left in `folder`: partial folders are removed, and an
    `.old-` copy is put back where the kill came between its two renames."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".partial-"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".old-"):
            original = folder / path.name[len(".old-") :].rsplit("-", 1)[0]
            if original.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.rename(original)


def prune_checkpoints(output: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (0: keep all)."""
    for old in list_checkpoints(output)[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)


# ----- what a checkpoint holds --------------------------------------------------------------------


def save_checkpoint(folder: Path, model, d, face_d, opt_g, opt_d, state: dict, card: dict) -> None:
    """Fill `folder`: the generator's `save_pretrained` files with model card `card` (keyword
    arguments of `render_model_card`), and training_state/ with the discriminators (plain, not
    wrapped modules; face_d None for faces), both optimisers and `state` (state.json)."""
    model.save_pretrained(folder, model_card_kwargs=card)
    state_dir = Path(folder) / STATE_DIR
    state_dir.mkdir()
    tensors = {f"d.{k}": v for k, v in d.state_dict().items()}
    if face_d is not None:
        tensors.update({f"face_d.{k}": v for k, v in face_d.state_dict().items()})
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(state_dir / "discriminators.safetensors")
    )
    torch.save({"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()}, state_dir / "optimizers.pt")
    write_json(state_dir / "state.json", state)


def load_checkpoint(folder: Path, model, d, face_d, opt_g, opt_d, videos: list[str]) -> dict:
    """Load a checkpoint's generator, discriminators and optimisers (before `accelerator.prepare`);
    returns its state.json.

    Raises:
        ConfigError: it was trained on other cached videos than `videos`.
        CheckpointError: missing or unexpected weights.
    """
    state = read_state(folder)
    if state.get("videos") != videos:
        raise ConfigError(
            f"Cannot resume from {folder}: it was trained on {len(state.get('videos', []))} cached "
            f"videos and this cache holds {len(videos)} others; resume with the same data."
        )
    load_state_strict(model, load_weights(folder / "model.safetensors"), str(folder))
    load_discriminators(load_file(str(folder / STATE_DIR / "discriminators.safetensors")), d, face_d, str(folder))
    optimisers = torch.load(folder / STATE_DIR / "optimizers.pt", map_location="cpu", weights_only=True)
    opt_g.load_state_dict(optimisers["generator"])
    opt_d.load_state_dict(optimisers["discriminator"])
    return state


def load_discriminators(state: dict, d, face_d, source: str) -> None:
    """Load "d.*" and "face_d.*" tensors of `state` into the two discriminators, strictly."""
    for prefix, module in (("d.", d), ("face_d.", face_d)):
        if module is not None:
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            load_state_strict(module, part, source)


def load_discriminators_from(source, d, face_d) -> None:
    """Fine-tuning: take the discriminators too when the checkpoint folder `source` has them."""
    path = Path(source) / STATE_DIR / "discriminators.safetensors"
    if path.is_file():
        load_discriminators(load_file(str(path)), d, face_d, str(path))
