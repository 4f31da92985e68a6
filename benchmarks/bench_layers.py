"""The machine's conv rate, layer by layer: the generator's conv shapes, NCHW versus channels_last,
fp32 versus bf16. The best rate is the "measured conv peak" the generator is compared with.

    python benchmarks/bench_layers.py [--threads 2] [--batch 8] [--write docs/benchmarks.md]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, best_time, machine_line, markdown_table

# (in, out, kernel, output side, where in the generator); paper preset unless noted
LAYERS = [
    (512, 512, 3, 32, "res block at 1/8 (encoder, decoder)"),
    (1024, 1024, 3, 32, "fusion res block"),
    (256, 256, 3, 32, "small preset res block"),
    (128, 64, 3, 256, "decoder last upsampling conv"),
    (64, 32, 3, 256, "small preset decoder last upsampling conv"),
    (64, 3, 7, 256, "decoder head 7x7 -> RGB"),
]


def rate(cin, cout, kernel, side, batch, channels_last, dtype) -> float:
    """GMAC/s of one conv call on a (batch, cin, side + k - 1, side + k - 1) input."""
    conv = torch.nn.Conv2d(cin, cout, kernel).to(dtype)
    x = torch.randn(batch, cin, side + kernel - 1, side + kernel - 1).to(dtype)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = best_time(lambda: conv(x), repeats=3)
    return batch * cin * cout * kernel * kernel * side * side / seconds / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, best = [], 0.0
    for cin, cout, kernel, side, where in LAYERS:
        batch = max(1, args.batch // 4) if cin >= 1024 else args.batch
        rates = [
            rate(cin, cout, kernel, side, batch, cl, dtype)
            for cl, dtype in ((False, torch.float32), (True, torch.float32), (True, torch.bfloat16))
        ]
        best = max(best, rates[0], rates[1])
        rows.append([f"{cin}->{cout} {kernel}x{kernel} at {side}x{side}", where] + [f"{r:.0f}" for r in rates])
    table = markdown_table(["conv", "where", "NCHW fp32 GMAC/s", "channels_last fp32", "channels_last bf16"], rows)
    body = (
        f"Machine: {machine_line()}.\n\nBatch {args.batch}. Best fp32 rate (the measured conv peak): "
        f"{best:.0f} GMAC/s = {2 * best:.0f} GFLOP/s.\n\n{table}"
    )
    print(body)
    if args.write:
        append_report(args.write, "Conv layers: layout and dtype", body)


if __name__ == "__main__":
    main()
