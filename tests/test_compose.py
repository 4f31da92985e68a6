"""compose_high_res: a blend model's output recomposed from larger subject crops (tensors only, fast)."""

import torch
import torch.nn.functional as F

from tsnet_hf import TSNet, tiny_config
from tsnet_hf.compose import compose_high_res
from tsnet_hf.runner import large_side
from tsnet_hf.similarity import regular_grid


def identity_grid(num: int, frames: int, cells: int = 8) -> torch.Tensor:
    """(num, frames, cells, cells, 2) grids of the cell centres: the identity warp."""
    return regular_grid(cells, cells).reshape(1, 1, cells, cells, 2).expand(num, frames, -1, -1, -1)


def model_side(num=2, frames=3, size=64, seed=0):
    """Random frame weights (summing to 1 over K), blend mask and decoded frame at the model's size."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(num, frames, size, size, generator=generator), dim=1)
    mask = torch.rand(num, 1, size, size, generator=generator)
    decoded = torch.rand(num, 3, size, size, generator=generator) * 2 - 1
    return weights, mask, decoded


def test_identity_grid_with_mask_one_copies_the_large_crop():
    weights, mask, decoded = model_side()
    large = torch.rand(1, 1, 3, 128, 128).expand(-1, 3, -1, -1, -1)  # the same crop K times, shared by N
    out = compose_high_res(large, identity_grid(2, 3), weights, torch.ones_like(mask), decoded)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    # The upsampled grid is exact between the outermost cell centres: 8 px from each border at 128 px.
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(out[inner], large[:, 0].expand(2, -1, -1, -1)[inner], atol=1e-5)


def test_frame_weights_pick_the_subject_frame():
    _, mask, decoded = model_side()
    large = torch.rand(2, 3, 3, 128, 128)
    weights = torch.zeros(2, 3, 64, 64)
    weights[0, 2], weights[1, 0] = 1, 1
    out = compose_high_res(large, identity_grid(2, 3), weights, torch.ones_like(mask), decoded)
    inner = (slice(8, -8), slice(8, -8))
    assert torch.allclose(out[0][:, inner[0], inner[1]], large[0, 2][:, inner[0], inner[1]], atol=1e-5)
    assert torch.allclose(out[1][:, inner[0], inner[1]], large[1, 0][:, inner[0], inner[1]], atol=1e-5)


def test_mask_zero_gives_the_upsampled_decoder_and_one_the_warp():
    weights, mask, decoded = model_side()
    large = torch.rand(2, 3, 3, 128, 128) * 2 - 1
    grid = identity_grid(2, 3) + 0.1 * torch.randn(2, 3, 8, 8, 2, generator=torch.Generator().manual_seed(1))
    decoder_only = compose_high_res(large, grid, weights, torch.zeros_like(mask), decoded)
    assert torch.allclose(decoder_only, F.interpolate(decoded, size=(128, 128), mode="bilinear"), atol=1e-6)
    warp_only = compose_high_res(large, grid, weights, torch.ones_like(mask), decoded)
    half = compose_high_res(large, grid, weights, torch.full_like(mask, 0.5), decoded)
    assert torch.allclose(half, (warp_only + decoder_only) / 2, atol=1e-5)
    assert not torch.allclose(warp_only, decoder_only, atol=0.1)


def test_at_the_model_size_it_is_the_model_output():
    torch.manual_seed(0)
    model = TSNet(tiny_config(output="blend")).eval()
    generator = torch.Generator().manual_seed(0)
    subject = torch.rand(1, 2, 3, 64, 64, generator=generator) * 2 - 1
    masks = torch.zeros(1, 2, 2, 64, 64)
    masks[:, :, 0], masks[:, :, 1, 16:48, 20:44], masks[:, :, 0, 16:48, 20:44] = 1, 1, 0
    driving = masks[0, :1].clone()
    with torch.no_grad():
        out = model(subject, masks, driving)
    again = compose_high_res(subject, out.grid, out.frame_weights, out.blend_mask, out.decoded)
    assert torch.allclose(again, out.image, atol=1e-5)


def test_large_side_is_bounded_by_the_crop_and_a_cap():
    assert large_side(64, 300.7) == 300
    assert large_side(64, 700.2) == 512  # the cap: max(2 x model size, 512)
    assert large_side(512, 1400.0) == 1024
    assert large_side(64, 100.6) == 100
    assert large_side(256, 240.0) == 240  # not above the model's size: the runner leaves it off
