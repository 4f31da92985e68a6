"""LPIPS (Zhang et al., CVPR 2018), version 0.1 with the AlexNet trunk: the perceptual distance of
paper section 4.1, computed without the `lpips` package.

distance(x, y) = sum over the 5 AlexNet ReLU outputs l of
    mean over positions of  w_l . (unit(f_l(x)) - unit(f_l(y)))^2
where unit() scales each position's feature vector to length 1 and w_l (C_l,) are the learned
linear weights. Inputs are shifted and scaled per channel first (the `lpips` ScalingLayer).
tests/test_losses.py checks it against the `lpips` package with the same weights (to 1e-5).

Weights: the AlexNet conv trunk from torchvision (download cache / network) or a safetensors file
with torchvision key names (alexnet_imagenet_features.safetensors); the linear
layers from the `lpips` package's own file when it is installed, or a safetensors file with the
`lpips` key names `lin0.model.1.weight` ... `lin4.model.1.weight`, each (1, C, 1, 1)
(lpips_v0.1_lin_alex.safetensors).
"""

from importlib.util import find_spec
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from tsnet_hf.errors import CheckpointError

from .vision import alexnet_features

# The lpips ScalingLayer: (x - shift) / scale per RGB channel, for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
TAPS = (1, 4, 7, 9, 11)  # AlexNet `features` indices of relu1 ... relu5
CHANNELS = (64, 192, 384, 256, 256)
NO_LIN_WEIGHTS = (
    "The LPIPS linear weights are not available: pass --lpips-lin PATH "
    "(e.g. ../shared/weights/lpips_v0.1_lin_alex.safetensors) or pip install lpips==0.1.4."
)


class LPIPS(nn.Module):
    """LPIPS v0.1, AlexNet: (N, 3, H, W) RGB in [-1, 1] twice -> (N,) distances (0 = identical)."""

    def __init__(self, features: nn.Sequential, linear: list[torch.Tensor]):
        super().__init__()
        if len(linear) != len(CHANNELS):
            raise CheckpointError(f"LPIPS needs {len(CHANNELS)} linear weight tensors, got {len(linear)}.")
        self.features = features[: TAPS[-1] + 1]
        for index, (weight, channels) in enumerate(zip(linear, CHANNELS)):
            if tuple(weight.shape) != (1, channels, 1, 1):
                raise CheckpointError(
                    f"LPIPS linear layer {index} has shape {tuple(weight.shape)}, expected "
                    f"(1, {channels}, 1, 1): give the AlexNet ('alex') LPIPS weights."
                )
            self.register_buffer(f"lin{index}", weight.float().clone())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # a metric: always frozen

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.shift) / self.scale
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """images, references (N, 3, H, W) RGB in [-1, 1] -> (N,) float32 LPIPS distances."""
        total = 0.0
        both = self._taps(torch.cat([images, references]).float())
        for index, features in enumerate(both):
            unit = features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            first, second = unit.chunk(2)
            weighted = (getattr(self, f"lin{index}") * (first - second).pow(2)).sum(dim=1)  # (N, h, w)
            total = total + weighted.mean(dim=(1, 2))
        return total


def read_linear_weights(path) -> list[torch.Tensor]:
    """The 5 LPIPS linear weight tensors from a safetensors file (or the lpips package's .pth)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"LPIPS weights file {path} does not exist: {NO_LIN_WEIGHTS.split(': ', 1)[1]}")
    try:
        if path.suffix == ".pth":  # the lpips wheel's own file: a plain tensor dict
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable LPIPS weights file ({error}).") from None
    keys = [f"lin{i}.model.1.weight" for i in range(len(CHANNELS))]
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {missing[:2]}: give LPIPS v0.1 linear weights "
            "(keys lin0.model.1.weight ... lin4.model.1.weight)."
        )
    return [state[key] for key in keys]


def _packaged_linear_weights() -> Path | None:
    """The lpips wheel's weights/v0.1/alex.pth, found without importing lpips (it imports torchvision)."""
    spec = find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def load_lpips(alexnet="auto", linear=None) -> LPIPS:
    """LPIPS with AlexNet, from torchvision / lpips weights or local files.

    Args:
        alexnet: "auto" (torchvision's ImageNet AlexNet) or a safetensors path (`features.N.*`).
        linear: a safetensors (or lpips .pth) path of the linear layers, or None for the
            installed `lpips` package's own file.
    Raises:
        CheckpointError: a weights file is missing or mis-shaped, or no weights can be found.
    """
    if linear is None:
        linear = _packaged_linear_weights()
        if linear is None:
            raise CheckpointError(NO_LIN_WEIGHTS)
    return LPIPS(alexnet_features(alexnet), read_linear_weights(linear))
