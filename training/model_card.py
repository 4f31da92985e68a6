"""The model card of a training checkpoint: the run's settings and its latest validation, as the
keyword arguments of `tsnet_hf.hub.render_model_card` (what `save_pretrained` writes as README.md)."""

import argparse
import os

import torch

from tsnet_hf.config import TSNetConfig
from tsnet_hf.hub import evaluation_results
from tsnet_hf.utils import cpu_name


def machine_name() -> str:
    """The GPUs ('N x name'), or 'N CPU cores (model), T torch threads': where a run's wall time was spent."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores ({cpu_name()}), {torch.get_num_threads()} torch threads"


def markdown_table(rows: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def training_settings(
    args: argparse.Namespace,
    config: TSNetConfig,
    *,
    step: int,
    processes: int,
    train_sources: list,
    val_sources: list,
    split: str,
    vgg_name: str,
    minutes: float,
) -> dict:
    """Card rows (setting -> text) of a run at `step`; sources are training.data.Source lists."""
    frames = sum(len(s.rows) for s in train_sources)
    losses = f"LSGAN + {args.lambda_fm:g} FM"
    losses += "" if args.no_vgg else f" + {args.lambda_vgg:g} VGG ({vgg_name})"
    losses += f" + {args.lambda_tra:g} L_TRA"
    losses += f" + {args.lambda_grad:g} gradient" if config.mode == "face" else " + face discriminator"
    return {
        "mode": config.mode,
        "preset": args.preset or ("from " + str(args.init_from) if args.init_from else "paper"),
        "resolution": f"{config.image_size} px",
        "steps": f"{step} of {args.steps}",
        "clips per step": f"{args.batch_size} x {processes} process(es), K = {args.k}, T = {args.targets}",
        "training data": f"{len(train_sources)} video(s), {frames} frames (validation: "
        f"{len(val_sources)} video(s), held out by {split})",
        "optimiser": f"Adam ({args.beta1}, {args.beta2}), G lr {args.lr_g:g}, D lr {args.lr_d:g}, linear decay "
        f"to 0 from {args.decay_start:.3f} of the steps",
        "losses": losses,
        "augmentation": "none"
        if args.no_augment
        else f"crop scale +-{args.jitter_scale}, offset +-{args.jitter_offset}, colour, flip",
        "mixed precision": args.mixed_precision,
        "seed": args.seed,
        "output path": config.output + (f" ({config.frame_weights} frame weights)" if config.output == "blend" else ""),
        "warm-up without discriminators": f"{args.warmup_steps} steps",
        "wall time": f"{minutes:.1f} min on {machine_name()}",
    }


def card_fields(
    args: argparse.Namespace, config: TSNetConfig, settings: dict, history: list[dict], split: str, data_name: str
) -> dict:
    """`render_model_card` keyword arguments: title, description, the settings table, the newest
    validation result of `history` (self-reconstruction metrics, images in [0, 1]) and its
    model-index entries."""
    evaluation, results = "No validation yet.", []
    if history:
        latest = history[-1]
        metrics = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in latest.items()}
        evaluation = (
            f"Self-reconstruction on held-out clips at step {latest['step']} "
            f"(images in [0, 1]; L2 = mean squared error):\n\n{markdown_table(metrics)}"
        )
        results = evaluation_results(
            latest, f"Self-reconstruction, held out by {split}", data_name, data_name, split="validation"
        )
    return {
        "title": f"TS-Net {config.mode} generator trained with tsnet-hf",
        "description": f"Trained with `python training/train.py` of tsnet-hf ({config.mode} mode).",
        "training": markdown_table(settings),
        "evaluation": evaluation,
        "datasets": [data_name],
        "eval_results": results,
        "base_model": args.init_from,
    }
