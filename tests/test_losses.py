"""training/losses.py, discriminators.py, vision.py and lpips.py: the exact losses of the paper and
the authors' code, the 70x70 PatchGAN, the ImageNet networks and their weight files, and LPIPS
checked against the `lpips` package."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(ROOT))

from training import discriminators, losses, lpips, vision  # noqa: E402
from tsnet_hf.errors import CheckpointError  # noqa: E402

from helpers import random_lpips_files  # noqa: E402


def images(n=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator) * 2 - 1


# ----- losses -----------------------------------------------------------------------------------------------


def test_lsgan_is_the_mean_squared_distance_to_the_label():
    scores = torch.tensor([[0.0, 1.0], [2.0, 0.5]])
    assert losses.lsgan(scores, True).item() == pytest.approx((1 + 0 + 1 + 0.25) / 4)
    assert losses.lsgan(scores, False).item() == pytest.approx((0 + 1 + 4 + 0.25) / 4)


def test_feature_matching_sums_l1_over_all_layers_but_the_last():
    fake = [torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 3, 3), torch.full((1, 1, 1, 1), 9.0)]
    real = [torch.ones(1, 2, 2, 2), torch.ones(1, 1, 3, 3) * 3, torch.zeros(1, 1, 1, 1)]
    assert losses.feature_matching(fake, real).item() == pytest.approx(1.0 + 2.0)


def test_gradient_loss_compares_absolute_image_gradients():
    x = images()
    assert losses.gradient_loss(x, x).item() == 0
    assert losses.gradient_loss(x, -x).item() == 0  # |gradients| equal, signs differ
    assert losses.gradient_loss(x, torch.zeros_like(x)).item() > 0
    flat = torch.zeros(1, 3, 4, 4)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 3, 4, 4)
    # |dx| = 1 everywhere (48 values of 48), |dy| = 0: L1(0, 1) + L1(0, 0)
    assert losses.gradient_loss(ramp, flat).item() == pytest.approx(1.0)


def test_transformation_loss_ignores_colour_shifts_and_sums_over_k():
    target = images(2, 16)
    shifted = (0.5 * target + 0.2)[:, None]  # (N, K=1, 3, H, W): same picture, other brightness
    assert losses.transformation_loss(shifted, target).item() < 1e-4
    other = images(2, 16, seed=1)[:, None]
    one = losses.transformation_loss(other, target)
    three = losses.transformation_loss(other.expand(-1, 3, -1, -1, -1), target)
    assert one.item() > 0.1 and three.item() == pytest.approx(3 * one.item(), rel=1e-5)


def test_match_statistics_gives_the_reference_mean_and_std():
    x, reference = images(1, 16), images(1, 16, seed=2) * 0.3 + 0.1
    matched = losses.match_statistics(x, reference)
    assert torch.allclose(matched.mean(dim=(-2, -1)), reference.mean(dim=(-2, -1)), atol=1e-5)
    assert torch.allclose(matched.std(dim=(-2, -1)), reference.std(dim=(-2, -1)), atol=1e-4)


@pytest.mark.slow  # VGG-16 and VGG-19 (about 20 s)
def test_perceptual_loss_weights_relu_outputs():
    vgg = vision.random_vgg("vgg19")
    assert vgg.taps == (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
    assert vision.random_vgg("vgg16").taps == (1, 6, 11, 18, 25)
    x, y = images(1, 32), images(1, 32, seed=3)
    assert losses.perceptual(vgg, x, x).item() == 0
    features = [f.shape[1] for f in vgg(x)]
    assert features == [64, 128, 256, 512, 512]
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip(losses.VGG_LAYER_WEIGHTS, vgg(x), vgg(y)))
    assert losses.perceptual(vgg, x, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_combine_the_authors_terms():
    from tsnet_hf.modeling import TSNetOutput

    torch.manual_seed(0)
    d = discriminators.PatchDiscriminator(3 + 2)
    face_terms = losses.Losses("face", losses.LossWeights(), vgg=None)
    real, masks = images(2, 64), torch.zeros(2, 2, 64, 64)
    masks[:, 0] = 1
    fake = images(2, 64, seed=4).requires_grad_()
    output = TSNetOutput(image=fake, warped=fake.detach()[:, None])
    total, parts = face_terms.generator(d, None, output, real, masks, torch.zeros(2, 4))
    assert set(parts) == {"g", "gan", "fm", "tra", "grad"}
    assert total.item() == pytest.approx(sum(parts[k].item() for k in ("gan", "fm", "tra", "grad")), rel=1e-5)
    total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    d_total, d_parts = face_terms.discriminator(d, None, fake, real, masks, torch.zeros(2, 4))
    assert d_total.item() == pytest.approx(0.5 * (d_parts["d_real"] + d_parts["d_fake"]).item())
    body_terms = losses.Losses("body", losses.LossWeights(), vgg=None, face_size=32)
    face_d = discriminators.PatchDiscriminator(3)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 2)
    _, parts = body_terms.generator(d, face_d, output, real, masks, boxes)
    assert {"face_gan", "face_fm"} <= set(parts) and "grad" not in parts


# ----- discriminators -------------------------------------------------------------------------------------


def test_patch_discriminator_sees_70x70_patches():
    torch.manual_seed(0)
    d = discriminators.PatchDiscriminator(3, base=8)
    x = torch.zeros(1, 3, 140, 140, requires_grad=True)
    outputs = d(x)
    assert [o.shape[1] for o in outputs] == [8, 16, 32, 64, 1]
    assert outputs[-1].shape[-2:] == (15, 15)  # 140 / 8 - 2 (two stride-1 4x4 convs)
    for layer in d.layers[1:-1]:  # instance norm reaches every position through its statistics
        layer[1] = torch.nn.Identity()
    x = torch.randn(1, 3, 140, 140, requires_grad=True)
    d(x)[-1][0, 0, 7, 7].backward()
    support = x.grad[0].abs().sum(dim=0).nonzero()
    extent = support.max(dim=0).values - support.min(dim=0).values + 1
    assert extent.tolist() == [70, 70]


def test_crop_faces_cuts_and_resizes_boxes():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8).contiguous()
    whole = discriminators.crop_faces(x, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 8)
    assert torch.allclose(whole, x, atol=1e-5)
    quarter = discriminators.crop_faces(x, torch.tensor([[4.0, 0.0, 8.0, 4.0]]), 4)
    assert torch.allclose(quarter, x[..., :4, 4:], atol=1e-5)
    assert discriminators.face_crop_size(256) == 64 and discriminators.face_crop_size(64) == 32


# ----- ImageNet networks and their weight files --------------------------------------------------------------


def test_torchvision_imports_with_the_shim():
    tv = vision.import_torchvision()
    assert vision.import_torchvision() is tv
    assert hasattr(tv.models, "vgg19")


@pytest.mark.slow  # VGG-16 and VGG-19 (about 20 s)
def test_vgg_weight_file_errors_are_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist: give a safetensors file"):
        vision.load_vgg(tmp_path / "missing.safetensors")
    two = tmp_path / "two.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.2.weight": torch.zeros(64, 64, 3, 3)}, str(two))
    with pytest.raises(CheckpointError, match="has 2 conv layers"):
        vision.load_vgg(two)
    tv16 = vision.import_torchvision().models.vgg16(weights=None).features.state_dict()
    state = {f"features.{k}": v for k, v in tv16.items()}
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong))
    with pytest.raises(CheckpointError, match=r"features.0.weight has shape \(64, 3, 5, 5\)"):
        vision.load_vgg(wrong)
    text = tmp_path / "text.safetensors"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        vision.load_vgg(text)


def test_without_vgg_weights_the_error_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(vision, "host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(CheckpointError) as caught:
        vision.load_vgg("auto")
    message = str(caught.value)
    assert "--vgg-weights PATH" in message and "--no-vgg" in message


@pytest.mark.shared
def test_local_vgg16_weights_load(shared_dir):
    vgg = vision.load_vgg(shared_dir / "weights" / "vgg16_imagenet_features.safetensors")
    assert vgg.name.startswith("vgg16") and vgg.taps == (1, 6, 11, 18, 25)
    assert not any(p.requires_grad for p in vgg.parameters())
    x = images(1, 64)
    assert losses.perceptual(vgg, x, x.flip(-1)).item() > 0


# ----- LPIPS ------------------------------------------------------------------------------------------------


def test_lpips_is_zero_for_equal_images_and_symmetric(tmp_path):
    metric = lpips.load_lpips(*random_lpips_files(tmp_path))
    x, y = images(2, 64), images(2, 64, seed=5)
    assert metric(x, x).abs().max().item() < 1e-6
    assert torch.allclose(metric(x, y), metric(y, x), atol=1e-6)
    assert (metric(x, y) > 0).all() and metric(x, y).shape == (2,)


def test_lpips_weight_errors(tmp_path):
    alexnet, _ = random_lpips_files(tmp_path)
    bad = tmp_path / "bad.safetensors"
    save_file({f"lin{i}.model.1.weight": torch.rand(1, 7, 1, 1) for i in range(5)}, str(bad))
    with pytest.raises(CheckpointError, match=r"has shape \(1, 7, 1, 1\), expected \(1, 64, 1, 1\)"):
        lpips.load_lpips(alexnet, bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        lpips.load_lpips(alexnet, tmp_path / "missing.safetensors")


@pytest.mark.shared
def test_lpips_matches_the_lpips_package(shared_dir):
    vision.import_torchvision()  # the shim first: lpips imports torchvision
    reference_package = pytest.importorskip("lpips")
    weights = shared_dir / "weights"
    ours = lpips.load_lpips(
        weights / "alexnet_imagenet_features.safetensors", weights / "lpips_v0.1_lin_alex.safetensors"
    )
    theirs = reference_package.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    from safetensors.torch import load_file

    trunk = load_file(str(weights / "alexnet_imagenet_features.safetensors"))
    slices = {1: range(2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}
    state = {}
    for number, indices in slices.items():
        for index in indices:
            for kind in ("weight", "bias"):
                if f"features.{index}.{kind}" in trunk:
                    state[f"net.slice{number}.{index}.{kind}"] = trunk[f"features.{index}.{kind}"]
    for key, value in load_file(str(weights / "lpips_v0.1_lin_alex.safetensors")).items():
        state[key] = state[key.replace("lin", "lins.", 1)] = value  # lins is a list of the same layers
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("scaling_layer") for k in missing)
    rng = np.random.default_rng(0)
    for size in (64, 128):
        x = torch.from_numpy(rng.uniform(-1, 1, (3, 3, size, size)).astype(np.float32))
        y = (x + torch.from_numpy(rng.normal(0, 0.3, x.shape).astype(np.float32))).clamp(-1, 1)
        with torch.no_grad():
            expected = theirs(x, y).flatten()
            got = ours(x, y)
        assert (got - expected).abs().max().item() < 1e-5, (got, expected)
