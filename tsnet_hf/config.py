"""The one configuration of the TS-Net generator's architecture.

`TSNetConfig()` with no arguments is the authors' face model (paper section 4.2 and their
released code): 86.0 M parameters, 2 mask channels, 256x256 frames, any number K of
subject frames. Every knob the paper's ablations turn (section 4.3) is a field. The config is saved
as config.json beside the weights; loading it back is strict (unknown or missing fields are errors)
and keeps tuples as tuples.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .layouts import BODY_MASK_CHANNELS, FACE_MASK_CHANNELS

# Mean pixel (B, G, R in [0, 255]) that the authors subtract from their face frames
# (demo/demo_face.py of their repository); used only with `authors_compat=True`.
AUTHORS_FACE_MEAN_BGR = (101.84807705937696, 112.10832843463207, 111.65973036298041)

BRANCHES = ("ts", "t", "s")
COMBINES = ("concat", "matting")
MODEL_MODES = ("face", "body")  # what a model draws; a run also takes "auto" (options.RUN_MODES)
MODES = MODEL_MODES  # the earlier name, kept for code that imports it
OUTPUTS = ("decoder", "blend")
FRAME_WEIGHTS = ("learned", "mean")
# Fields added after the first release, with the value that reproduces older checkpoints: a
# config.json written before they existed loads with these values instead of failing.
LATER_FIELDS = {"output": "decoder", "frame_weights": "learned", "blend_channels": 16}


@dataclass
class TSNetConfig:
    """Architecture of a TS-Net generator.

    Attributes:
        mode: "face" (68 dlib landmarks drawn as edges) or "body" (OpenPose-style skeleton).
            It only names what the masks mean; the pipeline uses it to draw the right masks.
        image_size: side of the square frames the model sees, in pixels (256 in the paper).
            Must be divisible by 2 ** num_downsamples.
        mask_channels: channels of the one-hot masks: 2 for faces (background, edge), 36 for
            bodies (see tsnet_hf.layouts).
        branches: "ts" both branches (the paper's TS-Net), "t" transformation branch only
            (T-Net ablation), "s" synthesis branch only (S-Net ablation).
        combine: how the two branch features meet the decoder: "concat" (the paper) or
            "matting" (the attention-based matting variant of section 4.3: a learned per-position
            weight alpha mixes the two features, alpha * transformed + (1 - alpha) * synthesised).
        base_channels: width of the first conv (64 in the paper); doubles at each downsampling.
        num_downsamples: stride-2 convs in the encoders (3: features at 1/8 of the frame).
        encoder_blocks: residual blocks of the image encoder (9).
        decoder_blocks: residual blocks of the decoder (4).
        fusion_blocks: residual blocks of the synthesis branch's fusion network (1).
        temperature: tau of eq. (2), the softmax temperature of the similarity (100).
        coord_conv: append x, y, r coordinate channels to both encoders' inputs (the authors do).
        mask_aware: restrict the similarity to inside-box x inside-box and outside x outside pairs
            (section 3.1, Fig. 3). False computes the dense similarity over all pairs.
        box_margin: margin added around the mask's extent, as a fraction of the image side, when
            the mask-aware boxes are derived from the masks (1/16, as the authors).
        authors_compat: reproduce the authors' code exactly, for converted checkpoints: BGR input
            minus `authors_mean_bgr` / 255, their coordinate grid (linspace(-1, 1, n) sampled with
            align_corners=False, which shifts features by up to half a cell), and their masked
            similarity (cross pairs kept with similarity 0 instead of excluded).
        authors_mean_bgr: the mean pixel the authors subtract (B, G, R in [0, 255]).
        output: "decoder" (the paper: the frame is painted by the decoder from 1/8-resolution
            features) or "blend" (beyond the paper, for CPU budgets: the transformation grid,
            upsampled to the frame size, warps the subject *pixels*; the K warped frames are
            combined per pixel and a learned mask blends them with the decoder's frame).
        frame_weights: "blend" only: how the K warped frames are combined: "learned" (a softmax
            over K of per-pixel scores from a small conv head) or "mean" (plain average).
        blend_channels: "blend" only: width of the small conv heads of the blend path.
    """

    mode: str = "face"
    image_size: int = 256
    mask_channels: int = FACE_MASK_CHANNELS
    branches: str = "ts"
    combine: str = "concat"
    base_channels: int = 64
    num_downsamples: int = 3
    encoder_blocks: int = 9
    decoder_blocks: int = 4
    fusion_blocks: int = 1
    temperature: float = 100.0
    coord_conv: bool = True
    mask_aware: bool = True
    box_margin: float = 1.0 / 16.0
    authors_compat: bool = False
    authors_mean_bgr: tuple[float, float, float] = field(default=AUTHORS_FACE_MEAN_BGR)
    output: str = "decoder"
    frame_weights: str = "learned"
    blend_channels: int = 16

    def __post_init__(self):
        # JSON has no tuples: turn lists back so a round trip gives an equal config.
        self.authors_mean_bgr = tuple(float(v) for v in self.authors_mean_bgr)
        self._check()

    def _check(self):
        def fail(message):
            raise ConfigError(f"TSNetConfig: {message}")

        if self.mode not in MODEL_MODES:
            fail(f"mode must be one of {MODEL_MODES}, got {self.mode!r}.")
        if self.branches not in BRANCHES:
            fail(
                f"branches must be one of {BRANCHES} (both, transformation only, synthesis only), "
                f"got {self.branches!r}."
            )
        if self.combine not in COMBINES:
            fail(f"combine must be one of {COMBINES}, got {self.combine!r}.")
        if self.output not in OUTPUTS:
            fail(
                f"output must be one of {OUTPUTS} (the paper's decoder, or the pixel-space blend), got {self.output!r}."
            )
        if self.frame_weights not in FRAME_WEIGHTS:
            fail(f"frame_weights must be one of {FRAME_WEIGHTS}, got {self.frame_weights!r}.")
        if self.output == "blend" and self.branches == "s":
            fail(
                "output='blend' warps the subject with the transformation branch's grid: it needs branches 'ts' or 't'."
            )
        if self.output == "blend" and self.authors_compat:
            fail("authors_compat reproduces the authors' model, which has no blend path: use output='decoder'.")
        for name in ("image_size", "mask_channels", "base_channels", "num_downsamples", "blend_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}.")
        for name in ("encoder_blocks", "decoder_blocks", "fusion_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(f"{name} must be a non-negative integer, got {value!r}.")
        if self.mask_channels < 2:
            fail(f"mask_channels must be at least 2 (background and one drawn class), got {self.mask_channels}.")
        stride = 2**self.num_downsamples
        if self.image_size % stride:
            fail(f"image_size {self.image_size} must be divisible by 2 ** num_downsamples = {stride}.")
        if not self.temperature > 0:
            fail(f"temperature must be positive, got {self.temperature!r}.")
        if not 0 <= self.box_margin < 0.5:
            fail(f"box_margin must be in [0, 0.5), got {self.box_margin!r}.")
        if len(self.authors_mean_bgr) != 3:
            fail(f"authors_mean_bgr must hold 3 values (B, G, R), got {self.authors_mean_bgr!r}.")

    @property
    def feature_size(self) -> int:
        """Side of the encoders' feature maps (image_size / 2 ** num_downsamples)."""
        return self.image_size // 2**self.num_downsamples

    @property
    def feature_channels(self) -> int:
        """Channels of the encoders' feature maps (base_channels * 2 ** num_downsamples)."""
        return self.base_channels * 2**self.num_downsamples

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TSNetConfig":
        """Build a config from a dict, refusing unknown and missing fields.

        Raises:
            ConfigError: naming the unknown or missing fields, or the invalid value.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must hold a JSON object of TSNetConfig fields, got {type(values).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        values = {**{k: v for k, v in LATER_FIELDS.items() if k not in values}, **values}
        missing = sorted(names - set(values))
        if unknown:
            raise ConfigError(
                f"{source} has unknown field(s) {unknown}: it is not a tsnet-hf TSNetConfig "
                "or was written by a newer version."
            )
        if missing:
            raise ConfigError(
                f"{source} is missing field(s) {missing}: re-save the model with save_pretrained or add them."
            )
        return cls(**values)

    @classmethod
    def from_json_file(cls, path) -> "TSNetConfig":
        """Read a config.json written by `save_pretrained` (strict, see `from_dict`)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist: a TS-Net checkpoint folder needs a config.json.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path} is not valid JSON ({error}).") from None
        return cls.from_dict(values, source=str(path))


def paper_config(mode: str = "face", **overrides) -> TSNetConfig:
    """The authors' generator (86.0 M parameters for faces) for `mode` "face" or "body"."""
    channels = FACE_MASK_CHANNELS if mode == "face" else BODY_MASK_CHANNELS
    return TSNetConfig(**{"mode": mode, "mask_channels": channels, **overrides})


def small_config(mode: str = "face", **overrides) -> TSNetConfig:
    """A preset for CPU inference and shipping: 16.8 M parameters (face), 34 MB as fp16.

    Half the width of the paper's model (base 32, features 256 x 32 x 32), 6 encoder blocks and
    3 decoder blocks: about a fifth of the paper preset's multiply-adds per frame.
    """
    values = dict(base_channels=32, encoder_blocks=6, decoder_blocks=3, fusion_blocks=1)
    return paper_config(mode, **{**values, **overrides})


def tiny_config(mode: str = "face", **overrides) -> TSNetConfig:
    """A very small model for tests and quick experiments (not for quality): 64x64 frames."""
    values = dict(image_size=64, base_channels=8, encoder_blocks=1, decoder_blocks=1, fusion_blocks=1)
    return paper_config(mode, **{**values, **overrides})


PRESETS = {"paper": paper_config, "small": small_config, "tiny": tiny_config}


def preset_config(name: str, mode: str = "face", **overrides) -> TSNetConfig:
    """The named preset ("paper", "small" or "tiny") for `mode` "face" or "body"."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}: choose one of {sorted(PRESETS)}.")
    if mode not in MODEL_MODES:
        raise ConfigError(f"mode must be one of {MODEL_MODES}, got {mode!r}.")
    return PRESETS[name](mode, **overrides)
