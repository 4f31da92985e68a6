"""Convert the authors' released checkpoints (nihaomiao/WACV23_TSNet) into a tsnet-hf folder.

Their file is a torch pickle holding four state dicts, `img_enc`, `lbl_enc`, `fuse_net` and `dec`
(plus, in training snapshots, optimiser states we ignore). It is read with `weights_only=True`,
so no code in it runs. The converted model gets `authors_compat=True`: their BGR-minus-mean input,
their coordinate grid and their masked similarity, so it reproduces their outputs.

    tsnet-convert-authors BranchGAN_B0015_S063000.pth checkpoints/authors-face
"""

import argparse
import re
import sys

import torch

from .config import AUTHORS_FACE_MEAN_BGR, MODEL_MODES, TSNetConfig
from .errors import CheckpointError, TSNetError
from .hub import load_state_strict
from .modeling import TSNet

PARTS = ("img_enc", "lbl_enc", "fuse_net", "dec")


def authors_key_map(config: TSNetConfig) -> dict[str, str]:
    """Our parameter name for each of the authors' (weight and bias of every conv)."""
    pairs = {}
    steps = config.num_downsamples

    def encoder(theirs, ours, blocks):
        pairs[f"{theirs}.model.1"] = f"{ours}.stem.1"
        for i in range(steps):
            pairs[f"{theirs}.model.{4 + 3 * i}"] = f"{ours}.down.{i}.0"
        for j in range(blocks):
            for layer in (1, 5):
                pairs[f"{theirs}.model.{4 + 3 * steps + j}.conv_block.{layer}"] = f"{ours}.blocks.{j}.body.{layer}"

    encoder("img_enc", "image_encoder", config.encoder_blocks)
    encoder("lbl_enc", "mask_encoder", 0)
    for j in range(config.fusion_blocks):
        for layer in (1, 5):
            pairs[f"fuse_net.model.{j}.conv_block.{layer}"] = f"fusion.blocks.{j}.body.{layer}"
    pairs["fuse_net.conv"] = "fusion.proj"
    pairs["dec.map_conv"] = "decoder.proj"
    for j in range(config.decoder_blocks):
        for layer in (1, 5):
            pairs[f"dec.model{j}.0.conv_block.{layer}"] = f"decoder.blocks.{j}.body.{layer}"
    for i in range(steps):
        pairs[f"dec.model{config.decoder_blocks + i}.2"] = f"decoder.up.{i}.2"
    pairs[f"dec.model{config.decoder_blocks + steps}.1"] = "decoder.head.1"
    return {f"{a}.{p}": f"{b}.{p}" for a, b in pairs.items() for p in ("weight", "bias")}


def read_authors_checkpoint(path) -> dict[str, torch.Tensor]:
    """Their pickle -> one flat state dict with keys "img_enc.model.1.weight", ... (weights only)."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist.") from None
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read as a weights-only torch checkpoint ({type(error).__name__}); "
            "only tensors and plain containers are accepted."
        ) from None
    if not isinstance(checkpoint, dict) or any(part not in checkpoint for part in PARTS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not an authors' TS-Net checkpoint: expected the state dicts {PARTS}, found {found}."
        )
    flat = {}
    for part in PARTS:
        for key, value in checkpoint[part].items():
            flat[f"{part}.{key.removeprefix('module.')}"] = value
    return flat


def infer_config(
    state: dict[str, torch.Tensor], mode: str | None = None, coord_conv: bool = True, mean_bgr=AUTHORS_FACE_MEAN_BGR
) -> TSNetConfig:
    """The TSNetConfig whose layout matches the authors' state dict."""

    def count(pattern):
        return len({m.group(1) for key in state if (m := re.match(pattern, key))})

    stem = state["lbl_enc.model.1.weight"]
    mask_channels = stem.shape[1] - (3 if coord_conv else 0)
    steps = count(r"lbl_enc\.model\.(\d+)\.weight") - 1
    return TSNetConfig(
        mode=mode or ("face" if mask_channels == 2 else "body"),
        mask_channels=mask_channels,
        base_channels=stem.shape[0],
        num_downsamples=steps,
        encoder_blocks=count(r"img_enc\.model\.(\d+)\.conv_block"),
        decoder_blocks=count(r"dec\.model(\d+)\.0\.conv_block"),
        fusion_blocks=count(r"fuse_net\.model\.(\d+)\.conv_block"),
        coord_conv=coord_conv,
        authors_compat=True,
        authors_mean_bgr=tuple(mean_bgr),
    )


def convert_state(state: dict[str, torch.Tensor], config: TSNetConfig) -> dict[str, torch.Tensor]:
    """Rename the authors' tensors to ours; every tensor must be used exactly once."""
    key_map = authors_key_map(config)
    unknown = sorted(set(state) - set(key_map))
    missing = sorted(set(key_map) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"The authors' checkpoint does not have the expected layout: unknown {unknown[:3]}, missing {missing[:3]}."
        )
    return {key_map[key]: value.float().contiguous() for key, value in state.items()}


def convert(path, output_dir, mode=None, coord_conv=True, mean_bgr=AUTHORS_FACE_MEAN_BGR, fp16=False):
    """Convert the authors' pickle at `path` into a `save_pretrained` folder; returns the model."""
    state = read_authors_checkpoint(path)
    config = infer_config(state, mode=mode, coord_conv=coord_conv, mean_bgr=mean_bgr)
    model = TSNet(config)
    load_state_strict(model, convert_state(state, config), str(path))
    if fp16:
        model = model.half()
    model.save_pretrained(
        output_dir,
        model_card_kwargs={
            "title": "TS-Net (authors' weights, converted)",
            "description": f"Converted with `tsnet-convert-authors` from the authors' checkpoint `{path}`.",
        },
    )
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tsnet-convert-authors", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the authors' .pth file (img_enc, lbl_enc, fuse_net, dec)")
    parser.add_argument("output_dir", help="folder to write config.json, model.safetensors and README.md")
    parser.add_argument("--mode", choices=MODEL_MODES, help="default: face for 2 mask channels, else body")
    parser.add_argument(
        "--mean-bgr",
        type=float,
        nargs=3,
        default=AUTHORS_FACE_MEAN_BGR,
        metavar=("B", "G", "R"),
        help="mean pixel the authors subtract (default: their face mean)",
    )
    parser.add_argument("--no-coord-conv", action="store_true", help="the checkpoint was trained without CoordConv")
    parser.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the size)")
    args = parser.parse_args(argv)
    try:
        convert(args.checkpoint, args.output_dir, args.mode, not args.no_coord_conv, args.mean_bgr, args.fp16)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
