"""Training speed: samples (generated target frames) per second of full training steps.

One step is what training/train.py does: the generator on B clips (K subject frames, T targets
each), one discriminator update, one generator update with every loss of the paper (LSGAN,
feature matching, VGG19 perceptual, L_TRA, image gradients), Adam on both. Inputs are synthetic
and the VGG19 has random weights (the same cost as ImageNet weights); data loading is not timed
(training/data.py prepares a 256x256 clip in about 10 ms per frame in loader processes).

    python benchmarks/bench_training.py                                  # small and paper, CPU
    python benchmarks/bench_training.py --device cuda --precision bf16 --batch 8 --write docs/benchmarks.md
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from common import append_report, machine_line, markdown_table  # noqa: E402

from tsnet_hf import TSNet, preset_config  # noqa: E402


def synthetic_batch(config, clips: int, frames_per: int, targets: int, device):
    """A training.data.Batch of random frames and face-sized one-hot masks."""
    from training.data import Batch

    generator = torch.Generator().manual_seed(0)
    size, channels = config.image_size, config.mask_channels

    def masks(count):
        labels = torch.zeros(count, size, size, dtype=torch.long)
        for i in range(count):
            y0, x0 = size // 5 + i % 7, size // 4 + i % 5
            labels[i, y0:y0 + size // 2, x0:x0 + size // 2:6] = 1 + i % (channels - 1)
        return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()

    count = clips * targets
    return Batch(subject_frames=(torch.rand(clips, frames_per, 3, size, size, generator=generator) * 2 - 1).to(device),
                 subject_masks=masks(clips * frames_per).view(clips, frames_per, channels, size, size).to(device),
                 driving_masks=masks(count).to(device),
                 targets=(torch.rand(count, 3, size, size, generator=generator) * 2 - 1).to(device),
                 face_boxes=torch.tensor([[size / 4, size / 8, 3 * size / 4, 5 * size / 8]] * count, device=device),
                 target_labels=torch.zeros(count, size, size, dtype=torch.long, device=device),
                 target_points=torch.zeros(count, 1, 3, device=device))


def measure(preset: str, mode: str, clips: int, frames_per: int, targets: int, device: str, precision: str,
            steps: int) -> dict:
    from accelerate import Accelerator

    from training.discriminators import PatchDiscriminator, face_crop_size
    from training.losses import Losses, LossWeights
    from training.train import optimisation_step
    from training.vision import random_vgg

    accelerator = Accelerator(mixed_precision=precision, cpu=device == "cpu")
    config = preset_config(preset, mode)
    torch.manual_seed(0)
    model = TSNet(config).train()
    d = PatchDiscriminator(3 + config.mask_channels)
    face_d = PatchDiscriminator(3) if mode == "body" else None
    losses = Losses(mode, LossWeights(), random_vgg("vgg19").to(accelerator.device), face_crop_size(config.image_size))
    opt_g = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d.parameters()) + (list(face_d.parameters()) if face_d else []), lr=1e-4,
                             betas=(0.5, 0.999))
    model, d, face_d, opt_g, opt_d = accelerator.prepare(model, d, face_d, opt_g, opt_d)
    batch = synthetic_batch(config, clips, frames_per, targets, accelerator.device)

    def step():
        optimisation_step(accelerator, losses, model, d, face_d, opt_g, opt_d, batch)
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
    return dict(preset=preset, params=params, size=config.image_size, seconds=seconds,
                samples=clips * targets / seconds, memory=memory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["small", "paper"], choices=["paper", "small", "tiny"])
    parser.add_argument("--mode", default="face", choices=["face", "body"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"], help="mixed precision (GPU)")
    parser.add_argument("--batch", type=int, default=2, help="clips B per step")
    parser.add_argument("--k", type=int, default=3, help="subject frames K per clip")
    parser.add_argument("--targets", type=int, default=1, help="target frames T per clip")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported), after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--write", metavar="MARKDOWN", help="append the table to this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for preset in args.preset:
        r = measure(preset, args.mode, args.batch, args.k, args.targets, args.device, args.precision, args.steps)
        rows.append([preset, f"{r['params']:.1f} M", f"{r['size']} px", args.device, args.precision, f"{args.batch} x {args.targets}",
                     f"{r['seconds']:.2f}", f"{r['samples']:.2f}", "-" if r["memory"] is None else f"{r['memory']:.1f}"])
        print(f"done {preset}", file=sys.stderr)
    table = markdown_table(["preset", "parameters", "frames", "device", "mixed precision", "clips x targets per step",
                            "s/step", "samples/s", "peak GPU GiB"], rows)
    body = (f"Machine: {machine_line()}.\n\nFull training steps ({args.mode}, K = {args.k}: generator, "
            f"one D and one G update with all losses, Adam), median of {args.steps} after a warm-up; a sample is one "
            f"generated target frame. Command: `python benchmarks/bench_training.py {' '.join(argv or sys.argv[1:])}`"
            f"\n\n{table}")
    print(body)
    if args.write:
        append_report(args.write, "Training speed", body)


if __name__ == "__main__":
    main()
