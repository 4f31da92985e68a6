"""Plot validation curves of training runs against wall-clock minutes (quality per CPU-minute).

    python training/plot_curves.py runs/face-blend-128:blend runs/face-paper-128:paper \\
        --metric lpips --baseline 0.05:"nearest subject frame" -o docs/images/face-curves.png

Each RUN is a run folder with the metrics.jsonl that train.py writes (its "val" rows carry the
run's wall minutes); ":LABEL" names the curve. --baseline draws a dashed horizontal line.
"""

import argparse
import json
import sys
from pathlib import Path


def read_validation(run: Path, metric: str) -> tuple[list[float], list[float]]:
    """(minutes, values) of the run's validation rows that have both."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist: give run folders written by training/train.py.")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") == "val" and "minutes" in r and metric in r]
    return [r["minutes"] for r in rows], [r[metric] for r in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Validation metric of training runs against wall minutes.")
    parser.add_argument("runs", nargs="+", help="RUN_FOLDER[:LABEL]")
    parser.add_argument("--metric", default="lpips", help="validation metric (default lpips)")
    parser.add_argument("--baseline", action="append", default=[], help="VALUE:LABEL, a dashed line")
    parser.add_argument("--title", default=None)
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)

    # Imported here: choosing matplotlib's backend is a global setting, made only when plotting.
    import matplotlib  # mediapipe's dependency, so always installed with tsnet-hf

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for spec in args.runs:
        folder, _, label = spec.partition(":")
        minutes, values = read_validation(Path(folder), args.metric)
        axes.plot(minutes, values, marker="o", label=label or Path(folder).name)
    for spec in args.baseline:
        value, _, label = spec.partition(":")
        axes.axhline(float(value), linestyle="--", color="grey", label=label or "baseline")
    axes.set_xlabel("training wall time (minutes, 2-core CPU)")
    axes.set_ylabel(f"validation {args.metric} (held-out people)")
    axes.set_title(args.title or f"{args.metric} against CPU minutes")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
