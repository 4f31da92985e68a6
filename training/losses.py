"""Losses of TS-Net training: paper eq. (3)-(7) with the weights of the authors' code.

Generator, per generated frame x^ with ground truth x and driving mask z:
    L_G = L_GAN + 10 L_FM + 10 L_VGG + L_TRA  (+ 10 L_grad for faces)
          (+ for bodies: L_GAN + 10 L_FM + 10 L_VGG of the face discriminator on face crops)
    L_GAN   LSGAN: mean (D(z, x^) - 1)^2 over the patch scores
    L_FM    sum over the discriminator's intermediate layers of L1(D_i(z, x^), D_i(z, x))   (eq. 6)
    L_VGG   sum over relu1_1..relu5_1 of w_i L1(F_i(x^), F_i(x)), w = 1/32, 1/16, 1/8, 1/4, 1 (eq. 5)
    L_TRA   sum over the K patch-warped subject frames x^t_k of 10 L1(x^t_k, x), after giving x^t_k
            the per-channel mean and std of x (as the authors: the warp moves patches, it cannot
            fix a lighting change between segments)                                  (eq. 7)
    L_grad  L1(|dx x|, |dx x^|) + L1(|dy x|, |dy x^|), image gradients (the authors' face loss)
Discriminator: 0.5 ((D(z, x) - 1)^2 + D(z, x^)^2), same for the face discriminator.
L1 is a mean over elements, as torch's l1_loss.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .discriminators import crop_faces

VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


@dataclass
class LossWeights:
    """Balancing factors of eq. (3); the defaults are the authors' (alpha = beta = lambda = 10)."""

    gan: float = 1.0
    feature_matching: float = 10.0
    perceptual: float = 10.0
    transformation: float = 10.0
    gradient: float = 10.0  # faces only (the authors' face model); ignored for bodies
    face: float = 1.0  # bodies only: weight of the face discriminator's GAN + FM + VGG terms
    l1: float = 0.0  # pixel L1 of the output (not in the paper; CPU recipes use it)


def lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (scores - 1)^2 for `real`, mean scores^2 otherwise."""
    scores = scores.float()
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def feature_matching(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Eq. (6): sum of L1 distances between the discriminator's intermediate outputs (last excluded)."""
    return sum(F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake[:-1], real[:-1]))


def perceptual(vgg, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (5): weighted L1 between VGG features of (N, 3, H, W) images in [-1, 1]."""
    with torch.no_grad():
        target_features = vgg(target)
    output_features = vgg(output)
    return sum(
        w * F.l1_loss(o.float(), t.float()) for w, o, t in zip(VGG_LAYER_WEIGHTS, output_features, target_features)
    )


def match_statistics(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give each image of (..., 3, H, W) the per-channel mean and std of `reference` (same shape or
    broadcastable). Standard deviations are unbiased, as torch.std (and the authors)."""
    dims = (-2, -1)
    mean, std = images.mean(dim=dims, keepdim=True), images.std(dim=dims, keepdim=True)
    ref_mean, ref_std = reference.mean(dim=dims, keepdim=True), reference.std(dim=dims, keepdim=True)
    return (images - mean) / (std + 1e-6) * ref_std + ref_mean


def transformation_loss(warped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (7) summed over K: warped (N, K, 3, H, W) patch-warped subject frames, target (N, 3, H, W).
    Returns the unweighted sum over k of L1(match_statistics(x^t_k, x), x)."""
    warped, target = warped.float(), target.float()
    matched = match_statistics(warped, target[:, None])
    return (matched - target[:, None]).abs().mean(dim=(0, 2, 3, 4)).sum()


def gradient_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the absolute horizontal and vertical image gradients of (N, 3, H, W) images."""
    output, target = output.float(), target.float()
    dx = lambda x: x[..., :, :-1] - x[..., :, 1:]  # noqa: E731
    dy = lambda x: x[..., :-1, :] - x[..., 1:, :]  # noqa: E731
    return F.l1_loss(dx(output).abs(), dx(target).abs()) + F.l1_loss(dy(output).abs(), dy(target).abs())


def _both(discriminator, fake: torch.Tensor, real: torch.Tensor):
    """One discriminator pass over fake and real together (instance norm is per sample, so this
    equals two passes; one pass keeps DistributedDataParallel to one forward per backward)."""
    outputs = discriminator(torch.cat([fake, real]))
    return [o.chunk(2)[0] for o in outputs], [o.chunk(2)[1] for o in outputs]


class Losses:
    """Generator and discriminator objectives of one training step.

    Args:
        mode: "face" (adds the gradient loss) or "body" (adds the face discriminator's terms).
        weights: LossWeights.
        vgg: a VGGFeatures (training/vision.py), or None to train without the perceptual loss.
        face_size: side of the face crops for the face discriminator (bodies).
    The discriminators are passed to each call, so that the caller can hand the wrapped
    (DistributedDataParallel) modules to the discriminator step and the plain ones to the
    generator step, where their weights are frozen.
    """

    def __init__(self, mode: str, weights: LossWeights, vgg=None, face_size: int = 64):
        self.mode, self.weights, self.vgg, self.face_size = mode, weights, vgg, face_size

    def _conditioned(self, images, masks):
        return torch.cat([masks.to(images.dtype), images], dim=1)

    def discriminator(self, discriminator, face_discriminator, fake, real, masks, face_boxes):
        """D loss for (N, 3, H, W) fake (detached inside) and real frames, (N, C, H, W) masks and
        (N, 4) face boxes. Returns (scalar loss, dict of floats for logging)."""
        fake = fake.detach()
        fake_out, real_out = _both(discriminator, self._conditioned(fake, masks), self._conditioned(real, masks))
        d_fake, d_real = lsgan(fake_out[-1], False), lsgan(real_out[-1], True)
        total = 0.5 * (d_fake + d_real)
        parts = {"d_real": d_real, "d_fake": d_fake}
        if face_discriminator is not None:
            fake_faces = crop_faces(fake, face_boxes, self.face_size)
            real_faces = crop_faces(real, face_boxes, self.face_size)
            face_fake_out, face_real_out = _both(face_discriminator, fake_faces, real_faces)
            parts["df_fake"], parts["df_real"] = lsgan(face_fake_out[-1], False), lsgan(face_real_out[-1], True)
            total = total + 0.5 * (parts["df_fake"] + parts["df_real"])
        return total, {"d": total.detach(), **{k: v.detach() for k, v in parts.items()}}

    def generator(self, discriminator, face_discriminator, output, real, masks, face_boxes, adversarial=True):
        """G loss for a TSNetOutput against (N, 3, H, W) real frames. Returns (loss, parts).
        adversarial=False leaves out every discriminator term (a reconstruction warm-up)."""
        w = self.weights
        fake = output.image
        parts = {}
        if adversarial:
            fake_out, real_out = _both(discriminator, self._conditioned(fake, masks), self._conditioned(real, masks))
            parts = {
                "gan": w.gan * lsgan(fake_out[-1], True),
                "fm": w.feature_matching * feature_matching(fake_out, real_out),
            }
        if w.l1:
            parts["l1w"] = w.l1 * F.l1_loss(fake.float(), real.float())
        if self.vgg is not None and w.perceptual:
            parts["vgg"] = w.perceptual * perceptual(self.vgg, fake, real)
        if output.warped is not None and w.transformation:
            parts["tra"] = w.transformation * transformation_loss(output.warped, real)
        if self.mode == "face" and w.gradient:
            parts["grad"] = w.gradient * gradient_loss(fake, real)
        if face_discriminator is not None and w.face and adversarial:
            parts.update(self._face_terms(face_discriminator, fake, real, face_boxes))
        total = sum(parts.values())
        return total, {"g": total.detach(), **{k: v.detach() for k, v in parts.items()}}

    def _face_terms(self, face_discriminator, fake, real, face_boxes) -> dict:
        w = self.weights
        fake_faces = crop_faces(fake, face_boxes, self.face_size)
        real_faces = crop_faces(real, face_boxes, self.face_size)
        fake_out, real_out = _both(face_discriminator, fake_faces, real_faces)
        terms = {
            "face_gan": w.face * w.gan * lsgan(fake_out[-1], True),
            "face_fm": w.face * w.feature_matching * feature_matching(fake_out, real_out),
        }
        if self.vgg is not None and w.perceptual:
            terms["face_vgg"] = w.face * w.perceptual * perceptual(self.vgg, fake_faces, real_faces)
        return terms
