"""Evaluate a TS-Net checkpoint: the paper's self-reconstruction metrics and a landmark distance.

    python training/evaluate.py --checkpoint runs/face-small/final --data VIDEOS --mode face \\
        --output runs/face-small/eval --lpips-alexnet W/alexnet_imagenet_features.safetensors \\
        --lpips-lin W/lpips_v0.1_lin_alex.safetensors

Self-reconstruction (paper section 4.1): each video is cut into two halves; the first is the
subject video, the second the driving video and the ground truth. For each driving frame the model
gets the K subject frames nearest in pose (`--selection nearest`, what RetargetPipeline does; the
baseline below copies the nearest one of the same frames), or K frames drawn once with a fixed seed
for all driving frames (`--selection random`, the paper's inference). Metrics per generated frame,
averaged over all frames, on the crops at the model's resolution with pixel values in [0, 1]:
    l1     mean absolute error
    l2     mean squared error (the paper's "normalised mean L2 distance")
    psnr   10 log10(1 / l2) in dB, capped at 100
    lpips  LPIPS v0.1, AlexNet (training/lpips.py); lower is closer
    landmark_distance  landmarks detected on the output (mediapipe, as at inference) against the
           driving landmarks: mean point distance over the points confident in both, as a fraction
           of the crop side; landmark_detected is the share of outputs where detection succeeded.
Cross-identity: the subject is each video in turn and the driving video the next one, its landmarks
aligned to the subject as the pipeline does (tsnet_hf.alignment); there is no ground truth, so
only the landmark metrics are reported.

Baseline, always reported beside the model: for each driving frame, the subject frame whose
landmarks are nearest (tsnet_hf.selection.pose_distances), copied. A model worth having beats it.

Writes metrics.json (every number, per video too) and metrics.md (a table) into --output.
"""

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/evaluate.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np
import torch

from training.data import central_view, open_cache
from training.lpips import load_lpips
from training.preprocess import CacheSettings, is_cache_dir, make_writable_dir, preprocess_folder
from tsnet_hf import TSNet
from tsnet_hf.alignment import align_body, align_face
from tsnet_hf.errors import DetectionError, InputError, TSNetError
from tsnet_hf.landmarks import detect
from tsnet_hf.layouts import BODY_POINTS, FACE_POINTS
from tsnet_hf.masks import draw_masks, labels_to_onehot
from tsnet_hf.modeling import pixel_warp
from tsnet_hf.options import SELECTIONS
from tsnet_hf.selection import choose_subject_frames, paired_pose_distances, pose_distances
from tsnet_hf.utils import best_device, to_model_frames

PSNR_CAP = 100.0
IMAGE_METRICS = ("l1", "l2", "psnr", "lpips")
LANDMARK_METRICS = ("landmark_distance", "landmark_detected")
DETECTION_SIZE = 256  # crops are upscaled to at least this before landmark detection
# Inference-time ablations of a blend model (config.output = "blend"), from one checkpoint:
ABLATIONS = ("none", "warp-only", "decoder-only", "mean-weights")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the model's autocast dtype


def image_metrics(output: torch.Tensor, target: torch.Tensor, lpips=None) -> dict[str, torch.Tensor]:
    """Per-image metrics of (N, 3, H, W) RGB images in [-1, 1] (output clamped to that range).

    Returns {"l1", "l2", "psnr"} and "lpips" when an LPIPS module is given, each (N,) float32,
    computed with values in [0, 1].
    """
    x = (output.detach().float().clamp(-1, 1) + 1) / 2
    y = (target.detach().float().clamp(-1, 1) + 1) / 2
    l2 = (x - y).pow(2).mean(dim=(1, 2, 3))
    metrics = {
        "l1": (x - y).abs().mean(dim=(1, 2, 3)),
        "l2": l2,
        "psnr": (10 * torch.log10(1 / l2.clamp_min(1e-12))).clamp_max(PSNR_CAP),
    }
    if lpips is not None:
        metrics["lpips"] = lpips(x * 2 - 1, y * 2 - 1).float()
    return metrics


def ablated_image(output, memory, ablation: str) -> torch.Tensor:
    """The (N, 3, H, W) frame of a TSNetOutput, or a blend model's frame with one part turned off:
    "warp-only" (blend mask 1: the sharp warp alone), "decoder-only" (blend mask 0) or
    "mean-weights" (the K warped frames averaged instead of weighted; mask and decoder kept)."""
    if ablation == "none":
        return output.image
    if ablation == "warp-only":
        return output.sharp
    if ablation == "decoder-only":
        return output.decoded
    sharp = pixel_warp(memory.frames, output.grid).mean(dim=1)  # pixel_warp broadcasts one subject set
    return output.blend_mask * sharp + (1 - output.blend_mask) * output.decoded


def landmark_distance(found: np.ndarray, reference: np.ndarray, size: int) -> np.ndarray:
    """(N,) mean distance between (N, P, 3) detected and reference landmarks over the points
    confident in both (tsnet_hf.selection.MIN_CONFIDENCE), divided by the crop side `size`; NaN
    where no point is shared: a frame the averages (`_mean`) leave out."""
    distances = paired_pose_distances(found, reference, size)
    return np.where(np.isfinite(distances), distances, np.nan)


def detect_landmarks(images: np.ndarray, mode: str) -> np.ndarray:
    """Landmarks of (N, S, S, 3) uint8 RGB crops, frame by frame as a video (mediapipe, the
    detector of the pipeline); (N, P, 3) float32 in crop pixels, confidence 0 where not found."""
    size = images.shape[1]
    factor = max(1.0, DETECTION_SIZE / size)
    big = (
        images
        if factor == 1
        else np.stack([cv2.resize(im, (round(size * factor),) * 2, interpolation=cv2.INTER_CUBIC) for im in images])
    )
    points = np.zeros((len(images), FACE_POINTS if mode == "face" else BODY_POINTS, 3), np.float32)
    try:
        track = detect(big, mode=mode, policy="hold", smooth=False)
    except DetectionError:
        return points
    detected = track.report.detected
    points[detected] = track.points[detected]
    points[..., :2] = (points[..., :2] + 0.5) / factor - 0.5  # back to crop pixels (pixel centres)
    return points


# ----- one video ---------------------------------------------------------------------------------------


class Evaluator:
    """Runs a model and the nearest-frame baseline on cached videos and collects metrics."""

    def __init__(
        self,
        model,
        device,
        lpips=None,
        num_subject: int = 3,
        frames: int = 30,
        batch: int = 8,
        landmarks: bool = True,
        seed: int = 0,
        selection: str = "nearest",
        ablation: str = "none",
        precision: str = "fp32",
    ):
        if selection not in SELECTIONS:
            raise InputError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
        if ablation not in ABLATIONS:
            raise InputError(f"ablation must be one of {ABLATIONS}, got {ablation!r}.")
        if ablation != "none" and model.config.output != "blend":
            raise InputError(
                f"--ablation {ablation} takes apart a blend model's output; this checkpoint's output "
                f"is {model.config.output!r}."
            )
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        self.ablation, self.precision = ablation, precision
        self.model, self.device, self.lpips = model.to(device).eval(), device, lpips
        self.size, self.mode = model.config.image_size, model.config.mode
        self.channels = model.config.mask_channels
        self.k, self.frames, self.batch, self.landmarks, self.seed = num_subject, frames, batch, landmarks, seed
        self.selection = selection

    @torch.no_grad()
    def generate(self, pool_images, pool_points, driving_points):
        """Frames for driving landmarks from a subject pool of crops ((S, S', S', 3) uint8 and
        (S, P, 3) landmarks): each driving frame gets K pool frames (see `selection`). Returns
        (N, S', S', 3) uint8 and (N, 3, S', S') float32 tensors in [-1, 1] on the device."""
        choices = torch.from_numpy(
            choose_subject_frames(
                driving_points, pool_points, self.size, min(self.k, len(pool_images)), self.selection, self.seed
            )
        )
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            images = self._generate(pool_images, pool_points, driving_points, choices)
        return ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy(), images

    def _generate(self, pool_images, pool_points, driving_points, choices) -> torch.Tensor:
        size = (self.size, self.size)
        used = torch.unique(choices)  # encode only the pool frames some driving frame uses
        remap = torch.full((len(pool_images),), -1, dtype=torch.long)
        remap[used] = torch.arange(len(used))
        labels = torch.from_numpy(draw_masks(pool_points[used.numpy()], size)).long()
        memory = self.model.encode_subject(
            to_model_frames(pool_images[used.numpy()], self.device)[None],
            labels_to_onehot(labels, self.channels)[None].to(self.device),
        )
        outputs = []
        for start in range(0, len(driving_points), self.batch):
            labels = draw_masks(driving_points[start : start + self.batch], size)
            masks = labels_to_onehot(torch.from_numpy(labels).long(), self.channels).to(self.device)
            chosen = memory.select(remap[choices[start : start + self.batch]])
            output = self.model.generate(chosen, masks)
            outputs.append(ablated_image(output, chosen, self.ablation).float().clamp(-1, 1))
        return torch.cat(outputs)

    def split(self, video) -> tuple[np.ndarray, np.ndarray]:
        """The self-reconstruction split of a cached video's usable rows: (subject rows: the first
        half, driving rows: up to `frames` of the second half, evenly spaced)."""
        rows = video.usable_rows
        half = len(rows) // 2
        subject, driving = rows[:half], rows[half:]
        if len(driving) > self.frames:
            driving = driving[np.linspace(0, len(driving) - 1, self.frames).round().astype(int)]
        return subject, driving

    def _scores(self, images: np.ndarray, tensor: torch.Tensor, truth: torch.Tensor | None, reference) -> dict:
        scores = {}
        if truth is not None:
            for name, values in image_metrics(tensor, truth, self.lpips).items():
                scores[name] = values.cpu().numpy().astype(np.float64)
        if self.landmarks:
            found = detect_landmarks(images, self.mode)
            scores["landmark_distance"] = landmark_distance(found, reference, self.size)
            scores["landmark_detected"] = (found[..., 2] > 0).any(axis=1).astype(np.float64)
        return scores

    def self_reconstruction(self, video) -> dict:
        """{"model": {metric: (N,)}, "baseline": {...}} for one video."""
        subject_rows, driving_rows = self.split(video)
        if len(subject_rows) < 1 or len(driving_rows) < 1:
            return {}
        pool_images, pool_points = central_view(video, subject_rows, self.size)
        truth_images, truth_points = central_view(video, driving_rows, self.size)
        images, tensor = self.generate(pool_images, pool_points, truth_points)
        truth = to_model_frames(truth_images, self.device)
        nearest = np.argmin(pose_distances(truth_points, pool_points, self.size), axis=1)
        copied = pool_images[nearest]
        return {
            "model": self._scores(images, tensor, truth, truth_points),
            "baseline": self._scores(copied, to_model_frames(copied, self.device), truth, truth_points),
        }

    def cross_identity(self, subject_video, driving_video) -> dict:
        """Landmark metrics of driving `driving_video`'s motion with `subject_video`'s person."""
        subject_rows = subject_video.usable_rows
        driving_rows = driving_video.usable_rows[: self.frames]
        pool_images, pool_points = central_view(subject_video, subject_rows, self.size)
        _, driving_points = central_view(driving_video, driving_rows, self.size)
        aligner = align_face if self.mode == "face" else align_body
        try:
            aligned = aligner(driving_points, pool_points).astype(np.float32)
        except InputError:
            aligned = driving_points
        images, tensor = self.generate(pool_images, pool_points, aligned)
        nearest = np.argmin(pose_distances(aligned, pool_points, self.size), axis=1)
        copied = pool_images[nearest]
        return {
            "model": self._scores(images, tensor, None, aligned),
            "baseline": self._scores(copied, to_model_frames(copied, self.device), None, aligned),
        }


# ----- whole runs ------------------------------------------------------------------------------------------


def _mean(values: list[np.ndarray]) -> float | None:
    """Mean over all frames ignoring NaN; None (JSON null) when there is no number."""
    if not values:
        return None
    joined = np.concatenate(values)
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else None


def _summarise(results: list[dict]) -> dict:
    summary = {}
    for who in ("model", "baseline"):
        names = sorted({name for r in results for name in r.get(who, {})})
        summary[who] = {name: _mean([r[who][name] for r in results if name in r.get(who, {})]) for name in names}
    summary["frames"] = int(sum(len(next(iter(r["model"].values()))) for r in results if r.get("model")))
    return summary


def evaluate(evaluator: Evaluator, videos: list, cross: bool = True, progress=print) -> dict:
    """Self-reconstruction on every video, cross-identity on consecutive pairs; nested dict of means."""
    say = progress or (lambda line: None)
    per_video, self_results, cross_results = [], [], []
    for number, video in enumerate(videos, 1):
        result = evaluator.self_reconstruction(video)
        if result:
            self_results.append(result)
            per_video.append(
                {
                    "video": video.name,
                    **{who: {k: _mean([v]) for k, v in result[who].items()} for who in ("model", "baseline")},
                }
            )
        say(f"[{number}/{len(videos)}] self-reconstruction of {video.name}")
    if cross and len(videos) >= 2:
        for number, video in enumerate(videos):
            partner = videos[(number + 1) % len(videos)]
            cross_results.append(evaluator.cross_identity(video, partner))
            say(f"[{number + 1}/{len(videos)}] cross-identity: {video.name} driven by {partner.name}")
    report = {"self_reconstruction": {**_summarise(self_results), "videos": len(self_results)}, "per_video": per_video}
    if cross_results:
        report["cross_identity"] = {**_summarise(cross_results), "pairs": len(cross_results)}
    return report


def markdown_report(report: dict) -> str:
    """The metrics as a markdown table: one row per metric, model and baseline side by side."""

    def cell(value, name):
        if value is None:
            return "n/a"
        return f"{value:.2f}" if name == "psnr" else f"{value:.4f}"

    lines = [f"Checkpoint: `{report['checkpoint']}`; data: `{report['data']}` ({report['settings']})", ""]
    for title, key in (("Self-reconstruction", "self_reconstruction"), ("Cross-identity", "cross_identity")):
        part = report.get(key)
        if not part:
            continue
        count = f"{part.get('videos', part.get('pairs'))} {'videos' if 'videos' in part else 'pairs'}"
        lines += [
            f"**{title}** ({count}, {part['frames']} frames)",
            "",
            "| metric | model | baseline (nearest subject frame) |",
            "|---|---|---|",
        ]
        for name in (*IMAGE_METRICS, *LANDMARK_METRICS):
            if name in part["model"] or name in part["baseline"]:
                model, baseline = cell(part["model"].get(name), name), cell(part["baseline"].get(name), name)
                lines.append(f"| {name} | {model} | {baseline} |")
        lines.append("")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a TS-Net checkpoint: L1, L2, PSNR, LPIPS, landmark "
        "distance, beside a nearest-frame baseline."
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, help="folder of test videos, or a cache (training/preprocess.py)")
    parser.add_argument("--output", required=True, help="folder for metrics.json and metrics.md")
    parser.add_argument("--cache-dir", help="where videos are preprocessed (default cache/<data>-<mode>-<size>)")
    parser.add_argument("--videos", nargs="+", help="evaluate only the cached videos whose names contain one of these")
    parser.add_argument("--k", type=int, default=3, help="subject frames K")
    parser.add_argument("--frames", type=int, default=30, help="driving frames per video at most")
    parser.add_argument("--batch", type=int, default=8, help="driving frames per model call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject frame draw (--selection random)")
    parser.add_argument(
        "--ablation",
        choices=ABLATIONS,
        default="none",
        help="blend models: evaluate with a part of the output path turned off",
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="nearest",
        help="K subject frames per driving frame: nearest in pose (as the pipeline) or drawn once",
    )
    parser.add_argument("--lpips-alexnet", default="auto", help="'auto' (torchvision) or a safetensors file")
    parser.add_argument("--lpips-lin", help="LPIPS linear weights (safetensors); default: the lpips package's")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--no-landmarks", action="store_true", help="skip the landmark metrics (no mediapipe)")
    parser.add_argument("--no-cross", action="store_true", help="skip cross-identity pairs")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="the model's autocast dtype (default fp32; metrics are computed in fp32)",
    )
    return parser


def open_videos(args, mode: str, size: int) -> list:
    """The cached videos (training.data.CachedVideo) of `args.data`: a cache folder, or a folder of
    videos preprocessed first into `args.cache_dir` (default cache/<data>-<mode>-<size>)."""
    cache = Path(args.data)
    if not is_cache_dir(cache):
        cache = Path(args.cache_dir or Path("cache") / f"{Path(args.data).resolve().name}-{mode}-{size}")
        print(preprocess_folder(args.data, cache, CacheSettings(mode, size)).summary(), flush=True)
    return open_cache(cache, mode, size)


def run(args) -> dict:
    """Evaluate, write metrics.json and metrics.md; returns the report."""
    output = make_writable_dir(args.output, "output folder", "--output")
    model = TSNet.from_pretrained(args.checkpoint)
    device = torch.device(args.device) if args.device else best_device()
    lpips = None if args.no_lpips else load_lpips(args.lpips_alexnet, args.lpips_lin).to(device)
    videos = open_videos(args, model.config.mode, model.config.image_size)
    if args.videos:
        videos = [v for v in videos if any(name in v.name for name in args.videos)]
        if not videos:
            raise InputError(
                f"No cached video matches --videos {' '.join(args.videos)}: give parts of the names "
                "listed in the cache's index.json."
            )
    evaluator = Evaluator(
        model,
        device,
        lpips,
        args.k,
        args.frames,
        args.batch,
        not args.no_landmarks,
        args.seed,
        args.selection,
        args.ablation,
        args.precision,
    )
    # Cross-identity pairs have no ground truth: without landmarks there is nothing to measure.
    report = evaluate(evaluator, videos, cross=not (args.no_cross or args.no_landmarks))
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "settings": f"{model.config.mode}, {model.config.image_size} px, K = {args.k} ({args.selection}), "
        + ("" if args.ablation == "none" else f"ablation {args.ablation}, ")
        + ("" if args.precision == "fp32" else f"{args.precision} autocast, ")
        + f"up to {args.frames} driving frames per video, seed {args.seed}",
        **report,
    }
    (output / "metrics.json").write_text(json.dumps(_json_safe(report), indent=1), encoding="utf-8")
    (output / "metrics.md").write_text(markdown_report(report), encoding="utf-8")
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
