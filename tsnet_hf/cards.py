"""Render the model cards of saved checkpoint folders again from tsnet_hf/model_card_template.md.

After an edit of the template, the shipped checkpoints' cards are brought up to date with

    python -m tsnet_hf.cards checkpoints/*/

(`--check` writes nothing and exits 1 when a card is out of date; tests/test_hub.py runs it).
"""

import argparse
import math
import re
import sys
from pathlib import Path

from huggingface_hub import ModelCard
from safetensors import safe_open

from .config import TSNetConfig
from .errors import CheckpointError, TSNetError
from .hub import CONFIG_NAME, WEIGHTS_NAME, fill_model_card, resolve_checkpoint


def refresh_model_card(folder) -> str:
    """The README.md of a checkpoint folder rendered again from today's template.

    What the card records about this checkpoint is kept: its metadata (datasets, results, base
    model), title, description, checkpoint id, and its Training and Evaluation sections; the rest
    (use, architecture table, intended use, limitations, misuse, citation) comes from the template.
    Returns the markdown; `main` writes it.

    Raises:
        CheckpointError: `folder` is not a checkpoint folder with a card.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"Checkpoint folder {folder} does not exist: give a folder like checkpoints/face-blend-128."
        )
    resolve_checkpoint(folder)  # config.json and model.safetensors are there
    if not (folder / "README.md").is_file():
        raise CheckpointError(
            f"{folder} has no README.md: only a checkpoint saved with its model card can be refreshed."
        )
    card = ModelCard.load(folder / "README.md")
    config = TSNetConfig.from_json_file(folder / CONFIG_NAME)
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as weights:
        num_parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return str(fill_model_card(card.data, config, num_parameters, **_card_parts(card.text)))


def _card_parts(text: str) -> dict[str, str]:
    """The template's arguments read back from a rendered card's markdown (after its metadata).

    The card opens with "# title", one paragraph of introduction, then the description, up to the
    first "## " section; "## Training" and "## Evaluation" hold the sections of those names.
    """
    preamble, *sections = re.split(r"^## ", text.strip(), flags=re.M)
    paragraphs = re.split(r"\n\s*\n", preamble.strip())
    parts = {"title": paragraphs[0].removeprefix("# ").strip(), "description": "\n\n".join(paragraphs[2:])}
    for section in sections:
        name, _, body = section.partition("\n")
        if name.strip() in ("Training", "Evaluation"):
            parts[name.strip().lower()] = body.strip()
        checkpoint = re.search(r"--checkpoint (\S+)", body) if name.strip() == "Use" else None
        if checkpoint and checkpoint.group(1) != "path/to/this/folder":
            parts["checkpoint_id"] = checkpoint.group(1)
    return parts


def same_card(first: str, second: str) -> bool:
    """Whether two cards say the same: equal metadata (in any key order) and equal markdown."""
    first, second = ModelCard(first, ignore_metadata_errors=True), ModelCard(second, ignore_metadata_errors=True)
    return first.data.to_dict() == second.data.to_dict() and first.text.strip() == second.text.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsnet_hf.cards", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="checkpoint folders (config.json, model.safetensors, README.md)"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card is out of date")
    args = parser.parse_args(argv)
    stale = []
    for folder in args.folders:
        try:
            text = refresh_model_card(folder)
        except (OSError, TSNetError) as error:
            print(f"error: {folder}: {error}", file=sys.stderr)
            return 2
        if not same_card(text, (folder / "README.md").read_text(encoding="utf-8")):
            stale.append(folder)
            if not args.check:
                _write_atomically(folder / "README.md", text)
    verb = "out of date" if args.check else "rewritten"
    print(f"{len(stale)} of {len(args.folders)} card(s) {verb}" + "".join(f"\n  {f}" for f in stale))
    return 1 if args.check and stale else 0


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a partial file: a failure leaves the old card whole."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
