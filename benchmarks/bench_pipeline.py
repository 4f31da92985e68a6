"""End-to-end retargeting time by stage: a 10-second 25 fps 512x512 face driving clip and a
5-second subject clip, small preset (random weights: speed does not depend on them), this CPU.

    python benchmarks/bench_pipeline.py [--shared ../shared] [--preset small] [--write docs/benchmarks.md]

Uses ../shared/data/face/moore_talkinghead_1.mp4 (driving, first 250 frames) and
liveportrait_d12.mp4 (subject, first 125 frames) when ../shared is there; generated clips of the
astronaut otherwise. Also reports the process's peak memory (VmHWM).
"""

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from common import append_report, machine_line, markdown_table  # noqa: E402

from tsnet_hf import TSNet, preset_config  # noqa: E402
from tsnet_hf.pipeline import RetargetPipeline  # noqa: E402


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=250, help="driving frames (10 s at 25 fps)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        TSNet(preset_config(args.preset, "face")).save_pretrained(tmp / "model")
        subject, driving, source = clips(args.shared if args.shared.is_dir() else None, tmp)
        pipe = RetargetPipeline.from_pretrained(tmp / "model", device="cpu")
        start = time.perf_counter()
        result = pipe(subject, driving, mode="face", max_frames=args.frames, subject_max_frames=125,
                      batch_size=args.batch_size)
        result.save(tmp / "out.mp4")
        total = time.perf_counter() - start
        frames = result.num_frames
        rows = [[stage, f"{seconds:.1f}", f"{1000 * seconds / frames:.0f}", f"{100 * seconds / total:.0f}%"]
                for stage, seconds in result.timings.items()]
        rows.append(["total (incl. model-free overheads and save)", f"{total:.1f}", f"{1000 * total / frames:.0f}", "100%"])
        result.cleanup()
    table = markdown_table(["stage", "seconds", "ms per output frame", "share"], rows)
    body = (f"Machine: {machine_line()}.\n\nEnd to end, {args.preset} preset, {frames} driving frames at 512x512 "
            f"(10 s at 25 fps) and a 125-frame subject ({source}); batch {args.batch_size}; "
            f"peak memory {peak_memory_mib():.0f} MiB. Command: `python benchmarks/bench_pipeline.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{table}\n\n"
            f"Target: under 120 s for the whole clip; measured {total:.0f} s "
            f"({'met' if total < 120 else f'missed by {total - 120:.0f} s'}).")
    print(body)
    if args.write:
        append_report(args.write, "Pipeline end to end (CPU)", body)


if __name__ == "__main__":
    main()
