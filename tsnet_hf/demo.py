"""The Gradio demo page shared by app.py and the Hugging Face Space (`python app.py --help`).

`Retargeter` is the function behind the Run button and the `/retarget` API (inputs in INPUT_ORDER,
outputs in OUTPUT_ORDER); `build_demo` lays out the page. gradio is imported only where the page is
built or run, so `import tsnet_hf.demo` works without it.
"""

import argparse
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from .cli import default_checkpoint
from .config import tiny_config
from .errors import Cancelled, CheckpointError, InputError, TSNetError
from .landmarks import LandmarkTrack, choose_mode
from .masks import draw_mask, render_mask_rgb
from .modeling import TSNet
from .options import MISSING_POLICIES, RUN_MODES, SELECTIONS, RunOptions
from .pipeline import RetargetPipeline
from .utils import best_device, set_cpu_threads
from .video import VideoWriter, iter_frames, probe_video

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "assets" / "templates"
# Measured on 2 CPU cores (docs/benchmarks.md): 10 s of 25 fps driving video take about 20 s with the shipped
# 128 px face model in bf16 (26 s in fp32), minutes with a 256 px paper model; the page starts at 5 s.
CPU_MAX_SECONDS = 10.0
CPU_DEFAULT_SECONDS = 5.0
GPU_MAX_SECONDS = 60.0
GPU_DEFAULT_SECONDS = 20.0
GPU_DURATION = 120  # seconds of ZeroGPU time asked per run
RUN_FOLDER_AGE = 3600.0  # seconds a finished run's files are kept for the browser to fetch
NO_CHECKPOINT = (
    "No trained TS-Net checkpoint is shipped yet (training is pending): start the demo with "
    "--checkpoint FOLDER_OR_HUB_ID (or set TSNET_CHECKPOINT), or with --random-weights "
    "to try the page with an untrained model."
)
STAGES = {
    "subject landmarks": "Finding the subject's landmarks",
    "encode subject": "Encoding the subject frames",
    "driving landmarks": "Finding the driving landmarks",
    "generate": "Generating frames",
}
REPORT_COLUMNS = ["frame", "detected", "filled", "subject frames"]
# The handler's outputs, in the order of the page's components and of the /retarget API's answer.
# "blend_mask" comes last so the older outputs keep their positions; it is None for a decoder model.
# "preview" (the newest side-by-side frame, updated while the run goes on) comes after it.
OUTPUT_VIDEOS = ("output", "side_by_side", "warped", "driving_masks", "aligned_masks", "blend_mask")
OUTPUT_ORDER = (*OUTPUT_VIDEOS[:-1], "subject_frames", "summary", "report", "blend_mask", "preview")
PREVIEW_INTERVAL = 0.25  # seconds between looks at the running pipeline for a new preview frame


@dataclass(frozen=True)
class FormInputs:
    """The Run form's values as the page gives them (file paths, strings, numbers). The field order
    is the order of the handler's inputs and of the /retarget API's parameters (INPUT_ORDER), and
    the names are the API's parameter names and the page's component keys.

    subject_photo, subject_video: file paths, one of them; driving_video: a file path, or
    motion_template: a template name ("" for none); subject_frames: K; max_seconds: driving
    seconds used at most; the rest as `RetargetPipeline.__call__` names them.
    """

    subject_photo: str | None
    subject_video: str | None
    driving_video: str | None
    motion_template: str | None
    mode: str
    subject_frames: float
    selection: str
    align: bool
    smooth: bool
    max_seconds: float | None
    missing: str
    color_match: bool


INPUT_ORDER = tuple(f.name for f in fields(FormInputs))


# ----- settings and models --------------------------------------------------------------------


@dataclass
class DemoSettings:
    """What the demo runs with (see `load_settings`).

    models: mode ("face"/"body") -> loaded TSNet, on the CPU until a run moves it.
    sources: mode -> where it came from (folder, Hub id or "random weights"), shown on the page.
    device: "cuda", "mps", "cpu" or None (the best there is, at each run).
    device_label: where runs happen, in words ("a CUDA GPU", "ZeroGPU", "Apple GPU (MPS)", "CPU"); on a
        ZeroGPU Space the handler runs inside `spaces.GPU` (see `gpu_decorator`).
    on_gpu: runs happen on a CUDA GPU (here or on ZeroGPU).
    max_seconds: driving seconds a run uses at most (GPU_MAX_SECONDS on a CUDA GPU, else the CPU limit,
        stated on the page).
    cache_dir: run outputs, the example subject and template previews.
    """

    models: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    device: str | None = None
    device_label: str = "CPU"
    on_gpu: bool = False
    max_seconds: float = CPU_MAX_SECONDS
    cache_dir: Path = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="TS-Net motion retargeting demo (Gradio).")
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("TSNET_CHECKPOINT"),
        help="checkpoint folder or Hub id, face or body (default: $TSNET_CHECKPOINT, "
        "else the face checkpoint shipped in checkpoints/)",
    )
    parser.add_argument(
        "--no-shipped",
        action="store_true",
        help="load only the checkpoints named here, not the shipped ones for the other mode",
    )
    parser.add_argument(
        "--body-checkpoint",
        default=os.environ.get("TSNET_BODY_CHECKPOINT"),
        help="a body checkpoint as well (default: $TSNET_BODY_CHECKPOINT, else the shipped one)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained tiny face and body models: to try the page, outputs are noise",
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best there is)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: the cores this process may use)"
    )
    parser.add_argument(
        "--cpu-max-seconds",
        type=float,
        default=CPU_MAX_SECONDS,
        help="driving seconds used at most on CPU (default: %(default)s)",
    )
    parser.add_argument("--host", default=None, help="address to serve on (default: 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860 or $GRADIO_SERVER_PORT)")
    parser.add_argument("--cache-dir", default=None, help="folder for run outputs (default: a temporary folder)")
    return parser


def load_settings(args) -> DemoSettings:
    """Load the checkpoints named by the arguments into DemoSettings: --checkpoint / $TSNET_CHECKPOINT
    (any mode) and --body-checkpoint / $TSNET_BODY_CHECKPOINT; for a mode not named, the one shipped
    in checkpoints/ (`default_checkpoint`, unless --no-shipped). With none, the page says so and every
    run answers with NO_CHECKPOINT; --random-weights loads untrained tiny models to try the page.

    Raises CheckpointError (one sentence) when a named checkpoint cannot be loaded."""
    settings = DemoSettings(device=args.device)
    if args.random_weights:
        for mode in ("face", "body"):
            torch.manual_seed(0)
            settings.models[mode], settings.sources[mode] = TSNet(tiny_config(mode)).eval(), "random weights"
    for source in (args.checkpoint, args.body_checkpoint):
        if source:
            model = TSNet.from_pretrained(str(source)).eval()
            mode = model.config.mode
            if settings.sources.get(mode) not in (None, "random weights"):
                raise CheckpointError(
                    f"Both {settings.sources[mode]} and {source} are {mode} checkpoints: "
                    "give one face and one body checkpoint."
                )
            settings.models[mode], settings.sources[mode] = model, str(source)
    for mode in ("face", "body"):  # the shipped checkpoint for each mode not named (nor random)
        shipped = None if args.no_shipped else default_checkpoint(mode)
        if shipped is not None and mode not in settings.models:
            settings.models[mode], settings.sources[mode] = TSNet.from_pretrained(str(shipped)).eval(), str(shipped)
    settings.device_label, settings.on_gpu = _where(args.device)
    settings.max_seconds = GPU_MAX_SECONDS if settings.on_gpu else float(args.cpu_max_seconds)
    settings.cache_dir = Path(args.cache_dir or Path(tempfile.gettempdir()) / "tsnet-demo")
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _where(device: str | None) -> tuple[str, bool]:
    """(device in words, whether it is a CUDA GPU) for the --device flag (None: the best there is)."""
    if device is None and zero_gpu():
        return "ZeroGPU", True  # the GPU appears inside spaces.GPU functions only
    try:
        kind = torch.device(device).type if device else best_device().type
    except RuntimeError:
        raise InputError(f"Unknown device {device!r}: use cuda, mps or cpu (or leave --device out).") from None
    labels = {"cuda": "a CUDA GPU", "mps": "Apple GPU (MPS)"}
    return labels.get(kind, "CPU"), kind == "cuda"


def zero_gpu() -> bool:
    """Whether this runs on a ZeroGPU Space (the GPU appears only inside `spaces.GPU` functions)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu_decorator(duration: int = GPU_DURATION):
    """`spaces.GPU(duration=...)` where the `spaces` package is installed (Hugging Face Spaces),
    else a decorator that changes nothing."""
    try:
        import spaces  # only on Hugging Face Spaces
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=duration)


# ----- built-in media -------------------------------------------------------------------------


def list_templates(folder: Path = TEMPLATES_DIR) -> dict:
    """name -> (label, path) of the shipped motion templates (landmark tracks, .npz)."""
    templates = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            label = str(data["label"]) if "label" in data else path.stem
        templates[path.stem] = (label, path)
    return templates


def example_subject(cache_dir: Path) -> Path | None:
    """The astronaut photo (Eileen Collins, NASA, public domain) that scikit-image ships, written
    once as a jpg into `cache_dir`; None where scikit-image is missing."""
    path = cache_dir / "astronaut.jpg"
    if not path.is_file():
        try:
            from skimage import data  # optional (the app extra), and only for this picture
        except ImportError:
            return None
        cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def template_preview(path: Path, cache_dir: Path, side: int = 256) -> Path:
    """An mp4 of a template's masks, drawn in its own frame scaled to `side` px (made once)."""
    target = cache_dir / "previews" / f"{Path(path).stem}.mp4"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    track = LandmarkTrack.load(path)
    height, width = track.frame_size
    scale = side / max(height, width)
    size = (max(16, round(height * scale)), max(16, round(width * scale)))
    points = track.points.copy()
    points[..., :2] *= scale
    with VideoWriter(target, track.fps, preset="veryfast") as writer:
        for frame_points in points:
            writer.write(render_mask_rgb(draw_mask(frame_points, size), track.mode))
    return target


# ----- one run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truncation:
    """How much of the driving motion a run uses: cut (fewer frames than it has), seconds (the
    length asked), length (its whole length in seconds), frames (the frames used)."""

    cut: bool
    seconds: float
    length: float
    frames: int


class Retargeter:
    """The function behind the Run button and the `/retarget` endpoint."""

    def __init__(self, settings: DemoSettings):
        self.settings = settings
        self.templates = list_templates()

    def __call__(self, *inputs, progress=None):
        """Inputs as the page gives them (FormInputs' fields, in INPUT_ORDER); returns the page's
        outputs (OUTPUT_ORDER) once the run is done. Every failure becomes one `gr.Error`."""
        *_, final = self.stream(*inputs, progress=progress)
        return final

    def stream(self, *inputs, progress=None):
        """The Run button's generator: a tuple of OUTPUT_ORDER values each time a new preview
        frame is ready (the other outputs unchanged), then the finished run's outputs. Closing the
        generator (the Stop button) stops the run and deletes its files. Every failure becomes one
        `gr.Error` sentence that says what to do."""
        import gradio as gr  # optional (the app extra): imported where the page runs

        try:
            yield from self._stream(FormInputs(*inputs), progress=progress)
        except TSNetError as error:
            raise gr.Error(str(error), duration=30, print_exception=False) from None
        except Exception as error:  # a bug, not bad input: still one sentence on the page
            log.exception("retargeting failed")
            detail = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
            raise gr.Error(
                f"Unexpected {type(error).__name__} ({detail}): try other inputs, and please report it.",
                duration=30,
                print_exception=False,
            ) from None

    def _stream(self, form: FormInputs, progress=None):
        import gradio as gr  # optional (the app extra): imported where the page runs

        pipe, subject, driving, options, truncated = self._prepare(form)
        started = time.perf_counter()
        live = LiveRun(_progress_callback(progress, truncated.frames))
        live.start(pipe, subject, driving, options)
        watched = False
        try:
            while not live.wait(PREVIEW_INTERVAL):
                picture = live.new_preview()
                if picture is not None:
                    yield tuple(picture if name == "preview" else gr.skip() for name in OUTPUT_ORDER)
            watched = True
        finally:
            if not watched:
                live.stop()  # a closed generator (Stop, a closed page) stops the run, or deletes its result
        result = live.outcome()
        elapsed = time.perf_counter() - started
        try:
            outputs = self._outputs(result, pipe, elapsed, truncated)
        finally:
            result.cleanup()
        yield tuple(live.picture if name == "preview" else value for name, value in zip(OUTPUT_ORDER, outputs))

    def _prepare(self, form: FormInputs):
        """(pipeline, subject path, driving path or LandmarkTrack, RunOptions, Truncation) of one run,
        every input checked: InputError or CheckpointError with one sentence."""
        subject = _one_of(
            form.subject_photo,
            form.subject_video,
            "Upload a subject photo or video (or click an example).",
            "Give a subject photo or a subject video, not both: clear one of them.",
        )
        driving, fps, length = self._driving(form.driving_video, form.motion_template)
        seconds = self._seconds(form.max_seconds)
        max_frames = max(1, int(seconds * fps))
        k = _positive_int(form.subject_frames, "K")
        if probe_video(subject).is_image:
            k = 1  # a photo is one subject frame, whatever K the slider shows
        pipe = self._pipeline(form.mode, subject, driving)
        options = RunOptions(
            mode=form.mode,
            num_subject_frames=k,
            selection=form.selection,
            align=bool(form.align),
            smooth=bool(form.smooth),
            missing=form.missing,
            max_frames=max_frames,
            color_match=bool(form.color_match),
        )
        return (
            pipe,
            subject,
            driving,
            options,
            Truncation(length > max_frames, seconds, length / fps, min(max_frames, length)),
        )

    def _driving(self, driving_video, motion_template):
        """(driving: a path or a LandmarkTrack, fps, number of frames)."""
        if driving_video and motion_template:
            raise InputError("Give a driving video or a motion template, not both: clear one of them.")
        if motion_template:
            if motion_template not in self.templates:
                raise InputError(
                    f"Unknown motion template {motion_template!r}: choose one of {', '.join(self.templates)}."
                )
            track = LandmarkTrack.load(self.templates[motion_template][1])
            return track, float(track.fps), len(track)
        if not driving_video:
            raise InputError("Upload or record a driving video, or choose a motion template.")
        info = probe_video(driving_video, require_video=True)
        return driving_video, float(info.fps), max(info.frame_count, 1)

    def _seconds(self, max_seconds) -> float:
        limit = self.settings.max_seconds
        if max_seconds is None:
            return limit
        try:
            seconds = float(max_seconds)
        except (TypeError, ValueError):
            raise InputError(f"Maximum length must be a number of seconds, got {max_seconds!r}.") from None
        if not 0 < seconds <= limit:
            where = f"on {self.settings.device_label}"
            raise InputError(
                f"Maximum length is {seconds:g} s but {where} at most {limit:g} s of driving "
                f"video are used: ask for {limit:g} s or less (trim longer videos)."
            )
        return seconds

    def _pipeline(self, mode, subject, driving):
        """A RetargetPipeline around the checkpoint for `mode` ("auto": the one the inputs need)."""
        models = self.settings.models
        if not models:
            raise CheckpointError(NO_CHECKPOINT)
        if mode not in RUN_MODES:
            raise InputError(f"Mode must be one of {', '.join(RUN_MODES)}, got {mode!r}.")
        if isinstance(driving, LandmarkTrack):
            if mode not in ("auto", driving.mode):
                raise InputError(
                    f"The motion template is a {driving.mode} motion but the mode is {mode!r}: "
                    f"choose mode 'auto' or {driving.mode!r}, or a {mode} template."
                )
            wanted = driving.mode
        elif mode != "auto":
            wanted = mode
        else:
            wanted = next(iter(models)) if len(models) == 1 else _guess_mode(subject)
        if wanted not in models:
            other = "face" if wanted == "body" else "body"
            flag = "--body-checkpoint" if wanted == "body" else "--checkpoint"
            raise CheckpointError(
                f"This demo has no {wanted} checkpoint loaded: use {other} videos or a {other} "
                f"template, or start the demo with {flag} FOLDER_OR_HUB_ID."
            )
        return RetargetPipeline(models[wanted], device=self.settings.device)

    def _outputs(self, result, pipe, elapsed, truncated):
        import pandas as pd  # gradio's dependency: there whenever the page runs

        folder = _new_run_folder(self.settings.cache_dir)
        values = {name: None for name in OUTPUT_ORDER}  # a decoder model makes no blend mask; preview: the caller
        for name in OUTPUT_VIDEOS:
            if name in result.videos:
                values[name] = str(shutil.move(str(result.videos[name]), str(folder / f"{name}.mp4")))
        gallery = [
            (np.concatenate([crop, mask], axis=1), f"frame {index}")
            for crop, mask, index in zip(
                result.subject_crops, result.subject_masks, result.subject_frame_indices, strict=True
            )
        ]
        rows = [
            [r.index, "yes" if r.detected else "no", r.filled, " ".join(map(str, r.subject_frames))]
            for r in result.frames_report
        ]
        values["subject_frames"] = gallery
        values["report"] = pd.DataFrame(rows, columns=REPORT_COLUMNS)
        values["summary"] = _summary(result, pipe, elapsed, truncated, self.settings)
        return tuple(values[name] for name in OUTPUT_ORDER)


class LiveRun:
    """A pipeline run in a thread of its own, watched by the page's handler: it keeps the newest
    preview frame and the progress, and stops at the next chunk once `stop` is called (the
    pipeline then deletes its files; a result finished anyway is deleted by `stop` or the thread)."""

    def __init__(self, progress=None):
        self.report_progress = progress  # called from the handler's thread only (gradio's context)
        self.picture, self.fresh = None, False
        self.state = None  # the newest (stage, done, total)
        self.result, self.error = None, None
        self.stopped, self.finished = threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def start(self, pipe, subject, driving, options: RunOptions):
        threading.Thread(
            target=self._run, args=(pipe, subject, driving, options), name="tsnet-run", daemon=True
        ).start()

    def _run(self, pipe, subject, driving, options: RunOptions):
        result = error = None
        try:
            result = pipe(subject, driving, progress=self._progress, preview=self._preview, **asdict(options))
        except BaseException as caught:  # handed to the handler's thread by `outcome`
            error = caught
        with self.lock:
            if self.stopped.is_set() and result is not None:
                result.cleanup()  # the handler has gone: nobody takes these videos
            self.result, self.error = result, error
            self.finished.set()

    def _progress(self, stage, done, total):
        self._check()
        with self.lock:
            self.state = (stage, done, total)

    def _preview(self, done, total, picture):
        self._check()
        with self.lock:
            self.picture, self.fresh = picture, True

    def _check(self):
        if self.stopped.is_set():
            raise Cancelled("The run was stopped.")

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True once the run has ended. Passes the progress on meanwhile."""
        ended = self.finished.wait(seconds)
        with self.lock:
            state, self.state = self.state, None
        if state is not None and self.report_progress is not None:
            self.report_progress(*state)
        return ended

    def new_preview(self):
        """The newest preview frame if it was not taken yet, else None."""
        with self.lock:
            fresh, self.fresh = self.fresh, False
            return self.picture if fresh else None

    def stop(self):
        """The handler leaves before the end: the run stops at its next chunk, and a result that
        was finished anyway is deleted (nobody takes its videos)."""
        with self.lock:
            self.stopped.set()
            if self.finished.is_set() and self.result is not None:
                self.result.cleanup()

    def outcome(self):
        """The RetargetOutput, or the run's error raised here."""
        if self.error is not None:
            raise self.error
        return self.result


def _one_of(first, second, missing: str, both: str):
    if first and second:
        raise InputError(both)
    if not (first or second):
        raise InputError(missing)
    return first or second


def _positive_int(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 1 and number == int(number)):
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}.")
    return int(number)


def _guess_mode(subject) -> str:
    """ "face" or "body" for a subject file, as `mode="auto"` decides it."""
    return choose_mode(list(iter_frames(subject, max_frames=3)))


def _progress_callback(progress, expected_frames: int):
    """The pipeline's `progress(stage, done, total)` -> gradio's progress bar (total filled in
    for the driving landmarks, whose count the pipeline does not know in advance)."""
    if progress is None:
        return None

    def update(stage, done, total):
        if stage == "driving landmarks":
            total = expected_frames
        desc = STAGES.get(stage, stage)
        if total:
            progress((min(done, total), total), desc=desc, unit="frames")
        else:
            progress(0.0, desc=desc)

    return update


def _new_run_folder(cache_dir: Path) -> Path:
    """A fresh folder for one run's videos; folders of runs older than RUN_FOLDER_AGE go."""
    runs = cache_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in runs.iterdir():
        if now - old.stat().st_mtime > RUN_FOLDER_AGE:
            shutil.rmtree(old, ignore_errors=True)
    folder = runs / uuid.uuid4().hex[:12]
    folder.mkdir()
    return folder


def _summary(result, pipe, elapsed: float, truncated, settings: DemoSettings) -> str:
    """Markdown: frames, detections, fills and time per stage; `truncated`: a Truncation."""
    cut, seconds, length = truncated.cut, truncated.seconds, truncated.length
    filled = sum(r.filled not in ("none", "dropped") for r in result.frames_report)
    stages = " · ".join(f"{name} {value:.1f} s" for name, value in result.timings.items())
    per_frame = 1000 * elapsed / max(result.num_frames, 1)
    lines = [
        f"**{result.num_frames} frames** at {result.fps:g} fps ({result.mode}), {filled} filled in; "
        f"{elapsed:.1f} s in all ({per_frame:.0f} ms per frame on {pipe.device.type.upper()}).",
        f"- Subject: {result.subject_summary}",
        f"- Driving: {result.driving_summary}",
        f"- Time per stage: {stages}",
    ]
    if cut:
        lines.append(
            f"- Used the first {seconds:g} s of the {length:.1f} s driving video (the Maximum length "
            f"setting; at most {settings.max_seconds:g} s on {settings.device_label})."
        )
    return "\n".join(lines)


# ----- the page -------------------------------------------------------------------------------

CSS = """
.tsnet-status {font-size: 0.95em}
.tsnet-run {min-height: 3em}
"""


def header_markdown(settings: DemoSettings) -> str:
    """Title, what the page does, and which checkpoints, device and length limit it runs with."""
    if settings.models:
        loaded = "; ".join(
            f"{mode}: `{source}`"
            + (
                " (untrained: outputs are noise; masks, crops and alignment are real)"
                if source == "random weights"
                else ""
            )
            for mode, source in settings.sources.items()
        )
        checkpoints = f"Checkpoints: {loaded}."
    else:
        checkpoints = f"⚠️ {NO_CHECKPOINT}"
    device = settings.device_label
    return (
        "# TS-Net motion retargeting\n"
        "Make a subject (photo or video) move like a driving video, a webcam recording or a built-in motion "
        "template, with [TS-Net](https://openaccess.thecvf.com/content/WACV2023/html/Ni_Cross-Identity_Video_Motion"
        "_Retargeting_With_Joint_Transformation_and_Synthesis_WACV_2023_paper.html) (Ni et al., WACV 2023), "
        "for faces and full-body dance.\n\n"
        f"<span class='tsnet-status'>{checkpoints} Running on **{device}**: at most "
        f"**{settings.max_seconds:g} s** of driving video are used per run.</span>"
    )


def build_demo(settings: DemoSettings):
    """The gr.Blocks page; `launch_demo` queues and serves it."""
    import gradio as gr  # optional (the app extra): imported where the page is built

    retargeter = Retargeter(settings)
    templates = retargeter.templates
    # delete_cache: gradio's copies of inputs and outputs older than 2 h go, checked hourly (a Space runs for days).
    with gr.Blocks(title="TS-Net motion retargeting", delete_cache=(3600, 7200)) as demo:
        gr.Markdown(header_markdown(settings))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=380):
                inputs, run, stop = _input_panel(gr, settings, templates)
                _examples(gr, inputs, templates, settings)
            with gr.Column(scale=7, min_width=560):
                outputs = _output_panel(gr, blend=has_blend_model(settings))
        _wire_inputs(gr, inputs, templates, settings)
        handler = gpu_decorator()(_handler(gr, retargeter))
        running = run.click(
            handler,
            inputs=[inputs[name] for name in INPUT_ORDER],
            outputs=[outputs[name] for name in OUTPUT_ORDER],
            api_name="retarget",
            concurrency_limit=1,
            show_progress="full",
            show_progress_on=[outputs[name] for name in ("output", "side_by_side", "summary")],
        )
        stop.click(None, cancels=[running], api_visibility="private", queue=False)
    return demo


def _handler(gr, retargeter: Retargeter):
    """The generator function gradio calls. Its signature, made from INPUT_ORDER, gives gradio the
    /retarget API's parameter names, and a `progress` that defaults to a gr.Progress, which gradio
    fills in."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [
            *(inspect.Parameter(name, positional) for name in INPUT_ORDER),
            inspect.Parameter("progress", positional, default=gr.Progress()),
        ]
    )

    def retarget(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        *inputs, progress = bound.args
        yield from retargeter.stream(*inputs, progress=progress)

    retarget.__signature__ = signature
    return retarget


def _input_panel(gr, settings: DemoSettings, templates: dict):
    inputs = {}
    gr.Markdown("### 1 · Subject: a photo or a short video")
    with gr.Row():
        inputs["subject_photo"] = gr.Image(
            label="Subject photo", type="filepath", sources=["upload", "clipboard"], height=220, elem_id="subject-photo"
        )
        inputs["subject_video"] = gr.Video(
            label="…or subject video", sources=["upload"], height=220, elem_id="subject-video"
        )
    gr.Markdown("### 2 · Driving motion: a video, webcam or template")
    with gr.Row():
        inputs["driving_video"] = gr.Video(
            label="Driving video", sources=["upload", "webcam"], include_audio=True, height=220, elem_id="driving-video"
        )
        with gr.Column(min_width=160):
            choices = [("None (use the video)", "")] + [(label, name) for name, (label, _) in templates.items()]
            inputs["motion_template"] = gr.Dropdown(
                choices=choices, value="", label="…or a motion template", elem_id="motion-template"
            )
            inputs["template_preview"] = gr.Video(
                label="Template (masks)",
                interactive=False,
                height=150,
                autoplay=True,
                loop=True,
                elem_id="template-preview",
            )
    gr.Markdown("### 3 · Options")
    inputs["mode"] = gr.Radio(
        list(RUN_MODES), value=RunOptions.mode, label="Mode", info="auto: face or full body, from the subject"
    )
    with gr.Row():
        inputs["subject_frames"] = gr.Slider(1, 8, value=3, step=1, label="K: subject frames per output frame")
        inputs["selection"] = gr.Radio(
            list(SELECTIONS),
            value=RunOptions.selection,
            label="Subject-frame selection",
            info="nearest pose, or K random (as the paper)",
        )
    with gr.Row():
        inputs["align"] = gr.Checkbox(value=RunOptions.align, label="Align the driving pose to the subject")
        inputs["smooth"] = gr.Checkbox(value=RunOptions.smooth, label="Smooth landmarks (One-Euro)")
    default = min(settings.max_seconds, GPU_DEFAULT_SECONDS if settings.on_gpu else CPU_DEFAULT_SECONDS)
    inputs["max_seconds"] = gr.Slider(
        1,
        settings.max_seconds,
        value=default,
        step=0.5,
        label=f"Maximum length (s), at most {settings.max_seconds:g} s here",
    )
    with gr.Accordion("More options", open=False):
        inputs["missing"] = gr.Radio(
            list(MISSING_POLICIES), value=RunOptions.missing, label="Frames where nothing is detected"
        )
        inputs["color_match"] = gr.Checkbox(value=RunOptions.color_match, label="Match output colours to the subject")
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id="run", elem_classes="tsnet-run", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", elem_classes="tsnet-run", scale=1)
    return inputs, run, stop


def has_blend_model(settings: DemoSettings) -> bool:
    """Whether a loaded model is a blend model (config output="blend"): the page then shows its blend mask."""
    return any(model.config.output == "blend" for model in settings.models.values())


def _output_panel(gr, blend: bool) -> dict:
    """name (OUTPUT_ORDER) -> output component; the blend-mask video is shown only when `blend`."""
    out = {}
    panels = "subject | driving | aligned mask | warped | " + ("blend mask | " if blend else "")
    out["preview"] = gr.Image(
        label=f"Live view, newest frame while the run goes on: {panels}output",
        type="numpy",
        interactive=False,
        height=220,
        format="jpeg",
        elem_id="live-preview",
    )
    with gr.Row(equal_height=True):
        out["output"] = gr.Video(label="Output", height=250, interactive=False, elem_id="output-video")
        warped = "Warped (transformation branch" + ("; blend models: the pixel warp)" if blend else ")")
        out["warped"] = gr.Video(label=warped, height=250, interactive=False, elem_id="warped")
        out["blend_mask"] = gr.Video(
            label="Blend mask (white: warped subject, black: decoder)",
            height=250,
            interactive=False,
            visible=blend,
            elem_id="blend-mask",
        )
        out["driving_masks"] = gr.Video(label="Driving masks", height=250, interactive=False, elem_id="driving-masks")
        out["aligned_masks"] = gr.Video(
            label="Aligned driving masks (model input)", height=250, interactive=False, elem_id="aligned-masks"
        )
    out["side_by_side"] = gr.Video(
        label=f"Side by side: {panels}output", height=210, interactive=False, elem_id="side-by-side"
    )
    with gr.Row(equal_height=True):
        out["subject_frames"] = gr.Gallery(
            label="Subject frames used, and their masks",
            columns=4,
            fit_columns=False,
            height=210,
            object_fit="contain",
            elem_id="subject-masks",
            scale=1,
        )
        out["summary"] = gr.Markdown(
            "Results appear here after a run.",
            label="Summary",
            elem_id="summary",
            container=True,
            padding=True,
            min_height=210,
        )
    out["report"] = gr.Dataframe(
        headers=REPORT_COLUMNS, label="Per-frame report", max_height=220, interactive=False, elem_id="frame-report"
    )
    return out


def _wire_inputs(gr, inputs: dict, templates: dict, settings: DemoSettings):
    """Keep one subject and one driving source at a time; preview a chosen template."""
    private = dict(api_visibility="private", queue=False, show_progress="hidden")
    inputs["subject_photo"].upload(lambda: None, outputs=inputs["subject_video"], **private)
    inputs["subject_video"].upload(lambda: None, outputs=inputs["subject_photo"], **private)
    clear_template = lambda: ("", None)  # noqa: E731
    inputs["driving_video"].upload(
        clear_template, outputs=[inputs["motion_template"], inputs["template_preview"]], **private
    )
    inputs["driving_video"].stop_recording(
        clear_template, outputs=[inputs["motion_template"], inputs["template_preview"]], **private
    )

    def preview(name):
        if not name or name not in templates:
            return gr.update(), None
        return None, str(template_preview(templates[name][1], settings.cache_dir))

    inputs["motion_template"].change(
        preview,
        inputs=inputs["motion_template"],
        outputs=[inputs["driving_video"], inputs["template_preview"]],
        **private,
    )


def _examples(gr, inputs: dict, templates: dict, settings: DemoSettings):
    photo = example_subject(settings.cache_dir)
    face = [name for name in templates if name.startswith("face")]
    if photo is None or not face:
        return
    gr.Examples(
        examples=[[str(photo), name, "face"] for name in face],
        inputs=[inputs["subject_photo"], inputs["motion_template"], inputs["mode"]],
        label="Examples: the astronaut photo (NASA, public domain) + a face motion template",
        cache_examples=False,
        api_visibility="private",
        example_labels=[templates[name][0] for name in face],
    )


def launch_demo(settings: DemoSettings, host: str | None = None, port: int | None = None, **launch_kwargs):
    """Build, queue (one run at a time) and serve the page; blocks until stopped."""
    demo = build_demo(settings)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(
        server_name=host,
        server_port=port,
        css=CSS,
        max_file_size="200mb",
        show_error=False,
        footer_links=["api", "gradio"],
        **launch_kwargs,
    )
    return demo


def main(argv=None) -> int:
    """`python app.py`: parse the flags, load the checkpoints, serve the page."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        set_cpu_threads(args.threads)
        settings = load_settings(args)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    launch_demo(settings, host=args.host, port=args.port)
    return 0
