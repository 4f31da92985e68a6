"""Small helpers shared by the pipeline, the runner, the CLI, the app and training: devices and
dtypes, CPU threads, frame conversion between numpy pictures and model tensors, timers and work
folders."""

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

# ----- devices and dtypes -------------------------------------------------------------------------


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


# ----- frames -------------------------------------------------------------------------------------


def to_model_frames(images: np.ndarray, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 RGB in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8_images(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB in [-1, 1] -> (N, H, W, 3) uint8 RGB."""
    images = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


# ----- timers and work folders --------------------------------------------------------------------


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
    """`workdir` (created if needed), or a new temporary folder when it is None."""
    if workdir is not None:
        path = Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="tsnet-"))


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere the architecture): where a training run
    or a benchmark spent its time."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine if hasattr(os, "uname") else "CPU"
