"""Discriminators of TS-Net training (paper section 3.2).

- `PatchDiscriminator`: the 70x70 PatchGAN of pix2pix: conv4x4 s2 64, LReLU 0.2; conv4x4 s2 128,
  IN, LReLU; conv4x4 s2 256, IN, LReLU; conv4x4 s1 512, IN, LReLU; conv4x4 s1 1. It returns every
  layer's output: the last is the patch score map (LSGAN), the others feed feature matching
  (eq. 6). Conditioned on the driving mask by concatenating it with the image (eq. 4: "given
  driving mask frame z").
- For bodies the authors add an unconditional face discriminator of the same design on a crop
  around the face, resized to image_size / 4 (64 px at 256): `crop_faces` cuts it.
"""

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN (3 stride-2 layers) returning all intermediate outputs.

    Args:
        in_channels: 3 (an image) + mask channels when conditioned on the mask.
        base: width of the first layer (64).
        num_layers: stride-2 layers after the first (3 gives the 70x70 receptive field).
    """

    def __init__(self, in_channels: int, base: int = 64, num_layers: int = 3):
        super().__init__()
        widths = [base * min(2**i, 8) for i in range(num_layers + 1)]  # 64, 128, 256, 512
        layers = [nn.Sequential(nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2, True))]
        for i in range(1, num_layers + 1):
            stride = 2 if i < num_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1),
                    nn.InstanceNorm2d(widths[i]),
                    nn.LeakyReLU(0.2, True),
                )
            )
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.ModuleList(layers)
        for module in self.modules():  # Normal(0, 0.02), as pix2pix and the authors
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, in_channels, H, W) -> outputs of each layer; the last is (N, 1, H/8 - 2, W/8 - 2)."""
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs


def face_crop_size(image_size: int) -> int:
    """Side of the face discriminator's input: image_size // 32 * 8 (64 at 256), as the authors; at least
    32, where the PatchGAN still has 2x2 outputs."""
    return max(32, image_size // 32 * 8)


def crop_faces(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable square crops (bilinear) resized to `size`.

    Args:
        images: (N, 3, H, W).
        boxes: (N, 4) float (x0, y0, x1, y1) in pixels (corner coordinates).
        size: side of the crops.
    Returns:
        (N, 3, size, size); parts of a box outside the image repeat the border pixels.
    """
    num, _, height, width = images.shape
    boxes = boxes.to(images.dtype)
    # Normalised coordinates (align_corners=False): pixel corner 0 -> -1, corner W -> +1.
    x0, y0 = boxes[:, 0] / width * 2 - 1, boxes[:, 1] / height * 2 - 1
    x1, y1 = boxes[:, 2] / width * 2 - 1, boxes[:, 3] / height * 2 - 1
    steps = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # (size,)
    xs = x0[:, None] + (x1 - x0)[:, None] * steps  # (N, size)
    ys = y0[:, None] + (y1 - y0)[:, None] * steps
    grid = torch.stack([xs[:, None, :].expand(-1, size, -1), ys[:, :, None].expand(-1, -1, size)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
