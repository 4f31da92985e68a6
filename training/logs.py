"""What a training run reports as it goes: log.txt and the console, metrics.jsonl (one JSON line per
log step or validation), TensorBoard when asked, and image grids of the current batch."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnet_hf.errors import ConfigError

from .data import render_labels


class RunLog:
    """The logs of the run in `output`; every method writes on the main process (`main`) only."""

    def __init__(self, output: Path, main: bool):
        self.output, self.main, self.tensorboard = Path(output), main, None

    def open_tensorboard(self) -> None:
        """Also log scalars to OUTPUT/tensorboard.

        Raises:
            ConfigError: the tensorboard package is missing.
        """
        if not self.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional package: only with --tensorboard
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install tensorboard "
                "(the plain logs in --output are always written)."
            ) from None
        self.tensorboard = SummaryWriter(str(self.output / "tensorboard"))

    def say(self, line: str) -> None:
        """Print `line` and append it to log.txt."""
        if self.main:
            print(line, flush=True)
            with open(self.output / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def record(self, kind: str, step: int, minutes: float, values: dict) -> None:
        """One metrics.jsonl line {"kind", "step", "minutes", **values}; numbers to TensorBoard too."""
        if not self.main:
            return
        line = json.dumps({"kind": kind, "step": step, "minutes": round(minutes, 3), **values}, default=float)
        with open(self.output / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and name != "step":
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, step)

    def forget_after(self, step: int) -> None:
        """Drop metrics.jsonl lines of steps after `step`: logged by a run that was interrupted."""
        path = self.output / "metrics.jsonl"
        if not self.main or not path.is_file():
            return

        def kept(line):
            try:
                return json.loads(line)["step"] <= step
            except (ValueError, KeyError, TypeError):
                return False  # a line cut short by the kill

        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if kept(line)]
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(partial, path)

    def save_grid(self, batch, output, mode: str, name: str) -> None:
        """OUTPUT/images/NAME.png, up to 4 rows: K subject frames | driving mask | patch-warped subject
        (mean over K) | [blend path: sharp warp | blend mask | decoder's frame] | output | ground truth.
        `batch` is a training.data.Batch, `output` the generator's TSNetOutput for it."""
        if not self.main:
            return
        k, t = batch.subject_frames.shape[1], batch.targets.shape[0] // batch.subject_frames.shape[0]
        rows = []
        for n in range(min(4, batch.targets.shape[0])):
            panels = [_picture(batch.subject_frames[n // t, i]) for i in range(k)]
            panels.append(render_labels(batch.target_labels[n].cpu().numpy(), mode))
            warped = output.warped[n].mean(dim=0) if output.warped is not None else torch.zeros_like(output.image[n])
            panels.append(_picture(warped))
            if output.sharp is not None:  # blend path: sharp warp, blend mask (white = warp), decoder
                panels += [
                    _picture(output.sharp[n]),
                    _picture(output.blend_mask[n].expand(3, -1, -1) * 2 - 1),
                    _picture(output.decoded[n]),
                ]
            panels += [_picture(output.image[n]), _picture(batch.targets[n])]
            rows.append(np.concatenate(panels, axis=1))
        folder = self.output / "images"
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def _picture(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB in [-1, 1] -> (H, W, 3) uint8 RGB."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def loss_line(means: dict, step: int, steps: int, lr: float, samples: float) -> str:
    """The log line of mean loss parts: discriminator terms (absent in warm-up), generator terms, L1."""
    d_parts = " ".join(
        f"{k[2:] if k.startswith('d_') else k} {v:.3f}" for k, v in means.items() if k.startswith(("d_", "df_"))
    )
    g_parts = " ".join(
        f"{k} {v:.3f}" for k, v in means.items() if k not in ("g", "d", "l1") and not k.startswith(("d_", "df_"))
    )
    d_text = f"D {means['d']:.3f} ({d_parts})" if "d" in means else "D off (warm-up)"
    return (
        f"step {step}/{steps} | {d_text} | G {means['g']:.3f} ({g_parts}) | L1 {means['l1']:.4f} "
        f"| lr {lr:.2e} | {samples:.2f} samples/s"
    )
