"""Helpers that several test files (and benchmarks/bench_app.py) share: where ../shared is, seeded
tiny models and their random inputs, random LPIPS weights, training caches and runs at 64x64, and a
live `app.py` server. Generated frames, videos and landmarks live in tests/synthetic.py."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from training import lpips, options, preprocess, train, vision
from tsnet_hf import TSNet

from synthetic import moving_face_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # frame size of the training tests' caches and tiny models


def find_shared_dir() -> Path | None:
    """The shared folder if it exists: $TSNET_SHARED_DIR, else ../shared beside the repository."""
    override = os.environ.get("TSNET_SHARED_DIR")
    path = Path(override) if override else ROOT.parent / "shared"
    return path if path.is_dir() else None


# ----- models ---------------------------------------------------------------------------------------------


def random_masks(*shape, channels, size, seed=0):
    """One-hot masks with a random blob of drawn pixels (channels 1..C-1) in a random box."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(*shape, size, size, dtype=torch.long)
    flat = labels.view(-1, size, size)
    for i in range(flat.shape[0]):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        x1, y1 = x0 + size // 4 + i % 5, y0 + size // 3
        flat[i, y0:y1, x0:x1] = torch.randint(1, channels, (y1 - y0, x1 - x0), generator=generator)
    return torch.nn.functional.one_hot(labels, channels).movedim(-1, -3).float()


def random_inputs(config, batch=1, frames=3, driving=2, seed=0):
    """(subject (B, K, 3, S, S) in [-1, 1], subject masks (B, K, C, S, S), driving masks (N, C, S, S))."""
    generator = torch.Generator().manual_seed(seed)
    size, channels = config.image_size, config.mask_channels
    subject = torch.rand(batch, frames, 3, size, size, generator=generator) * 2 - 1
    return (
        subject,
        random_masks(batch, frames, channels=channels, size=size, seed=seed),
        random_masks(driving, channels=channels, size=size, seed=seed + 1),
    )


def seeded_model(config, seed=0):
    torch.manual_seed(seed)
    return TSNet(config).eval()


def random_lpips_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """AlexNet and linear weights with random values, in the key layout of the real files."""
    generator = torch.Generator().manual_seed(seed)
    trunk = vision.alexnet_features(None).state_dict()
    alexnet = folder / "alexnet.safetensors"
    save_file(
        {f"features.{k}": torch.randn(v.shape, generator=generator) * 0.05 for k, v in trunk.items()}, str(alexnet)
    )
    linear = folder / "lin.safetensors"
    save_file(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for i, c in enumerate(lpips.CHANNELS)},
        str(linear),
    )
    return alexnet, linear


# ----- training -------------------------------------------------------------------------------------------


def write_face_videos(folder: Path, count: int = 2, frames: int = 40, noise: bool = True) -> Path:
    """`count` generated talking-face clips (the astronaut, moving) and a flat clip with no face."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_video(folder / f"face{i}.mp4", moving_face_frames(frames, 256, seed=i))
    if noise:
        write_video(folder / "blank.mp4", np.full((8, 64, 64, 3), 90, np.uint8))
    return folder


def write_cached_video(folder: Path, name: str, settings, images: np.ndarray, points: np.ndarray) -> str:
    """One video's raw cache in preprocess.py's format under folder/name, every frame detected;
    images (T, S', S', 3) uint8 RGB, points (T, P, 3) float32. Returns `name`."""
    video = folder / name
    video.mkdir(parents=True)
    np.save(video / "frames.npy", images)
    np.save(video / "landmarks.npy", points)
    np.save(video / "detected.npy", np.ones(len(images), bool))
    meta = {
        "format": preprocess.FORMAT_VERSION,
        "settings": settings.__dict__,
        "stored_size": settings.stored_size,
        "num_frames": len(images),
        "fps": 25.0,
    }
    (video / preprocess.META_NAME).write_text(json.dumps(meta))
    return name


def write_cache_index(folder: Path, settings, names: list[str]) -> Path:
    """The index.json that makes `folder` a cache of the videos `names`."""
    (folder / preprocess.INDEX_NAME).write_text(
        json.dumps({"format": preprocess.FORMAT_VERSION, "settings": settings.__dict__, "videos": names})
    )
    return folder


def train_args(cache, output, *extra) -> list[str]:
    """Command line of a quick tiny face run on `cache`: batch 2, no VGG, no workers, no validation."""
    return [
        "--data",
        str(cache),
        "--mode",
        "face",
        "--preset",
        "tiny",
        "--output",
        str(output),
        "--batch-size",
        "2",
        "--no-vgg",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--val-every",
        "0",
        "--val-clips",
        "2",
        "--image-every",
        "1000",
        "--quiet",
        *extra,
    ]


def run_training(argv) -> train.Trainer:
    trainer = train.Trainer(options.parse_args(argv))
    trainer.run()
    return trainer


# ----- the app server -------------------------------------------------------------------------------------

# /retarget's inputs (tsnet_hf.demo.INPUT_ORDER) with the page's defaults.
API_DEFAULTS = dict(
    subject_photo=None,
    subject_video=None,
    driving_video=None,
    motion_template="",
    mode="auto",
    subject_frames=3,
    selection="nearest",
    align=True,
    smooth=True,
    max_seconds=10,
    missing="interpolate",
    color_match=False,
)


def api_inputs(**inputs) -> dict:
    """Keyword inputs of a /retarget call: API_DEFAULTS with `inputs` over them, file paths wrapped
    for gradio_client."""
    import gradio_client  # the app extra's client: only the tests and benchmarks that call a server need it

    values = {**API_DEFAULTS, **inputs}
    for name in ("subject_photo", "subject_video", "driving_video"):
        if values[name] is not None:
            values[name] = gradio_client.handle_file(str(values[name]))
    return values


# Offline, no telemetry, and never through a proxy for the local server.
APP_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class ServerError(RuntimeError):
    """app.py exited, or did not serve its page in time (the message ends with its log)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ServerError(f"app.py did not serve {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve_app(app_args: list[str], folder: Path, timeout: float = 120.0, unset: tuple[str, ...] = ()) -> Iterator[str]:
    """Run `python app.py --port P --cache-dir FOLDER/cache *app_args` offline on a free local port,
    its log in FOLDER/app.log, without the environment variables `unset`; yields the page's URL once
    it answers, and stops the server on leaving. Raises ServerError if it never serves."""
    port = free_port()
    log = folder / "app.log"
    env = {key: value for key, value in {**os.environ, **APP_ENV}.items() if key not in unset}
    command = [
        sys.executable,
        str(ROOT / "app.py"),
        "--port",
        str(port),
        "--cache-dir",
        str(folder / "cache"),
        *app_args,
    ]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
