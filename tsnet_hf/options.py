"""The options of one retargeting run: one frozen dataclass, checked once, and the allowed values
that the pipeline, the CLI's argparse `choices` and the app's controls all share."""

from dataclasses import dataclass

from .errors import InputError
from .landmarks import POLICIES

RUN_MODES = ("auto", "face", "body")  # "auto": the checkpoint's mode, checked against the inputs
SELECTIONS = ("nearest", "random")  # K subject frames nearest in pose to each driving frame, or K random ones
MISSING_POLICIES = POLICIES  # what to do with driving frames without a detection (tsnet_hf.landmarks)


@dataclass(frozen=True)
class RunOptions:
    """Runtime options of `RetargetPipeline.__call__` (documented there), checked when made.

    Raises:
        InputError: a value outside its allowed set or range, in one sentence.
    """

    mode: str = "auto"
    num_subject_frames: int | None = None
    selection: str = "nearest"
    seed: int = 0
    align: bool = True
    smooth: bool = True
    missing: str = "interpolate"
    max_frames: int | None = None
    batch_size: int = 8
    pool_size: int = 16
    subject_max_frames: int = 300
    paste_back: bool = True
    color_match: bool = False
    high_res_warp: bool = True

    def __post_init__(self):
        if self.mode not in RUN_MODES:
            raise InputError(f"mode must be 'auto', 'face' or 'body', got {self.mode!r}.")
        if self.selection not in SELECTIONS:
            raise InputError(f"selection must be one of {SELECTIONS}, got {self.selection!r}.")
        if self.missing not in MISSING_POLICIES:
            raise InputError(f"missing must be one of {MISSING_POLICIES}, got {self.missing!r}.")
        k = self.num_subject_frames
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InputError(f"num_subject_frames (K) must be a positive integer, got {k!r}.")
        if not isinstance(self.high_res_warp, bool):
            raise InputError(f"high_res_warp must be True or False, got {self.high_res_warp!r}.")
        for name in ("batch_size", "pool_size", "subject_max_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if self.max_frames is not None and (not isinstance(self.max_frames, int) or self.max_frames < 1):
            raise InputError(f"max_frames must be a positive integer or None, got {self.max_frames!r}.")
