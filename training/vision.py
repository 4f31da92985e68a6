"""torchvision on CPU-only torch, and the frozen ImageNet networks of the losses and metrics.

`import_torchvision()` is the one place that imports torchvision. The torchvision 0.28 wheel that
pairs with torch 2.13 is a CUDA build: with the CPU-only torch wheel its C++ ops do not load and
`import torchvision` fails with "operator torchvision::nms does not exist" (pytorch/vision#9085).
Defining the two missing op schemas lets the pure-Python parts (models, transforms) import; the
C++ ops themselves stay unavailable, which nothing here needs. Where torchvision imports normally
(a CUDA machine), nothing is defined.

Networks (all frozen, in eval mode, RGB input in [-1, 1]):
- `VGGFeatures`: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of an ImageNet VGG19 (VGG16 also
  works), the perceptual loss of paper eq. (5) with the authors' layer choice.
- `alexnet_features`: the AlexNet conv trunk under LPIPS (training/lpips.py).
Weights come from torchvision (its download cache, or the network when reachable) or from a local
safetensors file with torchvision key names (`features.N.weight`, `features.N.bias`), such as
vgg16_imagenet_features.safetensors.
"""

import sys
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import nn

from tsnet_hf.errors import CheckpointError, TSNetError
from tsnet_hf.hub import host_reachable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_BY_CONVS = {13: "vgg16", 16: "vgg19"}  # conv layers in `features` -> torchvision builder

_TORCHVISION_OPS = None  # the torch.library.Library defining the missing ops: it must stay alive

NO_VGG_WEIGHTS = (
    "ImageNet VGG weights are not available offline: pass --vgg-weights PATH (a safetensors file "
    "with torchvision key names, e.g. ../shared/weights/vgg16_imagenet_features.safetensors), "
    "put torchvision's vgg19-dcbb9e9d.pth in {cache}, or train without the perceptual loss "
    "with --no-vgg."
)
NO_ALEXNET_WEIGHTS = (
    "ImageNet AlexNet weights for LPIPS are not available offline: pass --lpips-alexnet PATH "
    "(e.g. ../shared/weights/alexnet_imagenet_features.safetensors), or put torchvision's "
    "alexnet-owt-7be5be79.pth in {cache}."
)


def import_torchvision():
    """Import torchvision, defining its two missing op schemas first when torch is a CPU-only build.

    Raises:
        TSNetError: torchvision is not installed.
    """
    global _TORCHVISION_OPS
    try:  # imported here: an optional package, and a CPU-only torch needs its ops defined first (below)
        import torchvision

        return torchvision
    except ImportError:
        raise TSNetError("Training needs torchvision: install it with pip install -e '.[train]'.") from None
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    # The failed import left half-initialised modules behind: drop them, define the ops, retry.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS = library
    import torchvision

    return torchvision


# ----- weights ----------------------------------------------------------------------------------


def _hub_cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_state(weights_enum, missing_message: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum: from the download cache, else downloaded.

    Raises:
        CheckpointError: not cached and the download server cannot be reached.
    """
    cached = _hub_cache() / Path(urlparse(weights_enum.url).path).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    if not host_reachable(weights_enum.url):
        raise CheckpointError(missing_message.format(cache=_hub_cache()))
    return weights_enum.get_state_dict(progress=False)


def read_features_file(path, what: str, example: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file of `features.N.*` tensors (torchvision key names).

    Raises:
        CheckpointError: the file is missing, unreadable or holds no `features.` tensors.
    """
    path = Path(path).expanduser()
    hint = f"give a safetensors file of {what} with torchvision key names (features.N.weight), e.g. {example}"
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist: {hint}.")
    try:
        state = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}): {hint}.") from None
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    if not state:
        raise CheckpointError(f"{path} holds no 'features.N.*' tensors: {hint}.")
    return state


def load_features(features: nn.Sequential, state: dict[str, torch.Tensor], source: str):
    """Copy `features.N.*` tensors into a torchvision `features` Sequential, strictly.

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-shaped tensor.
    """
    expected = {f"features.{k}": v for k, v in features.state_dict().items()}
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this network: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; give the weights of the matching architecture."
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(value.shape)} but the network needs "
                f"{tuple(expected[key].shape)}; give ImageNet weights of the matching architecture."
            )
    features.load_state_dict({k[len("features.") :]: v.float() for k, v in state.items()})


def _freeze(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


# ----- VGG ----------------------------------------------------------------------------------------


class VGGFeatures(nn.Module):
    """Frozen ImageNet VGG: RGB images in [-1, 1] -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1].

    The authors feed their mean-subtracted BGR pixels to VGG19 unnormalised; we apply the ImageNet
    normalisation the weights were trained with. Layer weights of the loss live in training/losses.py.
    """

    def __init__(self, features: nn.Sequential, name: str):
        super().__init__()
        self.name = name
        self.taps = _first_relu_of_each_stage(features)
        self.features = _freeze(features[: self.taps[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, 3, H, W) RGB in [-1, 1] -> 5 feature maps, (N, 64, H, W) ... (N, 512, H/16, W/16)."""
        x = ((images + 1) / 2 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


def _first_relu_of_each_stage(features: nn.Sequential) -> tuple[int, ...]:
    """Indices of relu1_1, relu2_1, ...: the first ReLU at the start and after each max-pool."""
    taps, want = [], True
    for index, layer in enumerate(features):
        if isinstance(layer, nn.ReLU) and want:
            taps.append(index)
            want = False
        elif isinstance(layer, nn.MaxPool2d):
            want = True
    return tuple(taps[:5])


def load_vgg(weights="auto") -> VGGFeatures:
    """The perceptual network, with ImageNet weights.

    Args:
        weights: "auto" (torchvision's VGG19 ImageNet weights: its download cache, else the
            network when reachable), or a path to a safetensors file of VGG16 or VGG19 `features`
            tensors with torchvision key names.
    Raises:
        CheckpointError: no weights can be found, or the file is missing or has the wrong shapes.
    """
    models = import_torchvision().models
    if str(weights) in ("auto", "torchvision"):
        state = torchvision_state(models.VGG19_Weights.IMAGENET1K_V1, NO_VGG_WEIGHTS)
        features = models.vgg19(weights=None).features
        load_features(features, state, "torchvision VGG19 weights")
        return VGGFeatures(features, "vgg19 (torchvision ImageNet)")
    state = read_features_file(
        weights, "VGG16/VGG19 ImageNet conv weights", "../shared/weights/vgg16_imagenet_features.safetensors"
    )
    convs = sum(1 for key in state if key.endswith(".weight"))
    if convs not in VGG_BY_CONVS:
        raise CheckpointError(
            f"{weights} has {convs} conv layers: a VGG16 has 13 and a VGG19 16; give the "
            "ImageNet weights of one of them."
        )
    arch = VGG_BY_CONVS[convs]
    features = getattr(models, arch)(weights=None).features
    load_features(features, state, str(weights))
    return VGGFeatures(features, f"{arch} ({Path(weights).name})")


def random_vgg(arch: str = "vgg19", seed: int = 0) -> VGGFeatures:
    """A VGG with random weights: only for tests and speed measurements, never for training."""
    models = import_torchvision().models
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        features = getattr(models, arch)(weights=None).features
    return VGGFeatures(features, f"{arch} (random weights)")


# ----- AlexNet ------------------------------------------------------------------------------------


def alexnet_features(weights="auto") -> nn.Sequential:
    """Frozen AlexNet conv trunk (torchvision layout, 12 modules) with ImageNet weights.

    Args:
        weights: "auto" (torchvision's weights: cache, else network), a safetensors path with
            `features.N.*` keys, or None for random weights (tests only).
    Raises:
        CheckpointError: as `load_vgg`.
    """
    models = import_torchvision().models
    features = models.alexnet(weights=None).features
    if weights is None:
        return _freeze(features)
    if str(weights) in ("auto", "torchvision"):
        state = torchvision_state(models.AlexNet_Weights.IMAGENET1K_V1, NO_ALEXNET_WEIGHTS)
        load_features(features, state, "torchvision AlexNet weights")
    else:
        state = read_features_file(
            weights, "AlexNet ImageNet conv weights", "../shared/weights/alexnet_imagenet_features.safetensors"
        )
        load_features(features, state, str(weights))
    return _freeze(features)
