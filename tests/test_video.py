"""Video and image reading and writing: round trips, formats, and one clear error per bad input."""

import csv
import re
import subprocess
import warnings
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from tsnet_hf.errors import InputError, VideoError
from tsnet_hf.video import VideoWriter, iter_frames, probe_video, read_frames


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def ffmpeg_log(ffmpeg: str, path: Path) -> str:
    """ffmpeg's description of a file (streams, duration)."""
    return subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True).stderr


def moving_frames(count: int, height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8 RGB: a smooth colour gradient with a red square moving right."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack(
        [xs * 120 // width + 40, ys * 120 // height + 60, np.full_like(xs, 90 + rng.integers(0, 40))], axis=-1
    ).astype(np.uint8)
    frames = np.repeat(background[None], count, axis=0)
    for t in range(count):
        x = 4 + 2 * t
        frames[t, 20:36, x : x + 16] = (230, 30, 30)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float, audio_from=None) -> Path:
    with VideoWriter(path, fps=fps, audio_from=audio_from) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.fixture(scope="module")
def tone(tmp_path_factory, ffmpeg) -> Path:
    """A 3-second 440 Hz sine tone (wav), longer than the test videos."""
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    run_ffmpeg(ffmpeg, "-f", "lavfi", "-i", "sine=frequency=440:duration=3", str(path))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 20-frame 96x64 silent mp4 at 10 fps written by VideoWriter."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_frames(20), fps=10)


def assert_one_sentence(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message


# ----------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_with_audio(tmp_path, tone, ffmpeg):
    frames = moving_frames(25)
    out = write_video(tmp_path / "out.mp4", frames, fps=12.5, audio_from=tone)

    info = probe_video(out)
    assert (info.fps, info.frame_count, info.width, info.height) == (12.5, 25, 96, 64)
    assert info.has_audio and not info.is_image
    decoded, fps = read_frames(out)
    assert decoded.shape == (25, 64, 96, 3) and decoded.dtype == np.uint8 and fps == 12.5
    assert np.abs(decoded.astype(int) - frames).mean() < 3  # crf 18: visually lossless
    assert decoded[10, 28, 4 + 20 + 8, 0] > 200  # the red square moved where it was drawn

    log = ffmpeg_log(ffmpeg, out)
    assert re.search(r"Video: h264 .*yuv420p", log) and "Audio: aac" in log
    duration = re.search(r"Duration: 00:00:(\d\d\.\d+)", log)
    assert float(duration.group(1)) < 2.1  # the 3 s tone was trimmed to the 2 s video
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while loading
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left


def test_audio_copied_from_a_video(tmp_path, tone):
    driving = write_video(tmp_path / "driving.mp4", moving_frames(20), fps=10, audio_from=tone)
    result = write_video(tmp_path / "result.mp4", moving_frames(10)[:, ::-1], fps=10, audio_from=driving)
    assert probe_video(result).has_audio


def test_silent_audio_source_gives_silent_video(tmp_path, clip):
    out = write_video(tmp_path / "out.mp4", moving_frames(5), fps=10, audio_from=clip)
    assert not probe_video(out).has_audio


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = moving_frames(6, height=33, width=47)
    decoded, _ = read_frames(write_video(tmp_path / "odd.mp4", frames, fps=10))
    assert decoded.shape == (6, 34, 48, 3)
    assert np.abs(decoded[:, :33, :47].astype(int) - frames).mean() < 4


def test_iter_frames_streams(clip):
    frames = iter_frames(clip, max_frames=3)
    first = next(frames)
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8 and first.flags.writeable
    assert len(list(frames)) == 2
    stopped_early = iter_frames(clip)
    next(stopped_early)
    stopped_early.close()  # ends the decoder without reading the rest


@pytest.mark.parametrize(
    "suffix, codec", [(".gif", []), (".webm", ["-c:v", "libvpx"]), (".avi", ["-c:v", "mjpeg"]), (".mov", [])]
)
def test_other_formats(tmp_path, clip, ffmpeg, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    run_ffmpeg(ffmpeg, "-i", str(clip), *codec, str(path))
    frames, fps = read_frames(path)
    assert frames.shape == (20, 64, 96, 3) and fps == pytest.approx(10)
    assert frames[0, 28, 12, 0] > 150 and frames[0, 28, 12, 2] < 120  # red stays red (RGB order)


def test_image_is_a_one_frame_video(tmp_path):
    rgb = moving_frames(1, height=40, width=50)[0]
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    frames, fps = read_frames(path)
    assert fps is None and frames.shape == (1, 40, 50, 3)
    np.testing.assert_array_equal(frames[0], rgb)  # png is lossless and comes back as RGB
    info = probe_video(path)
    assert info.is_image and info.frame_count == 1 and info.fps is None
    with pytest.raises(VideoError, match="still image") as error:
        read_frames(path, require_video=True)
    assert_one_sentence(error)


# ----------------------------------------------------------------------------------------------
# Bad input: one clear error each, nothing left behind


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="does not exist") as error:
        read_frames(tmp_path / "nope.mp4")
    assert_one_sentence(error)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match="empty") as error:
        probe_video(path)
    assert_one_sentence(error)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="cannot be read as a video") as error:
        iter_frames(path)
    assert_one_sentence(error)


def test_truncated_video(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (40, 64, 96, 3), dtype=np.uint8)  # noise: big
    full = write_video(tmp_path / "full.mp4", frames, fps=10).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        decoded, _ = read_frames(cut)
    assert 0 < len(decoded) < 40
    stub = tmp_path / "stub.mp4"
    stub.write_bytes(full[:1500])  # the header alone, no frame
    with pytest.raises(VideoError) as error:
        read_frames(stub)
    assert_one_sentence(error)


def test_one_pixel_video(tmp_path, ffmpeg):
    path = tmp_path / "dot.gif"
    run_ffmpeg(ffmpeg, "-f", "lavfi", "-i", "color=c=red:size=1x1:rate=10", "-t", "1", str(path))
    with pytest.raises(VideoError, match="1x1 pixel.*16 px") as error:
        read_frames(path)
    assert_one_sentence(error)


def test_writer_frames_of_different_sizes(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="same size") as error:
        with VideoWriter(target, fps=10) as writer:
            writer.write(moving_frames(1)[0])
            writer.write(moving_frames(1, height=32, width=48)[0])
    assert_one_sentence(error)
    assert list(tmp_path.iterdir()) == []


def test_writer_leaves_nothing_on_error(tmp_path, clip):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, fps=10) as writer:
            writer.write(moving_frames(1)[0])
            raise RuntimeError("the model failed")
    with pytest.raises(InputError, match="uint8"):
        with VideoWriter(target, fps=10) as writer:
            writer.write(moving_frames(1)[0].astype(np.float32) / 255)
    with pytest.raises(VideoError, match="No frames"):
        with VideoWriter(target, fps=10):
            pass
    assert list(tmp_path.iterdir()) == []
    previous = b"an earlier result"
    target.write_bytes(previous)
    with pytest.raises(RuntimeError):
        with VideoWriter(target, fps=10) as writer:
            writer.write(moving_frames(1)[0])
            raise RuntimeError("interrupted")
    assert target.read_bytes() == previous and len(list(tmp_path.iterdir())) == 1


def test_writer_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="fps"):
        VideoWriter(tmp_path / "out.mp4", fps=0)
    with pytest.raises(InputError, match=".mp4"):
        VideoWriter(tmp_path / "out.avi", fps=25)
    with pytest.raises(VideoError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", fps=25)
    with pytest.raises(VideoError, match="does not exist"):
        VideoWriter(tmp_path / "out.mp4", fps=25, audio_from=tmp_path / "nope.mp4")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Real files from ../shared


def manifest_rows(shared_dir: Path) -> dict[str, dict]:
    with open(shared_dir / "data" / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.mark.shared
def test_real_face_clip_matches_manifest(shared_dir):
    name = "face/liveportrait_d0.mp4"
    row = manifest_rows(shared_dir)[name]
    info = probe_video(shared_dir / "data" / name)
    frames, fps = read_frames(shared_dir / "data" / name)
    width, height = (int(v) for v in row["resolution"].split("x"))
    assert frames.shape[1:] == (height, width, 3)
    assert abs(len(frames) - int(row["frame_count"])) <= 1
    assert abs(info.frame_count - int(row["frame_count"])) <= 2  # the header's estimate
    assert fps == pytest.approx(float(row["fps"]), rel=1e-3)


@pytest.mark.shared
def test_real_photo(shared_dir):
    name = "photos/portrait_tpsmm_source.png"
    width, height = (int(v) for v in manifest_rows(shared_dir)[name]["resolution"].split("x"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames, fps = read_frames(shared_dir / "data" / name)
    assert frames.shape == (1, height, width, 3) and fps is None
    assert 20 < frames.mean() < 235
