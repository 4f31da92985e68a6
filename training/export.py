"""Turn a training run into a shipped checkpoint: fp16 weights and a model card with the data, the
recipe, the curves and the held-out evaluation.

    python training/export.py runs/face-blend-128 checkpoints/face-blend-128 \\
        --eval runs/face-blend-128/eval-k1 runs/face-blend-128/eval-k3 \\
        --manifest data/MANIFEST.tsv --recipe training/recipes/cpu-face.json

RUN is a run folder (its final/ checkpoint, else its newest step checkpoint, is exported) or a
checkpoint folder. Each --eval folder holds the metrics.json that training/evaluate.py wrote. The
card names every training and held-out video with its source repository and licence (from the
manifest), so that the weights can be traced to the footage they were trained on.
"""

import argparse
import csv
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/export.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])


from training.checkpoints import STATE_DIR, list_checkpoints
from training.evaluate import markdown_report
from tsnet_hf import TSNet
from tsnet_hf.errors import InputError, TSNetError
from tsnet_hf.hub import evaluation_results

# Paper, Table 1 (self-reconstruction at 256 px on FaceForensics / their YouTube dance set): for
# reference only; other data, other resolution, other metric implementation.
PAPER_RESULTS = (
    "| paper (Table 1), 256 px, their test sets | face L2 | face LPIPS | dance L2 | dance LPIPS |\n"
    "|---|---|---|---|---|\n"
    "| TS-Net K = 1 | 0.0275 | 0.0731 | 0.0433 | 0.1586 |\n"
    "| TS-Net K = 3 | 0.0271 | 0.0683 | 0.0421 | 0.1543 |"
)


def find_checkpoint(run: Path) -> Path:
    """The checkpoint folder to export from a run folder (final/, else the newest step) or itself."""
    if (run / "config.json").is_file():
        return run
    if (run / "final" / "config.json").is_file():
        return run / "final"
    found = list_checkpoints(run)
    if not found:
        raise InputError(f"{run} is neither a checkpoint folder nor a run folder with checkpoints.")
    return found[-1]


def read_manifest(path: Path | None) -> dict[str, dict]:
    """MANIFEST.tsv rows keyed by the video's file stem."""
    if path is None:
        return {}
    with open(path, encoding="utf-8", newline="") as handle:
        return {Path(row["file"]).stem: row for row in csv.DictReader(handle, delimiter="\t")}


def video_stem(cache_name: str) -> str:
    """'liveportrait_d0-1a2b3c4d' (a cache folder name) -> 'liveportrait_d0'."""
    return re.sub(r"-[0-9a-f]{8}$", "", cache_name)


def data_table(names: list[str], held_out: list[str], manifest: dict) -> str:
    lines = ["| video | used for | source | licence |", "|---|---|---|---|"]
    for name in names:
        row = manifest.get(video_stem(name), {})
        source = f"{row['source_repo']} `{row['path_in_repo']}`" if row else "n/a"
        use = "held out (validation and evaluation)" if name in held_out else "training"
        lines.append(f"| {video_stem(name)} | {use} | {source} | {row.get('license', 'n/a')} |")
    return "\n".join(lines)


def curves_summary(run: Path) -> str:
    """Train losses at the start and the end, and every validation, from metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return ""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    lines = []
    if train:
        first, last = train[0], train[-1]
        lines.append(
            f"Training L1 (output vs target, [0, 1]): {first['l1']:.4f} at step {first['step']} -> "
            f"{last['l1']:.4f} at step {last['step']}; {last.get('samples_per_s', 0):.2f} samples/s "
            "at the end."
        )
    if val:
        lines += ["", "| step | val L1 | val LPIPS |", "|---|---|---|"]
        lines += [
            f"| {r['step']} | {r.get('l1', float('nan')):.4f} | {r.get('lpips', float('nan')):.4f} |" for r in val
        ]
    return "\n".join(lines)


def evaluation_section(reports: list[dict]) -> str:
    """Held-out self-reconstruction and cross-identity tables of evaluate.py reports, side by side."""
    parts = [markdown_report(report) for report in reports]
    return "\n\n".join(parts + [PAPER_RESULTS])


def card_results(reports: list[dict], dataset: str) -> list:
    """The held-out self-reconstruction of each evaluate.py report, as the Hub's model-index entries."""
    results = []
    for report in reports:
        part, settings = report.get("self_reconstruction") or {}, report.get("settings", "")
        found = re.search(r"K = \d+ \(\w+\)", settings)
        results += evaluation_results(
            part.get("model") or {},
            f"Self-reconstruction of held-out people ({settings})",
            dataset,
            dataset,
            config=found.group(0) if found else settings or None,
        )
    return results


def export(
    run: Path,
    output: Path,
    evals: list[Path],
    manifest: Path | None,
    recipe: Path | None,
    note: str = "",
    dataset: str | None = None,
) -> Path:
    checkpoint = find_checkpoint(run)
    model = TSNet.from_pretrained(checkpoint)
    state_file = checkpoint / STATE_DIR / "state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    args = state.get("args", {})
    config = model.config
    names = state.get("videos", [])
    held_out = [n for n in names if any(part in n for part in args.get("holdout") or [])]
    run_card = (checkpoint / "README.md").read_text(encoding="utf-8") if (checkpoint / "README.md").is_file() else ""
    settings = run_card.split("## Training", 1)[1].split("\n## ", 1)[0].strip() if "## Training" in run_card else ""
    recipe_text = f"Recipe: `{recipe.as_posix()}`; " if recipe else ""
    training = "\n\n".join(
        part
        for part in (
            f"{recipe_text}trained with `python training/train.py` of tsnet-hf, {state.get('step', '?')} steps in "
            f"{state.get('seconds', 0) / 60:.0f} minutes of wall time.",
            settings,
            "### Data",
            data_table(names, held_out, read_manifest(manifest)),
            "### Curves",
            curves_summary(run if run != checkpoint else checkpoint.parent),
        )
        if part
    )
    reports = [json.loads((folder / "metrics.json").read_text(encoding="utf-8")) for folder in evals]
    evaluation = evaluation_section(reports) if reports else "Not evaluated."
    title = f"TS-Net {config.mode} generator, {config.output} output, {config.image_size} px (tsnet-hf)"
    description = (
        f"Trained on a 2-core CPU from {len(names) - len(held_out)} videos; "
        f"{len(held_out)} videos of people never trained on are held out for evaluation. {note}"
    ).strip()
    dataset = dataset or Path(args.get("data") or "videos").name
    model = model.half()
    model.save_pretrained(
        output,
        model_card_kwargs={
            "title": title,
            "description": description,
            "training": training,
            "evaluation": evaluation,
            "datasets": [dataset],
            "eval_results": card_results(reports, dataset),
            "base_model": args.get("init_from"),
        },
    )
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a training run as a shipped fp16 checkpoint with its card.")
    parser.add_argument("run", type=Path, help="run folder or checkpoint folder")
    parser.add_argument("output", type=Path, help="folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--eval", nargs="*", type=Path, default=[], help="evaluate.py output folders (metrics.json)")
    parser.add_argument("--manifest", type=Path, help="MANIFEST.tsv naming each video's source and licence")
    parser.add_argument("--recipe", type=Path, help="the recipe the run was trained with (named in the card)")
    parser.add_argument(
        "--dataset", help="name of the training data in the card's metadata (default: the run's --data folder name)"
    )
    parser.add_argument("--note", default="", help="a sentence for the card's description (how the run went)")
    args = parser.parse_args(argv)
    try:
        folder = export(args.run, args.output, args.eval, args.manifest, args.recipe, args.note, args.dataset)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = (folder / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {folder} ({size:.1f} MiB of fp16 weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
