"""tsnet-hf: TS-Net video motion retargeting (Ni et al., WACV 2023) for faces and full-body dance.

Public API:
    TSNet, TSNetConfig, TSNetOutput, SubjectMemory   the generator (tensors in, tensors out)
    paper_config, small_config, tiny_config, preset_config   named architectures
    RetargetPipeline, RetargetOutput                 videos in, videos out (landmarks, masks, alignment)
    TSNetError and its subclasses                    every error a user can cause
Importing the package loads no model and imports neither mediapipe nor gradio.
"""

from .config import PRESETS, TSNetConfig, paper_config, preset_config, small_config, tiny_config
from .errors import Cancelled, CheckpointError, ConfigError, DetectionError, InputError, TSNetError, VideoError
from .modeling import SubjectMemory, TSNet, TSNetOutput
from .options import RunOptions
from .outputs import FrameReport, RetargetOutput
from .pipeline import RetargetPipeline

__version__ = "0.1.0"

__all__ = [
    "TSNet",
    "TSNetConfig",
    "TSNetOutput",
    "SubjectMemory",
    "RetargetPipeline",
    "RetargetOutput",
    "RunOptions",
    "FrameReport",
    "PRESETS",
    "paper_config",
    "small_config",
    "tiny_config",
    "preset_config",
    "TSNetError",
    "InputError",
    "ConfigError",
    "CheckpointError",
    "VideoError",
    "DetectionError",
    "Cancelled",
]
