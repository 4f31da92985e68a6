"""How soon the app shows something: `python app.py` with the shipped face checkpoint, served
offline on a local port, one Run through its /retarget API (gradio_client), timed from the
request to the first live-view frame and to the finished videos.

    python benchmarks/bench_app.py [--seconds 5] [--runs 2] [--write docs/benchmarks.md]

Clips: bench_pipeline.clips (a 512x512 25 fps talking head from the --shared data folder where it
has one, else generated). The first run of a fresh server also pays for loading mediapipe's graphs;
every run is listed.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from bench_pipeline import clips  # noqa: E402
from common import append_report, machine_line, markdown_table  # noqa: E402
from helpers import ServerError, api_inputs, serve_app  # noqa: E402

FIRST_FRAME_TARGET = 10.0  # seconds from Run to the first frame on the page, on the CPU


def one_run(client, subject: Path, driving: Path, seconds: float) -> dict:
    """Seconds from the request to the first live-view frame and to the finished outputs."""
    inputs = api_inputs(subject_video=subject, driving_video=driving, max_seconds=seconds)
    start = time.perf_counter()
    job = client.submit(**inputs, api_name="/retarget")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - start
        time.sleep(0.05)
    job.result()
    total = time.perf_counter() - start
    return {"first": first if first is not None else total, "total": total, "updates": len(job.outputs())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--seconds", type=float, default=5.0, help="driving seconds per run (the page's default)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--app-args", nargs=argparse.REMAINDER, default=[], help="passed on to app.py")
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args(argv)
    import gradio_client

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subject, driving, source = clips(args.shared if args.shared.is_dir() else None, tmp)
        try:
            with serve_app(args.app_args, tmp, timeout=300) as url:
                client = gradio_client.Client(url, verbose=False)
                runs = [one_run(client, subject, driving, args.seconds) for _ in range(args.runs)]
        except ServerError as error:
            raise SystemExit(f"error: {error}") from None
    rows = [
        [number, f"{run['first']:.1f}", f"{run['total']:.1f}", run["updates"]] for number, run in enumerate(runs, 1)
    ]
    worst = max(run["first"] for run in runs)
    verdict = "met" if worst < FIRST_FRAME_TARGET else f"missed by {worst - FIRST_FRAME_TARGET:.1f} s"
    command = " ".join(argv if argv is not None else sys.argv[1:])
    body = (
        f"Machine: {machine_line()}.\n\n`python app.py {' '.join(args.app_args)}` (shipped checkpoints), "
        f"one Run at a time through /retarget: a subject video and {args.seconds:g} s of a 512x512 25 fps "
        f"driving video ({source}). Command: `python benchmarks/bench_app.py {command}`\n\n"
        f"{markdown_table(['run', 'first frame s', 'finished s', 'updates sent'], rows)}\n\n"
        f"Target: the first frame within {FIRST_FRAME_TARGET:.0f} s of Run on the CPU; slowest {worst:.1f} s "
        f"({verdict})."
    )
    print(body)
    if args.write:
        append_report(args.write, "App: time to the first frame (CPU)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
