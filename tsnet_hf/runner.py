"""One retargeting run of `RetargetPipeline` (`Run.execute`, in numbered steps); not public API."""

import contextlib
import itertools
import math
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .alignment import align_body, align_face
from .compose import compose_high_res
from .crops import crop_frame, track_crop_boxes, transforms_from_boxes
from .errors import InputError
from .landmarks import DetectionReport, LandmarkTrack, choose_mode, detect, detect_image
from .masks import draw_mask, draw_masks, labels_to_onehot, mask_box, render_mask_rgb
from .modeling import SubjectMemory
from .options import RunOptions
from .outputs import VIDEO_NAMES, FrameReport, RetargetOutput
from .selection import MIN_CONFIDENCE, choose_subject_frames, diverse_rows
from .utils import Timer, new_workdir, to_model_frames, to_uint8_images
from .video import VideoWriter, open_video

DEFAULT_FPS = 25.0
LARGE_SIDE_CAP = 512  # px: see large_side


class Source:
    """A subject or driving input as given: a video or image path, or uint8 RGB frames of shape
    (T, H, W, 3) or (H, W, 3). A file is probed on its first pass only: every later pass (mode
    check, landmarks, crops, generation) decodes it again with that VideoInfo."""

    def __init__(self, data, require_video: bool = False):
        self.data, self.require_video = data, require_video
        self.info = None  # the file's VideoInfo after its first pass; None for an array

    def frames(self, max_frames: int | None = None) -> Iterator[np.ndarray]:
        """A new pass over the (H, W, 3) uint8 RGB frames, at most `max_frames` of them."""
        data = self.data
        if isinstance(data, (str, Path)):
            self.info, frames = open_video(
                data, max_frames=max_frames, require_video=self.require_video, info=self.info
            )
            return frames
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim in (3, 4) and data.shape[-1] == 3:
            if data.ndim == 3:
                if self.require_video:
                    raise InputError("The driving input is a single image; give a video (or frames (T, H, W, 3)).")
                data = data[None]
            return iter(data[:max_frames])
        raise InputError(
            "Give a video or image path, or uint8 RGB frames of shape (H, W, 3) or (T, H, W, 3); "
            f"got {type(data).__name__}{getattr(data, 'shape', '')}."
        )

    @property
    def is_photo(self) -> bool:
        """One still picture: an image file or an (H, W, 3) array (known after the first pass)."""
        return self.info.is_image if self.info is not None else self.data.ndim == 3

    @property
    def fps(self) -> float:
        return (self.info.fps if self.info is not None else None) or DEFAULT_FPS

    @property
    def audio(self) -> Path | None:
        """The file whose audio track goes into the output videos, or None."""
        return Path(self.data) if self.info is not None and self.info.has_audio else None


@dataclass
class SubjectPool:
    """The subject frames the model may use, encoded once.

    crops (S, size, size, 3) uint8 RGB; points (S, P, 3) landmarks in crop pixels; labels
    (S, size, size) mask label maps; frame_indices (S,) in the subject video; all_points
    (T, P, 3) every subject frame's crop landmarks (alignment statistics); memory (B=1, K=S);
    large_crops (S, L, L, 3) uint8 RGB, the same crops at a larger side L for the high-res
    warp of a blend model (see `large_side`), or None.
    """

    crops: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    frame_indices: np.ndarray
    all_points: np.ndarray
    memory: SubjectMemory
    summary: str
    large_crops: np.ndarray | None = None


@dataclass
class DrivingPlan:
    """The driving side: track (LandmarkTrack, frame pixels), transforms (one CropTransform per
    row), points (T, P, 3) crop landmarks, aligned (T, P, 3) after alignment, choices (T, K) pool
    rows per output frame, frames: the Source to stream the frames from (None for a template),
    audio: the file whose audio the output gets, or None."""

    track: LandmarkTrack
    transforms: list
    points: np.ndarray
    aligned: np.ndarray
    choices: np.ndarray
    frames: Source | None
    audio: Path | None


class Run:
    """One call of `RetargetPipeline`: `execute` takes the inputs through the steps it numbers.
    progress, preview: the callbacks of `RetargetPipeline.__call__` (or None); workdir: the
    caller's folder for the videos, or None for a new temporary one."""

    def __init__(self, pipe, options: RunOptions, progress, workdir, preview=None):
        self.pipe, self.options, self.progress = pipe, options, progress or (lambda *args: None)
        self.preview = preview
        self.own_workdir = workdir is None
        self.workdir_arg = workdir
        self.timer = Timer()
        self.size = pipe.size
        self.blend = pipe.model.config.output == "blend"
        self.authors = pipe.model.config.authors_compat

    def execute(self, subject, driving) -> RetargetOutput:
        """subject, driving: as `RetargetPipeline.__call__` takes them. A failure (or a Cancelled
        from a callback) deletes the work folder this run created, then raises."""
        workdir = new_workdir(self.workdir_arg)
        try:
            # 1. Inputs: each file is probed on its first pass only, then decoded with that VideoInfo.
            subject = Source(subject)
            if not isinstance(driving, LandmarkTrack):
                driving = Source(driving, require_video=True)
            # 2. Mode: the checkpoint's, checked against the first frames of both inputs ("auto").
            mode = self._resolve_mode(subject, driving)
            # 3. Subject: landmarks, crops, a pool of diverse frames encoded once.
            pool = self._prepare_subject(subject, mode)
            # 4. Driving: landmarks, crops, alignment to the subject, the K pool frames per output frame.
            plan = self._prepare_driving(driving, mode, pool)
            pool.large_crops = _fit_large_crops(pool.large_crops, plan, self.size)
            # 5. Generation, chunk after chunk, each output frame written as it is made.
            videos, reports = self._generate(pool, plan, workdir)
        except BaseException:
            if self.own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        # 6. The result: the videos stay in the work folder until RetargetOutput.cleanup().
        return RetargetOutput(
            fps=float(plan.track.fps),
            num_frames=len(reports),
            mode=mode,
            size=self.size,
            workdir=workdir,
            videos=videos,
            subject_crops=pool.crops,
            subject_masks=np.stack([render_mask_rgb(labels, mode) for labels in pool.labels]),
            subject_frame_indices=pool.frame_indices,
            frames_report=reports,
            subject_summary=pool.summary,
            driving_summary=plan.track.report.summary(),
            timings=dict(self.timer.seconds),
            audio_source=plan.audio,
            owns_workdir=self.own_workdir,
        )

    # ----- mode ---------------------------------------------------------------------------------

    def _resolve_mode(self, subject: Source, driving) -> str:
        model_mode, asked = self.pipe.mode, self.options.mode
        if asked != "auto":
            if asked != model_mode:
                raise InputError(
                    f"This checkpoint is a {model_mode} model but mode={asked!r} was asked: "
                    f"load a {asked} checkpoint or use mode={model_mode!r}."
                )
            return asked
        seen = {}
        for name, source in (("subject", subject), ("driving video", driving)):
            if isinstance(source, LandmarkTrack):
                seen[name] = source.mode
            else:
                seen[name] = choose_mode(list(itertools.islice(source.frames(3), 3)))
        if seen["subject"] != seen["driving video"]:
            raise InputError(
                f"The subject shows a {seen['subject']} but the driving video a {seen['driving video']}: "
                "use two face videos or two full-body videos (or pass mode explicitly)."
            )
        if seen["subject"] != model_mode:
            raise InputError(
                f"The videos show a {seen['subject']} but this checkpoint is a {model_mode} model: "
                f"load a {seen['subject']} checkpoint, or pass mode={model_mode!r} to force it."
            )
        return model_mode

    # ----- subject ------------------------------------------------------------------------------

    def _prepare_subject(self, subject: Source, mode) -> SubjectPool:
        options = self.options
        self.progress("subject landmarks", 0, None)
        with self.timer("subject decode + landmarks"):
            track = _detect_subject(subject, mode, options)
        transforms = _crop_transforms(track, mode, self.size)
        all_points = _to_crop(track.points, transforms)
        rows = diverse_rows(all_points, options.pool_size)
        frames = subject.frames(None if subject.is_photo else options.subject_max_frames)
        wanted = {int(track.frame_indices[r]): r for r in rows}
        large = self._subject_large_side([transforms[r] for r in rows])
        crops, large_crops = {}, {}
        with self.timer("subject crops"):
            for index, frame in enumerate(frames):
                if index in wanted:
                    row = wanted[index]
                    crops[row] = crop_frame(frame, transforms[row], self.size)
                    if large is not None:
                        large_crops[row] = crop_frame(frame, transforms[row], large)
                if len(crops) == len(rows):
                    break
        crops = np.stack([crops[r] for r in rows])
        large_crops = np.stack([large_crops[r] for r in rows]) if large is not None else None
        points = all_points[rows]
        labels = draw_masks(points, (self.size, self.size))
        onehot = labels_to_onehot(torch.from_numpy(labels).long(), self.pipe.model.config.mask_channels)
        self.progress("encode subject", 0, len(rows))
        with self.timer("encode subject"):
            memory = self.pipe.encode(crops, onehot, self._authors_boxes(points))
        return SubjectPool(
            crops, points, labels, track.frame_indices[rows], all_points, memory, track.report.summary(), large_crops
        )

    def _subject_large_side(self, transforms) -> int | None:
        """The side L of the subject crops for the high-res warp, or None where it is off: for a
        blend model pasting back with `high_res_warp`, and only where L > the model's size."""
        if not (self.blend and self.options.high_res_warp and self.options.paste_back):
            return None
        side = large_side(self.size, min(t.box[2] - t.box[0] for t in transforms))
        return side if side > self.size else None

    def _authors_boxes(self, points: np.ndarray) -> torch.Tensor | None:
        """(N, 4) boxes from (N, P, 3) crop landmarks as the authors compute them (whole pixels),
        for an authors_compat model; None otherwise (the model derives its boxes from the masks)."""
        if not self.authors:
            return None
        margin, size = self.pipe.model.config.box_margin, (self.size, self.size)
        return torch.tensor(
            [mask_box(p, size, margin, MIN_CONFIDENCE, authors=True) for p in points], dtype=torch.float32
        )

    # ----- driving ------------------------------------------------------------------------------

    def _prepare_driving(self, driving: Source | LandmarkTrack, mode, pool: SubjectPool) -> DrivingPlan:
        options = self.options
        if isinstance(driving, LandmarkTrack):
            if driving.mode != mode:
                raise InputError(f"The motion template is a {driving.mode} track but the subject is a {mode}.")
            track, frames, audio = _limit_track(driving, options.max_frames), None, None
        else:
            decoded = driving.frames(options.max_frames)
            counted = _counting(decoded, lambda n: self.progress("driving landmarks", n, None))
            with self.timer("driving decode + landmarks"):
                track = detect(counted, mode=mode, policy=options.missing, smooth=options.smooth, fps=driving.fps)
            frames, audio = driving, driving.audio
        with self.timer("crops, alignment, selection"):
            transforms = _crop_transforms(track, mode, self.size)
            points = _to_crop(track.points, transforms)
            aligned = points
            if options.align:
                aligner = align_face if mode == "face" else align_body
                aligned = aligner(points, pool.all_points).astype(np.float32)
            choices = choose_subject_frames(
                aligned,
                pool.points,
                self.size,
                k=options.num_subject_frames,
                selection=options.selection,
                seed=options.seed,
            )
        return DrivingPlan(track, transforms, points, aligned, choices, frames, audio)

    # ----- generation ---------------------------------------------------------------------------

    def _generate(self, pool: SubjectPool, plan: DrivingPlan, workdir: Path):
        """Generate chunk after chunk, keeping the generator busy: a helper thread draws the next
        chunk's masks while the generator runs, and a writer thread finishes chunk i (high-res warp,
        decoding the driving frames, paste-back, video encoding, preview) while the generator runs
        chunk i + 1 (at most two chunks in memory)."""
        fps = float(plan.track.fps)
        names = VIDEO_NAMES + (("blend_mask",) if self.blend else ())
        paths = {name: workdir / f"{name}.mp4" for name in names}
        audio = {"output": plan.audio, "side_by_side": plan.audio}
        frames = self._driving_frames(plan)
        total, batch = len(plan.points), self.options.batch_size
        chunks = [np.arange(start, min(total, start + batch)) for start in range(0, total, batch)]
        reports = []
        with contextlib.ExitStack() as stack:
            writers = {
                name: stack.enter_context(VideoWriter(path, fps, audio_from=audio.get(name), preset="veryfast"))
                for name, path in paths.items()
            }
            if frames is not None:  # closed after the threads below are done with it
                stack.callback(frames.close)  # a stopped run ends its ffmpeg decoder now
            worker = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsnet-write"))
            helper = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsnet-masks"))
            upcoming = helper.submit(self._chunk_masks, plan, chunks[0]) if chunks else None
            pending = None
            for number, rows in enumerate(chunks):
                masks = upcoming.result()
                if number + 1 < len(chunks):
                    upcoming = helper.submit(self._chunk_masks, plan, chunks[number + 1])
                out = self._generate_chunk(pool, plan, rows, masks)
                if pending is not None:
                    pending.result()  # re-raises a failure of the previous chunk's writing
                pending = worker.submit(self._write_chunk, pool, plan, rows, out, frames, writers, reports)
            if pending is not None:
                pending.result()
        return paths, reports

    def _chunk_masks(self, plan: DrivingPlan, rows: np.ndarray) -> torch.Tensor:
        """(N, C, size, size) one-hot masks of the aligned driving landmarks of `rows`."""
        with self.timer("masks"):
            labels = draw_masks(plan.aligned[rows], (self.size, self.size))
            return labels_to_onehot(torch.from_numpy(labels).long(), self.pipe.model.config.mask_channels)

    def _generate_chunk(self, pool: SubjectPool, plan: DrivingPlan, rows: np.ndarray, masks: torch.Tensor):
        """The model's TSNetOutput for `rows`."""
        with self.timer("generator"):
            memory = select_memory(pool.memory, torch.from_numpy(plan.choices[rows]))
            return self.pipe.generate(memory, masks, self._authors_boxes(plan.aligned[rows]))

    @torch.inference_mode()  # thread-local: the writer thread needs its own
    def _write_chunk(self, pool, plan, rows, out, frames, writers, reports):
        pictures = self._chunk_pictures(pool, plan, rows, out)
        with self.timer("decode, paste back, encode videos (overlapped)"):
            for i, row in enumerate(rows):
                frame = next(frames) if frames is not None else None
                panels = self._compose(pool, plan, row, frame, {name: p[i] for name, p in pictures.items()})
                for name, picture in panels.items():
                    writers[name].write(picture)
                reports.append(self._frame_report(pool, plan, row))
        done = int(rows[-1]) + 1
        if self.preview is not None:
            self.preview(done, len(plan.points), panels["side_by_side"])
        self.progress("generate", done, len(plan.points))

    def _chunk_pictures(self, pool: SubjectPool, plan: DrivingPlan, rows: np.ndarray, out) -> dict:
        """The model's pictures for `rows`, name -> (N, ..., 3) uint8 RGB: "image" and "warped"
        (size x size); for a blend model also "blend_mask" (grey) and, with the high-res warp,
        "large" (the output at the large crops' side, for the paste-back)."""
        if self.authors:
            pictures = {"image": authors_pictures(out.unclamped, pool.crops[plan.choices[rows][:, 0]])}
        else:
            pictures = {"image": to_uint8_images(out.image)}
        if pool.large_crops is not None:
            with self.timer("high-res warp"):
                pictures["large"] = to_uint8_images(self._large_images(pool.large_crops, plan.choices[rows], out))
        if self.options.color_match and not self.authors:
            references = pool.crops[plan.choices[rows][:, 0]]
            for name in ("image", "large"):
                if name in pictures:
                    pictures[name] = np.stack([match_colors(p, r) for p, r in zip(pictures[name], references)])
        pictures["warped"] = _warped_pictures(out, pictures["image"])
        if out.blend_mask is not None:
            pictures["blend_mask"] = mask_pictures(out.blend_mask)
        return pictures

    def _large_images(self, large_crops: np.ndarray, choices: np.ndarray, out) -> torch.Tensor:
        """(N, 3, L, L) float32 RGB in [-1, 1]: the blend output recomposed from the (S, L, L, 3)
        uint8 large pool crops, choices (N, K) pool rows (see compose.compose_high_res)."""
        device = out.image.device
        frames = to_model_frames(large_crops[choices.reshape(-1)], device)
        frames = frames.reshape(*choices.shape, *frames.shape[1:])  # (N, K, 3, L, L)
        return compose_high_res(frames, out.grid, out.frame_weights, out.blend_mask, out.decoded)

    def _driving_frames(self, plan: DrivingPlan):
        """An iterator of the driving frames that have an output row (None for a template)."""
        if plan.frames is None:
            return None
        keep = set(plan.track.frame_indices.tolist())
        return (frame for index, frame in enumerate(plan.frames.frames(self.options.max_frames)) if index in keep)

    def _compose(self, pool, plan, row, frame, pictures: dict) -> dict:
        """One output row's picture for every video, from its `_generate_chunk` pictures."""
        mode, size = self.pipe.mode, (self.size, self.size)
        image, warped = pictures["image"], pictures["warped"]
        driving_mask = render_mask_rgb(draw_mask(plan.points[row], size), mode)
        aligned_mask = render_mask_rgb(draw_mask(plan.aligned[row], size), mode)
        transform = plan.transforms[row]
        if frame is not None:
            driving_crop = crop_frame(frame, transform, self.size)
            # paste_back takes a crop of any side: the high-res output where there is one.
            pasted = pictures.get("large", image)
            output = transform.paste_back(pasted, frame) if self.options.paste_back else image
        else:
            driving_crop, output = driving_mask, image
        subject = pool.crops[plan.choices[row][0]]
        blend = [pictures["blend_mask"]] if "blend_mask" in pictures else []
        side = np.concatenate([subject, driving_crop, aligned_mask, warped, *blend, image], axis=1)
        panels = {
            "output": output,
            "crop": image,
            "driving_masks": driving_mask,
            "aligned_masks": aligned_mask,
            "warped": warped,
            "side_by_side": side,
        }
        if blend:
            panels["blend_mask"] = blend[0]
        return panels

    def _frame_report(self, pool, plan, row) -> FrameReport:
        index = int(plan.track.frame_indices[row])
        report = plan.track.report
        return FrameReport(
            index=index,
            detected=bool(report.detected[index]),
            filled=report.filled[index],
            subject_frames=tuple(int(pool.frame_indices[c]) for c in plan.choices[row]),
        )


# ----- helpers ------------------------------------------------------------------------------------


def _detect_subject(subject: Source, mode, options) -> LandmarkTrack:
    """The subject's landmarks: a photo (an image file or an (H, W, 3) array) in static mode."""
    frames = subject.frames(options.subject_max_frames)
    if subject.is_photo:
        return detect_image(next(frames), mode)
    return detect(frames, mode=mode, policy=options.missing, smooth=options.smooth, fps=subject.fps)


def _counting(frames, callback, every: int = 10):
    for index, frame in enumerate(frames):
        if index % every == 0:
            callback(index)
        yield frame


def _limit_track(track, max_frames):
    if max_frames is None or len(track) <= max_frames:
        return track
    report = track.report
    kept = track.frame_indices[:max_frames]
    end = int(kept[-1]) + 1
    return replace(
        track,
        points=track.points[:max_frames],
        frame_indices=kept,
        report=DetectionReport(report.detected[:end], report.filled[:end], report.policy),
    )


def _crop_transforms(track, mode, size):
    return transforms_from_boxes(track_crop_boxes(track.points, track.frame_size, mode), track.frame_size, size)


def _to_crop(points: np.ndarray, transforms) -> np.ndarray:
    """(T, P, 3) frame-pixel landmarks -> crop-pixel landmarks (confidence kept)."""
    out = points.copy()
    for t, transform in enumerate(transforms):
        out[t, :, :2] = transform.to_crop(points[t, :, :2])
    return out


def large_side(size: int, subject_side: float) -> int:
    """Side of the subject crops for a blend model's high-res warp: the subject box's own side in
    source pixels (a larger crop would only be upsampled: no detail to copy), at most
    max(2 * size, 512). Why a cap: the warp field is smooth (bilinear between grid vectors), so
    copied pixels stay sharp at any side, but time and memory grow with the side squared
    (N * K * 3 * L^2 floats a chunk: 75 MB for 8 frames, K = 3 at 512 px); 512 px is the usual
    size of a talking-head video, so a 128 px model still gives full-detail faces."""
    return int(min(max(2 * size, LARGE_SIDE_CAP), math.floor(subject_side)))


def _fit_large_crops(large_crops: np.ndarray | None, plan: DrivingPlan, size: int) -> np.ndarray | None:
    """The pool's large crops shrunk to the largest driving box side (the paste-back would shrink
    a larger output again), or None when no frame is pasted back (a template) or that side is not
    above the model's `size`."""
    if large_crops is None or plan.frames is None:
        return None
    side = min(large_crops.shape[1], math.floor(max(t.box[2] - t.box[0] for t in plan.transforms)))
    if side <= size:
        return None
    if side == large_crops.shape[1]:
        return large_crops
    return np.stack([cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA) for crop in large_crops])


def _warped_pictures(out, images: np.ndarray) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB of the "warped" video: a blend model's pixel warp `sharp`, else
    the patch-wise x^t averaged over K (black for a synthesis-only model)."""
    if out.sharp is not None:
        return to_uint8_images(out.sharp)
    if out.warped is not None:
        return to_uint8_images(out.warped.float().mean(dim=1))
    return np.zeros_like(images)


def mask_pictures(mask: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) weights in [0, 1] -> (N, H, W, 3) uint8 grey (white = 1)."""
    return to_uint8_images(mask.float().expand(-1, 3, -1, -1) * 2 - 1)


def select_memory(memory: SubjectMemory, choices: torch.Tensor) -> SubjectMemory:
    """A pool memory (B=1, K=S) and (N, K) pool rows -> a memory with N subject sets of K frames."""
    return memory.select(choices)


def authors_pictures(unclamped: torch.Tensor, references: np.ndarray) -> np.ndarray:
    """The authors' demo output: (N, 3, H, W) unclamped RGB (TSNetOutput.unclamped) and
    (N, H, W, 3) uint8 RGB reference subject frames -> (N, H, W, 3) uint8 RGB.

    As their demo_face.py: each channel's mean and (unbiased) standard deviation matched to the
    reference's before any clamping, then clamped and truncated (not rounded) to 8 bits. Per-channel
    statistics are unchanged by their BGR-minus-mean scaling, so this works on RGB in [-1, 1].
    """
    images = unclamped.float()
    targets = to_model_frames(references, images.device)

    def stats(x):
        flat = x.flatten(2)  # (N, 3, H*W)
        return flat.mean(dim=2)[..., None, None], flat.std(dim=2)[..., None, None]

    (mean, std), (target_mean, target_std) = stats(images), stats(targets)
    matched = (images - mean) / std * target_std + target_mean
    pixels = ((matched + 1) / 2).clamp(0, 1) * 255
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # to(uint8) truncates, as astype


def match_colors(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel mean/std of `image` matched to `reference` ((H, W, 3) uint8 RGB each)."""
    image, reference = image.astype(np.float32), reference.astype(np.float32)
    mean, std = image.mean(axis=(0, 1)), image.std(axis=(0, 1)) + 1e-6
    matched = (image - mean) / std * reference.std(axis=(0, 1)) + reference.mean(axis=(0, 1))
    return np.clip(matched, 0, 255).round().astype(np.uint8)
