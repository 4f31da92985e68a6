"""Generator speed: the authors' real code, their way re-done here, and ours step by step, in one run.

Rows, all on the same weights and inputs in one process, timed in interleaved rounds (each round
times every row once; the best round counts), so load from other jobs falls on all rows alike:
    their code       the authors' TSNet itself (--authors-repo; paper preset only): their demo's
                     loop, one driving frame per forward, the K subject frames re-encoded each time;
    their way        the same computation in tsnet-hf (authors_compat, no subject cache, batch 1,
                     no fusion split): checks that the rows below start from their cost;
    + subject cache  the subject encoded once per video, still one frame per call;
    + batch B        B driving frames per call;
    + fusion split   the fusion network's first conv split, its subject half computed once;
    + mask-aware     the mask-aware similarity instead of their two zero-masked products = tsnet-hf;
    then channels_last, bf16 autocast and larger batches on top (--extras).
Prints seconds per frame, the speed-up over their code (or over "their way" without the repo),
multiply-adds per frame (torch's FlopCounterMode; 1 MAC = 2 FLOPs) and the load average.

    python benchmarks/bench_generator.py --authors-repo PATH/TO/WACV23_TSNet   # paper preset, K=3
    python benchmarks/bench_generator.py --preset small --frames 1 3 5 --write docs/benchmarks.md
    python benchmarks/bench_generator.py --preset paper --checkpoint checkpoints/face-blend-128 --batch 8
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tsnet_hf import TSNet, preset_config
from tsnet_hf.config import AUTHORS_FACE_MEAN_BGR
from tsnet_hf.similarity import boxes_from_masks

from common import append_report, machine_line, markdown_table


def synthetic_inputs(config, frames_per, batch, seed=0):
    """Subject frames in [-1, 1] and one-hot masks with a face-sized drawn box (a ~ 0.3 of the image)."""
    generator = torch.Generator().manual_seed(seed)
    size, channels = config.image_size, config.mask_channels

    def masks(count):
        labels = torch.zeros(count, size, size, dtype=torch.long)
        for i in range(count):
            x0, y0 = 60 + 4 * (i % 5), 50 + 3 * (i % 7)
            labels[i, y0 : y0 + 140, x0 : x0 + 130 : 7] = torch.randint(1, channels, (1,), generator=generator)
        return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()

    subject = torch.rand(1, frames_per, 3, size, size, generator=generator) * 2 - 1
    return subject, masks(frames_per)[None], masks(batch)


def counted_flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def their_generator(repo, ours: TSNet, frames_per: int):
    """The authors' TSNet (their model/TSNet.py) holding `ours`'s weights, in eval mode."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tsnet_hf.convert import PARTS, authors_key_map

    from authors_reference import load_authors_code

    load_authors_code(repo)
    from model.TSNet import TSNet as TheirTSNet

    config = ours.config
    theirs = TheirTSNet(
        is_train=False,
        label_nc=config.mask_channels,
        n_blocks=config.decoder_blocks,
        n_downsampling=config.num_downsamples,
        n_source=frames_per,
    )
    state, mapping = ours.state_dict(), authors_key_map(config)
    for part in PARTS:
        names = {key.split(".", 1)[1]: value for key, value in mapping.items() if key.startswith(part + ".")}
        getattr(theirs, part).load_state_dict({name: state[key] for name, key in names.items()})
    return theirs.eval()


def their_loop(theirs, subject, subject_masks, driving, margin):
    """Their demo's loop over driving frames: set_test_input + forward, batch 1."""
    mean = torch.tensor(AUTHORS_FACE_MEAN_BGR).view(3, 1, 1)
    images = ((subject[0] + 1) * 127.5).flip(1) - mean  # their dataset's BGR minus mean, 0-255 scale

    def box_maps(masks):
        size = masks.shape[-1]
        maps = torch.zeros(len(masks), size, size)
        for map_, (x0, y0, x1, y1) in zip(maps, boxes_from_masks(masks, margin).long().tolist()):
            map_[y0:y1, x0:x1] = 1
        return maps

    subject_boxes, driving_boxes = box_maps(subject_masks[0]), box_maps(driving)

    def run():
        for i in range(len(driving)):
            theirs.set_test_input(
                src_img_list=images[:, None],
                src_lbl_list=subject_masks[0][:, None],
                src_bbox_list=subject_boxes[:, None],
                tar_lbl=driving[i : i + 1],
                tar_bbox=driving_boxes[i : i + 1],
            )
            theirs.forward()

    return run


def variants(config, frames_per, batch, extras, authors_repo):
    """name -> (callable producing `batch` frames, flop-counting callable or None)."""
    torch.manual_seed(0)
    ours = TSNet(config).eval()
    compat = TSNet(dataclasses.replace(config, authors_compat=True)).eval()
    compat.load_state_dict(ours.state_dict())
    subject, subject_masks, driving = synthetic_inputs(config, frames_per, max([batch, *extras.get("batches", [])]))
    frames = driving[:batch]
    rows = {}
    if authors_repo is not None:
        theirs = their_generator(authors_repo, ours, frames_per)
        rows["their code (real), batch 1"] = their_loop(theirs, subject, subject_masks, frames, config.box_margin)

    def their_way():
        for i in range(batch):  # their fusion block runs whole on every (driving, subject) pair
            memory = compat.encode_subject(subject, subject_masks, precompute_fusion=False)
            compat.generate(memory, frames[i : i + 1])

    rows["their way in tsnet-hf, batch 1"] = their_way

    plain = compat.encode_subject(subject, subject_masks, precompute_fusion=False)
    rows["+ subject encoded once, batch 1"] = lambda: [compat.generate(plain, frames[i : i + 1]) for i in range(batch)]
    rows[f"+ batch {batch}"] = lambda: compat.generate(plain, frames)
    split = compat.encode_subject(subject, subject_masks)
    rows["+ fusion split"] = lambda: compat.generate(split, frames)
    memory = ours.encode_subject(subject, subject_masks)
    rows["+ mask-aware similarity (tsnet-hf)"] = lambda: ours.generate(memory, frames)
    if extras.get("fast"):
        nhwc = TSNet(config).eval().to(memory_format=torch.channels_last)
        nhwc.load_state_dict(ours.state_dict())
        nhwc_driving = driving.contiguous(memory_format=torch.channels_last)
        nhwc_memory = nhwc.encode_subject(subject, subject_masks)
        rows["tsnet-hf + channels_last"] = lambda: nhwc.generate(nhwc_memory, nhwc_driving[:batch])
        for name, model, masks in (("", ours, driving), (" + channels_last", nhwc, nhwc_driving)):
            for exact in (False, True):
                label = f"tsnet-hf + bf16{' (fp32 encoders)' if exact else ''}{name}"
                rows[label] = _bf16_row(model, subject, subject_masks, masks[:batch], exact)
        for size in extras.get("batches", []):
            rows[f"tsnet-hf + bf16 (fp32 encoders) + channels_last, batch {size}"] = (
                size,
                _bf16_row(nhwc, subject, subject_masks, nhwc_driving[:size], True),
            )
    return rows, (ours, subject, subject_masks, frames)


def _bf16_row(model, subject, subject_masks, masks, fp32_encoders):
    """A callable generating `masks` under bf16 autocast from a subject encoded the same way."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        memory = model.encode_subject(subject, subject_masks, fp32_encoders=fp32_encoders)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.generate(memory, masks, fp32_encoders=fp32_encoders)

    return run


def interleaved(rows: dict, batch: int, rounds: int) -> dict:
    """Seconds per frame of each row: one warm-up call each, then `rounds` rounds timing every row
    once in turn; the best round counts."""
    entries = {name: (value if isinstance(value, tuple) else (batch, value)) for name, value in rows.items()}
    for _, function in entries.values():
        function()
    best = {name: float("inf") for name in entries}
    for _ in range(rounds):
        for name, (count, function) in entries.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], (time.perf_counter() - start) / count)
    return best


def bf16_gap(ours, subject, subject_masks, frames, fp32_encoders) -> tuple[float, float]:
    """Max and mean |bf16 autocast - fp32| of the generated frames (RGB in [-1, 1])."""
    reference = ours.generate(ours.encode_subject(subject, subject_masks), frames).image
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memory = ours.encode_subject(subject, subject_masks, fp32_encoders=fp32_encoders)
        half = ours.generate(memory, frames, fp32_encoders=fp32_encoders).image
    gap = (half.float() - reference).abs()
    return gap.max().item(), gap.mean().item()


def checkpoint_variants(path, frames_per, batch):
    """Rows for a trained checkpoint of any design (e.g. the shipped blend model, which has no
    authors_compat form): their way of running it (the subject re-encoded for every driving frame,
    batch 1, no fusion split) beside tsnet-hf's, in fp32 and in bf16 autocast (the CPU default for
    blend models where the CPU has native bf16)."""
    model = TSNet.from_pretrained(path).eval()
    subject, subject_masks, driving = synthetic_inputs(model.config, frames_per, batch)

    def their_way():
        for i in range(batch):
            memory = model.encode_subject(subject, subject_masks, precompute_fusion=False)
            model.generate(memory, driving[i : i + 1])

    memory = model.encode_subject(subject, subject_masks)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        half_memory = model.encode_subject(subject, subject_masks)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.generate(half_memory, driving)

    return {
        "their way: subject re-encoded per frame, batch 1, fp32": their_way,
        f"tsnet-hf, batch {batch}, fp32": lambda: model.generate(memory, driving),
        f"tsnet-hf, batch {batch}, bf16": bf16,
    }


def profile_shares(function, top: int = 8) -> str:
    """Markdown rows: the ops taking the most of `function`'s CPU time (torch.profiler, 3 calls)."""
    function()
    with torch.profiler.profile() as profiler:
        for _ in range(3):
            function()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return markdown_table(
        ["op", "share of self CPU time"], [[e.key, f"{100 * e.self_cpu_time_total / total:.0f}%"] for e in events[:top]]
    )


def measure(preset, frames_per, batch, rounds, extras, authors_repo) -> tuple[list, str]:
    if Path(preset).is_dir():  # a checkpoint folder (--checkpoint)
        rows = checkpoint_variants(preset, frames_per, batch)
        if extras.get("profile"):
            with torch.inference_mode():
                name = list(rows)[-1]
                print(f"{Path(preset).name}, {name}:\n{profile_shares(rows[name])}\n", flush=True)
        with torch.inference_mode():
            names = list(rows)[:2]
            flops = {name: counted_flops(rows[name]) / batch for name in names}
            load_before = os.getloadavg()
            seconds = interleaved(rows, batch, rounds)
            load_after = os.getloadavg()
        first = next(iter(seconds))
        table = [
            [
                f"`{Path(preset).name}`",
                frames_per,
                name,
                f"{value:.3f}",
                f"{seconds[first] / value:.2f}x",
                "" if name not in flops else f"{flops[name] / 2e9:.1f}",
            ]
            for name, value in seconds.items()
        ]
        return table, (
            f"load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load_before)} before, "
            f"{', '.join(f'{v:.2f}' for v in load_after)} after"
        )

    config = preset_config(preset, "face")
    repo = authors_repo if preset == "paper" else None
    rows, (ours, subject, subject_masks, frames) = variants(config, frames_per, batch, extras, repo)
    with torch.inference_mode():
        counted = ("their way in tsnet-hf, batch 1", "+ mask-aware similarity (tsnet-hf)")
        flops = {name: counted_flops(rows[name]) / batch for name in counted}
        load_before = os.getloadavg()
        seconds = interleaved(rows, batch, rounds)
        load_after = os.getloadavg()
    base_name = next(iter(seconds))
    table = []
    for name, value in seconds.items():
        gmac = flops.get(name)
        table.append(
            [
                preset,
                frames_per,
                name,
                f"{value:.3f}",
                f"{seconds[base_name] / value:.2f}x",
                "" if gmac is None else f"{gmac / 2e9:.1f}",
            ]
        )
    if extras.get("fast"):
        with torch.inference_mode():
            gaps = [bf16_gap(ours, subject, subject_masks, frames, exact) for exact in (False, True)]
        loads_note = (
            "; bf16 output vs fp32 (RGB in [-1, 1]), max / mean |diff|: "
            f"{gaps[0][0]:.3f} / {gaps[0][1]:.4f}, with fp32 encoders {gaps[1][0]:.3f} / {gaps[1][1]:.4f}"
        )
    else:
        loads_note = ""
    loads = (
        f"load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{', '.join(f'{v:.2f}' for v in load_after)} after{loads_note}"
    )
    return table, loads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        nargs="*",
        default=["paper"],
        choices=["paper", "small", "tiny"],
        help="random-weight presets to time (none: only --checkpoint)",
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[3], help="K values")
    parser.add_argument("--batch", type=int, default=4, help="driving frames per generate call (ours)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (the best counts)")
    parser.add_argument(
        "--authors-repo",
        type=Path,
        metavar="PATH",
        help="a checkout of nihaomiao/WACV23_TSNet: also time their generator itself",
    )
    parser.add_argument("--fast", action="store_true", help="also time channels_last and bf16 autocast")
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="with --fast: larger bf16 batches")
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="also trained checkpoints of any design (e.g. checkpoints/face-blend-128): their way "
        "of running it beside ours, fp32 and bf16",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="with --checkpoint: print the ops that take the most of the bf16 row's time",
    )
    parser.add_argument("--write", metavar="MARKDOWN", help="append the table to this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    for folder in args.checkpoint:
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"{folder} is not a checkpoint folder (no config.json).")
    if args.authors_repo is not None and not (args.authors_repo / "model" / "TSNet.py").is_file():
        parser.error(f"{args.authors_repo} has no model/TSNet.py: give a checkout of nihaomiao/WACV23_TSNet.")
    torch.set_num_threads(args.threads)
    extras = {"fast": args.fast, "batches": args.batches, "profile": args.profile}

    rows, loads = [], []
    for preset in [*args.preset, *args.checkpoint]:
        for frames_per in args.frames:
            table, load = measure(preset, frames_per, args.batch, args.rounds, extras, args.authors_repo)
            rows += table
            loads.append(f"{preset} K={frames_per}: {load}")
            print(f"done {preset} K={frames_per}", file=sys.stderr)
    table = markdown_table(["preset", "K", "generator", "s/frame", "speed-up vs first row", "GMAC/frame"], rows)
    body = (
        f"Machine: {machine_line()}.\n\nFace frames at the preset's size (paper: 256x256); rows timed in "
        f"{args.rounds} interleaved rounds, best round. "
        f"Command: `python benchmarks/bench_generator.py {' '.join(argv or sys.argv[1:])}`\n\n"
        f"{table}\n\n" + "\n".join(f"- {line}" for line in loads)
    )
    print(body)
    if args.write:
        append_report(args.write, "Generator: the authors' code versus ours", body)


if __name__ == "__main__":
    main()
