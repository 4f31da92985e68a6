"""RetargetPipeline and the tsnet-retarget CLI, on a small random checkpoint and real or generated clips."""

import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch

import tsnet_hf.video
from tsnet_hf import (
    CheckpointError,
    DetectionError,
    InputError,
    TSNet,
    TSNetError,
    VideoError,
    options,
    runner,
    tiny_config,
)
from tsnet_hf.cli import build_parser
from tsnet_hf.cli import main as cli_main
from tsnet_hf.pipeline import RetargetPipeline
from tsnet_hf.selection import choose_subject_frames, diverse_rows
from tsnet_hf.video import probe_video, read_frames

from synthetic import astronaut, moving_face_frames, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    torch.manual_seed(0)
    TSNet(tiny_config("face")).save_pretrained(folder / "face-tiny")
    TSNet(tiny_config("body")).save_pretrained(folder / "body-tiny")
    TSNet(tiny_config("face", output="blend")).save_pretrained(folder / "face-blend-tiny")
    return {
        "face": folder / "face-tiny",
        "body": folder / "body-tiny",
        "face_blend": folder / "face-blend-tiny",
        "subject": write_video(folder / "subject.mp4", moving_face_frames(12, seed=1)),
        "driving": write_video(folder / "driving.mp4", moving_face_frames(30, seed=2), fps=24, audio=True),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def face_pipe(media):
    return RetargetPipeline.from_pretrained(media["face"], device="cpu")


@pytest.fixture(scope="module")
def blend_pipe(media):
    return RetargetPipeline.from_pretrained(media["face_blend"], device="cpu")


@pytest.mark.slow  # mediapipe
def test_outputs_have_driving_length_fps_and_audio(face_pipe, media):
    result = face_pipe(media["subject"], media["driving"], mode="face")
    assert result.num_frames == 30 and result.fps == 24
    size = face_pipe.size
    frames = result.frames
    assert frames.shape == (30, 256, 256, 3)  # pasted back into the 256x256 driving frames
    for name, shape in [
        ("crop", (size, size)),
        ("driving_masks", (size, size)),
        ("aligned_masks", (size, size)),
        ("warped", (size, size)),
        ("side_by_side", (size, 5 * size)),
    ]:
        assert result.read(name).shape == (30, *shape, 3), name
    assert result.subject_masks.shape == result.subject_crops.shape == (12, size, size, 3)
    assert len(result.frames_report) == 30
    assert all(len(r.subject_frames) == 3 for r in result.frames_report)
    out = media["folder"] / "out.mp4"
    result.save(out, side_by_side=media["folder"] / "sbs.mp4")
    info = probe_video(out)
    assert info.has_audio and abs(info.fps - 24) < 1e-3
    assert probe_video(media["folder"] / "sbs.mp4").has_audio
    assert {"subject decode + landmarks", "encode subject", "driving decode + landmarks", "generator"} <= set(
        result.timings
    )
    assert "30/30 frames detected" in result.summary()


@pytest.mark.slow  # mediapipe
def test_max_frames_crop_only_and_random_selection(face_pipe, media):
    result = face_pipe(
        media["subject"],
        media["driving"],
        mode="face",
        max_frames=7,
        paste_back=False,
        selection="random",
        seed=3,
        num_subject_frames=2,
        batch_size=3,
    )
    assert result.num_frames == 7
    assert result.frames.shape == (7, face_pipe.size, face_pipe.size, 3)
    chosen = {r.subject_frames for r in result.frames_report}
    assert len(chosen) == 1 and len(next(iter(chosen))) == 2  # drawn once, as the paper


@pytest.mark.slow  # mediapipe
def test_nearest_selection_finds_the_identical_pose(face_pipe, media):
    """Self-reconstruction with the subject as driver: each frame's nearest subject frame is itself."""
    result = face_pipe(media["subject"], media["subject"], mode="face", align=False)
    assert [r.subject_frames[0] for r in result.frames_report] == list(range(12))


def test_choose_subject_frames_unit():
    rng = np.random.default_rng(0)
    pool = rng.uniform(0, 64, (6, 68, 3)).astype(np.float32)
    pool[..., 2] = 1
    driving = pool[[4, 1, 1]].copy()
    driving[2, :, :2] += 0.5  # close to pool frame 1, not equal
    choices = choose_subject_frames(driving, pool, 64, k=2)
    assert choices[:, 0].tolist() == [4, 1, 1]
    with pytest.raises(InputError, match="K = 7"):
        choose_subject_frames(driving, pool, 64, k=7)
    assert diverse_rows(pool, 3).tolist() == sorted(diverse_rows(pool, 3).tolist())
    assert len(diverse_rows(pool, 3)) == 3 and 0 in diverse_rows(pool, 3)


@pytest.mark.slow  # mediapipe
def test_photo_subject_and_array_inputs(face_pipe, media):
    photo = astronaut(300)
    driving = moving_face_frames(5, seed=4)
    result = face_pipe(photo, driving, mode="face")
    assert result.num_frames == 5 and len(result.subject_crops) == 1
    assert all(r.subject_frames == (0,) for r in result.frames_report)
    with pytest.raises(InputError, match="K = 3 subject frames were asked but the subject gives only 1"):
        face_pipe(photo, driving, mode="face", num_subject_frames=3)


@pytest.mark.slow  # mediapipe
def test_motion_template_drives_without_frames(face_pipe, media):
    from tsnet_hf.landmarks import detect

    template = detect(str(media["driving"]), mode="face", max_frames=6)
    result = face_pipe(media["subject"], template, mode="face")
    assert result.num_frames == 6 and result.frames.shape[1:3] == (face_pipe.size, face_pipe.size)


@pytest.mark.slow  # mediapipe
def test_bad_inputs(face_pipe, media, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    noise = write_video(tmp_path / "noise.mp4", np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), np.uint8))
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), astronaut(128)[..., ::-1])
    cases = [
        ((media["subject"], text), VideoError),
        ((media["subject"], photo), TSNetError),  # an image where a video is required
        ((media["subject"], noise), DetectionError),  # no face
        ((noise, media["driving"]), DetectionError),
        ((media["subject"], tmp_path / "missing.mp4"), VideoError),
        ((media["subject"], 42), InputError),
    ]
    for (subject, driving), error in cases:
        with pytest.raises(error):
            face_pipe(subject, driving, mode="face")
    with pytest.raises(InputError, match="face model"):
        face_pipe(media["subject"], media["driving"], mode="body")
    with pytest.raises(InputError, match="batch_size"):
        face_pipe(media["subject"], media["driving"], batch_size=0)


def test_bad_checkpoints(media, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        RetargetPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"hidden_size": 4}))
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    with pytest.raises(TSNetError, match="unknown field"):
        RetargetPipeline.from_pretrained(tmp_path / "other")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="offline"):
        RetargetPipeline.from_pretrained("someone/tsnet-face", cache_dir=tmp_path / "cache")


@pytest.mark.slow  # mediapipe
def test_cli_writes_outputs_and_fails_cleanly(media, tmp_path, capfd):
    out = tmp_path / "cli.mp4"
    code = cli_main(
        [
            str(media["subject"]),
            str(media["driving"]),
            "-o",
            str(out),
            "--checkpoint",
            str(media["face"]),
            "--mode",
            "face",
            "--max-frames",
            "6",
            "--side-by-side",
            str(tmp_path / "sbs.mp4"),
            "--warped",
            str(tmp_path / "warped.mp4"),
            "--masks",
            str(tmp_path / "masks.mp4"),
        ]
    )
    assert code == 0
    for name in ("cli.mp4", "sbs.mp4", "warped.mp4", "masks.mp4"):
        assert probe_video(tmp_path / name).frame_count in (5, 6, 7), name
    capfd.readouterr()
    bad = tmp_path / "bad.mp4"
    code = cli_main(
        [str(media["subject"]), str(tmp_path / "nope.mp4"), "-o", str(bad), "--checkpoint", str(media["face"]), "-q"]
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ")
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))


@pytest.mark.slow  # mediapipe
def test_cli_blend_mask_flag(media, tmp_path, capfd):
    out, blend = tmp_path / "cli.mp4", tmp_path / "blend.mp4"
    code = cli_main(
        [
            str(media["subject"]),
            str(media["driving"]),
            "-o",
            str(out),
            "--checkpoint",
            str(media["face_blend"]),
            "--mode",
            "face",
            "--max-frames",
            "4",
            "--blend-mask",
            str(blend),
            "-q",
        ]
    )
    assert code == 0
    assert len(read_frames(blend)[0]) == len(read_frames(out)[0]) == 4
    capfd.readouterr()
    decoder_out = tmp_path / "decoder.mp4"
    code = cli_main(
        [
            str(media["subject"]),
            str(media["driving"]),
            "-o",
            str(decoder_out),
            "--checkpoint",
            str(media["face"]),
            "--blend-mask",
            str(tmp_path / "none.mp4"),
            "-q",
        ]
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--blend-mask needs a blend model" in err[0]
    assert not decoder_out.exists() and not (tmp_path / "none.mp4").exists()


@pytest.mark.slow  # mediapipe
def test_blend_model_writes_its_blend_mask_and_a_high_res_output(blend_pipe, tmp_path):
    subject, driving = moving_face_frames(6, seed=1), moving_face_frames(5, seed=2)
    result = blend_pipe(subject, driving, mode="face")
    size = blend_pipe.size
    mask = result.blend_mask
    assert mask.shape == (5, size, size, 3)
    assert np.abs(mask.astype(int) - mask[..., :1]).max() <= 3  # grey, up to the video codec
    assert result.read("side_by_side").shape == (5, size, 6 * size, 3)  # one more panel: the blend mask
    assert "high-res warp" in result.timings  # 256 px frames: the face crop is larger than 64 px
    off = blend_pipe(subject, driving, mode="face", high_res_warp=False)
    assert "high-res warp" not in off.timings
    assert np.array_equal(result.read("crop"), off.read("crop"))  # the model's own frames do not change
    assert not np.array_equal(result.frames, off.frames)  # the pasted-back output does
    result.save(tmp_path / "out.mp4", blend_mask=tmp_path / "blend.mp4")
    assert len(read_frames(tmp_path / "blend.mp4")[0]) == 5


@pytest.mark.slow  # mediapipe
def test_a_decoder_model_makes_no_blend_mask(face_pipe, tmp_path):
    result = face_pipe(moving_face_frames(4, seed=1), moving_face_frames(3, seed=2), mode="face")
    assert "blend_mask" not in result.videos and "high-res warp" not in result.timings
    assert result.read("side_by_side").shape == (3, face_pipe.size, 5 * face_pipe.size, 3)
    with pytest.raises(InputError, match="Only a blend model"):
        result.blend_mask
    folder = tmp_path / "saved"
    folder.mkdir()
    with pytest.raises(InputError, match="Only a blend model"):
        result.save(folder / "out.mp4", blend_mask=folder / "blend.mp4")
    assert not list(folder.iterdir())  # every video is checked before anything is copied


def test_the_warped_video_of_a_blend_model_is_its_pixel_warp():
    from tsnet_hf.modeling import TSNetOutput
    from tsnet_hf.runner import _warped_pictures, mask_pictures
    from tsnet_hf.utils import to_uint8_images

    image, sharp = torch.zeros(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1
    patch = torch.rand(2, 3, 3, 8, 8) * 2 - 1
    blend = TSNetOutput(image=image, warped=patch, sharp=sharp, blend_mask=torch.ones(2, 1, 8, 8))
    assert np.array_equal(_warped_pictures(blend, to_uint8_images(image)), to_uint8_images(sharp))
    decoder = TSNetOutput(image=image, warped=patch)
    assert np.array_equal(_warped_pictures(decoder, to_uint8_images(image)), to_uint8_images(patch.mean(dim=1)))
    assert (mask_pictures(blend.blend_mask) == 255).all() and mask_pictures(blend.blend_mask).shape == (2, 8, 8, 3)


@pytest.mark.slow
def test_memory_stays_flat_as_length_grows(media, tmp_path):
    """Peak RSS on a 600-frame driving video is within noise of a 150-frame one. Keeping each
    256x256 driving frame would add 88 MB (checked: such a leak fails this test); noise ~20 MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    script = (
        "import re, sys; from tsnet_hf.pipeline import RetargetPipeline\n"
        "pipe = RetargetPipeline.from_pretrained(sys.argv[1], device='cpu')\n"
        "pipe(sys.argv[2], sys.argv[3], mode='face', batch_size=8).cleanup()\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # fewer malloc arenas: less allocator noise
    peaks = {}
    for frames in (150, 600):
        driving = write_video(tmp_path / f"long{frames}.mp4", moving_face_frames(frames, seed=5))
        run = subprocess.run(
            [sys.executable, "-c", script, str(media["face"]), str(media["subject"]), str(driving)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        peaks[frames] = int(run.stdout.strip().splitlines()[-1]) / 1024  # MiB
    assert peaks[600] < peaks[150] + 40, peaks


@pytest.mark.shared
def test_real_face_and_dance_clips(media, shared_dir):
    face = RetargetPipeline.from_pretrained(media["face"], device="cpu")
    clips = shared_dir / "data" / "face"
    result = face(
        clips / "liveportrait_d12.mp4", clips / "moore_talkinghead_1.mp4", max_frames=10, subject_max_frames=30
    )
    assert result.num_frames == 10 and result.fps == 25 and result.mode == "face"
    assert result.frames.shape == (10, 512, 512, 3)
    body = RetargetPipeline.from_pretrained(media["body"], device="cpu")
    dance = shared_dir / "data" / "dance"
    result = body(
        dance / "mimicmotion_raw_1.mp4",
        dance / "mimicmotion_raw_2.mp4",
        mode="body",
        max_frames=8,
        subject_max_frames=20,
    )
    assert result.num_frames == 8 and result.fps == 15
    assert result.read("aligned_masks").shape == (8, body.size, body.size, 3)
    with pytest.raises(InputError):  # a face subject with a dance driver
        face(clips / "liveportrait_d12.mp4", dance / "ipercore_akun_1.mp4", max_frames=4)


@pytest.mark.slow  # mediapipe
def test_channels_last_gives_the_same_frames(media):
    model = TSNet.from_pretrained(media["face"])
    subject, driving = moving_face_frames(6, seed=1), moving_face_frames(5, seed=2)
    frames = [
        RetargetPipeline(model, device="cpu", channels_last=cl)(subject, driving, mode="face", paste_back=False).frames
        for cl in (False, True)
    ]
    # Kernels of the two layouts round differently; a random model's tau = 100 softmax amplifies that in a
    # few pixels (up to 16 grey levels on an AMX CPU), while a layout bug would move whole frames.
    gaps = np.abs(frames[0].astype(int) - frames[1].astype(int)).reshape(len(frames[0]), -1)
    assert gaps.mean(axis=1).max() < 0.5 and np.percentile(gaps, 99) <= 4


@pytest.mark.slow  # mediapipe
def test_a_workdir_the_caller_gives_is_kept(face_pipe, tmp_path):
    folder = tmp_path / "mine"
    result = face_pipe(moving_face_frames(4, seed=1), moving_face_frames(3, seed=2), mode="face", workdir=folder)
    result.cleanup()
    assert (folder / "output.mp4").is_file()
    own = face_pipe(moving_face_frames(4, seed=1), moving_face_frames(3, seed=2), mode="face")
    own.cleanup()
    assert not own.workdir.exists()


@pytest.mark.slow  # mediapipe
def test_preview_shows_each_chunk_as_it_is_written(face_pipe):
    seen = []
    result = face_pipe(
        moving_face_frames(6, seed=1),
        moving_face_frames(10, seed=2),
        mode="face",
        batch_size=4,
        preview=lambda done, total, picture: seen.append((done, total, picture.copy())),
    )
    assert [(done, total) for done, total, _ in seen] == [(4, 10), (8, 10), (10, 10)]
    side_by_side = result.read("side_by_side")
    assert seen[-1][2].shape == side_by_side.shape[1:] and seen[-1][2].dtype == np.uint8
    # the last preview is the last side-by-side frame, up to the video codec
    assert np.abs(seen[-1][2].astype(int) - side_by_side[-1].astype(int)).mean() < 4


@pytest.mark.slow  # mediapipe
def test_a_cancelled_run_stops_and_leaves_no_files(face_pipe, tmp_path):
    from tsnet_hf import Cancelled

    calls = []

    def cancel_after_first_chunk(done, total, picture):
        calls.append(done)
        raise Cancelled("stopped by the test")

    import tempfile

    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(Cancelled):
        face_pipe(
            moving_face_frames(6, seed=1),
            moving_face_frames(12, seed=2),
            mode="face",
            batch_size=4,
            preview=cancel_after_first_chunk,
        )
    assert calls == [4]  # no chunk after the cancel was written
    assert not {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("tsnet-")}


def test_cpu_default_dtype_is_bf16_for_blend_models_where_the_cpu_has_it(media):
    from tsnet_hf.utils import autocast_dtype, cpu_has_bf16

    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert RetargetPipeline.from_pretrained(media["face_blend"], device="cpu").dtype == expected
    assert RetargetPipeline.from_pretrained(media["face"], device="cpu").dtype == torch.float32  # decoder model
    authors = tiny_config("face", authors_compat=True)
    assert autocast_dtype(cpu, None, authors) == torch.float32  # converted checkpoints: fp32
    assert autocast_dtype(cpu, torch.float32, tiny_config("face", output="blend")) == torch.float32  # asked: kept


def test_zero_threads_is_one_sentence_in_the_cli_and_the_app(media, tmp_path, capfd):
    from tsnet_hf import demo

    out = tmp_path / "cli.mp4"
    threads = torch.get_num_threads()
    code = cli_main(
        [
            str(media["subject"]),
            str(media["driving"]),
            "-o",
            str(out),
            "--checkpoint",
            str(media["face"]),
            "--threads",
            "0",
            "-q",
        ]
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["error: --threads must be at least 1, got 0."] and not out.exists()
    assert demo.main(["--threads", "-2", "--no-shipped", "--cache-dir", str(tmp_path / "cache")]) == 1
    assert capfd.readouterr().err.strip() == "error: --threads must be at least 1, got -2."
    assert torch.get_num_threads() == threads  # nothing was changed


def test_cpu_threads_counts_the_usable_cores():
    from tsnet_hf.utils import cpu_threads

    assert 1 <= cpu_threads() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cpu_threads() <= len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_compiled_generator_gives_the_eager_frames(media):
    """torch.compile (--compile): the same frames, with the last, smaller chunk padded to the first's size."""
    model = TSNet.from_pretrained(media["face_blend"])
    subject, driving = moving_face_frames(6, seed=1), moving_face_frames(10, seed=2)
    frames = [
        RetargetPipeline(model, device="cpu", dtype=torch.float32, compile=compiled)(
            subject, driving, mode="face", paste_back=False, batch_size=4
        ).read("crop")
        for compiled in (False, True)
    ]
    gaps = np.abs(frames[0].astype(int) - frames[1].astype(int)).reshape(len(frames[0]), -1)
    # fused kernels round differently, and a random model's softmax at tau = 100 amplifies that in places
    assert gaps.shape[0] == 10 and gaps.mean(axis=1).max() < 2.0  # a wrong frame order or padding: tens


@pytest.mark.slow  # mediapipe (an auto-mode run detects landmarks)
def test_an_auto_run_probes_each_input_file_once(face_pipe, media, monkeypatch, tmp_path):
    """mode="auto" reads the first frames of both inputs, then the subject again (landmarks, crops)
    and the driving video again (landmarks, generation): one probe per file, every later pass
    decodes with the VideoInfo of the first."""
    passes, probes = [], []
    open_video, probe_stream = runner.open_video, tsnet_hf.video._probe_stream

    def spy_open(path, *args, info=None, **kwargs):
        passes.append((os.path.basename(path), info is None))
        return open_video(path, *args, info=info, **kwargs)

    def spy_probe(path):
        probes.append(os.path.basename(path))
        return probe_stream(path)

    monkeypatch.setattr(runner, "open_video", spy_open)
    monkeypatch.setattr(tsnet_hf.video, "_probe_stream", spy_probe)
    subject = write_video(tmp_path / "subject.mp4", moving_face_frames(8, seed=3))  # seed 1 reads as a body
    result = face_pipe(subject, media["driving"], max_frames=6)
    assert result.num_frames == 6 and result.mode == "face"
    assert sorted(probes) == ["driving.mp4", "subject.mp4"]
    for name in ("subject.mp4", "driving.mp4"):
        unprobed = [new for file, new in passes if file == name]
        assert len(unprobed) == 3 and unprobed == [True, False, False], (name, unprobed)


@pytest.mark.slow  # mediapipe (the pipeline runs on frames)
def test_a_result_keeps_its_videos_until_cleanup_or_the_end_of_its_with_block(face_pipe):
    subject, driving = moving_face_frames(4, seed=1), moving_face_frames(3, seed=2)
    result = face_pipe(subject, driving, mode="face")
    path = result.videos["output"]
    del result
    gc.collect()
    assert path.is_file()  # no deletion on garbage collection: the caller may still hold its paths
    shutil.rmtree(path.parent)
    with face_pipe(subject, driving, mode="face") as result:
        assert len(result.read("output")) == 3
    assert not result.workdir.exists()


@pytest.mark.slow
def test_work_folders_not_cleaned_up_go_when_the_interpreter_exits(tmp_path):
    script = (
        "import sys, numpy as np; from pathlib import Path; from tsnet_hf.outputs import RetargetOutput\n"
        "empty = np.zeros((0, 8, 8, 3), np.uint8)\n"
        "for name, owns in (('temporary', True), ('given', False)):\n"
        "    folder = Path(sys.argv[1]) / name; folder.mkdir(); (folder / 'output.mp4').write_bytes(b'')\n"
        "    RetargetOutput(25.0, 0, 'face', 8, folder, {'output': folder / 'output.mp4'}, empty, empty,\n"
        "                   np.zeros(0, int), [], '', '', owns_workdir=owns)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert not (tmp_path / "temporary").exists() and (tmp_path / "given" / "output.mp4").is_file()


def test_call_defaults_and_cli_choices_come_from_run_options():
    """RunOptions is the one home of the run options: the pipeline's keyword defaults and the
    command line's choices and defaults are its own."""
    parameters = inspect.signature(RetargetPipeline.__call__).parameters
    assert {f.name: parameters[f.name].default for f in fields(options.RunOptions)} == {
        f.name: f.default for f in fields(options.RunOptions)
    }
    actions = {action.dest: action for action in build_parser()._actions}
    for dest, allowed in (
        ("mode", options.RUN_MODES),
        ("selection", options.SELECTIONS),
        ("missing", options.MISSING_POLICIES),
    ):
        assert tuple(actions[dest].choices) == allowed and actions[dest].default == getattr(options.RunOptions, dest)
    assert actions["batch_size"].default == options.RunOptions.batch_size
