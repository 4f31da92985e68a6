"""The generator: shapes, gradients, two-step = one-shot, mask-aware similarity, grid convention."""

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tsnet_hf import ConfigError, InputError, TSNet, TSNetConfig, paper_config, small_config, tiny_config
from tsnet_hf.modeling import patch_warp, pixel_warp
from tsnet_hf.similarity import (
    allowed_pairs,
    box_membership,
    boxes_from_masks,
    dense_reference_grid,
    regular_grid,
    sampling_grid,
)

from helpers import random_inputs, seeded_model


@pytest.mark.parametrize("mode", ["face", "body"])
@pytest.mark.parametrize("frames", [1, 3, 5])
def test_output_shapes(mode, frames):
    config = tiny_config(mode)
    model = seeded_model(config)
    subject, subject_masks, driving_masks = random_inputs(config, frames=frames, driving=4)
    with torch.no_grad():
        out = model(subject, subject_masks, driving_masks)
    size, cells = config.image_size, config.feature_size
    assert out.image.shape == (4, 3, size, size)
    assert out.grid.shape == (4, frames, cells, cells, 2)
    assert out.warped.shape == (4, frames, 3, size, size)
    assert out.image.abs().max() <= 1
    assert config.mask_channels == (2 if mode == "face" else 36)


def test_paper_config_size():
    model = TSNet()
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == 86.0
    parts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
        for name in ("image_encoder", "mask_encoder", "fusion", "decoder")
    }
    assert round(parts["image_encoder"], 1) == 44.1
    assert round(parts["mask_encoder"], 1) == 1.6
    assert round(parts["fusion"], 1) == 19.4
    assert round(parts["decoder"], 1) == 21.0


def test_small_preset_fits_shipping_budget():
    for mode in ("face", "body"):
        model = TSNet(small_config(mode))
        fp16_bytes = sum(p.numel() for p in model.parameters()) * 2
        assert fp16_bytes <= 45e6


@pytest.mark.parametrize("branches,combine", [("ts", "concat"), ("ts", "matting"), ("t", "concat"), ("s", "concat")])
def test_gradients_reach_every_parameter(branches, combine):
    config = tiny_config("face", branches=branches, combine=combine)
    model = seeded_model(config).train()
    subject, subject_masks, driving_masks = random_inputs(config, batch=2, frames=2, driving=2)
    out = model(subject, subject_masks, driving_masks)
    loss = out.image.square().mean()
    if out.warped is not None:
        loss = loss + out.warped.abs().mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    if branches == "s":
        assert out.grid is None and out.warped is None
    if combine == "matting":
        assert out.alpha.shape == (2, 1, config.feature_size, config.feature_size)


def test_two_step_equals_one_shot():
    config = tiny_config("face", image_size=128)
    model = seeded_model(config)
    subject, subject_masks, driving_masks = random_inputs(config, frames=3, driving=5)
    with torch.no_grad():
        memory = model.encode_subject(subject, subject_masks)
        batched = model.generate(memory, driving_masks)
        for i in range(5):
            single = model(subject, subject_masks, driving_masks[i : i + 1])
            assert (single.image[0] - batched.image[i]).abs().max() < 1e-5
            assert (single.grid[0] - batched.grid[i]).abs().max() < 1e-5
            assert (single.warped[0] - batched.warped[i]).abs().max() < 1e-5


def test_subject_sets_are_grouped():
    """With B subject sets and N = B*T driving masks, mask n uses set n // T."""
    config = tiny_config("face")
    model = seeded_model(config)
    subject, subject_masks, driving_masks = random_inputs(config, batch=2, frames=2, driving=4)
    with torch.no_grad():
        grouped = model(subject, subject_masks, driving_masks).image
        second = model(subject[1:], subject_masks[1:], driving_masks[2:]).image
    assert (grouped[2:] - second).abs().max() < 1e-5


# ----- mask-aware similarity ---------------------------------------------------------------------


def random_sets(num, frames, positions, generator, inside_rate):
    driving = torch.rand(num, positions, generator=generator) < inside_rate
    subject = torch.rand(1, frames, positions, generator=generator) < inside_rate
    return driving, subject


@pytest.mark.parametrize("seed", range(4))
def test_mask_aware_equals_dense_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    num, frames, channels, h, w = 3, 2, 16, 8, 8
    driving = torch.randn(num, channels, h, w, generator=generator)
    subject = torch.randn(1, frames, channels, h, w, generator=generator)
    driving_inside, subject_inside = random_sets(num, frames, h * w, generator, 0.4)
    for temperature in (1.0, 100.0):
        fast = sampling_grid(driving, subject, driving_inside, subject_inside, temperature)
        reference = dense_reference_grid(driving, subject, driving_inside, subject_inside, temperature)
        assert (fast - reference).abs().max() < 1e-5


def test_mask_aware_handles_empty_sides():
    generator = torch.Generator().manual_seed(0)
    driving = torch.randn(2, 8, 4, 4, generator=generator)
    subject = torch.randn(1, 2, 8, 4, 4, generator=generator)
    cases = [
        (torch.zeros(2, 16, dtype=torch.bool), torch.rand(1, 2, 16, generator=generator) < 0.5),  # no driving box
        (torch.rand(2, 16, generator=generator) < 0.5, torch.zeros(1, 2, 16, dtype=torch.bool)),  # no subject box
        (torch.ones(2, 16, dtype=torch.bool), torch.ones(1, 2, 16, dtype=torch.bool)),  # boxes cover all
        (torch.rand(2, 16, generator=generator) < 0.5, torch.ones(1, 2, 16, dtype=torch.bool)),  # no outside
    ]
    for driving_inside, subject_inside in cases:
        fast = sampling_grid(driving, subject, driving_inside, subject_inside, 10.0)
        reference = dense_reference_grid(driving, subject, driving_inside, subject_inside, 10.0)
        assert torch.isfinite(fast).all()
        assert (fast - reference).abs().max() < 1e-5
        # every driving position has at least one allowed subject position
        assert allowed_pairs(driving_inside, subject_inside).any(dim=-1).all()


def box_inside(h, w, rows, cols):
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[:rows, :cols] = True
    return inside.flatten()


def test_mask_aware_flops_fall_with_box_areas():
    """Counted multiply-adds of the similarity = (a_z a_y + (1-a_z)(1-a_y)) x the dense product's."""
    channels, h, w = 32, 16, 16
    driving = torch.randn(1, channels, h, w)
    subject = torch.randn(1, 1, channels, h, w)

    def counted(driving_inside, subject_inside, mask_aware=True):
        with FlopCounterMode(display=False) as counter:
            sampling_grid(driving, subject, driving_inside, subject_inside, 100.0, mask_aware=mask_aware)
        return counter.get_total_flops()

    dense = counted(None, None, mask_aware=False)
    for (zr, zc), (yr, yc) in [((8, 8), (8, 8)), ((12, 10), (6, 9)), ((16, 4), (10, 10))]:
        inside_z, inside_y = box_inside(h, w, zr, zc)[None], box_inside(h, w, yr, yc)[None, None]
        a_z, a_y = zr * zc / (h * w), yr * yc / (h * w)
        expected = a_z * a_y + (1 - a_z) * (1 - a_y)
        # the similarity (L x L x C) dominates; the grid average (L x L x 2) scales the same way
        assert counted(inside_z, inside_y) / dense == pytest.approx(expected, rel=1e-6)
    assert counted(box_inside(h, w, 8, 8)[None], box_inside(h, w, 8, 8)[None, None]) < 0.7 * dense


def test_identity_features_give_identity_warp():
    """One grid convention: identical features, high temperature -> identity grid and warp."""
    generator = torch.Generator().manual_seed(0)
    channels, h, w = 64, 16, 16
    features = torch.randn(1, channels, h, w, generator=generator)
    inside = box_inside(h, w, 10, 12)
    grid = sampling_grid(features, features[:, None], inside[None], inside[None, None], temperature=1000.0)
    identity = regular_grid(h, w).reshape(h, w, 2)
    width_error = (grid[0, 0] - identity).abs().max() / 2  # grid spans 2 units over the image width
    assert width_error < 1e-3

    frames = torch.rand(1, 1, 3, 8 * h, 8 * w, generator=generator)
    assert (patch_warp(frames, grid) - frames).abs().max() < 1e-3
    features_warped = torch.nn.functional.grid_sample(features, grid[:, 0], align_corners=False)
    assert (features_warped - features).abs().max() < 1e-3


def test_boxes_from_masks():
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, 0] = 1
    masks[0, 0, 10:20, 30:40], masks[0, 1, 10:20, 30:40] = 0, 1
    boxes = boxes_from_masks(masks, margin=1 / 16)
    assert boxes[0].tolist() == [26.0, 6.0, 44.0, 24.0]
    assert boxes[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # empty mask, empty box
    inside = box_membership(boxes, (64, 64), (8, 8))
    assert inside[1].sum() == 0
    assert inside[0].view(8, 8)[1, 4] and not inside[0].view(8, 8)[5, 5]


# ----- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return seeded_model(tiny_config("face"))


def test_bad_input_raises_one_clear_error(tiny):
    subject, subject_masks, driving_masks = random_inputs(tiny.config, frames=2, driving=2)
    bad = {
        "must have shape": (subject[0], subject_masks, driving_masks),
        "K = 0": (subject[:, :0], subject_masks[:, :0], driving_masks),
        "3 (RGB) channels": (subject[:, :, :2], subject_masks, driving_masks),
        "2-channel one-hot": (subject, subject_masks, driving_masks[:, :1].expand(-1, 3, -1, -1)),
        "NaN or infinite": (subject.clone().fill_(float("nan")), subject_masks, driving_masks),
        "multiples of 8": (subject[..., :60, :60], subject_masks[..., :60, :60], driving_masks),
        "use one frame size": (subject, subject_masks, driving_masks[..., :32, :32]),
    }
    for message, args in bad.items():
        with pytest.raises(InputError, match=re.escape(message)):
            tiny(*args)
    with pytest.raises(InputError, match="subject boxes"):
        tiny(subject, subject_masks, driving_masks, subject_boxes=torch.zeros(3))
    with pytest.raises(InputError, match="floating-point"):
        tiny(subject, subject_masks.long(), driving_masks)


@pytest.mark.slow  # the small preset, run (a few seconds)
def test_small_preset_runs_on_cpu():
    config = small_config("face")
    model = seeded_model(config)
    subject, subject_masks, driving_masks = random_inputs(config, frames=3, driving=1)
    with torch.no_grad():
        out = model(subject, subject_masks, driving_masks)
    assert out.image.shape == (1, 3, 256, 256) and torch.isfinite(out.image).all()


def test_config_is_validated():
    for bad in (
        dict(branches="x"),
        dict(combine="add"),
        dict(image_size=100),
        dict(mask_channels=1),
        dict(temperature=0),
        dict(encoder_blocks=-1),
        dict(mode="cat"),
    ):
        with pytest.raises(ConfigError):
            TSNetConfig(**bad)
    assert paper_config("body").mask_channels == 36


def test_split_fusion_conv_equals_the_plain_block():
    """The subject/driving split of the fusion network's first conv computes the same numbers."""
    config = tiny_config("face", image_size=128)
    model = seeded_model(config)
    subject, subject_masks, driving_masks = random_inputs(config, frames=3, driving=4)
    with torch.no_grad():
        split = model.generate(model.encode_subject(subject, subject_masks), driving_masks)
        plain_memory = model.encode_subject(subject, subject_masks, precompute_fusion=False)
        assert plain_memory.fusion_part is None
        plain = model.generate(plain_memory, driving_masks)
    assert (split.image - plain.image).abs().max() < 1e-5


# ----- the pixel-space blend path (config.output = "blend") ----------------------------------------------


def _blend_inputs(frames=3, num=2, size=64, seed=0):
    torch.manual_seed(seed)
    subject = torch.rand(1, frames, 3, size, size) * 2 - 1
    masks = torch.zeros(1, frames, 2, size, size)
    masks[:, :, 0] = 1
    masks[:, :, 1, 20:40, 20:44], masks[:, :, 0, 20:40, 20:44] = 1, 0
    driving = torch.zeros(num, 2, size, size)
    driving[:, 0] = 1
    driving[:, 1, 22:42, 18:40], driving[:, 0, 22:42, 18:40] = 1, 0
    return subject, masks, driving


@pytest.mark.parametrize("weights", ["learned", "mean"])
def test_blend_output_is_the_mask_weighted_mix_of_warp_and_decoder(weights):
    model = TSNet(tiny_config(output="blend", frame_weights=weights)).eval()
    subject, masks, driving = _blend_inputs()
    with torch.no_grad():
        out = model(subject, masks, driving)
    assert out.sharp.shape == out.decoded.shape == out.image.shape == (2, 3, 64, 64)
    assert out.blend_mask.shape == (2, 1, 64, 64) and out.frame_weights.shape == (2, 3, 64, 64)
    assert torch.allclose(out.frame_weights.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)
    assert 0 <= float(out.blend_mask.min()) and float(out.blend_mask.max()) <= 1
    expected = out.blend_mask * out.sharp + (1 - out.blend_mask) * out.decoded
    assert torch.allclose(out.image, expected, atol=1e-6)
    if weights == "mean":
        assert torch.allclose(out.frame_weights, torch.full_like(out.frame_weights, 1 / 3))
    assert (model.blend.frame_scores is None) == (weights == "mean")


def test_blend_warp_of_an_identity_grid_copies_the_pixels():
    images = torch.rand(1, 2, 3, 64, 64)
    grid = regular_grid(8, 8).reshape(1, 1, 8, 8, 2).expand(3, 2, -1, -1, -1)  # cell centres: identity
    moved = pixel_warp(images, grid)
    assert moved.shape == (3, 2, 3, 64, 64)
    # The upsampled grid is exact between the outermost cell centres (4 px from each border).
    inner = (slice(None), slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(moved[inner], images.expand(3, -1, -1, -1, -1)[inner], atol=1e-5)


def test_blend_gradients_reach_every_parameter():
    model = TSNet(tiny_config(output="blend"))
    subject, masks, driving = _blend_inputs()
    model(subject, masks, driving).image.square().mean().backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_blend_is_off_for_the_paper_and_refused_with_authors_compat():
    assert paper_config().output == "decoder" and TSNet(tiny_config()).blend is None
    with pytest.raises(ConfigError, match="authors_compat"):
        tiny_config(output="blend", authors_compat=True)
    with pytest.raises(ConfigError, match="needs branches"):
        tiny_config(output="blend", branches="s")
    with pytest.raises(ConfigError, match="output must be one of"):
        tiny_config(output="pixels")
    # A config.json written before the blend fields existed loads as the paper's decoder output.
    values = tiny_config().to_dict()
    for name in ("output", "frame_weights", "blend_channels"):
        values.pop(name)
    assert TSNetConfig.from_dict(values) == tiny_config()


def test_blend_two_step_equals_one_shot_and_selected_sets():
    model = TSNet(tiny_config(output="blend")).eval()
    subject, masks, driving = _blend_inputs(frames=4, num=3)
    with torch.no_grad():
        memory = model.encode_subject(subject, masks)
        chosen = torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])
        selected = model.generate(memory.select(chosen), driving)
        for n in range(3):
            one = model(subject[:, chosen[n]], masks[:, chosen[n]], driving[n : n + 1])
            assert torch.allclose(selected.image[n], one.image[0], atol=1e-4)
            assert torch.allclose(selected.blend_mask[n], one.blend_mask[0], atol=1e-4)
