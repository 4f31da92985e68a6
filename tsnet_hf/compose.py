"""High-resolution composition of a blend model's output (config.output = "blend").

A blend model makes its frame at its own size (config.image_size) as
`blend_mask * sharp + (1 - blend_mask) * decoded`, where `sharp` is the subject's pixels warped
by the transformation branch's grid. The grid is a smooth field of positions in [-1, 1], so it
warps a larger copy of the same subject crop just as well: `compose_high_res` redoes the warp on
the subject crops at a larger size S and upsamples only what the model painted (the decoder's
frame, the blend mask and the per-frame weights). The copied pixels then keep the detail the
subject video has beyond the model's resolution; the decoder's part stays as soft as it was.
"""

import torch
import torch.nn.functional as F

from .modeling import pixel_warp


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), bilinear with align_corners=False (the grids' convention)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def compose_high_res(
    subject_frames: torch.Tensor,
    grid: torch.Tensor,
    frame_weights: torch.Tensor,
    blend_mask: torch.Tensor,
    decoded: torch.Tensor,
) -> torch.Tensor:
    """A blend model's output frame at the subject crops' size S instead of the model's size H.

    Args:
        subject_frames: (Ns, K, 3, S, S) the K subject crops the model used, cut at side S
            (S >= H), RGB in [-1, 1]; Ns = N, or 1 when all driving frames share one set.
        grid: (N, K, h, w, 2) the model's sampling grids (TSNetOutput.grid), (x, y) in [-1, 1].
        frame_weights: (N, K, H, W) per-pixel weights of the K warped frames, summing to 1 over K.
        blend_mask: (N, 1, H, W) weight of the warped pixels, in [0, 1].
        decoded: (N, 3, H, W) the decoder's frame, RGB in [-1, 1].
    Returns:
        (N, 3, S, S) float32 RGB in [-1, 1]:
        m_up * sum_k(w_up_k * warp_k) + (1 - m_up) * decoded_up, where warp_k is subject frame k
        warped by the grid upsampled to S x S and the _up tensors are bilinear upsamplings of the
        model's. With S = H it gives the model's own image (up to float rounding).
    """
    size = tuple(subject_frames.shape[-2:])
    # float32 throughout: bf16 grid coordinates would misplace pixels by ~1 px per 256 px of side.
    warped = pixel_warp(subject_frames.float(), grid.float())  # (N, K, 3, S, S)
    # Bilinear upsampling keeps the weights summing to 1 over K (it is linear, with positive taps).
    weights = upsample(frame_weights.float(), size)[:, :, None]  # (N, K, 1, S, S)
    sharp = (weights * warped).sum(dim=1)
    mask = upsample(blend_mask.float(), size).clamp(0, 1)
    return mask * sharp + (1 - mask) * upsample(decoded.float(), size)
