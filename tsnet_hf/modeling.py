"""The TS-Net generator (paper section 3.1, Fig. 2) as a Hugging Face Hub model.

Tensor contract (all methods):
    subject frames   (B, K, 3, H, W) float, RGB in [-1, 1]
    subject masks    (B, K, C, H, W) float one-hot (C = config.mask_channels, channel 0 background)
    driving masks    (N, C, H, W) float one-hot
    boxes            (..., 4) float (x0, y0, x1, y1) in pixels; derived from the masks when None
H and W must be multiples of 2 ** config.num_downsamples (the paper: 256 x 256).

Two-step inference encodes a subject once: `memory = model.encode_subject(frames, masks)` then
`model.generate(memory, driving_masks)` for any number of driving masks. `forward` does both (training).
"""

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from .config import TSNetConfig
from .errors import InputError
from .hub import PAPER_URL, REPO_URL, load_checkpoint, render_model_card
from .similarity import box_membership, boxes_from_masks, sampling_grid


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A conv with 'same' padding for odd kernels at stride 1, halving at stride 2 (zero padding)."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)


class ResBlock(nn.Module):
    """Residual block of Johnson et al. as the authors use it: no ReLU after the addition."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            nn.InstanceNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    """Stem (reflect-pad, 7x7 conv), stride-2 downsamplings, residual blocks; IN + ReLU throughout."""

    def __init__(self, in_channels: int, base: int, num_downsamples: int, num_blocks: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base, 7), nn.InstanceNorm2d(base), nn.ReLU(inplace=True)
        )
        widths = [base * 2**i for i in range(num_downsamples + 1)]
        self.down = nn.Sequential(
            *[
                nn.Sequential(conv(c_in, c_out, 3, stride=2), nn.InstanceNorm2d(c_out), nn.ReLU(inplace=True))
                for c_in, c_out in zip(widths[:-1], widths[1:])
            ]
        )
        self.blocks = nn.Sequential(*[ResBlock(widths[-1]) for _ in range(num_blocks)])

    def forward(self, x):
        return self.blocks(self.down(self.stem(x)))


class FusionNet(nn.Module):
    """Synthesis branch Lambda: concat(subject feature, driving feature) -> res blocks -> 1x1 conv.

    The first conv of the first block is linear in concat(e_k, f), so it splits into a subject half,
    computed once per subject frame (`subject_part`, kept in the SubjectMemory), and a driving half,
    computed once per driving frame instead of once per (driving, subject) pair. Same numbers as the
    authors' network; at K = 3 it saves 13 of the fusion network's 59 GMAC per frame.
    """

    def __init__(self, dim: int, num_blocks: int):
        super().__init__()
        self.dim = dim
        self.blocks = nn.Sequential(*[ResBlock(2 * dim) for _ in range(num_blocks)])
        self.proj = nn.Conv2d(2 * dim, dim, 1)

    def subject_part(self, subject_features: torch.Tensor) -> torch.Tensor | None:
        """(M, D, h, w) -> (M, 2D, h, w): the subject half of the first conv (None without blocks)."""
        if len(self.blocks) == 0:
            return None
        weight = self.blocks[0].body[1].weight[:, : self.dim]
        return F.conv2d(F.pad(subject_features, (1, 1, 1, 1), mode="reflect"), weight)

    def forward(self, subject_features, driving_features, subject_part=None):
        """subject_features (Ns, K, D, h, w), driving_features (N, D, h, w), subject_part
        (Ns, K, 2D, h, w) from `subject_part` (None: the plain, unsplit computation); Ns = N or 1.
        Returns (N, K, D, h, w)."""
        num, frames_per = driving_features.shape[0], subject_features.shape[1]
        both = torch.cat(
            [
                subject_features.expand(num, -1, -1, -1, -1),
                driving_features[:, None].expand(-1, frames_per, -1, -1, -1),
            ],
            dim=2,
        ).flatten(0, 1)
        blocks = list(self.blocks)
        if blocks and subject_part is not None:
            first = blocks.pop(0)
            conv1 = first.body[1]
            driving_part = F.conv2d(
                F.pad(driving_features, (1, 1, 1, 1), mode="reflect"), conv1.weight[:, self.dim :], conv1.bias
            )  # (N, 2D, h, w)
            summed = (subject_part + driving_part[:, None]).flatten(0, 1)  # (N*K, 2D, h, w)
            both = both + first.body[2:](summed)
        for block in blocks:
            both = block(both)
        fused = self.proj(both)
        return fused.reshape(num, frames_per, *fused.shape[1:])


class Decoder(nn.Module):
    """Omega_dec: optional 1x1 input projection, res blocks, bilinear x2 + conv upsamplings, 7x7 conv, tanh."""

    def __init__(self, in_channels: int, base: int, num_downsamples: int, num_blocks: int):
        super().__init__()
        dim = base * 2**num_downsamples
        self.proj = nn.Conv2d(in_channels, dim, 1) if in_channels != dim else nn.Identity()
        self.blocks = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])
        widths = [base * 2**i for i in range(num_downsamples, -1, -1)]
        self.up = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(c_in, c_out, 3),
                    nn.InstanceNorm2d(c_out),
                    nn.ReLU(inplace=True),
                )
                for c_in, c_out in zip(widths[:-1], widths[1:])
            ]
        )
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(base, 3, 7), nn.Tanh())

    def forward(self, x):
        return self.head(self.up(self.blocks(self.proj(x))))


@dataclass
class SubjectMemory:
    """What `encode_subject` keeps of a subject so driving frames never re-encode it.

    Attributes:
        features: (B, K, D, h, w) image-encoder features e_k.
        inside: (B, K, h*w) bool, feature cells inside each subject frame's box.
        frames: (B, K, 3, H, W) the subject frames (RGB, [-1, 1]) for the patch-wise warp x^t.
        fusion_part: (B, K, 2D, h, w) the subject half of the fusion network's first conv, or None.
        masks: (B, K, C, H, W) the subject masks (one-hot), kept for the blend path's scores.
    """

    features: torch.Tensor
    inside: torch.Tensor
    frames: torch.Tensor
    fusion_part: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def apply(self, function) -> "SubjectMemory":
        """A memory of `function(tensor)` for every tensor field (a field that is None stays None)."""
        return SubjectMemory(
            **{f.name: None if getattr(self, f.name) is None else function(getattr(self, f.name)) for f in fields(self)}
        )

    def select(self, choices: torch.Tensor) -> "SubjectMemory":
        """A pool memory (B = 1, K = S frames) and (N, K') pool rows -> N subject sets of K' frames."""
        choices = choices.to(self.features.device)
        return self.apply(lambda tensor: tensor[0][choices])

    @property
    def num_subjects(self) -> int:
        return self.features.shape[0]

    @property
    def num_frames(self) -> int:
        return self.features.shape[1]


@dataclass
class TSNetOutput:
    """Output of `generate` / `forward` for N driving masks and K subject frames.

    Attributes:
        image: (N, 3, H, W) the generated frames x^, RGB in [-1, 1].
        grid: (N, K, h, w, 2) sampling grids G'_k, (x, y) in [-1, 1] (grid_sample,
            align_corners=False); None for a synthesis-only model.
        warped: (N, K, 3, H, W) the patch-wise warped subject frames x^t of L_TRA
            (sections 3.1-3.2), RGB in [-1, 1]; None for a synthesis-only model.
        alpha: (N, 1, h, w) matting weight of the transformation branch (combine="matting"), else None.
        sharp: (N, 3, H, W) output="blend" only: the subject pixels warped by the upsampled grid
            and combined over K with `frame_weights`, RGB in [-1, 1]; else None.
        blend_mask: (N, 1, H, W) output="blend" only: weight of `sharp` in the output, in [0, 1]
            (image = blend_mask * sharp + (1 - blend_mask) * decoded).
        frame_weights: (N, K, H, W) output="blend" only: per-pixel weights of the K warped frames
            (sum 1 over K).
        decoded: (N, 3, H, W) output="blend" only: the decoder's frame before blending.
        unclamped: (N, 3, H, W) authors_compat only: `image` before its clamp to [-1, 1] (RGB),
            what the authors' demo renormalises in colour (see runner.authors_pictures).
    """

    image: torch.Tensor
    grid: torch.Tensor | None = None
    warped: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    sharp: torch.Tensor | None = None
    blend_mask: torch.Tensor | None = None
    frame_weights: torch.Tensor | None = None
    decoded: torch.Tensor | None = None
    unclamped: torch.Tensor | None = None


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C + 3, H, W) with x, y in [-1, 1] (linspace, as the authors) and r."""
    batch, _, height, width = x.shape
    ys = torch.linspace(-1.0, 1.0, height, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    radius = torch.sqrt(grid_x**2 + grid_y**2)
    coords = torch.stack([grid_x, grid_y, radius])[None].expand(batch, -1, -1, -1)
    return torch.cat([x, coords], dim=1)


def patch_warp(frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Patch-wise warp x^t: move each stride x stride patch of the subject frames with the grid.

    Args:
        frames: (Ns, K, 3, H, W) subject frames; Ns = N or 1.
        grid: (N, K, h, w, 2) sampling grids.
    Returns:
        (N, K, 3, H, W) warped frames.
    """
    num, frames_per, h, w, _ = grid.shape
    height, width = frames.shape[-2:]
    sy, sx = height // h, width // w
    # Unfold into one (3 * sy * sx)-channel vector per feature cell: (Ns, K, 3*sy*sx, h, w).
    patches = frames.reshape(*frames.shape[:2], 3, h, sy, w, sx).permute(0, 1, 2, 4, 6, 3, 5)
    patches = patches.reshape(frames.shape[0], frames_per, 3 * sy * sx, h, w)
    patches = patches.expand(num, -1, -1, -1, -1).reshape(num * frames_per, 3 * sy * sx, h, w)
    moved = F.grid_sample(
        patches,
        grid.reshape(num * frames_per, h, w, 2).to(patches.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    moved = moved.reshape(num, frames_per, 3, sy, sx, h, w).permute(0, 1, 2, 5, 3, 6, 4)
    return moved.reshape(num, frames_per, 3, height, width)


def dense_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w, 2) cell-centre grids -> (N, K, H, W, 2), upsampled bilinearly (align_corners=False,
    the grid's own convention, so an identity grid stays an identity warp away from the borders)."""
    num, frames_per, h, w, _ = grid.shape
    planes = grid.reshape(num * frames_per, h, w, 2).permute(0, 3, 1, 2)  # (N*K, 2, h, w)
    dense = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)
    return dense.permute(0, 2, 3, 1).reshape(num, frames_per, *size, 2)


def pixel_warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Warp (Ns, K, c, H, W) subject images (Ns = N or 1) with (N, K, h, w, 2) grids upsampled to
    H x W: a smooth warp of every pixel, unlike the patch-wise x^t. Returns (N, K, c, H, W);
    positions sampled outside the image get zeros."""
    num, frames_per = grid.shape[:2]
    height, width = images.shape[-2:]
    dense = dense_grid(grid.float(), (height, width)).reshape(num * frames_per, height, width, 2)
    source = images.expand(num, -1, -1, -1, -1).reshape(num * frames_per, *images.shape[2:])
    moved = F.grid_sample(source, dense.to(source.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.reshape(num, frames_per, *moved.shape[1:])


def _head(in_channels: int, width: int, out_channels: int) -> nn.Sequential:
    """Three 3x3 convs at full resolution: the blend path's small per-pixel predictors."""
    return nn.Sequential(
        conv(in_channels, width, 3),
        nn.ReLU(inplace=True),
        conv(width, width, 3),
        nn.ReLU(inplace=True),
        conv(width, out_channels, 3),
    )


class BlendHead(nn.Module):
    """The pixel-space output path (config.output = "blend", beyond the paper).

    The transformation branch's grid, upsampled to the frame size, warps the subject pixels (and
    masks); `frame_scores` rates each warped frame per pixel from what it shows and how well its
    warped mask agrees with the driving mask, a softmax over K turns the scores into weights
    ("mean" weights: 1/K), and `mask` predicts where the combined warp replaces the decoder's frame.
    Why: at CPU training budgets the decoder alone stays a blur (issue 12's measurements); copying
    warped pixels is sharp from the first step and the decoder only has to fill what they miss.
    """

    # Per frame k: warped RGB (3), decoded RGB (3), mask agreement, warped foreground, driving
    # foreground, inside-the-image flag (1 each).
    SCORE_INPUTS = 10
    # Combined warp (3), decoded (3), driving foreground, weighted agreement, weighted inside flag.
    MASK_INPUTS = 9

    def __init__(self, width: int, learned_weights: bool):
        super().__init__()
        self.frame_scores = _head(self.SCORE_INPUTS, width, 1) if learned_weights else None
        self.mask = _head(self.MASK_INPUTS, width, 1)

    def forward(
        self,
        decoded: torch.Tensor,
        subject_frames: torch.Tensor,
        subject_masks: torch.Tensor,
        grid: torch.Tensor,
        driving_masks: torch.Tensor,
    ) -> dict:
        """decoded (N, 3, H, W), subject frames (Ns, K, 3, H, W) and one-hot masks (Ns, K, C, H, W),
        grid (N, K, h, w, 2), driving masks (N, C, H, W). Returns the TSNetOutput blend fields."""
        num, frames_per = grid.shape[:2]
        ones = subject_frames.new_ones(*subject_frames.shape[:2], 1, *subject_frames.shape[-2:])
        stacked = torch.cat([subject_frames, subject_masks.to(subject_frames.dtype), ones], dim=2)
        moved = pixel_warp(stacked, grid)  # (N, K, 3 + C + 1, H, W)
        pixels, masks, inside = moved[:, :, :3], moved[:, :, 3:-1], moved[:, :, -1:]
        driving = driving_masks.to(pixels.dtype)[:, None]  # (N, 1, C, H, W)
        agreement = (masks * driving).sum(dim=2, keepdim=True)  # (N, K, 1, H, W)
        driving_fg = 1 - driving[:, :, :1]
        if self.frame_scores is None:
            weights = pixels.new_full((num, frames_per, 1, *pixels.shape[-2:]), 1.0 / frames_per)
        else:
            per_frame = torch.cat(
                [
                    pixels,
                    decoded[:, None].expand(-1, frames_per, -1, -1, -1),
                    agreement,
                    1 - masks[:, :, :1],
                    driving_fg.expand(-1, frames_per, -1, -1, -1),
                    inside,
                ],
                dim=2,
            )
            scores = self.frame_scores(per_frame.flatten(0, 1)).reshape(num, frames_per, 1, *pixels.shape[-2:])
            weights = torch.softmax(scores.float(), dim=1).to(pixels.dtype)
        sharp = (weights * pixels).sum(dim=1)
        mask_in = torch.cat(
            [sharp, decoded, driving_fg[:, 0], (weights * agreement).sum(dim=1), (weights * inside).sum(dim=1)], dim=1
        )
        blend_mask = torch.sigmoid(self.mask(mask_in).float()).to(sharp.dtype)
        image = blend_mask * sharp + (1 - blend_mask) * decoded
        return {
            "image": image,
            "sharp": sharp,
            "blend_mask": blend_mask,
            "frame_weights": weights[:, :, 0],
            "decoded": decoded,
        }


class TSNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="tsnet-hf",
    tags=["motion-retargeting", "face-reenactment", "pose-transfer", "video-generation", "tsnet"],
    license="mit",
    repo_url=REPO_URL,
    paper_url=PAPER_URL,
    pipeline_tag="image-to-video",
):
    """TS-Net generator: transformation branch + synthesis branch + decoder.

    Build with a `TSNetConfig` (default: the authors' face model, 86.0 M parameters), load with
    `TSNet.from_pretrained(folder_or_hub_id)`, save with `save_pretrained(folder)`.
    See the module docstring for the tensor contract.
    """

    def __init__(self, config: TSNetConfig = None):
        super().__init__()
        config = TSNetConfig() if config is None else config
        if not isinstance(config, TSNetConfig):
            raise InputError(f"TSNet expects a TSNetConfig, got {type(config).__name__}.")
        self.config = config
        self._hub_mixin_config = config  # what save_pretrained writes as config.json
        dim, coords = config.feature_channels, 3 if config.coord_conv else 0
        args = (config.base_channels, config.num_downsamples)
        self.image_encoder = Encoder(3 + config.mask_channels + coords, *args, config.encoder_blocks)
        self.mask_encoder = Encoder(config.mask_channels + coords, *args, 0)
        self.fusion = FusionNet(dim, config.fusion_blocks) if "s" in config.branches else None
        both = config.branches == "ts"
        self.matting = nn.Conv2d(2 * dim, 1, 3, padding=1) if both and config.combine == "matting" else None
        decoder_in = 2 * dim if both and config.combine == "concat" else dim
        self.decoder = Decoder(decoder_in, *args, config.decoder_blocks)
        self.blend = (
            BlendHead(config.blend_channels, config.frame_weights == "learned") if config.output == "blend" else None
        )
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02):
        """Normal(0, 0.02) conv weights and zero biases, as pix2pixHD and the authors."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)

    # ----- inputs ---------------------------------------------------------------------------

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        return coord_channels(x) if self.config.coord_conv else x

    def _to_model_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1] -> what the network was trained on (authors: BGR minus mean, / 255)."""
        if not self.config.authors_compat:
            return frames
        mean = frames.new_tensor(self.config.authors_mean_bgr).view(3, 1, 1) / 255.0
        return (frames.flip(-3) + 1) / 2 - mean

    def _from_model_pixels(self, image: torch.Tensor) -> torch.Tensor:
        """The decoder's output -> RGB, unclamped (authors: BGR minus mean / 255, which leaves [-1, 1])."""
        if not self.config.authors_compat:
            return image
        mean = image.new_tensor(self.config.authors_mean_bgr).view(3, 1, 1) / 255.0
        return ((image + mean) * 2 - 1).flip(-3)

    def _inside(self, masks: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
        if boxes is None:
            boxes = boxes_from_masks(masks, self.config.box_margin)
        stride = 2**self.config.num_downsamples
        size = (masks.shape[-2] // stride, masks.shape[-1] // stride)
        return box_membership(boxes, masks.shape[-2:], size, authors=self.config.authors_compat)

    # ----- inference ------------------------------------------------------------------------

    def _encode(self, encoder: nn.Module, x: torch.Tensor, fp32: bool) -> torch.Tensor:
        """encoder(x), in float32 whatever the autocast when `fp32`: the similarity's tau = 100
        turns bf16 rounding of the features into grid errors (docs/benchmarks.md, issue 17)."""
        if not fp32:
            return encoder(x)
        with torch.autocast(x.device.type, enabled=False):
            return encoder(x.float())

    def encode_subject(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        boxes: torch.Tensor | None = None,
        precompute_fusion: bool = True,
        fp32_encoders: bool = False,
    ) -> SubjectMemory:
        """Encode K subject frames once.

        Args:
            frames: (B, K, 3, H, W) RGB in [-1, 1].
            masks: (B, K, C, H, W) one-hot.
            boxes: (B, K, 4) mask-aware boxes in pixels (x0, y0, x1, y1), or None to derive them.
            precompute_fusion: also compute the subject half of the fusion network's first conv
                (see FusionNet); False leaves it to `generate`, which then runs the plain block.
            fp32_encoders: run the image encoder in float32 under a bf16/fp16 autocast (pass the
                same to `generate`), so the sampling grids match float32 while the fusion network
                and decoder keep the faster dtype.
        Returns:
            SubjectMemory with features (B, K, D, H/8, W/8) (for the paper's 3 downsamplings).
        """
        _check_subject(self.config, frames, masks, boxes)
        batch, frames_per = frames.shape[:2]
        pixels = self._to_model_pixels(frames).flatten(0, 1)
        encoder_in = self._encoder_input(torch.cat([pixels, masks.flatten(0, 1).to(pixels.dtype)], dim=1))
        features = self._encode(self.image_encoder, encoder_in, fp32_encoders)
        fusion_part = self.fusion.subject_part(features) if self.fusion is not None and precompute_fusion else None
        features = features.reshape(batch, frames_per, *features.shape[1:])
        if fusion_part is not None:
            fusion_part = fusion_part.reshape(batch, frames_per, *fusion_part.shape[1:])
        return SubjectMemory(
            features=features,
            inside=self._inside(masks, boxes),
            frames=frames,
            fusion_part=fusion_part,
            masks=masks if self.blend is not None else None,
        )

    def generate(
        self,
        memory: SubjectMemory,
        driving_masks: torch.Tensor,
        driving_boxes: torch.Tensor | None = None,
        fp32_encoders: bool = False,
    ) -> TSNetOutput:
        """Generate one frame per driving mask from an encoded subject.

        Args:
            memory: from `encode_subject`, with B subject sets.
            driving_masks: (N, C, H, W) one-hot. N must be a multiple of B: driving masks
                [b*N/B : (b+1)*N/B] use subject set b (B = 1: all use the one subject).
            driving_boxes: (N, 4) boxes in pixels, or None to derive them from the masks.
            fp32_encoders: run the mask encoder in float32 under autocast (see `encode_subject`).
        Returns:
            TSNetOutput (image, grid, warped, alpha; sharp, blend_mask, frame_weights and decoded
            for output="blend").
        """
        _check_driving(self.config, memory, driving_masks, driving_boxes)
        memory = _repeat_memory(memory, driving_masks.shape[0])
        driving_in = self._encoder_input(driving_masks.to(memory.features.dtype))
        driving_features = self._encode(self.mask_encoder, driving_in, fp32_encoders)
        transformed = grid = warped = alpha = None
        if "t" in self.config.branches:
            grid = sampling_grid(
                driving_features,
                memory.features,
                self._inside(driving_masks, driving_boxes),
                memory.inside,
                self.config.temperature,
                self.config.mask_aware,
                authors=self.config.authors_compat,
            )
            transformed = _warp_features(memory.features, driving_features.shape[0], grid)
            warped = patch_warp(memory.frames, grid)
        synthesised = None
        if self.fusion is not None:  # averaged over the K subject frames
            synthesised = self.fusion(memory.features, driving_features, memory.fusion_part).mean(dim=1)
        fused, alpha = self._combine(transformed, synthesised)
        image = self._from_model_pixels(self.decoder(fused))
        if self.config.authors_compat:
            return TSNetOutput(image=image.clamp(-1, 1), grid=grid, warped=warped, alpha=alpha, unclamped=image)
        if self.blend is None:
            return TSNetOutput(image=image, grid=grid, warped=warped, alpha=alpha)
        blended = self.blend(image, memory.frames, memory.masks, grid, driving_masks)
        return TSNetOutput(grid=grid, warped=warped, alpha=alpha, **blended)

    def forward(
        self,
        subject_frames: torch.Tensor,
        subject_masks: torch.Tensor,
        driving_masks: torch.Tensor,
        subject_boxes: torch.Tensor | None = None,
        driving_boxes: torch.Tensor | None = None,
    ) -> TSNetOutput:
        """`generate(encode_subject(subject_frames, subject_masks), driving_masks)` in one call."""
        memory = self.encode_subject(subject_frames, subject_masks, subject_boxes)
        return self.generate(memory, driving_masks, driving_boxes)

    def _combine(self, transformed, synthesised):
        if transformed is None or synthesised is None:
            return (synthesised if transformed is None else transformed), None
        both = torch.cat([transformed, synthesised], dim=1)
        if self.matting is None:
            return both, None
        alpha = torch.sigmoid(self.matting(both))
        return alpha * transformed + (1 - alpha) * synthesised, alpha

    # ----- Hub ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *,
        revision: str | None = None,
        cache_dir=None,
        force_download: bool = False,
        token=None,
        local_files_only: bool = False,
        map_location="cpu",
        **kwargs,
    ) -> "TSNet":
        """Load a TS-Net from a local folder or a Hub id (config.json + model.safetensors only).

        Loading is strict: a config.json with unknown or missing fields, or weights with missing,
        unexpected or mis-shaped tensors, raise `CheckpointError`/`ConfigError` naming the
        problem. Pickled weights are never loaded. Offline, a Hub id fails at once.
        """
        if kwargs:
            raise InputError(f"TSNet.from_pretrained got unexpected argument(s) {sorted(kwargs)}.")
        return load_checkpoint(
            cls,
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
            map_location=map_location,
        )

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The model card rendered from tsnet_hf/model_card_template.md."""
        return render_model_card(self, **kwargs)


def _warp_features(subject_features, num, grid):
    """grid_sample each subject frame's features with its grid and average over K -> (N, D, h, w)."""
    frames_per, dim, h, w = subject_features.shape[1:]
    features = subject_features.expand(num, -1, -1, -1, -1).reshape(num * frames_per, dim, h, w)
    warped = F.grid_sample(
        features,
        grid.reshape(num * frames_per, h, w, 2).to(features.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return warped.reshape(num, frames_per, dim, h, w).mean(dim=1)


def _repeat_memory(memory: SubjectMemory, num: int) -> SubjectMemory:
    """Give each of `num` driving masks its subject set (B = 1 is broadcast, not copied)."""
    batch = memory.num_subjects
    if batch == 1 or batch == num:
        return memory
    repeats = num // batch
    return memory.apply(lambda tensor: tensor.repeat_interleave(repeats, dim=0))


def _check_tensor(name: str, x, ndim: int, shape_text: str):
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {shape_text}, got {type(x).__name__}.")
    if x.ndim != ndim:
        raise InputError(f"{name} must have shape {shape_text}, got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values.")


def _check_size(config: TSNetConfig, name: str, x: torch.Tensor):
    stride = 2**config.num_downsamples
    height, width = x.shape[-2:]
    if height % stride or width % stride or height < stride or width < stride:
        raise InputError(
            f"{name} has size {height}x{width}; height and width must be positive multiples of "
            f"{stride} (the model was trained at {config.image_size}x{config.image_size})."
        )


def _check_masks(config: TSNetConfig, name: str, masks: torch.Tensor):
    if masks.shape[-3] != config.mask_channels:
        raise InputError(
            f"{name} has {masks.shape[-3]} channels but this {config.mode} model takes "
            f"{config.mask_channels}-channel one-hot masks."
        )


def _check_boxes(name: str, boxes, leading: tuple):
    if boxes is None:
        return
    if not isinstance(boxes, torch.Tensor) or tuple(boxes.shape) != (*leading, 4):
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise InputError(f"{name} must have shape {(*leading, 4)} (x0, y0, x1, y1 in pixels), got {got}.")
    if not bool(torch.isfinite(boxes).all()):
        raise InputError(f"{name} contains NaN or infinite values.")


def _check_subject(config: TSNetConfig, frames, masks, boxes):
    _check_tensor("subject frames", frames, 5, "(B, K, 3, H, W)")
    _check_tensor("subject masks", masks, 5, "(B, K, C, H, W)")
    if frames.shape[1] == 0:
        raise InputError("K = 0: give at least one subject frame.")
    if frames.shape[2] != 3:
        raise InputError(f"subject frames must have 3 (RGB) channels in dimension 2, got {frames.shape[2]}.")
    _check_masks(config, "subject masks", masks)
    _check_size(config, "subject frames", frames)
    if frames.shape[:2] != masks.shape[:2] or frames.shape[-2:] != masks.shape[-2:]:
        raise InputError(
            f"subject frames {tuple(frames.shape)} and subject masks {tuple(masks.shape)} must agree in B, K, H and W."
        )
    _check_boxes("subject boxes", boxes, tuple(frames.shape[:2]))


def _check_driving(config: TSNetConfig, memory: SubjectMemory, masks, boxes):
    if not isinstance(memory, SubjectMemory):
        raise InputError(
            f"generate expects the SubjectMemory that encode_subject returns, got {type(memory).__name__}."
        )
    _check_tensor("driving masks", masks, 4, "(N, C, H, W)")
    _check_masks(config, "driving masks", masks)
    if masks.shape[-2:] != memory.frames.shape[-2:]:
        raise InputError(
            f"driving masks are {tuple(masks.shape[-2:])} but the subject frames are "
            f"{tuple(memory.frames.shape[-2:])}: use one frame size."
        )
    if masks.shape[0] == 0 or masks.shape[0] % memory.num_subjects:
        raise InputError(
            f"got {masks.shape[0]} driving masks for {memory.num_subjects} subject sets: "
            "give a positive multiple of the number of subject sets."
        )
    _check_boxes("driving boxes", boxes, (masks.shape[0],))
