"""Generator speed: the authors' way versus ours, in one run.

(a) the authors' way: for every driving frame, re-encode the K subject frames, compute the two
    dense masked similarity products, batch 1 (their demo_face.py);
(b) ours: encode the subject once, generate a batch of driving frames, mask-aware similarity.
Same weights, same inputs, same process. Prints seconds per frame, their ratio, multiply-adds
per frame (counted by torch's FlopCounterMode) and achieved GFLOP/s (1 MAC = 2 FLOPs).

    python benchmarks/bench_generator.py                      # paper preset, 256x256, K=3, 2 threads
    python benchmarks/bench_generator.py --preset small --frames 1 3 5 --write docs/benchmarks.md
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_report, best_time, machine_line, markdown_table  # noqa: E402

from tsnet_hf import TSNet, preset_config  # noqa: E402


def synthetic_inputs(config, frames_per, batch, seed=0):
    """Subject frames in [-1, 1] and one-hot masks with a face-sized drawn box (a ~ 0.3 of the image)."""
    generator = torch.Generator().manual_seed(seed)
    size, channels = config.image_size, config.mask_channels

    def masks(count):
        labels = torch.zeros(count, size, size, dtype=torch.long)
        for i in range(count):
            x0, y0 = 60 + 4 * (i % 5), 50 + 3 * (i % 7)
            labels[i, y0:y0 + 140, x0:x0 + 130:7] = torch.randint(1, channels, (1,), generator=generator)
        return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()

    subject = torch.rand(1, frames_per, 3, size, size, generator=generator) * 2 - 1
    return subject, masks(frames_per)[None], masks(batch)


def counted_flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def measure(preset: str, frames_per: int, batch: int, repeats: int) -> dict:
    config = preset_config(preset, "face")
    torch.manual_seed(0)
    ours = TSNet(config).eval()
    authors = TSNet(dataclasses.replace(config, authors_compat=True)).eval()
    authors.load_state_dict(ours.state_dict())
    subject, subject_masks, driving = synthetic_inputs(config, frames_per, batch)

    def authors_frame(i):
        # their fusion network runs whole on every (driving, subject) pair: no split first conv
        memory = authors.encode_subject(subject, subject_masks, precompute_fusion=False)
        return authors.generate(memory, driving[i:i + 1])

    def authors_way():
        for i in range(batch):
            authors_frame(i)

    memory = ours.encode_subject(subject, subject_masks)

    def our_way():
        ours.generate(memory, driving)

    nhwc = TSNet(config).eval().to(memory_format=torch.channels_last)
    nhwc.load_state_dict(ours.state_dict())
    nhwc_memory = nhwc.encode_subject(subject, subject_masks)
    nhwc_driving = driving.contiguous(memory_format=torch.channels_last)

    with torch.inference_mode():
        authors_flops = counted_flops(lambda: authors_frame(0))
        our_flops = counted_flops(our_way) / batch
        encode_flops = counted_flops(lambda: ours.encode_subject(subject, subject_masks))
        authors_time = best_time(authors_way, repeats=repeats) / batch
        our_time = best_time(our_way, repeats=repeats) / batch
        nhwc_time = best_time(lambda: nhwc.generate(nhwc_memory, nhwc_driving), repeats=repeats) / batch
    return dict(preset=preset, K=frames_per, batch=batch, authors_s=authors_time, ours_s=our_time,
                nhwc_s=nhwc_time, authors_gmac=authors_flops / 2e9, ours_gmac=our_flops / 2e9,
                encode_gmac=encode_flops / 2e9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["paper"], choices=["paper", "small", "tiny"])
    parser.add_argument("--frames", type=int, nargs="+", default=[3], help="K values")
    parser.add_argument("--batch", type=int, default=4, help="driving frames per generate call (ours)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", metavar="MARKDOWN", help="append the table to this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for preset in args.preset:
        for frames_per in args.frames:
            r = measure(preset, frames_per, args.batch, args.repeats)
            rows.append([r["preset"], r["K"], f"{r['authors_s']:.3f}", f"{r['ours_s']:.3f}",
                         f"{r['authors_s'] / r['ours_s']:.2f}x", f"{r['nhwc_s']:.3f}",
                         f"{r['authors_gmac']:.1f}", f"{r['ours_gmac']:.1f}",
                         f"{r['encode_gmac']:.1f}", f"{2 * r['authors_gmac'] / r['authors_s']:.0f}",
                         f"{2 * r['ours_gmac'] / r['ours_s']:.0f}"])
            print(f"done {preset} K={frames_per}", file=sys.stderr)
    table = markdown_table(
        ["preset", "K", "authors s/frame", "ours s/frame", "speed-up", "ours channels_last s/frame",
         "authors GMAC/frame", "ours GMAC/frame",
         "subject encode GMAC (once)", "authors GFLOP/s", "ours GFLOP/s"], rows)
    body = (f"Machine: {machine_line()}.\n\nGenerator, 256x256, one driving frame; ours generates batches of "
            f"{args.batch} driving frames from a subject encoded once (encoding not counted per frame). "
            f"Command: `python benchmarks/bench_generator.py {' '.join(argv or sys.argv[1:])}`\n\n{table}")
    print(body)
    if args.write:
        append_report(args.write, "Generator: the authors' way versus ours", body)


if __name__ == "__main__":
    main()
