"""Training speed: samples (generated target frames) per second of full training steps.

One step is what training/train.py does: the generator on B clips (K subject frames, T targets
each), one discriminator update, one generator update with every loss of the paper (LSGAN,
feature matching, VGG19 perceptual, L_TRA, image gradients), Adam on both. Inputs are synthetic
and the VGG19 has random weights (the same cost as ImageNet weights); data loading is not timed
(training/data.py prepares a 256x256 clip in about 10 ms per frame in loader processes).

    python benchmarks/bench_training.py                                  # small and paper, CPU
    python benchmarks/bench_training.py --device cuda --precision bf16 --batch 8 --write docs/benchmarks.md
    python benchmarks/bench_training.py --compare --preset small --resolution 128 --output-path blend \
        --precision no bf16 --layout contiguous channels_last --no-adversarial --batch 4   # CPU recipe choices

--compare times every combination of --precision and --layout in one process, one step of each
in turn per round, so that load from other jobs falls on all of them alike, and reports each
one's median with its ratio to the first: the measurement behind the CPU recipes' bf16 and layout.
"""

import argparse
import functools
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from training.data import Batch
from training.discriminators import PatchDiscriminator, face_crop_size
from training.losses import Losses, LossWeights
from training.train import train_step
from training.vision import random_vgg
from tsnet_hf import TSNet, preset_config

from common import append_report, machine_line, markdown_table


def synthetic_batch(config, clips: int, frames_per: int, targets: int, device):
    """A training.data.Batch of random frames and face-sized one-hot masks."""
    generator = torch.Generator().manual_seed(0)
    size, channels = config.image_size, config.mask_channels

    def masks(count):
        labels = torch.zeros(count, size, size, dtype=torch.long)
        for i in range(count):
            y0, x0 = size // 5 + i % 7, size // 4 + i % 5
            labels[i, y0 : y0 + size // 2, x0 : x0 + size // 2 : 6] = 1 + i % (channels - 1)
        return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()

    count = clips * targets
    return Batch(
        subject_frames=(torch.rand(clips, frames_per, 3, size, size, generator=generator) * 2 - 1).to(device),
        subject_masks=masks(clips * frames_per).view(clips, frames_per, channels, size, size).to(device),
        driving_masks=masks(count).to(device),
        targets=(torch.rand(count, 3, size, size, generator=generator) * 2 - 1).to(device),
        face_boxes=torch.tensor([[size / 4, size / 8, 3 * size / 4, 5 * size / 8]] * count, device=device),
        target_labels=torch.zeros(count, size, size, dtype=torch.long, device=device),
        target_points=torch.zeros(count, 1, 3, device=device),
    )


def measure(
    preset: str, mode: str, clips: int, frames_per: int, targets: int, device: str, precision: str, steps: int
) -> dict:
    from accelerate import Accelerator  # heavy, and only this measurement needs it

    accelerator = Accelerator(mixed_precision=precision, cpu=device == "cpu")
    config = preset_config(preset, mode)
    torch.manual_seed(0)
    model = TSNet(config).train()
    d = PatchDiscriminator(3 + config.mask_channels)
    face_d = PatchDiscriminator(3) if mode == "body" else None
    losses = Losses(mode, LossWeights(), random_vgg("vgg19").to(accelerator.device), face_crop_size(config.image_size))
    opt_g = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(
        list(d.parameters()) + (list(face_d.parameters()) if face_d else []), lr=1e-4, betas=(0.5, 0.999)
    )
    model, d, face_d, opt_g, opt_d = accelerator.prepare(model, d, face_d, opt_g, opt_d)
    batch = synthetic_batch(config, clips, frames_per, targets, accelerator.device)

    def step():
        train_step(accelerator, losses, model, d, face_d, opt_g, opt_d, batch)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]  # median
    memory = torch.cuda.max_memory_allocated() / 2**30 if accelerator.device.type == "cuda" else None
    params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters()) / 1e6
    return dict(
        preset=preset,
        params=params,
        size=config.image_size,
        seconds=seconds,
        samples=clips * targets / seconds,
        memory=memory,
    )


class PlainAccelerator:
    """What train_step needs of an Accelerator (autocast, backward, unwrap_model), for one
    process and any precision: several can live in one process, unlike accelerate's singleton."""

    def __init__(self, device: str, precision: str):
        self.device = torch.device(device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss):
        loss.backward()

    def unwrap_model(self, model):
        return model


def compare(args) -> str:
    """Interleaved steps of every (precision, layout) variant; a markdown table with ratios."""
    variants = []
    for precision, layout in itertools.product(args.precision, args.layout):
        accelerator = PlainAccelerator(args.device, precision)
        config = preset_config(args.preset[0], args.mode)
        config = replace(config, image_size=args.resolution or config.image_size, output=args.output_path)
        torch.manual_seed(0)
        model, d = TSNet(config).train().to(args.device), PatchDiscriminator(3 + config.mask_channels).to(args.device)
        face_d = PatchDiscriminator(3).to(args.device) if args.mode == "body" else None
        if layout == "channels_last":
            for module in (model, d, face_d):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        losses = Losses(
            args.mode, LossWeights(l1=10.0), random_vgg("vgg16").to(args.device), face_crop_size(config.image_size)
        )
        opt_g = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(list(d.parameters()) + (list(face_d.parameters()) if face_d else []), lr=1e-4)
        batch = synthetic_batch(config, args.batch, args.k, args.targets, args.device)
        step = functools.partial(
            train_step, accelerator, losses, model, d, face_d, opt_g, opt_d, batch, adversarial=not args.no_adversarial
        )
        variants.append((f"{precision}, {layout}", step, []))
    for _, step, _ in variants:
        step()  # warm-up
    for _ in range(args.steps):
        for _, step, times in variants:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    medians = [sorted(times)[len(times) // 2] for _, _, times in variants]
    rows = [
        [name, f"{m:.2f}", f"{args.batch * args.targets / m:.2f}", f"{medians[0] / m:.2f}x"]
        for (name, _, _), m in zip(variants, medians)
    ]
    table = markdown_table(["precision, layout", "s/step", "samples/s", "speed vs first"], rows)
    return (
        f"Machine: {machine_line()}.\n\n{args.preset[0]} preset, {args.mode}, {args.resolution or 'preset'} px, "
        f"output {args.output_path}, {'no discriminators (warm-up)' if args.no_adversarial else 'D + G steps'}, "
        f"{args.batch} clips x K = {args.k}; {args.steps} interleaved rounds, medians. Command: "
        f"`python benchmarks/bench_training.py {' '.join(sys.argv[1:])}`\n\n{table}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["small", "paper"], choices=["paper", "small", "tiny"])
    parser.add_argument("--mode", default="face", choices=["face", "body"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["no"],
        choices=["no", "bf16", "fp16"],
        help="mixed precision (bf16 also on CPUs); several only with --compare",
    )
    parser.add_argument(
        "--layout",
        nargs="+",
        default=["contiguous"],
        choices=["contiguous", "channels_last"],
        help="memory format of the models (--compare)",
    )
    parser.add_argument("--compare", action="store_true", help="interleave every precision x layout, with ratios")
    parser.add_argument("--resolution", type=int, help="frame side (default: the preset's)")
    parser.add_argument("--output-path", default="decoder", choices=["decoder", "blend"])
    parser.add_argument("--no-adversarial", action="store_true", help="generator step only (the warm-up)")
    parser.add_argument("--batch", type=int, default=2, help="clips B per step")
    parser.add_argument("--k", type=int, default=3, help="subject frames K per clip")
    parser.add_argument("--targets", type=int, default=1, help="target frames T per clip")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported), after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--write", metavar="MARKDOWN", help="append the table to this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compare:
        body = compare(args)
        print(body)
        if args.write:
            append_report(args.write, "Training speed: CPU recipe choices", body)
        return
    if len(args.precision) > 1:
        parser.error("several --precision values need --compare")
    args.precision = args.precision[0]
    rows = []
    for preset in args.preset:
        r = measure(preset, args.mode, args.batch, args.k, args.targets, args.device, args.precision, args.steps)
        rows.append(
            [
                preset,
                f"{r['params']:.1f} M",
                f"{r['size']} px",
                args.device,
                args.precision,
                f"{args.batch} x {args.targets}",
                f"{r['seconds']:.2f}",
                f"{r['samples']:.2f}",
                "-" if r["memory"] is None else f"{r['memory']:.1f}",
            ]
        )
        print(f"done {preset}", file=sys.stderr)
    table = markdown_table(
        [
            "preset",
            "parameters",
            "frames",
            "device",
            "mixed precision",
            "clips x targets per step",
            "s/step",
            "samples/s",
            "peak GPU GiB",
        ],
        rows,
    )
    body = (
        f"Machine: {machine_line()}.\n\nFull training steps ({args.mode}, K = {args.k}: generator, "
        f"one D and one G update with all losses, Adam), median of {args.steps} after a warm-up; a sample is one "
        f"generated target frame. Command: `python benchmarks/bench_training.py {' '.join(argv or sys.argv[1:])}`"
        f"\n\n{table}"
    )
    print(body)
    if args.write:
        append_report(args.write, "Training speed", body)


if __name__ == "__main__":
    main()
