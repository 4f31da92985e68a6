"""Golden outputs of seeded tiny models, stored in tests/data/golden_tiny.safetensors.

    python tests/golden.py --write   # only for an intended change of the maths; say so in the commit

Four models (tiny_config, face and body, output "decoder" and "blend") with seeded weights, on seeded
random inputs (K = 2 subject frames, N = 2 driving masks), all in float64: the sampling grid's
softmax (temperature 100) turns float32 rounding into output differences of up to 1e-3, which vary
between CPUs, while float64 keeps them below 1e-12. Every TSNetOutput field the model fills is stored
as a strided subsample (every STRIDE-th pixel; the grid whole), with three statistics of the whole
field (mean, mean square, a seeded random projection) so that a change at any pixel shows.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tsnet_hf import TSNet, tiny_config

from helpers import random_inputs

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_tiny.safetensors"
CASES = {
    "face-decoder": ("face", "decoder"),
    "face-blend": ("face", "blend"),
    "body-decoder": ("body", "decoder"),
    "body-blend": ("body", "blend"),
}
STRIDE = 8  # pixels kept: every 8th row and column of the 64x64 frames (the file stays < 100 KB)
# Weights drawn with std 0.1 rather than the training init's 0.02, so that every head moves the outputs
# (at 0.02 the blend mask is 0.5 everywhere, to 1e-4).
INIT_STD = 0.1


def case_outputs(case: str) -> dict[str, torch.Tensor]:
    """The filled TSNetOutput fields of one case, float64, full size: image (2, 3, 64, 64),
    grid (2, 2, 8, 8, 2), warped (2, 2, 3, 64, 64), and for blend sharp, blend_mask, frame_weights
    and decoded."""
    mode, output = CASES[case]
    config = tiny_config(mode, output=output)
    model = TSNet(config).double().eval()
    torch.manual_seed(0)  # drawn in float64: float32 draws may differ in the last bit between CPUs
    model.reset_parameters(std=INIT_STD)
    subject, subject_masks, driving_masks = random_inputs(config, frames=2, driving=2, seed=1)
    with torch.no_grad():
        out = model(subject.double(), subject_masks.double(), driving_masks.double())
    fields = {field.name: getattr(out, field.name) for field in dataclasses.fields(out)}
    return {name: value for name, value in fields.items() if value is not None}


def golden_values(case: str) -> dict[str, torch.Tensor]:
    """'{case}/{field}': the subsample (the grid whole), and '{case}/{field}/stats': (3,) mean,
    mean square and seeded random projection of the whole field; all float64."""
    values = {}
    for name, value in case_outputs(case).items():
        sample = value if name == "grid" else value[..., ::STRIDE, ::STRIDE]
        projection = torch.rand(value.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        values[f"{case}/{name}"] = sample.contiguous()
        values[f"{case}/{name}/stats"] = torch.stack([value.mean(), value.square().mean(), (value * projection).mean()])
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"overwrite {GOLDEN.name}")
    args = parser.parse_args(argv)
    values = {key: value for case in CASES for key, value in golden_values(case).items()}
    if not args.write:
        print(f"{len(values)} tensors computed; pass --write to store them in {GOLDEN}")
        return 0
    save_file(values, str(GOLDEN), metadata={"regenerate": "python tests/golden.py --write"})
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1024:.0f} KB, {len(values)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
