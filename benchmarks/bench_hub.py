"""How soon TSNet.from_pretrained gives up on a Hub id it cannot get: with HF_HUB_OFFLINE set, and
with the Hub unreachable (an endpoint on the discard port of this machine). Each should end in one
CheckpointError within FAIL_FAST_TARGET seconds, not after retries (tests/test_hub.py checks the errors).

    python benchmarks/bench_hub.py [--repeats 3]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from huggingface_hub import constants

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tsnet_hf import CheckpointError, TSNet

from common import machine_line, markdown_table

FAIL_FAST_TARGET = 5.0  # seconds from the call to the error
CASES = {
    "offline (HF_HUB_OFFLINE)": {"HF_HUB_OFFLINE": True},
    "unreachable Hub (https://127.0.0.1:9)": {"HF_HUB_OFFLINE": False, "ENDPOINT": "https://127.0.0.1:9"},
}


def seconds_to_fail(settings: dict, cache_dir: Path) -> float:
    """Wall seconds of one from_pretrained("someone/tsnet-face") that must raise CheckpointError."""
    with mock.patch.multiple(constants, **settings):
        start = time.perf_counter()
        try:
            TSNet.from_pretrained("someone/tsnet-face", cache_dir=cache_dir)
        except CheckpointError:
            return time.perf_counter() - start
    raise SystemExit("error: from_pretrained of a missing Hub id did not raise CheckpointError.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="calls per case (the slowest is reported)")
    args = parser.parse_args(argv)
    rows, worst = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in CASES.items():
            times = [seconds_to_fail(settings, Path(tmp) / "cache") for _ in range(args.repeats)]
            worst = max(worst, *times)
            rows.append([name, f"{min(times):.2f}", f"{max(times):.2f}"])
    verdict = "met" if worst < FAIL_FAST_TARGET else f"missed by {worst - FAIL_FAST_TARGET:.1f} s"
    print(f"Machine: {machine_line()}\n")
    print(markdown_table(["case", "fastest s", "slowest s"], rows))
    print(f"\nTarget: the error within {FAIL_FAST_TARGET:.0f} s; slowest {worst:.2f} s ({verdict}).")
    return 0 if worst < FAIL_FAST_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
