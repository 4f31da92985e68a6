"""Reading and writing videos: frames in and out as HxWx3 uint8 RGB numpy arrays.

Videos are decoded and encoded by the ffmpeg binary that imageio-ffmpeg ships (it honours colour
matrices and rotation, which cv2.VideoCapture does not) and stream frame by frame; images are read
by OpenCV as one-frame videos. `VideoWriter` writes browser-playable H.264 mp4 files atomically.
Unreadable files raise VideoError, bad arguments InputError; BGR never leaves this module
(docs/video.md).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from .errors import InputError, VideoError

__all__ = [
    "VideoInfo",
    "probe_video",
    "open_video",
    "iter_frames",
    "read_frames",
    "VideoWriter",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MIN_SIDE = 16  # smallest frame side accepted, in pixels (the model works on 256 px crops)
_DEFAULT_FPS = 25.0  # used when a video's header gives no frame rate
_TRUNCATION_RATIO = 0.9  # fewer decoded frames than this share of the announced count: warn


@dataclass(frozen=True)
class VideoInfo:
    """What a video or image file holds.

    Attributes:
        fps: frames per second; None for an image.
        frame_count: number of frames, estimated from the header's duration x fps for videos
            (exact only once decoded; 0 when the header gives no duration); 1 for an image.
        width, height: frame size in pixels, after rotation metadata is applied.
        has_audio: the file has an audio stream.
        is_image: the file is a still image (a one-frame video).
    """

    fps: float | None
    frame_count: int
    width: int
    height: int
    has_audio: bool
    is_image: bool


# ----------------------------------------------------------------------------------------------
# Reading


def _ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path} does not exist or is not a file; check the path.")
    if path.stat().st_size == 0:
        raise VideoError(f"{path.name} is empty (0 bytes); upload or export the video again.")
    return path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _check_size(width: int, height: int, path: Path) -> None:
    if min(width, height) < MIN_SIDE:
        raise VideoError(
            f"{path.name} has {width}x{height} pixel frames, too small: frames must be "
            f"at least {MIN_SIDE} px on each side; use a larger video or image."
        )


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (EXIF orientation applied, alpha dropped)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(f"{path.name} cannot be read as an image; use a jpg, png, webp or bmp file.")
    _check_size(bgr.shape[1], bgr.shape[0], path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_command(path: Path, max_frames: int | None, loglevel: str) -> list[str]:
    """ffmpeg command that writes the first video stream's frames to stdout as raw RGB24."""
    limit = [] if max_frames is None else ["-frames:v", str(max_frames)]
    return [
        _ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        loglevel,
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        *limit,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:",
    ]


def _last_log_line(log: str) -> str:
    """The last line of an ffmpeg log that says what went wrong, without its [module @ 0x..] tag."""
    skip = (
        "Error opening input file",
        "Error opening input files",
        "Conversion failed",
        "frame=",
        "At least one output file",
    )
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(skip):
            return re.sub(r"^\[[^\]]*\]\s*", "", line).rstrip(".")
    return "no message from ffmpeg"


def _parse_header(log: str) -> dict:
    """fps, duration, has_audio of the input and (width, height) of the decoded frames.

    The output size is read from ffmpeg's description of its output stream, so it is the size
    after rotation metadata has been applied. Returns {} entries as None when not found.
    """
    source, _, output = log.partition("Output #0")
    video_line = re.search(r"Stream #\S+.*?: Video: .*", source)
    fps = re.search(r"([0-9]+(?:\.[0-9]+)?) fps", video_line.group(0)) if video_line else None
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)(?:, start: (-?[0-9.]+))?", source)
    # A video stream may start later than the file (audio first): count only its own span.
    video_start = re.search(r"start (-?[0-9.]+)", video_line.group(0)) if video_line else None
    late_start = 0.0
    if duration and duration.group(4) and video_start:
        late_start = max(0.0, float(video_start.group(1)) - float(duration.group(4)))
    size = re.search(r"Stream #\S+.*?: Video: .*?, (\d+)x(\d+)[ ,\n]", output)
    return {
        "fps": float(fps.group(1)) if fps else None,
        "duration": (
            int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)) - late_start
        )
        if duration
        else None,
        "has_audio": re.search(r"Stream #\S+.*?: Audio: ", source) is not None,
        "size": (int(size.group(1)), int(size.group(2))) if size else None,
    }


def _probe_stream(path: Path) -> tuple[dict, np.ndarray]:
    """Decode the first frame of a video: (header dict of `_parse_header`, (H, W, 3) RGB frame)."""
    result = subprocess.run(_decode_command(path, 1, "info"), capture_output=True, timeout=120)
    log = result.stderr.decode("utf-8", errors="replace")
    header = _parse_header(log)
    if header["size"] is None:
        raise VideoError(
            f"{path.name} cannot be read as a video ({_last_log_line(log)}); "
            "use a complete mp4, mov, webm, avi or gif file."
        )
    width, height = header["size"]
    _check_size(width, height, path)
    if len(result.stdout) < width * height * 3:
        raise VideoError(
            f"{path.name} contains no frame that can be decoded ({_last_log_line(log)}); "
            "it is probably truncated or damaged: export or download it again."
        )
    first = np.frombuffer(result.stdout[: width * height * 3], np.uint8).reshape(height, width, 3)
    return header, first.copy()


def _info_from_header(header: dict) -> VideoInfo:
    fps = header["fps"] if header["fps"] and 0 < header["fps"] <= 1000 else _DEFAULT_FPS
    duration = header["duration"] or 0.0
    width, height = header["size"]
    return VideoInfo(
        fps=fps,
        frame_count=int(round(duration * fps)),
        width=width,
        height=height,
        has_audio=header["has_audio"],
        is_image=False,
    )


def _check_request(path: Path, require_video: bool, max_frames: int | None) -> None:
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames is {max_frames!r}; give a whole number >= 1, or None for all.")
    if require_video and _is_image(path):
        raise VideoError(
            f"{path.name} is a still image but a video is needed here; give a video file (mp4, mov, webm, avi or gif)."
        )


def probe_video(path: str | os.PathLike, require_video: bool = False) -> VideoInfo:
    """Frame rate, size, frame count and audio of a video or image file, decoding only its start.

    Args:
        path: a video (mp4, mov, webm, avi, gif...) or an image (jpg, png, webp, bmp, tif).
        require_video: raise VideoError when the file is a still image.
    Returns:
        VideoInfo (frame_count is an estimate for videos).
    Raises:
        VideoError: the file is missing, empty, unreadable, has no decodable frame, or frames
            under 16 px.
    """
    path = _check_file(path)
    _check_request(path, require_video, None)
    if _is_image(path):
        return open_video(path)[0]
    header, _ = _probe_stream(path)
    return _info_from_header(header)


def iter_frames(
    path: str | os.PathLike, max_frames: int | None = None, require_video: bool = False
) -> Iterator[np.ndarray]:
    """Stream the frames of a video (or the single frame of an image).

    The file is checked when this is called (errors are raised here, not at the first frame);
    frames are decoded as they are consumed.

    Args:
        path: a video (mp4, mov, webm, avi, gif...) or an image (jpg, png, webp, bmp, tif).
        max_frames: stop after this many frames; None for all.
        require_video: raise VideoError when the file is a still image.
    Returns:
        An iterator of (H, W, 3) uint8 RGB frames in [0, 255], all the same size.
    Raises:
        VideoError: see `probe_video`; also while iterating if the video yields no frame at all.
            A truncated video that yields some frames gives a UserWarning.
    """
    return open_video(path, max_frames, require_video)[1]


def open_video(
    path: str | os.PathLike, max_frames: int | None = None, require_video: bool = False, info: VideoInfo | None = None
) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """`probe_video` and `iter_frames` in one: the file is checked and probed once.

    info: the VideoInfo an earlier `open_video` of the same file returned: decode again, no probe.
    Returns:
        (VideoInfo, iterator of (H, W, 3) uint8 RGB frames).
    Raises:
        VideoError: see `iter_frames`.
    """
    path = _check_file(path)
    _check_request(path, require_video, max_frames)
    if _is_image(path):
        frame = _read_image(path)
        info = VideoInfo(
            fps=None, frame_count=1, width=frame.shape[1], height=frame.shape[0], has_audio=False, is_image=True
        )
        return info, iter([frame])
    if info is None:
        info = _info_from_header(_probe_stream(path)[0])
    return info, _decode(path, info, max_frames)


def _decode(path: Path, info: VideoInfo, max_frames: int | None) -> Iterator[np.ndarray]:
    """Frames of a probed video, read from an ffmpeg pipe straight into numpy buffers."""
    log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg never blocks on a full stderr
    process = subprocess.Popen(_decode_command(path, max_frames, "error"), stdout=subprocess.PIPE, stderr=log)
    decoded = 0
    try:
        while True:
            frame = np.empty((info.height, info.width, 3), dtype=np.uint8)
            if not _read_exactly(process.stdout, frame):
                break
            decoded += 1
            yield frame
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        message = ""
        if not log.closed:  # a generator collected with its file in one garbage cycle finds it closed
            log.seek(0)
            message = _last_log_line(log.read().decode("utf-8", errors="replace"))
            log.close()
    if decoded == 0:
        raise VideoError(
            f"{path.name} contains no frame that can be decoded ({message}); "
            "it is probably truncated or damaged: export or download it again."
        )
    complete = max_frames is not None and decoded >= max_frames
    if not complete and (process.returncode != 0 or decoded < _TRUNCATION_RATIO * info.frame_count):
        warnings.warn(
            f"{path.name}: decoded {decoded} of about {info.frame_count} frames; the file "
            "seems truncated or damaged, so the rest is missing.",
            UserWarning,
            stacklevel=2,
        )


def _read_exactly(pipe, frame: np.ndarray) -> bool:
    """Fill `frame` from the pipe; False at the end of the stream (a partial last frame is dropped)."""
    view = memoryview(frame).cast("B")
    filled = 0
    while filled < len(view):
        count = pipe.readinto(view[filled:])
        if not count:
            return False
        filled += count
    return True


def read_frames(
    path: str | os.PathLike, max_frames: int | None = None, require_video: bool = False
) -> tuple[np.ndarray, float | None]:
    """All frames of a video (or an image) in memory; prefer `iter_frames` for long videos.

    Returns:
        frames: (T, H, W, 3) uint8 RGB in [0, 255].
        fps: frames per second, None for an image.
    Raises:
        VideoError: see `iter_frames`.
    """
    info, frames = open_video(path, max_frames, require_video)
    fps = info.fps
    return np.stack(list(frames)), fps


def _has_audio(path: Path) -> bool:
    """Whether ffmpeg sees an audio stream in the file (a video or an audio-only file)."""
    result = subprocess.run(
        [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    log = result.stderr.decode("utf-8", errors="replace")
    return re.search(r"Stream #\S+.*: Audio: ", log) is not None


# ----------------------------------------------------------------------------------------------
# Writing


class VideoWriter:
    """Write RGB frames to a browser-playable mp4, atomically.

    Use as a context manager; frames go to ffmpeg as they come:

        with VideoWriter("out.mp4", fps=25, audio_from="driving.mp4") as writer:
            for frame in frames:
                writer.write(frame)

    On a normal exit the file appears at `path` (replacing any file there); on an exception, or
    `abort()`, nothing is left behind. Odd widths or heights are padded to even by repeating the
    last row / column (H.264 in yuv420p needs even sizes).

    Args:
        path: output .mp4 path; its folder must exist.
        fps: frames per second, > 0.
        audio_from: a video or audio file whose first audio track is added (encoded as AAC,
            trimmed to the video's length); ignored when that file has no audio.
        crf: x264 quality, 0 (lossless) to 51 (worst); 18 looks lossless to most eyes.
        preset: x264 speed preset ("ultrafast" ... "veryslow").
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        audio_from: str | os.PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
    ):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise InputError(f"Output {self.path.name} must end in .mp4; VideoWriter writes mp4 files.")
        if not self.path.parent.is_dir():
            raise VideoError(f"The folder {self.path.parent} does not exist; create it first.")
        try:
            rate = float(fps)  # numpy scalars too
        except (TypeError, ValueError):
            rate = math.nan
        if isinstance(fps, bool) or not (math.isfinite(rate) and 0 < rate <= 1000):
            raise InputError(f"fps is {fps!r}; give a frame rate between 0 and 1000, such as 25.")
        self.fps = round(rate, 4)  # drops float32 noise (29.97 -> 29.969999313)
        self.crf, self.preset = int(crf), str(preset)
        self.audio_from = None
        if audio_from is not None and _has_audio(_check_file(audio_from)):
            self.audio_from = Path(audio_from)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._video_tmp = self.path.with_name(f".{self.path.stem}.{token}.video.partial.mp4")
        self._final_tmp = self.path.with_name(f".{self.path.stem}.{token}.partial.mp4")
        self._process: subprocess.Popen | None = None
        self._log = None
        self._size: tuple[int, int] | None = None  # (H, W) of the frames given
        self.frames_written = 0
        self._done = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not getattr(self, "_done", True):
            self.abort()

    def _start(self, height: int, width: int) -> None:
        self._log = tempfile.TemporaryFile()
        pad_h, pad_w = height + height % 2, width + width % 2
        command = [
            _ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{pad_w}x{pad_h}",
            "-r",
            repr(self.fps),
            "-i",
            "-",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            self.preset,
            "-crf",
            str(self.crf),
            # BT.709 conversion, tagged, so browsers and ffmpeg-based readers show true colours.
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv",
            "-pix_fmt",
            "yuv420p",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-color_range",
            "tv",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            str(self._video_tmp),
        ]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _ffmpeg_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (H, W, 3) uint8 RGB in [0, 255], the same size as the first frame."""
        if self._done:
            raise InputError("This VideoWriter is already closed; open a new one to write again.")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(
                f"Frame is {frame.dtype} with shape {frame.shape}; "
                "give HxWx3 uint8 RGB frames (convert floats with (x * 255).round())."
            )
        if self._size is None:
            self._size = frame.shape[:2]
            self._start(*self._size)
        elif frame.shape[:2] != self._size:
            raise InputError(
                f"Frame {self.frames_written} is {frame.shape[1]}x{frame.shape[0]} but "
                f"the video is {self._size[1]}x{self._size[0]}; "
                "give all frames the same size."
            )
        height, width = self._size
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._process.wait()
            raise VideoError(
                f"ffmpeg stopped while writing {self.path.name} ({self._ffmpeg_log()}); check free disk space."
            ) from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file (add the audio) and move it to `path`. Returns the path."""
        if self._done:
            return self.path
        try:
            if self.frames_written == 0:
                raise VideoError(
                    f"No frames were written to {self.path.name}; write at least one frame before closing."
                )
            self._process.stdin.close()
            if self._process.wait() != 0:
                raise VideoError(f"ffmpeg failed to encode {self.path.name} ({self._ffmpeg_log()}).")
            if self.audio_from is not None:
                self._mux_audio()
                os.replace(self._final_tmp, self.path)
            else:
                os.replace(self._video_tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.path

    def _mux_audio(self) -> None:
        duration = self.frames_written / self.fps
        command = [
            _ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(self._video_tmp),
            "-i",
            str(self.audio_from),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-t",
            f"{duration:.6f}",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            str(self._final_tmp),
        ]
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120 + 4 * duration)
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
            raise VideoError(
                f"Adding the audio of {self.audio_from.name} failed "
                f"({message[-1] if message else 'no message'}); "
                "pass audio_from=None to write the video without sound."
            )

    def abort(self) -> None:
        """Stop writing and delete everything written so far; `path` is left untouched."""
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._done = True
        for temporary in (self._video_tmp, self._final_tmp):
            temporary.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
