"""Subject video (or photo) + driving video -> retargeted video, with every intermediate shown.

    pipe = RetargetPipeline.from_pretrained("checkpoints/face-small")
    result = pipe("subject.mp4", "driving.mp4")
    result.save("out.mp4", side_by_side="side_by_side.mp4")

Stages: landmarks of the subject (mediapipe) -> square crops at the model's size -> a pool of up
to `pool_size` diverse subject frames, encoded once -> landmarks of the driving video (streamed,
only the points are kept) -> driving crops, alignment to the subject (paper section 4.2) and
masks -> for each chunk of `batch_size` driving frames, the K pool frames nearest in pose (or K
random ones, as the paper) and `TSNet.generate` -> output frames written as they are made.
A blend model (config output="blend") also gets a blend-mask video, and its output is
recomposed at up to twice the model's size before it is pasted back (`high_res_warp`, see
tsnet_hf/compose.py): the warped subject pixels keep the subject video's own detail.

Memory does not grow with the driving video's length: frames are streamed twice (landmarks,
then generation) and every output goes straight into an mp4 in a working folder; the result
object reads them back on demand.
"""

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .modeling import SubjectMemory, TSNet

SELECTIONS = ("nearest", "random")
POLICIES = ("interpolate", "hold", "drop")
# Every run's videos; a blend model's run adds "blend_mask".
VIDEO_NAMES = ("output", "crop", "driving_masks", "aligned_masks", "warped", "side_by_side")


def best_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_threads() -> int:
    """The CPU cores this process may run on (its affinity mask, and a container's CPU quota
    where one is set): torch's thread count for the CLI and the app. More threads than cores
    only adds contention (measured in docs/benchmarks.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count to `threads` (None: `cpu_threads()`); returns it.

    Raises:
        InputError: `threads` is below 1.
    """
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}.")
    torch.set_num_threads(threads or cpu_threads())
    return torch.get_num_threads()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 convolutions run
    about twice as fast as fp32; elsewhere torch emulates them, slower than fp32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def autocast_dtype(device: torch.device, dtype: torch.dtype | None, config=None) -> torch.dtype:
    """The compute dtype, unless given: bf16 on CUDA (fp16 where bf16 is missing). On a CPU with
    native bf16 (`cpu_has_bf16`), bf16 for blend models (config output="blend", the shipped
    design), whose outputs stay within LPIPS 0.0002 of fp32 on held-out people there
    (benchmarks/bench_precision.py, docs/benchmarks.md); fp32 for decoder models (the paper's
    design: bf16 features move its sampling grids, and converted authors' checkpoints must
    reproduce their fp32 outputs) and on every other CPU."""
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    blend = config is not None and config.output == "blend" and not config.authors_compat
    if device.type == "cpu" and blend and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


@dataclass
class FrameReport:
    """What happened to one driving frame.

    index: frame number in the driving video; detected: landmarks were found in it;
    filled: "none", "interpolated", "held" (or "dropped": no output frame);
    subject_frames: the subject video's frame numbers the model used for it.
    """

    index: int
    detected: bool
    filled: str
    subject_frames: tuple[int, ...] = ()


@dataclass
class RetargetOutput:
    """Everything a run made. Videos live in `workdir` until `cleanup()` (or garbage collection),
    unless the caller gave the folder (`owns_workdir` False): then they stay.

    Attributes:
        fps: frames per second of the output (the driving video's).
        num_frames: output frames.
        mode: "face" or "body".
        size: side of the model's square crops, in pixels.
        videos: name -> mp4 path, for "output" (pasted into the driving frame, or the crop),
            "crop" (the generated crops), "driving_masks", "aligned_masks", "warped" (the
            transformation branch's warped subject frames x^t, averaged over K; for a blend
            model its pixel warp `sharp`, combined over K), "side_by_side" (subject | driving |
            aligned mask | warped | output, with the blend mask before the output for a blend
            model) and, for a blend model only, "blend_mask" (grey: white where the output
            copies the warped subject pixels, black where it takes the decoder's frame).
        subject_crops: (S, size, size, 3) uint8 RGB, the subject pool frames.
        subject_masks: (S, size, size, 3) uint8 RGB renderings of their masks.
        subject_frame_indices: (S,) subject video frame number of each pool frame.
        frames_report: one FrameReport per driving frame.
        subject_summary, driving_summary: one-line detection reports.
        timings: seconds per stage.
        audio_source: the driving video file (its audio goes into `save`), or None.
    """

    fps: float
    num_frames: int
    mode: str
    size: int
    workdir: Path
    videos: dict
    subject_crops: np.ndarray
    subject_masks: np.ndarray
    subject_frame_indices: np.ndarray
    frames_report: list
    subject_summary: str
    driving_summary: str
    timings: dict = field(default_factory=dict)
    audio_source: Path | None = None
    owns_workdir: bool = True

    def read(self, name: str = "output") -> np.ndarray:
        """(T, H, W, 3) uint8 RGB frames of one of `videos` (whole in memory: short videos)."""
        from .video import read_frames

        return read_frames(self._video(name))[0]

    def iter(self, name: str = "output"):
        """Stream the frames of one of `videos`."""
        from .video import iter_frames

        return iter_frames(self._video(name))

    @property
    def frames(self) -> np.ndarray:
        return self.read("output")

    @property
    def warped(self) -> np.ndarray:
        return self.read("warped")

    @property
    def blend_mask(self) -> np.ndarray:
        """(T, size, size, 3) uint8 grey blend mask of a blend model (InputError for a decoder model)."""
        return self.read("blend_mask")

    @property
    def driving_masks(self) -> np.ndarray:
        return self.read("driving_masks")

    @property
    def aligned_masks(self) -> np.ndarray:
        return self.read("aligned_masks")

    def _video(self, name: str) -> Path:
        if name == "blend_mask" and name not in self.videos:
            raise InputError("Only a blend model (config output='blend') makes a blend mask; this run's model "
                             "paints its frames with the decoder alone.")
        if name not in self.videos:
            raise InputError(f"Unknown video {name!r}; choose one of {sorted(self.videos)}.")
        return self.videos[name]

    def save(self, path, *, side_by_side=None, masks=None, warped=None, blend_mask=None) -> Path:
        """Copy the output mp4 (with the driving video's audio) to `path`; optionally also the
        side-by-side, aligned-mask, warped and (blend models) blend-mask videos. Every video asked
        for is checked first, and each copy is atomic: a failure leaves no partial file."""
        jobs = [(path, "output"), (side_by_side, "side_by_side"), (masks, "aligned_masks"), (warped, "warped"),
                (blend_mask, "blend_mask")]
        jobs = [(Path(target), self._video(name)) for target, name in jobs if target is not None]
        for target, source in jobs:
            _copy_atomic(source, target)
        return Path(path)

    def summary(self) -> str:
        """A few lines for people: detections, filled frames, time per stage."""
        filled = sum(r.filled not in ("none", "dropped") for r in self.frames_report)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        return (f"{self.num_frames} frames at {self.fps:g} fps ({self.mode}); {filled} filled in.\n"
                f"subject: {self.subject_summary}\ndriving: {self.driving_summary}\ntime: {stages}")

    def cleanup(self):
        """Delete the working folder if this run created it (a folder the caller gave is kept)."""
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self):
        self.cleanup()


class RetargetPipeline:
    """A TS-Net with everything around it: landmarks, crops, alignment, masks, video I/O.

    Numpy and files in, numpy and files out; the model sees tensors only.
    """

    def __init__(self, model: TSNet, device=None, dtype: torch.dtype | None = None,
                 channels_last: bool | None = None, compile: bool = False):
        """model: a TSNet; device: "cuda", "mps", "cpu" or None for the best there is; dtype: the
        autocast dtype (None: see `autocast_dtype`; torch.float32 turns reduced precision off);
        channels_last: NHWC convolutions (None: on CUDA only; see docs/benchmarks.md);
        compile: run the generator through `torch.compile` (off by default: on a 2-core CPU the
        compile takes one to two minutes and the clip was not faster even with it cached, see
        docs/benchmarks.md; for machines where the generator dominates). Chunks smaller than the
        first are padded to its size, so the model compiles once."""
        self.device = torch.device(device) if device is not None else best_device()
        self.dtype = autocast_dtype(self.device, dtype, model.config)
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self._compiled = torch.compile(self.model.generate, dynamic=False) if compile else None
        self._compiled_batch = None  # the driving batch the compiled generator was made for

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device=None, dtype: torch.dtype | None = None,
                        channels_last: bool | None = None, compile: bool = False, **hub_kwargs) -> "RetargetPipeline":
        """Load a checkpoint folder or Hub id (see `TSNet.from_pretrained`)."""
        return cls(TSNet.from_pretrained(path_or_repo_id, **hub_kwargs), device=device, dtype=dtype,
                   channels_last=channels_last, compile=compile)

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @property
    def size(self) -> int:
        return self.model.config.image_size

    @torch.inference_mode()
    def __call__(self, subject, driving, *, mode: str = "auto", num_subject_frames: int | None = None,
                 selection: str = "nearest", seed: int = 0, align: bool = True, smooth: bool = True,
                 missing: str = "interpolate", max_frames: int | None = None, batch_size: int = 8,
                 pool_size: int = 16, subject_max_frames: int = 300, paste_back: bool = True,
                 color_match: bool = False, high_res_warp: bool = True, progress=None, preview=None,
                 workdir=None) -> RetargetOutput:
        """Retarget the driving video's motion onto the subject.

        Args:
            subject: a video or image path, an (H, W, 3) uint8 RGB photo or (T, H, W, 3) frames.
            driving: a video path, (T, H, W, 3) uint8 RGB frames, or a LandmarkTrack (a motion
                template: no frames, so the output is the crop).
            mode: "face", "body" or "auto" (the checkpoint's mode, checked against the videos).
            num_subject_frames: K, subject frames per output frame (default min(3, available)).
            selection: "nearest" (the K pool frames nearest in pose to each driving frame) or
                "random" (K pool frames drawn once with `seed`, as the paper).
            align: rescale the driving landmarks to the subject (paper section 4.2).
            smooth: One-Euro smoothing of both landmark tracks.
            missing: frames without a detection: "interpolate", "hold" or "drop".
            max_frames: use at most this many driving frames.
            batch_size: driving frames per generator call.
            pool_size: subject frames encoded once, chosen to cover the subject's poses.
            subject_max_frames: subject frames read at most.
            paste_back: put the output crop back into the driving frame (else output the crop).
            color_match: match each output's per-channel mean/std to the first chosen subject
                frame, as the authors' demo does. A model with `authors_compat` always does it
                their way instead: on the unclamped output, then truncated to 8 bits (and its
                boxes come from the landmarks as theirs do), so it reproduces their demo.
            high_res_warp: blend models only (decoder models ignore it): before pasting back,
                redo the blend at the subject crop's own side in the source video (at most
                max(2 x the model's size, 512 px), and no larger than the driving crop), so the copied pixels are
                sharper than the model's resolution; the "crop" video stays at the model's size.
            progress: callable(stage: str, done: int, total: int | None), called as work goes.
            preview: callable(done: int, total: int, picture), called after each chunk of output
                frames is written, with the newest frame's side-by-side picture ((H, W, 3) uint8
                RGB): a live view while the run goes on. Raising `tsnet_hf.errors.Cancelled` (or
                any error) from `progress` or `preview` stops the run and deletes its files.
            workdir: folder for the output videos (default: a new temporary folder).
        Returns:
            RetargetOutput.
        Raises:
            TSNetError subclasses with one sentence for every bad input.
        """
        from .runner import Run

        options = dict(mode=mode, num_subject_frames=num_subject_frames, selection=selection, seed=seed,
                       align=align, smooth=smooth, missing=missing, max_frames=max_frames,
                       batch_size=batch_size, pool_size=pool_size, subject_max_frames=subject_max_frames,
                       paste_back=paste_back, color_match=color_match, high_res_warp=high_res_warp)
        _check_options(options)
        return Run(self, options, progress, workdir, preview=preview).execute(subject, driving)

    def encode(self, crops: np.ndarray, masks: torch.Tensor, boxes: torch.Tensor | None = None) -> SubjectMemory:
        """(S, size, size, 3) uint8 RGB crops + (S, C, size, size) one-hot masks -> SubjectMemory (B=1, K=S);
        boxes (S, 4) in pixels, or None for the model to derive them from the masks."""
        frames = to_model_frames(crops, self.device)[None]
        boxes = None if boxes is None else boxes.to(self.device)[None]
        with self._autocast():
            return self.model.encode_subject(frames, masks.to(self.device)[None], boxes,
                                             fp32_encoders=self._fp32_encoders)

    def generate(self, memory: SubjectMemory, masks: torch.Tensor, boxes: torch.Tensor | None = None):
        """(N, C, size, size) one-hot masks (and (N, 4) boxes or None) -> TSNetOutput, on the
        pipeline's device and dtype."""
        masks = masks.to(self.device, memory_format=self.memory_format)
        boxes = None if boxes is None else boxes.to(self.device)
        with self._autocast():
            if self._compiled is None or boxes is not None:
                return self.model.generate(memory, masks, boxes, fp32_encoders=self._fp32_encoders)
            return self._generate_compiled(memory, masks)

    def _generate_compiled(self, memory: SubjectMemory, masks: torch.Tensor):
        count = masks.shape[0]
        self._compiled_batch = self._compiled_batch or count
        padding = self._compiled_batch - count
        if padding < 0 or memory.num_subjects not in (1, count):
            return self.model.generate(memory, masks, fp32_encoders=self._fp32_encoders)  # not compiled for it
        if padding:
            masks = torch.cat([masks, masks[-1:].expand(padding, *masks.shape[1:])])
            if memory.num_subjects > 1:
                memory = memory.apply(lambda t: torch.cat([t, t[-1:].expand(padding, *t.shape[1:])]))
        out = self._compiled(memory, masks)
        if not padding:
            return out
        return type(out)(**{f.name: None if getattr(out, f.name) is None else getattr(out, f.name)[:count]
                            for f in dataclass_fields(out)})

    @property
    def _fp32_encoders(self) -> bool:
        # A converted authors' model keeps its sampling grids as in fp32 under bf16/fp16: bf16
        # features move their frames by ~23 grey levels, fp32 encoders by < 1 (docs/benchmarks.md).
        return self.model.config.authors_compat

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)


def _copy_atomic(source: Path, target: Path):
    if target.suffix.lower() != ".mp4":
        raise InputError(f"{target} must end in .mp4.")
    if not target.parent.is_dir():
        raise InputError(f"Folder {target.parent} does not exist: create it first.")
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def to_model_frames(images: np.ndarray, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 RGB in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8_images(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB in [-1, 1] -> (N, H, W, 3) uint8 RGB."""
    images = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def _check_options(options: dict):
    if options["mode"] not in ("auto", "face", "body"):
        raise InputError(f"mode must be 'auto', 'face' or 'body', got {options['mode']!r}.")
    if options["selection"] not in SELECTIONS:
        raise InputError(f"selection must be one of {SELECTIONS}, got {options['selection']!r}.")
    if options["missing"] not in POLICIES:
        raise InputError(f"missing must be one of {POLICIES}, got {options['missing']!r}.")
    k = options["num_subject_frames"]
    if k is not None and (not isinstance(k, int) or k < 1):
        raise InputError(f"num_subject_frames (K) must be a positive integer, got {k!r}.")
    if not isinstance(options["high_res_warp"], bool):
        raise InputError(f"high_res_warp must be True or False, got {options['high_res_warp']!r}.")
    for name in ("batch_size", "pool_size", "subject_max_frames"):
        if not isinstance(options[name], int) or options[name] < 1:
            raise InputError(f"{name} must be a positive integer, got {options[name]!r}.")
    if options["max_frames"] is not None and (not isinstance(options["max_frames"], int) or options["max_frames"] < 1):
        raise InputError(f"max_frames must be a positive integer or None, got {options['max_frames']!r}.")


class Timer:
    """Accumulates wall time per stage: `with timer("landmarks"): ...`."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, stage: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - self.start

        return _Span()


def new_workdir(workdir) -> Path:
    if workdir is not None:
        path = Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="tsnet-"))


__all__ = ["RetargetPipeline", "RetargetOutput", "FrameReport", "best_device"]
