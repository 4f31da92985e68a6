"""End-to-end retargeting time by stage: a 10-second 25 fps 512x512 face driving clip and a
5-second subject clip, with the shipped face checkpoint (or a random preset), this CPU.

    python benchmarks/bench_pipeline.py [--checkpoint checkpoints/face-blend-128] \
        [--variants default fp32 channels_last compile threads1] [--write docs/benchmarks.md]

Clips: a talking head and a face video from the --shared data folder where it has them (the first
250 and 125 frames), else generated ones. "first frame": seconds from the call to the first output
frame handed to `preview` (what the app shows first). Also reports peak memory (VmHWM).
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from bench_layers import LAYERS, rate  # noqa: E402

from tsnet_hf import TSNet, preset_config  # noqa: E402
from tsnet_hf.cli import default_checkpoint  # noqa: E402
from tsnet_hf.pipeline import RetargetPipeline  # noqa: E402
from tsnet_hf.utils import cpu_threads  # noqa: E402

from common import append_report, machine_line, markdown_table  # noqa: E402

TARGET_SECONDS = 120.0
STRETCH_SECONDS = 60.0


def clips(shared: Path | None, folder: Path):
    if shared is not None and (shared / "data" / "face").is_dir():
        face = shared / "data" / "face"
        return face / "liveportrait_d12.mp4", face / "moore_talkinghead_1.mp4", "real clips from ../shared"
    from synthetic import moving_face_frames, write_video

    subject = write_video(folder / "subject.mp4", moving_face_frames(125, size=512, seed=1))
    driving = write_video(folder / "driving.mp4", moving_face_frames(250, size=512, seed=2), audio=True)
    return subject, driving, "generated clips (astronaut)"


def peak_memory_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def pipeline_for(variant: str, checkpoint, threads: int) -> RetargetPipeline:
    """The pipeline of one variant; sets torch's thread count. Variants: "default" (the pipeline's own
    choices on this machine), "fp32" (reduced precision off), "bf16", "channels_last" (the default
    dtype, NHWC), "compile" (torch.compile, a cold compile included), "threadsN" (N torch threads).
    Each is one whole run in this process, in the order given (the first gives the table of stages)."""
    match = re.fullmatch(r"threads(\d+)", variant)
    torch.set_num_threads(int(match.group(1)) if match else threads)
    if variant not in ("default", "fp32", "bf16", "channels_last", "compile") and not match:
        raise SystemExit(f"error: unknown variant {variant!r}: see --help.")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(variant)
    if variant == "compile":  # a cold compile, as a first run pays it (not torch's on-disk cache of earlier runs)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="tsnet-inductor-")
    return RetargetPipeline.from_pretrained(
        checkpoint,
        device="cpu",
        dtype=dtype,
        channels_last=True if variant == "channels_last" else None,
        compile=variant == "compile",
    )


def timed_run(pipe, subject, driving, frames: int, batch: int, folder: Path) -> dict:
    start = time.perf_counter()
    first = []
    with pipe(
        subject,
        driving,
        mode="face",
        max_frames=frames,
        subject_max_frames=125,
        batch_size=batch,
        preview=lambda *_: first or first.append(time.perf_counter() - start),
    ) as result:
        result.save(folder / "out.mp4")
        total = time.perf_counter() - start
        return {"total": total, "first": first[0], "frames": result.num_frames, "timings": dict(result.timings)}


def flop_floor(checkpoint, dtype: torch.dtype, batch: int) -> dict:
    """The generator's FLOPs per frame (FlopCounterMode on one chunk of `batch` frames, K = 3, a
    face-sized mask box) and the measured conv peak at `dtype` (the best rate of
    bench_layers.py's large layers, NCHW or channels_last): floor = FLOPs / peak, in ms per frame."""
    model = TSNet.from_pretrained(checkpoint).eval()
    size, channels = model.config.image_size, model.config.mask_channels
    labels = torch.zeros(4, size, size, dtype=torch.long)
    labels[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    masks = torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()
    frames = torch.rand(1, 3, 3, size, size) * 2 - 1
    with torch.inference_mode():
        memory = model.encode_subject(frames, masks[None, :3])
        with FlopCounterMode(display=False) as counter:
            model.generate(memory, masks[:1].expand(batch, -1, -1, -1))
    flops = counter.get_total_flops() / batch
    peak = max(
        rate(cin, cout, kernel, side, 2 if cin >= 1024 else 8, layout, dtype)
        for cin, cout, kernel, side, _ in LAYERS[:3]
        for layout in (False, True)
    )
    return {"gflop": flops / 1e9, "peak_gmac": peak, "floor_ms": 1000 * flops / (2e9 * peak)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder (default: the shipped face checkpoint, else a random --preset)",
    )
    parser.add_argument(
        "--preset",
        default="small",
        choices=["paper", "small", "tiny"],
        help="random weights of this preset when no checkpoint is given or shipped",
    )
    parser.add_argument("--variants", nargs="+", default=["default"], help="see pipeline_for")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--frames", type=int, default=250, help="driving frames (10 s at 25 fps)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args(argv)
    threads = args.threads or cpu_threads()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or default_checkpoint("face")
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = tmp / "model"
            TSNet(preset_config(args.preset, "face")).save_pretrained(checkpoint)
            label = f"random {args.preset} preset"
        else:
            label = f"`{Path(checkpoint).name}`"
        subject, driving, source = clips(args.shared if args.shared.is_dir() else None, tmp)
        runs = {}
        for number, variant in enumerate(args.variants):
            pipe = pipeline_for(variant, checkpoint, threads)
            label = variant if variant not in args.variants[:number] else f"{variant} (again)"
            runs[label] = {
                **timed_run(pipe, subject, driving, args.frames, args.batch_size, tmp),
                "dtype": str(pipe.dtype).replace("torch.", ""),
                "threads": torch.get_num_threads(),
            }
            print(f"{label}: {runs[label]['total']:.1f} s", flush=True)
        torch.set_num_threads(threads)
        floor = flop_floor(checkpoint, getattr(torch, runs[args.variants[0]]["dtype"]), args.batch_size)
    first = runs[args.variants[0]]
    frames = first["frames"]
    rows = [
        [stage, f"{seconds:.1f}", f"{1000 * seconds / frames:.0f}", f"{100 * seconds / first['total']:.0f}%"]
        for stage, seconds in first["timings"].items()
    ]
    rows.append(
        [
            "total (incl. model-free overheads and save)",
            f"{first['total']:.1f}",
            f"{1000 * first['total'] / frames:.0f}",
            "100%",
        ]
    )
    compare = [
        [
            variant,
            run["dtype"],
            run["threads"],
            f"{run['total']:.1f}",
            f"{run['timings'].get('generator', 0):.1f}",
            f"{run['first']:.1f}",
            f"{first['total'] / run['total']:.2f}x",
        ]
        for variant, run in runs.items()
    ]
    compare_header = ["variant", "dtype", "threads", "total s", "generator s", "first frame s", "speed vs first"]
    command = " ".join(argv if argv is not None else sys.argv[1:])
    total = first["total"]
    verdict = (
        "met, and the stretch target of 60 s too"
        if total < STRETCH_SECONDS
        else "met"
        if total < TARGET_SECONDS
        else f"missed by {total - TARGET_SECONDS:.0f} s"
    )
    body = (
        f"Machine: {machine_line()}.\n\nEnd to end, {label}, {frames} driving frames at 512x512 "
        f"(10 s at 25 fps) and a 125-frame subject ({source}); batch {args.batch_size}; "
        f"peak memory {peak_memory_mib():.0f} MiB. Command: `python benchmarks/bench_pipeline.py {command}`\n\n"
        f"Stages of the first variant ({args.variants[0]}):\n\n"
        f"{markdown_table(['stage', 'seconds', 'ms per output frame', 'share'], rows)}\n\n"
        f"Variants, one whole run each in this process, in this order:\n\n"
        f"{markdown_table(compare_header, compare)}\n\n"
        f"Target: under {TARGET_SECONDS:.0f} s for the whole clip; measured {total:.0f} s ({verdict}).\n\n"
        f"FLOP floor of the generator ({args.variants[0]}, {first['dtype']}): {floor['gflop']:.2f} GFLOP per frame "
        f"at a measured conv peak of {2 * floor['peak_gmac']:.0f} GFLOP/s ({first['dtype']}, bench_layers.py's "
        f"large layers) = {floor['floor_ms']:.1f} ms per frame; measured "
        f"{1000 * first['timings']['generator'] / frames:.1f} ms per frame = "
        f"{first['timings']['generator'] / frames * 1000 / floor['floor_ms']:.1f}x the floor (target 1.5x)."
    )
    print(body)
    if args.write:
        append_report(args.write, "Pipeline end to end (CPU)", body)


if __name__ == "__main__":
    main()
