"""Shared bits of the benchmark commands: machine description, timing, markdown output."""

import datetime
import importlib.metadata
import platform
import time
from pathlib import Path

import torch

from tsnet_hf.utils import cpu_name


def machine_line() -> str:
    """One line naming the machine, the torch build and the thread count."""
    device = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_name()}, {torch.get_num_threads()} torch threads, {device}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"tsnet-hf {importlib.metadata.version('tsnet-hf')}; {datetime.date.today().isoformat()}"
    )


def best_time(function, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of `repeats` calls in seconds, after `warmup` calls (best: least noisy here)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def append_report(path, title: str, body: str):
    """Append a dated section to a markdown file (docs/benchmarks.md)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n## {title}\n\n{body}\n")
