"""training/: preprocessing caches, clip sampling and augmentation, the training loop, checkpoints,
resume, and the errors a user can cause. Tiny models at 64x64 on generated clips (no ../shared),
plus one real clip behind the `shared` marker."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(ROOT))

from training import checkpoints, data, options, preprocess, train  # noqa: E402
from tsnet_hf import TSNet  # noqa: E402
from tsnet_hf.errors import CheckpointError, ConfigError, InputError  # noqa: E402
from tsnet_hf.layouts import BODY_POINTS, FACE_POINTS  # noqa: E402

from helpers import (  # noqa: E402
    SIZE,
    run_training,
    train_args,
    write_cache_index,
    write_cached_video,
    write_face_videos,
)

# ----- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def face_videos(tmp_path_factory) -> Path:
    return write_face_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="session")
def face_cache(face_videos, tmp_path_factory):
    """(cache folder, PreprocessReport) of the generated videos at 64 px."""
    cache = tmp_path_factory.mktemp("cache") / "face-64"
    report = preprocess.preprocess_folder(face_videos, cache, preprocess.CacheSettings("face", SIZE), progress=None)
    return cache, report


def write_body_cache(folder: Path, frames: int = 12, size: int = SIZE) -> Path:
    """A cache in preprocess.py's format with a synthetic stick figure (no detector needed)."""
    settings = preprocess.CacheSettings("body", size)
    stored = settings.stored_size
    rng = np.random.default_rng(0)
    base = np.zeros((BODY_POINTS, 3), np.float32)
    base[:, :2] = rng.uniform(0.3 * stored, 0.7 * stored, (BODY_POINTS, 2))
    base[:, 2] = 1.0
    base[20, 2] = base[23, 2] = 0.0  # small toes: never detected
    images = np.empty((frames, stored, stored, 3), np.uint8)
    points = np.empty((frames, BODY_POINTS, 3), np.float32)
    for t in range(frames):
        points[t] = base
        points[t, :, 0] += 3 * np.sin(t / 2)
        images[t] = (rng.uniform(0, 255, 3) * 0.2 + 100).astype(np.uint8)
        images[t, int(points[t, 0, 1]) :, :, 1] = 200  # something that moves with the figure
    name = write_cached_video(folder, "figure-00000000", settings, images, points)
    return write_cache_index(folder, settings, [name])


def read_metrics(output, kind="train") -> list[dict]:
    lines = (Path(output) / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["kind"] == kind]


# ----- the scripts --------------------------------------------------------------------------------------


@pytest.mark.slow  # Python subprocesses
def test_scripts_show_help_from_the_repository_root():
    for script in ("train.py", "preprocess.py", "evaluate.py"):
        result = subprocess.run(
            [sys.executable, f"training/{script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


# ----- preprocessing ------------------------------------------------------------------------------------


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_preprocess_caches_each_video_and_lists_the_failures(face_cache):
    cache, report = face_cache
    assert len(report.made) == 2 and not report.reused
    assert [video for video, _ in report.skipped] == ["blank.mp4"]
    assert "No face was found" in report.skipped[0][1]
    index = json.loads((cache / preprocess.INDEX_NAME).read_text())
    assert index["videos"] == report.usable and index["skipped"][0]["video"] == "blank.mp4"
    folder = cache / report.made[0]
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    points = np.load(folder / "landmarks.npy")
    meta = json.loads((folder / "meta.json").read_text())
    stored = round(SIZE * 1.25)
    assert frames.shape == (40, stored, stored, 3) and frames.dtype == np.uint8
    assert points.shape == (40, FACE_POINTS, 3) and points.dtype == np.float32
    assert np.load(folder / "detected.npy").all()
    inside = (points[..., :2] > 0) & (points[..., :2] < stored)
    assert inside.mean() > 0.99  # the face sits in the crop, in crop pixels
    assert meta["settings"]["size"] == SIZE and meta["fps"] == 25.0 and meta["tsnet_hf_version"]
    assert meta["detection"]["detected"] == 40 and "40/40" in meta["detection"]["summary"]
    assert np.load(folder / "boxes.npy").shape == (40, 4)


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_preprocess_rerun_reuses_caches_and_does_not_retry_failures(face_cache, face_videos):
    cache, first = face_cache
    lines = []
    again = preprocess.preprocess_folder(
        face_videos, cache, preprocess.CacheSettings("face", SIZE), progress=lines.append
    )
    assert sorted(again.reused) == sorted(first.made) and not again.made
    assert any("as in the last run" in line for line in lines)
    assert again.bytes == first.bytes


@pytest.mark.slow  # mediapipe
def test_preprocess_frame_stride_keeps_every_nth_frame(face_videos, tmp_path):
    settings = preprocess.CacheSettings("face", 32, frame_stride=4, max_frames=20)
    report = preprocess.preprocess_folder(face_videos, tmp_path, settings, progress=None)
    folder = tmp_path / report.usable[0]
    assert np.load(folder / "frame_indices.npy").tolist() == [0, 4, 8, 12, 16]
    assert np.load(folder / "frames.npy").shape == (5, 40, 40, 3)


@pytest.mark.slow  # mediapipe
def test_a_folder_without_usable_video_is_one_clear_error(face_videos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no video file"):
        preprocess.preprocess_folder(empty, tmp_path / "c1", preprocess.CacheSettings("face", SIZE))
    blank_only = tmp_path / "blank"
    blank_only.mkdir()
    (blank_only / "blank.mp4").write_bytes((face_videos / "blank.mp4").read_bytes())
    with pytest.raises(InputError, match="No usable video") as caught:
        preprocess.preprocess_folder(blank_only, tmp_path / "c2", preprocess.CacheSettings("face", SIZE), progress=None)
    assert str(caught.value).count(". ") == 0  # one sentence
    # the same through the command line: a one-line error, exit status 2
    code = train.main(
        [
            "--data",
            str(blank_only),
            "--mode",
            "face",
            "--preset",
            "tiny",
            "--output",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "c3"),
            "--no-vgg",
            "--quiet",
        ]
    )
    assert code == 2


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_cache_of_another_mode_or_size_is_refused(face_cache):
    cache, _ = face_cache
    with pytest.raises(InputError, match="made for mode 'face' at 64 px"):
        data.open_cache(cache, "face", 128)


# ----- clips ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_clips_are_reproducible_and_come_from_two_segments(face_cache):
    cache, _ = face_cache
    sources, _ = data.split_sources(data.open_cache(cache, "face", SIZE), 0.0)
    dataset = data.ClipDataset(sources, SIZE, num_subject=3, num_targets=2, span=12, seed=5)
    first, again, other = dataset[17], dataset[17], dataset[18]
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["target_images"], other["target_images"])
    assert first["subject_images"].shape == (3, 3, SIZE, SIZE) and first["subject_images"].dtype == np.uint8
    assert first["target_labels"].shape == (2, SIZE, SIZE) and set(np.unique(first["target_labels"])) <= {0, 1}
    for index in range(40):
        rows = dataset[index]["rows"]
        subject, targets = set(rows[:3].tolist()), set(rows[3:].tolist())
        assert not subject & targets
        assert max(rows) - min(rows) < 12
        # two segments: all subject rows on one side of all target rows
        assert max(subject) < min(targets) or max(targets) < min(subject)


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_validation_split_holds_out_whole_videos(face_cache):
    cache, _ = face_cache
    videos = data.open_cache(cache, "face", SIZE)
    train_sources, val_sources = data.split_sources(videos, 0.5, seed=0)
    assert len(train_sources) == 1 and len(val_sources) == 1
    assert train_sources[0].video.name != val_sources[0].video.name
    by_time, held = data.split_sources(videos[:1], 0.25, by="time")
    assert held[0].rows.min() > by_time[0].rows.max()


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_flip_mirrors_the_frame_and_renumbers_the_landmarks(face_cache):
    cache, _ = face_cache
    sources, _ = data.split_sources(data.open_cache(cache, "face", SIZE), 0.0)
    plain = data.ClipDataset(sources, SIZE, 2, 1, augment=data.Augment.none(), seed=1)[3]
    flipped = data.ClipDataset(sources, SIZE, 2, 1, augment=data.Augment(0, 0, 1.0, 0, 0, 0, 0), seed=1)[3]
    assert np.array_equal(flipped["target_images"], plain["target_images"][..., ::-1])
    # the person's right eye (36-41) of the mirror image is where the left eye (42-47) was
    mirrored_left_eye = SIZE - 1 - plain["target_points"][0, 42:48, 0]
    assert np.allclose(np.sort(flipped["target_points"][0, 36:42, 0]), np.sort(mirrored_left_eye), atol=1e-3)
    overlap = (flipped["target_labels"][0] > 0) & (plain["target_labels"][0][:, ::-1] > 0)
    assert overlap.sum() > 0.7 * (plain["target_labels"][0] > 0).sum()


def test_crop_jitter_moves_landmarks_with_the_pixels():
    stored, size = 80, 64
    image = np.zeros((1, stored, stored, 3), np.uint8)
    image[0, 30, 50] = 255  # a dot at (x, y) = (50, 30)
    points = np.array([[[50.0, 30.0, 1.0]]], np.float32)
    matrix = data.crop_matrix(stored, 1.25, size, scale=(0.9, 1.1), offset=(0.04, -0.03))
    warped, moved = data.warp_clip(image, points, matrix, size)
    y, x = np.unravel_index(np.argmax(warped[0, ..., 0]), (size, size))
    assert abs(x - moved[0, 0, 0]) <= 1 and abs(y - moved[0, 0, 1]) <= 1
    identity = data.crop_matrix(size, 1.0, size)
    assert np.allclose(identity, [[1, 0, 0], [0, 1, 0]])


def test_colour_jitter_is_shared_by_the_clip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    clip = np.repeat(frame, 3, axis=0)
    out = data.jitter_colors(clip, np.random.default_rng(1), data.Augment())
    assert not np.array_equal(out[0], frame[0])
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])


def test_body_clips_carry_face_boxes(tmp_path):
    cache = write_body_cache(tmp_path / "body")
    sources, _ = data.split_sources(data.open_cache(cache, "body", SIZE), 0.0)
    item = data.ClipDataset(sources, SIZE, 2, 2, seed=0)[0]
    assert item["target_labels"].max() < 36 and item["target_labels"].max() > 0
    boxes = item["face_boxes"]
    assert boxes.shape == (2, 4) and (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes >= -1e-3).all() and (boxes <= SIZE + 1e-3).all()


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    rates = [train.learning_rate(2e-4, step, 90, 4 / 9) for step in range(91)]
    assert rates[0] == rates[40] == 2e-4  # 4/9 of 90 steps: constant up to step 40
    assert rates[41] < 2e-4 and rates[90] == 0.0
    assert np.allclose(np.diff(rates[40:]), -2e-4 / 50)


# ----- training ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_tiny_model_training_loss_falls(face_cache, tmp_path):
    cache, _ = face_cache
    steps = 40
    trainer = run_training(
        train_args(
            cache,
            tmp_path / "run",
            "--steps",
            str(steps),
            "--val-fraction",
            "0.5",
            "--image-every",
            "20",
            "--save-every",
            "1000",
            "--decay-start",
            "1",
        )
    )
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    first, last = rows[:10], rows[-10:]
    mean = lambda name, part: np.mean([r[name] for r in part])  # noqa: E731
    assert mean("g", last) < 0.85 * mean("g", first) and mean("l1", last) < 0.85 * mean("l1", first)
    assert mean("tra", last) < mean("tra", first)
    assert (tmp_path / "run" / "images" / "step-0000020.png").is_file()
    val = read_metrics(tmp_path / "run", "val")
    assert val and {"l1", "l2", "psnr"} <= set(val[-1])
    final = tmp_path / "run" / "final"
    loaded = TSNet.from_pretrained(final)
    assert loaded.config == trainer.config
    card = (final / "README.md").read_text()
    assert "## Training" in card and "## Evaluation" in card and "| psnr |" in card
    print(
        f"loss before/after: g {np.mean([r['g'] for r in first]):.3f} -> {np.mean([r['g'] for r in last]):.3f}, "
        f"l1 {np.mean([r['l1'] for r in first]):.4f} -> {np.mean([r['l1'] for r in last]):.4f}"
    )


@pytest.mark.shared
@pytest.mark.slow
def test_tiny_model_training_loss_falls_on_a_real_clip(shared_dir, tmp_path):
    clip = shared_dir / "data" / "face" / "liveportrait_d0.mp4"
    videos = tmp_path / "videos"
    videos.mkdir()
    os.symlink(clip, videos / clip.name)
    settings = preprocess.CacheSettings("face", SIZE, max_frames=48)
    preprocess.preprocess_folder(videos, tmp_path / "cache", settings, progress=None)
    run_training(train_args(tmp_path / "cache", tmp_path / "run", "--steps", "40", "--val-fraction", "0"))
    rows = read_metrics(tmp_path / "run")
    assert np.mean([r["l1"] for r in rows[-10:]]) < np.mean([r["l1"] for r in rows[:10]])


@pytest.mark.slow  # a training run
def test_body_training_uses_the_face_discriminator(tmp_path):
    cache = write_body_cache(tmp_path / "body")
    args = train_args(cache, tmp_path / "run", "--steps", "2", "--val-fraction", "0", "--save-every", "1000")
    args[args.index("face")] = "body"
    run_training(args)
    row = read_metrics(tmp_path / "run")[-1]
    assert {"face_gan", "face_fm", "df_real", "df_fake", "tra"} <= set(row) and "grad" not in row
    assert all(np.isfinite(v) for k, v in row.items() if isinstance(v, float))


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_resume_continues_exactly(face_cache, tmp_path):
    cache, _ = face_cache
    run_training(train_args(cache, tmp_path / "a", "--steps", "6", "--save-every", "3", "--val-fraction", "0"))
    resumed = tmp_path / "b"
    (resumed / "checkpoints").mkdir(parents=True)
    os.rename(tmp_path / "a" / "checkpoints" / "step-0000003", resumed / "checkpoints" / "step-0000003")
    run_training(["--output", str(resumed), "--resume", "--workers", "1", "--quiet"])  # settings from the checkpoint
    expected = [r for r in read_metrics(tmp_path / "a") if r["step"] > 3]
    got = read_metrics(resumed)
    assert [r["step"] for r in got] == [4, 5, 6]
    for a, b in zip(expected, got):
        timing = ("samples_per_s", "minutes")  # wall-clock fields differ between runs
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    first = TSNet.from_pretrained(tmp_path / "a" / "final").state_dict()
    second = TSNet.from_pretrained(resumed / "final").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_resume_with_other_settings_is_one_clear_error(face_cache, tmp_path):
    cache, _ = face_cache
    run_training(train_args(cache, tmp_path / "run", "--steps", "1", "--val-fraction", "0"))
    with pytest.raises(ConfigError, match="it was trained with --batch-size 2 but this run asks for 3"):
        train.Trainer(options.parse_args(["--output", str(tmp_path / "run"), "--resume", "--batch-size", "3"]))
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        train.Trainer(options.parse_args(["--output", str(tmp_path / "new"), "--resume"]))


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_killed_run_leaves_a_loadable_checkpoint(face_cache, tmp_path):
    cache, _ = face_cache
    output = tmp_path / "run"
    command = [
        sys.executable,
        "training/train.py",
        *train_args(
            cache, output, "--steps", "100000", "--save-every", "1", "--keep-checkpoints", "2", "--val-fraction", "0"
        ),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        found = checkpoints.list_checkpoints
        while len(found(output)) < 2 or found(output)[-1].name < "step-0000004":
            assert time.time() < deadline and process.poll() is None, "training did not write checkpoints"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # mid-step or mid-checkpoint: any moment
        process.wait()
    latest = checkpoints.list_checkpoints(output)[-1]
    model = TSNet.from_pretrained(latest)
    assert model.config.image_size == SIZE
    state = json.loads((latest / checkpoints.STATE_DIR / "state.json").read_text())
    assert latest.name == checkpoints.step_name(state["step"])


def test_checkpoint_writes_are_atomic(tmp_path):
    target = tmp_path / "checkpoint"
    checkpoints.write_atomically(target, lambda folder: (folder / "a.txt").write_text("good"))

    def broken(folder):
        (folder / "a.txt").write_text("half")
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        checkpoints.write_atomically(target, broken)
    assert (target / "a.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# ----- options and bad input -------------------------------------------------------------------------------


def test_a_config_file_sets_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"mode": "body", "steps": 12, "lr_g": 1e-4, "data": "videos"}))
    args = options.parse_args(["--config", str(config), "--output", str(tmp_path), "--steps", "7"])
    assert (args.mode, args.steps, args.lr_g, args.data) == ("body", 7, 1e-4, "videos")
    config.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['stepz'\]"):
        options.parse_args(["--config", str(config), "--output", str(tmp_path)])


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_an_output_folder_that_cannot_be_written_is_one_clear_error(face_cache, tmp_path):
    cache, _ = face_cache
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="Cannot write to the output folder"):
        train.Trainer(options.parse_args(train_args(cache, blocker / "run", "--steps", "1")))


def test_missing_options_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="--output"):
        options.parse_args(["--data", "x", "--mode", "face"])
    with pytest.raises(ConfigError, match="--data"):
        options.parse_args(["--output", str(tmp_path)])
    with pytest.raises(ConfigError, match="leave out --preset"):
        options.parse_args(
            ["--output", str(tmp_path), "--data", "x", "--mode", "face", "--init-from", "c", "--preset", "tiny"]
        )


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_fine_tuning_starts_from_a_checkpoint(face_cache, tmp_path):
    cache, _ = face_cache
    run_training(train_args(cache, tmp_path / "base", "--steps", "2", "--val-fraction", "0"))
    base = TSNet.from_pretrained(tmp_path / "base" / "final")
    args = train_args(cache, tmp_path / "tuned", "--steps", "1", "--val-fraction", "0", "--lr-g", "0")
    args[args.index("--preset") : args.index("--preset") + 2] = ["--init-from", str(tmp_path / "base" / "final")]
    run_training(args)
    tuned = TSNet.from_pretrained(tmp_path / "tuned" / "final")
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values()))
    args[args.index("face")] = "body"
    with pytest.raises(ConfigError, match="is a face model but --mode is body"):
        train.Trainer(options.parse_args(args))


def test_a_missing_vgg_file_stops_the_run_before_preprocessing(face_videos, tmp_path, capsys):
    code = train.main(
        [
            "--data",
            str(face_videos),
            "--mode",
            "face",
            "--preset",
            "tiny",
            "--output",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--vgg-weights",
            str(tmp_path / "vgg.safetensors"),
        ]
    )
    assert code == 2 and not (tmp_path / "cache").exists()
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: Weights file") and len(error.splitlines()) == 1


def test_push_to_hub_uploads_the_checkpoint_without_training_state(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))
            return "https://huggingface.co/user/model/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert train.push_to_hub(tmp_path, "user/model", private=True).endswith("/commit/1")
    assert calls[0] == ("create", "user/model", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["ignore_patterns"] == ["training_state/*"]

    class OfflineApi(FakeApi):
        def create_repo(self, repo_id, **kwargs):
            raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    with pytest.raises(CheckpointError, match="Could not push .* log in with `hf auth login`"):
        train.push_to_hub(tmp_path, "user/model")


def test_leftovers_of_an_interrupted_write_are_tidied(tmp_path):
    (tmp_path / ".partial-step-0000009-123").mkdir()
    (tmp_path / ".old-final-123").mkdir()  # killed between renaming final away and the new one in
    (tmp_path / "step-0000001").mkdir()
    (tmp_path / ".old-step-0000001-77").mkdir()
    checkpoints.clean_interrupted_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "step-0000001"]


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_two_processes_train_together_and_save_once(face_cache, tmp_path):
    """DistributedDataParallel on two CPU processes (gloo), as `accelerate launch` runs on GPUs."""
    cache, _ = face_cache
    output = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "training/train.py",
        "--cpu",
        *train_args(cache, output, "--steps", "2", "--save-every", "1", "--val-every", "1", "--val-clips", "3"),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es)" in (output / "log.txt").read_text()
    rows = read_metrics(output)
    assert [r["step"] for r in rows] == [1, 2]  # logged once, by the main process
    assert rows[0]["samples_per_s"] > 0 and len(read_metrics(output, "val")) == 2
    assert [p.name for p in checkpoints.list_checkpoints(output)] == ["step-0000001", "step-0000002"]
    TSNet.from_pretrained(output / "final")


# ----- the CPU recipe: blend path, warm-up, hold-out by name, time budget, progressive resolution ------------


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_blend_model_trains_after_a_warm_up_on_videos_held_out_by_name(face_cache, tmp_path):
    cache, _ = face_cache
    steps, warmup = 12, 6
    run_training(
        train_args(
            cache,
            tmp_path / "run",
            "--steps",
            str(steps),
            "--output-path",
            "blend",
            "--warmup-steps",
            str(warmup),
            "--holdout",
            "face1",
            "--lambda-l1",
            "10",
            "--image-every",
            str(steps),
        )
    )
    rows = read_metrics(tmp_path / "run")
    assert all("d" not in r and "gan" not in r and "l1w" in r for r in rows[:warmup])
    assert all({"d", "gan", "fm"} <= set(r) for r in rows[warmup:])
    model = TSNet.from_pretrained(tmp_path / "run" / "final")
    assert model.config.output == "blend" and model.config.frame_weights == "learned"
    state = json.loads((tmp_path / "run" / "final" / checkpoints.STATE_DIR / "state.json").read_text())
    assert state["seconds"] > 0
    trainer = train.Trainer(
        options.parse_args(train_args(cache, tmp_path / "other", "--steps", "1", "--holdout", "face1"))
    )
    assert [s.video.name.startswith("face1") for s in trainer.val_sources] == [True]
    assert not any(s.video.name.startswith("face1") for s in trainer.train_sources)
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "blend (learned frame weights)" in card and "held out by name" in card
    with pytest.raises(InputError, match="No cached video matches --holdout nobody"):
        train.Trainer(options.parse_args(train_args(cache, tmp_path / "bad", "--steps", "1", "--holdout", "nobody")))


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_time_budget_ends_with_a_complete_checkpoint_and_covers_resumed_runs(face_cache, tmp_path):
    cache, _ = face_cache
    output = tmp_path / "run"
    trainer = train.Trainer(
        options.parse_args(train_args(cache, output, "--steps", "100000", "--val-fraction", "0", "--time-budget", "1"))
    )
    trainer.args.time_budget = trainer.elapsed() / 60 + 0.01  # setup counts too; leave 0.6 s for steps
    trainer.run()
    assert 0 < trainer.step < 100000
    assert "time budget" in (output / "log.txt").read_text()
    final = TSNet.from_pretrained(output / "final")
    assert final.config.image_size == SIZE
    latest = checkpoints.list_checkpoints(output)[-1]
    assert latest.name == checkpoints.step_name(trainer.step)
    # The budget is the whole run's: a resumed run that has used it up stops at once.
    again = run_training(["--output", str(output), "--resume", "--quiet", "--workers", "0"])
    assert again.step == trainer.step


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_progressive_resolution_starts_from_the_lower_resolution_weights(face_cache, face_videos, tmp_path):
    cache, _ = face_cache
    run_training(train_args(cache, tmp_path / "low", "--steps", "1", "--val-fraction", "0", "--output-path", "blend"))
    high = tmp_path / "cache-96"
    preprocess.preprocess_folder(face_videos, high, preprocess.CacheSettings("face", 96), progress=None)
    args = train_args(
        high, tmp_path / "high", "--steps", "1", "--val-fraction", "0", "--lr-g", "0", "--output-path", "blend"
    )
    args[args.index("--preset") : args.index("--preset") + 2] = ["--init-from", str(tmp_path / "low" / "final")]
    run_training(args)
    low, high_model = (TSNet.from_pretrained(tmp_path / name / "final") for name in ("low", "high"))
    assert high_model.config.image_size == 96 and low.config.image_size == SIZE
    assert high_model.config.output == "blend"
    assert all(torch.equal(a, b) for a, b in zip(low.state_dict().values(), high_model.state_dict().values()))


@pytest.mark.slow  # mediapipe (the face_cache fixture), a training run
def test_bf16_autocast_on_the_cpu_follows_the_fp32_loss_curve(face_cache, tmp_path):
    """The check behind the CPU recipes' bf16: same seed and clips, the losses agree to a few percent."""
    cache, _ = face_cache
    curves = {}
    from accelerate.state import AcceleratorState

    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)  # one process, two precisions
        run_training(
            train_args(
                cache,
                tmp_path / precision,
                "--steps",
                "16",
                "--val-fraction",
                "0",
                "--cpu",
                "--mixed-precision",
                precision,
                "--output-path",
                "blend",
                "--lambda-l1",
                "10",
            )
        )
        curves[precision] = np.array([[r["g"], r["l1"]] for r in read_metrics(tmp_path / precision)])
    AcceleratorState._reset_state(reset_partial_state=True)
    fp32, bf16 = curves["no"], curves["bf16"]
    assert np.all(np.isfinite(bf16))
    relative = np.abs(bf16[-8:].mean(0) - fp32[-8:].mean(0)) / fp32[-8:].mean(0)
    assert np.all(relative < 0.05), relative
    assert np.all(np.abs(bf16[0] - fp32[0]) / fp32[0] < 0.02)  # the first step: rounding only


def test_every_recipe_is_a_valid_config(tmp_path):
    recipes = sorted((ROOT / "training" / "recipes").glob("*.json"))
    assert {"cpu-face.json", "cpu-body.json"} <= {p.name for p in recipes}
    for recipe in recipes:
        args = options.parse_args(["--config", str(recipe), "--output", str(tmp_path / recipe.stem)])
        assert args.mode in ("face", "body") and args.steps >= args.warmup_steps >= 0


# ----- compact caches (frames as webp / jpeg images or an mp4v video) -----------------------------------


@pytest.fixture(scope="session")
def compact_cache(face_cache, tmp_path_factory):
    """(cache folder, PreprocessReport): face_cache converted to webp, without detecting again."""
    cache, _ = face_cache
    target = tmp_path_factory.mktemp("compact") / "face-64-webp"
    return target, preprocess.convert_cache(cache, target, "webp", progress=None)


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 arrays."""
    return float(10 * np.log10(255**2 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def assert_near_frames(decoded, raw, limit: float = 4):
    """Lossy frames: same shape and dtype, each frame's mean error under `limit` grey levels (these
    80 px astronauts: at most 2.8 with WebP 80, 3.6 with mp4v; the real clips: MAE 2, 38 dB)."""
    assert decoded.shape == raw.shape and decoded.dtype == np.uint8
    errors = np.abs(decoded.astype(np.int16) - raw).mean(axis=(1, 2, 3))
    assert errors.max() < limit, errors.max()
    assert psnr(decoded, raw) > 30


def strip_storage_settings(cache: Path) -> None:
    """Make `cache` look written before the storage option: settings without storage / quality."""
    for path in [cache / preprocess.INDEX_NAME, *cache.glob(f"*/{preprocess.META_NAME}")]:
        record = json.loads(path.read_text())
        for key in ("storage", "quality"):
            record["settings"].pop(key, None)
        path.write_text(json.dumps(record))


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_compact_preprocessing_round_trips_frames_and_landmarks(face_cache, face_videos, tmp_path):
    raw_cache, raw_report = face_cache
    settings = preprocess.CacheSettings("face", SIZE, storage="webp")
    report = preprocess.preprocess_folder(face_videos, tmp_path, settings, progress=None)
    assert report.usable == raw_report.usable and report.bytes < raw_report.bytes / 5
    for name in report.usable:
        assert sorted(p.name for p in (tmp_path / name).glob("*.np?")) == [
            "boxes.npy",
            "detected.npy",
            "frame_indices.npy",
            "frames.npz",
            "landmarks.npz",
        ]
        raw, compact = data.CachedVideo(raw_cache / name), data.CachedVideo(tmp_path / name)
        assert_near_frames(compact.frames, raw.frames)
        assert not compact.frames.flags.writeable  # read-only, as a raw cache's memory map
        assert np.array_equal(compact.points, raw.points) and compact.points.dtype == np.float32
        assert np.array_equal(compact.detected, raw.detected)
        assert compact.meta["settings"]["quality"] == 80 and compact.meta["name"] == name
    again = preprocess.preprocess_folder(face_videos, tmp_path, settings, progress=None)
    assert sorted(again.reused) == report.usable and not again.made


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_compact_storage_settings_are_checked(face_videos, face_cache, tmp_path, monkeypatch):
    assert preprocess.CacheSettings(storage="jpeg").quality == 90
    for bad in (
        {"storage": "png"},
        {"storage": "webp", "quality": 0},
        {"storage": "jpeg", "quality": 101},
        {"storage": "raw", "quality": 80},
    ):
        with pytest.raises(InputError) as caught:
            preprocess.CacheSettings(**bad)
        assert str(caught.value).count(". ") == 0  # one sentence
    # an OpenCV without the codec's writer: refused before any detection
    monkeypatch.setitem(preprocess.IMAGE_CODECS, "webp", (".no-such-codec", 0, 80))
    settings = preprocess.CacheSettings("face", SIZE, storage="webp")
    with pytest.raises(InputError, match="cannot write webp images"):
        preprocess.preprocess_folder(face_videos, tmp_path / "a", settings, progress=None)
    with pytest.raises(InputError, match="cannot write webp images"):
        preprocess.convert_cache(face_cache[0], tmp_path / "b", "webp", progress=None)


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_a_raw_cache_made_before_compact_storage_opens_and_is_reused(face_cache, face_videos, tmp_path):
    import shutil

    cache = tmp_path / "old"
    shutil.copytree(face_cache[0], cache)
    meta = json.loads(next(cache.glob(f"*/{preprocess.META_NAME}")).read_text())
    assert "storage" not in meta["settings"]  # raw caches record what they did before: older code reuses them
    strip_storage_settings(cache)
    videos = data.open_cache(cache, "face", SIZE)
    assert isinstance(videos[0].frames, np.memmap) and videos[0].frames.shape[1:] == (80, 80, 3)
    assert preprocess.read_cache_settings(cache) == preprocess.CacheSettings("face", SIZE)
    lines = []
    settings = preprocess.CacheSettings("face", SIZE)
    again = preprocess.preprocess_folder(face_videos, cache, settings, progress=lines.append)
    assert sorted(again.reused) == face_cache[1].usable and not again.made  # nothing detected again
    assert any("as in the last run" in line for line in lines)
    body = write_body_cache(tmp_path / "body")
    strip_storage_settings(body)
    assert data.open_cache(body, "body", SIZE)[0].frames.shape == (12, 80, 80, 3)


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_compact_conversion_keeps_landmarks_and_nearly_the_frames(face_cache, compact_cache, face_videos):
    raw_cache, raw_report = face_cache
    cache, report = compact_cache
    assert report.made == raw_report.usable and report.bytes < raw_report.bytes / 5
    index = json.loads((cache / preprocess.INDEX_NAME).read_text())
    raw_index = json.loads((raw_cache / preprocess.INDEX_NAME).read_text())
    assert index["settings"] == {**raw_index["settings"], "storage": "webp", "quality": 80}
    assert index["skipped"] == raw_index["skipped"] and index["converted_from"] == str(raw_cache.resolve())
    for name in report.usable:
        raw, compact = data.CachedVideo(raw_cache / name), data.CachedVideo(cache / name)
        assert np.array_equal(compact.points, raw.points) and np.array_equal(compact.detected, raw.detected)
        for array in ("boxes.npy", "frame_indices.npy"):
            assert np.array_equal(np.load(cache / name / array), np.load(raw_cache / name / array))
        assert compact.meta["source"] == raw.meta["source"] and compact.meta["num_frames"] == raw.meta["num_frames"]
        assert_near_frames(compact.frames, raw.frames)
    # the videos with the same settings: the converted caches are current, the failure is not retried
    again = preprocess.preprocess_folder(
        face_videos, cache, preprocess.CacheSettings("face", SIZE, storage="webp"), progress=None
    )
    assert sorted(again.reused) == report.usable and [v for v, _ in again.skipped] == ["blank.mp4"]
    assert sorted(preprocess.convert_cache(raw_cache, cache, "webp", progress=None).reused) == report.usable


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_compact_conversion_from_the_command_line_takes_every_nth_row(face_cache, compact_cache, tmp_path, capsys):
    raw_cache, report = face_cache
    target = tmp_path / "jpeg"
    assert (
        preprocess.main(
            [
                str(compact_cache[0]),
                "--cache-dir",
                str(target),
                "--storage",
                "jpeg",
                "--quality",
                "95",
                "--frame-stride",
                "2",
                "--mode",
                "face",
            ]
        )
        == 0
    )
    settings = preprocess.read_cache_settings(target)
    assert (settings.storage, settings.quality, settings.frame_stride) == ("jpeg", 95, 2)
    name = report.usable[0]
    assert np.load(target / name / "frame_indices.npy").tolist() == list(range(0, 40, 2))
    raw, converted = data.CachedVideo(raw_cache / name), data.CachedVideo(target / name)
    assert np.array_equal(converted.points, raw.points[::2])
    assert_near_frames(converted.frames, np.asarray(raw.frames[::2]))  # webp then jpeg: still close
    capsys.readouterr()
    for wrong in (["--mode", "body"], ["--size", "128"], ["--max-frames", "10"], ["--quality", "80"]):
        assert preprocess.main([str(raw_cache), "--cache-dir", str(tmp_path / "x"), *wrong]) == 2
        message = capsys.readouterr().err
        assert message.startswith("error: ") and message.count("\n") == 1 and message.count(". ") == 0
    assert preprocess.main([str(raw_cache), "--cache-dir", str(raw_cache), "--storage", "webp"]) == 2


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_clips_come_from_a_compact_cache_as_from_the_raw_one(face_cache, compact_cache):
    import pickle

    clips = {}
    for kind, (cache, _) in (("raw", face_cache), ("compact", compact_cache)):
        sources, _ = data.split_sources(data.open_cache(cache, "face", SIZE), 0.0)
        clips[kind] = data.ClipDataset(sources, SIZE, num_subject=3, num_targets=2, span=12, seed=5)
    for index in (3, 17):
        raw, compact = clips["raw"][index], clips["compact"][index]
        for key in ("rows", "video", "subject_labels", "target_labels", "target_points", "face_boxes"):
            assert np.array_equal(raw[key], compact[key]), key
        for key in ("subject_images", "target_images"):
            assert np.abs(raw[key].astype(np.int16) - compact[key]).mean() < 4
    # a loader worker gets the video without its decoded frames and decodes its own
    video = clips["compact"].sources[0].video
    state = pickle.dumps(video)
    assert len(state) < video.frames.nbytes / 10
    assert np.array_equal(pickle.loads(state).frames, video.frames)


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_a_damaged_compact_cache_is_one_clear_error(compact_cache, tmp_path):
    import shutil

    cache, report = compact_cache
    folder = tmp_path / report.usable[0]
    shutil.copytree(cache / report.usable[0], folder)
    with np.load(folder / "frames.npz") as store:
        arrays = dict(store)
    arrays["data"] = np.zeros_like(arrays["data"])
    np.savez(folder / "frames.npz", **arrays)
    with pytest.raises(InputError, match="cannot be decoded as webp") as caught:
        data.CachedVideo(folder).frames
    assert str(caught.value).count(". ") == 0


@pytest.mark.slow  # mediapipe (the face_cache fixture)
def test_compact_mp4v_storage_round_trips_and_checks_what_it_reads(face_cache, tmp_path):
    raw_cache, raw_report = face_cache
    report = preprocess.convert_cache(raw_cache, tmp_path / "mp4v", "mp4v", progress=None)
    assert report.bytes < raw_report.bytes / 5
    for name in report.usable:
        assert (tmp_path / "mp4v" / name / "frames.mp4").is_file()
        raw, compact = data.CachedVideo(raw_cache / name), data.CachedVideo(tmp_path / "mp4v" / name)
        assert np.array_equal(compact.points, raw.points)
        assert_near_frames(compact.frames, raw.frames, limit=5)
    # a video with fewer frames than its cache says: one clear error when training reads it
    meta_path = tmp_path / "mp4v" / report.usable[0] / preprocess.META_NAME
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "num_frames": meta["num_frames"] + 5}))
    with pytest.raises(InputError, match="read 40 of the 45 frames") as caught:
        data.CachedVideo(meta_path.parent).frames
    assert str(caught.value).count(". ") == 0
    for bad in ({"size": 100}, {"quality": 50}):  # 100 px x 1.25: an odd side; no quality setting
        with pytest.raises(InputError):
            preprocess.CacheSettings("face", **{"size": SIZE, **bad}, storage="mp4v")


def test_bad_input_to_the_new_training_commands_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    from training import export, plot_curves, stills

    with pytest.raises(ConfigError, match="--time-budget is in minutes and must be positive"):
        options.parse_args(["--output", str(tmp_path), "--data", "x", "--mode", "face", "--time-budget", "0"])
    with pytest.raises(ConfigError, match="--warmup-steps must be 0 or more"):
        options.parse_args(["--output", str(tmp_path), "--data", "x", "--mode", "face", "--warmup-steps", "-1"])
    (tmp_path / "empty").mkdir()
    assert export.main([str(tmp_path / "empty"), str(tmp_path / "shipped")]) == 2
    assert stills.main(["a.mp4", "b.mp4", "--checkpoint", str(tmp_path / "empty"), "-o", str(tmp_path / "s.png")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "neither a checkpoint folder nor a run folder" in errors[0]
    with pytest.raises(SystemExit, match="metrics.jsonl does not exist"):
        plot_curves.main([str(tmp_path / "empty"), "-o", str(tmp_path / "plot.png")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing half-written
