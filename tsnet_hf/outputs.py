"""What a retargeting run returns: `RetargetOutput` (the videos, subject pool and per-frame
report) and `FrameReport` (one driving frame)."""

import atexit
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .video import iter_frames, read_frames

# Every run's videos; a blend model's run adds "blend_mask".
VIDEO_NAMES = ("output", "crop", "driving_masks", "aligned_masks", "warped", "side_by_side")

# Work folders of results not cleaned up yet: removed when the interpreter exits, never on garbage
# collection (a caller may still hold a path into one after dropping the result).
_UNCLEANED: set[Path] = set()


@atexit.register
def _remove_uncleaned():
    for folder in list(_UNCLEANED):
        shutil.rmtree(folder, ignore_errors=True)


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
    """Everything a run made. Its videos live in `workdir` until `cleanup()`, the end of a
    `with pipe(...) as result:` block, or the interpreter's exit; never on garbage collection, so
    paths taken from `videos` stay valid. A folder the caller gave (`owns_workdir` False) is kept.

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

    def __post_init__(self):
        if self.owns_workdir:
            _UNCLEANED.add(Path(self.workdir))

    def __enter__(self) -> "RetargetOutput":
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.cleanup()

    def read(self, name: str = "output") -> np.ndarray:
        """(T, H, W, 3) uint8 RGB frames of one of `videos` (whole in memory: short videos)."""
        return read_frames(self._video(name))[0]

    def iter(self, name: str = "output"):
        """Stream the frames of one of `videos`."""
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
            raise InputError(
                "Only a blend model (config output='blend') makes a blend mask; this run's model "
                "paints its frames with the decoder alone."
            )
        if name not in self.videos:
            raise InputError(f"Unknown video {name!r}; choose one of {sorted(self.videos)}.")
        return self.videos[name]

    def save(self, path, *, side_by_side=None, masks=None, warped=None, blend_mask=None) -> Path:
        """Copy the output mp4 (with the driving video's audio) to `path`; optionally also the
        side-by-side, aligned-mask, warped and (blend models) blend-mask videos. Every video asked
        for is checked first, and each copy is atomic: a failure leaves no partial file."""
        jobs = [
            (path, "output"),
            (side_by_side, "side_by_side"),
            (masks, "aligned_masks"),
            (warped, "warped"),
            (blend_mask, "blend_mask"),
        ]
        jobs = [(Path(target), self._video(name)) for target, name in jobs if target is not None]
        for target, source in jobs:
            copy_atomic(source, target)
        return Path(path)

    def summary(self) -> str:
        """A few lines for people: detections, filled frames, time per stage."""
        filled = sum(r.filled not in ("none", "dropped") for r in self.frames_report)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        return (
            f"{self.num_frames} frames at {self.fps:g} fps ({self.mode}); {filled} filled in.\n"
            f"subject: {self.subject_summary}\ndriving: {self.driving_summary}\ntime: {stages}"
        )

    def cleanup(self):
        """Delete the working folder if this run created it (a folder the caller gave is kept)."""
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            _UNCLEANED.discard(Path(self.workdir))


def copy_atomic(source: Path, target: Path):
    """Copy `source` to the mp4 path `target` through a partial file: a failure leaves nothing."""
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
