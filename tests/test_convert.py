"""Converting the authors' checkpoints: a random model in their key layout, their forward re-done here."""

import collections

import pytest
import torch
import torch.nn.functional as F

from tsnet_hf import CheckpointError, TSNet, tiny_config
from tsnet_hf.config import AUTHORS_FACE_MEAN_BGR
from tsnet_hf.convert import authors_key_map, main, read_authors_checkpoint

from helpers import random_masks

STEPS = 3


def authors_checkpoint(config, seed=0):
    """A random checkpoint in the authors' layout: {"img_enc": {...}, "lbl_enc", "fuse_net", "dec"}."""
    torch.manual_seed(seed)
    ours = TSNet(config).state_dict()
    checkpoint = collections.defaultdict(collections.OrderedDict)
    for theirs, mine in authors_key_map(config).items():
        part, key = theirs.split(".", 1)
        checkpoint[part][key] = torch.randn_like(ours[mine]) * (0.2 if mine.endswith("weight") else 0.05)
    return dict(checkpoint)


# ----- the authors' forward pass, written from their code's description, on their key names -------


def norm_relu(x, relu=True):
    x = F.instance_norm(x)
    return F.relu(x) if relu else x


def conv(state, key, x, stride=1, padding=0):
    return F.conv2d(x, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride, padding=padding)


def res_block(state, key, x):
    y = norm_relu(conv(state, f"{key}.conv_block.1", F.pad(x, (1,) * 4, mode="reflect")))
    y = norm_relu(conv(state, f"{key}.conv_block.5", F.pad(y, (1,) * 4, mode="reflect")), relu=False)
    return x + y


def add_coords(x):
    b, _, h, w = x.shape
    xx = (torch.arange(w).float() / (w - 1) * 2 - 1).view(1, 1, 1, w).expand(b, 1, h, w)
    yy = (torch.arange(h).float() / (h - 1) * 2 - 1).view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat([x, xx, yy, torch.sqrt(xx**2 + yy**2)], dim=1)


def encoder(state, x, blocks):
    x = norm_relu(conv(state, "model.1", F.pad(add_coords(x), (3,) * 4, mode="reflect")))
    for i in range(STEPS):
        x = norm_relu(conv(state, f"model.{4 + 3 * i}", x, stride=2, padding=1))
    for j in range(blocks):
        x = res_block(state, f"model.{4 + 3 * STEPS + j}", x)
    return x


def decoder(state, prop, syn, blocks):
    x = conv(state, "map_conv", torch.cat([prop, syn], dim=1))
    for j in range(blocks):
        x = res_block(state, f"model{j}.0", x)
    for i in range(STEPS):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = norm_relu(conv(state, f"model{blocks + i}.2", F.pad(x, (1,) * 4, mode="reflect")))
    return torch.tanh(conv(state, f"model{blocks + STEPS}.1", F.pad(x, (3,) * 4, mode="reflect")))


def authors_forward(checkpoint, config, src_imgs, src_lbls, src_bboxes, tar_lbl, tar_bbox):
    """Their TSNet.forward at test time: images are BGR minus mean / 255, bboxes are 0/1 pixel maps."""
    img_enc, lbl_enc, fuse, dec = (checkpoint[k] for k in ("img_enc", "lbl_enc", "fuse_net", "dec"))
    src_feas = [
        encoder(img_enc, torch.cat([img, lbl], dim=1), config.encoder_blocks) for img, lbl in zip(src_imgs, src_lbls)
    ]
    tar_fea = encoder(lbl_enc, tar_lbl, 0)
    b, c, h, w = tar_fea.shape
    tar_norm = F.normalize(tar_fea, dim=1).view(b, c, h * w).transpose(1, 2)
    tar_box = F.interpolate(tar_bbox, (h, w), mode="nearest").view(b, 1, h * w).transpose(1, 2)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"), -1)
    grid = grid.flip(-1).view(1, h * w, 2)
    warped = []
    for fea, bbox in zip(src_feas, src_bboxes):
        src_norm = F.normalize(fea, dim=1).view(b, c, h * w)
        src_box = F.interpolate(bbox, (h, w), mode="nearest").view(b, 1, h * w)
        inside = torch.bmm(tar_norm * tar_box, src_norm * src_box)
        outside = torch.bmm(tar_norm * (1 - tar_box), src_norm * (1 - src_box))
        weights = F.softmax(100 * (inside + outside), dim=2)
        warp_grid = torch.matmul(weights, grid).view(b, h, w, 2)
        warped.append(F.grid_sample(fea, warp_grid, align_corners=False))
    prop = torch.stack(warped, dim=1).mean(dim=1)
    syns = []
    for fea in src_feas:
        x = torch.cat([fea, tar_fea], dim=1)
        for j in range(config.fusion_blocks):
            x = res_block(fuse, f"model.{j}", x)
        syns.append(conv(fuse, "conv", x))
    syn = torch.stack(syns, dim=1).mean(dim=1)
    return decoder(dec, prop, syn, config.decoder_blocks)


def box_map(box, size):
    """Their 0/1 bounding-box map: pixel centres inside (x0, y0, x1, y1)."""
    centres = torch.arange(size).float() + 0.5
    x0, y0, x1, y1 = box
    inside_x = (centres >= x0) & (centres <= x1)
    inside_y = (centres >= y0) & (centres <= y1)
    return (inside_y[:, None] & inside_x[None, :]).float()[None, None]


def test_converted_weights_reproduce_the_authors_outputs(tmp_path):
    config = tiny_config("face", image_size=64, base_channels=8, encoder_blocks=2, decoder_blocks=2, fusion_blocks=1)
    checkpoint = authors_checkpoint(config)
    path = tmp_path / "BranchGAN_S063000.pth"
    torch.save({**checkpoint, "netD": {"w": torch.zeros(1)}}, path)
    assert main([str(path), str(tmp_path / "converted")]) == 0
    model = TSNet.from_pretrained(tmp_path / "converted")
    assert model.config.authors_compat and model.config.encoder_blocks == 2 and model.config.decoder_blocks == 2
    assert model.config.mask_channels == 2 and model.config.base_channels == 8

    generator = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 3, 3, 64, 64, generator=generator) * 2 - 1  # RGB in [-1, 1]
    masks = random_masks(1, 3, channels=2, size=64, seed=2)
    driving = random_masks(1, channels=2, size=64, seed=5)
    subject_boxes = torch.tensor([[[8.0, 4.0, 40.0, 44.0], [16.0, 8.0, 56.0, 60.0], [0.0, 0.0, 30.0, 30.0]]])
    driving_boxes = torch.tensor([[10.0, 12.0, 50.0, 48.0]])
    with torch.no_grad():
        ours = model(frames, masks, driving, subject_boxes, driving_boxes).image

        mean = torch.tensor(AUTHORS_FACE_MEAN_BGR).view(1, 3, 1, 1) / 255
        their_imgs = [((frames[:, k] + 1) / 2).flip(1) - mean for k in range(3)]
        theirs = authors_forward(
            checkpoint,
            config,
            their_imgs,
            [masks[:, k] for k in range(3)],
            [box_map(b, 64) for b in subject_boxes[0]],
            driving,
            box_map(driving_boxes[0], 64),
        )
        theirs_rgb = ((theirs + mean).clamp(0, 1) * 2 - 1).flip(1)
    assert theirs_rgb.std() > 0.05  # a real image, not a constant
    # float32 rounding only: our fusion conv is split in two sums (see FusionNet)
    assert (ours - theirs_rgb).abs().max() < 5e-4 and (ours - theirs_rgb).abs().mean() < 1e-5


def test_conversion_refuses_other_files(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this code must never run",))

    torch.save({"img_enc": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_authors_checkpoint(tmp_path / "evil.pth")
    torch.save({"model": {}}, tmp_path / "other.pth")
    assert main([str(tmp_path / "other.pth"), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "out")]) == 1
