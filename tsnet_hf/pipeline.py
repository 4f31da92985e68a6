"""`RetargetPipeline`: a subject video (or photo) and a driving video in, the retargeted video and
every intermediate out.

    pipe = RetargetPipeline.from_pretrained("checkpoints/face-blend-128")
    with pipe("subject.mp4", "driving.mp4") as result:  # the result's folder goes at the block's end
        result.save("out.mp4", side_by_side="side_by_side.mp4")
"""

from dataclasses import fields as dataclass_fields

import numpy as np
import torch

from .modeling import SubjectMemory, TSNet
from .options import RunOptions
from .outputs import RetargetOutput
from .runner import Run
from .utils import autocast_dtype, best_device, to_model_frames


class RetargetPipeline:
    """A TS-Net with everything around it: landmarks, crops, alignment, masks, video I/O.

    Numpy and files in, numpy and files out; the model sees tensors only. A call runs the steps of
    `runner.Run.execute`: the subject's landmarks and crops, a pool of up to `pool_size` diverse
    subject frames encoded once, the driving landmarks (streamed: only the points are kept), crops,
    alignment (paper section 4.2) and masks, then the generator chunk by chunk, each output frame
    written straight into an mp4 in a work folder. Memory does not grow with the driving video's
    length; the result reads its videos back on demand.
    """

    def __init__(
        self,
        model: TSNet,
        device=None,
        dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
    ):
        """model: a TSNet; device: "cuda", "mps", "cpu" or None for the best there is; dtype: the
        autocast dtype (None: see `autocast_dtype`; torch.float32 turns reduced precision off);
        channels_last: NHWC convolutions (None: on CUDA only; see docs/benchmarks.md);
        compile: run the generator through `torch.compile` (off by default: on a 2-core CPU the
        compile takes one to two minutes and the clip was not faster even with it cached, see
        docs/benchmarks.md; for machines where the generator dominates). Chunks smaller than the
        first are padded to its size, so the model compiles once."""
        self.device = torch.device(device) if device is not None else best_device()
        self.dtype = autocast_dtype(self.device, dtype, model.config)
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self._compiled = torch.compile(self.model.generate, dynamic=False) if compile else None
        self._compiled_batch = None  # the driving batch the compiled generator was made for

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id,
        device=None,
        dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        **hub_kwargs,
    ) -> "RetargetPipeline":
        """Load a checkpoint folder or Hub id (see `TSNet.from_pretrained`)."""
        return cls(
            TSNet.from_pretrained(path_or_repo_id, **hub_kwargs),
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            compile=compile,
        )

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @property
    def size(self) -> int:
        return self.model.config.image_size

    @torch.inference_mode()
    def __call__(
        self,
        subject,
        driving,
        *,
        mode: str = "auto",
        num_subject_frames: int | None = None,
        selection: str = "nearest",
        seed: int = 0,
        align: bool = True,
        smooth: bool = True,
        missing: str = "interpolate",
        max_frames: int | None = None,
        batch_size: int = 8,
        pool_size: int = 16,
        subject_max_frames: int = 300,
        paste_back: bool = True,
        color_match: bool = False,
        high_res_warp: bool = True,
        progress=None,
        preview=None,
        workdir=None,
    ) -> RetargetOutput:
        """Retarget the driving video's motion onto the subject.

        Args:
            subject: a video or image path, an (H, W, 3) uint8 RGB photo or (T, H, W, 3) frames.
            driving: a video path, (T, H, W, 3) uint8 RGB frames, or a LandmarkTrack (a motion
                template: no frames, so the output is the crop).
            mode: "face", "body" or "auto" (the checkpoint's mode, checked against the videos).
            num_subject_frames: K, subject frames per output frame (default min(3, available)).
            selection: "nearest" (the K pool frames nearest in pose to each driving frame) or
                "random" (K pool frames drawn once with `seed`, as the paper).
            align: rescale the driving landmarks to the subject (paper section 4.2).
            smooth: One-Euro smoothing of both landmark tracks.
            missing: frames without a detection: "interpolate", "hold" or "drop".
            max_frames: use at most this many driving frames.
            batch_size: driving frames per generator call.
            pool_size: subject frames encoded once, chosen to cover the subject's poses.
            subject_max_frames: subject frames read at most.
            paste_back: put the output crop back into the driving frame (else output the crop).
            color_match: match each output's per-channel mean/std to the first chosen subject
                frame, as the authors' demo does. A model with `authors_compat` always does it
                their way instead: on the unclamped output, then truncated to 8 bits (and its
                boxes come from the landmarks as theirs do), so it reproduces their demo.
            high_res_warp: blend models only (decoder models ignore it): before pasting back,
                redo the blend at the subject crop's own side in the source video (at most
                max(2 x the model's size, 512 px), and no larger than the driving crop), so the copied pixels are
                sharper than the model's resolution; the "crop" video stays at the model's size.
            progress: callable(stage: str, done: int, total: int | None), called as work goes.
            preview: callable(done: int, total: int, picture), called after each chunk of output
                frames is written, with the newest frame's side-by-side picture ((H, W, 3) uint8
                RGB): a live view while the run goes on. Raising `tsnet_hf.errors.Cancelled` (or
                any error) from `progress` or `preview` stops the run and deletes its files.
            workdir: folder for the output videos (default: a new temporary folder, deleted by
                `result.cleanup()`, at the end of `with pipe(...) as result:` or at exit).
        Returns:
            RetargetOutput.
        Raises:
            TSNetError subclasses with one sentence for every bad input.
        """
        options = RunOptions(
            mode=mode,
            num_subject_frames=num_subject_frames,
            selection=selection,
            seed=seed,
            align=align,
            smooth=smooth,
            missing=missing,
            max_frames=max_frames,
            batch_size=batch_size,
            pool_size=pool_size,
            subject_max_frames=subject_max_frames,
            paste_back=paste_back,
            color_match=color_match,
            high_res_warp=high_res_warp,
        )
        return Run(self, options, progress, workdir, preview=preview).execute(subject, driving)

    def encode(self, crops: np.ndarray, masks: torch.Tensor, boxes: torch.Tensor | None = None) -> SubjectMemory:
        """(S, size, size, 3) uint8 RGB crops + (S, C, size, size) one-hot masks -> SubjectMemory (B=1, K=S);
        boxes (S, 4) in pixels, or None for the model to derive them from the masks."""
        frames = to_model_frames(crops, self.device)[None]
        boxes = None if boxes is None else boxes.to(self.device)[None]
        with self._autocast():
            return self.model.encode_subject(
                frames, masks.to(self.device)[None], boxes, fp32_encoders=self._fp32_encoders
            )

    def generate(self, memory: SubjectMemory, masks: torch.Tensor, boxes: torch.Tensor | None = None):
        """(N, C, size, size) one-hot masks (and (N, 4) boxes or None) -> TSNetOutput, on the
        pipeline's device and dtype."""
        masks = masks.to(self.device, memory_format=self.memory_format)
        boxes = None if boxes is None else boxes.to(self.device)
        with self._autocast():
            if self._compiled is None or boxes is not None:
                return self.model.generate(memory, masks, boxes, fp32_encoders=self._fp32_encoders)
            return self._generate_compiled(memory, masks)

    def _generate_compiled(self, memory: SubjectMemory, masks: torch.Tensor):
        count = masks.shape[0]
        self._compiled_batch = self._compiled_batch or count
        padding = self._compiled_batch - count
        if padding < 0 or memory.num_subjects not in (1, count):
            return self.model.generate(memory, masks, fp32_encoders=self._fp32_encoders)  # not compiled for it
        if padding:
            masks = torch.cat([masks, masks[-1:].expand(padding, *masks.shape[1:])])
            if memory.num_subjects > 1:
                memory = memory.apply(lambda t: torch.cat([t, t[-1:].expand(padding, *t.shape[1:])]))
        out = self._compiled(memory, masks)
        if not padding:
            return out
        return type(out)(
            **{
                f.name: None if getattr(out, f.name) is None else getattr(out, f.name)[:count]
                for f in dataclass_fields(out)
            }
        )

    @property
    def _fp32_encoders(self) -> bool:
        # A converted authors' model keeps its sampling grids as in fp32 under bf16/fp16: bf16
        # features move their frames by ~23 grey levels, fp32 encoders by < 1 (docs/benchmarks.md).
        return self.model.config.authors_compat

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)


__all__ = ["RetargetPipeline"]
