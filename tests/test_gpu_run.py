"""benchmarks/gpu_run.py, the one prepared GPU run, tested on the CPU: the carry bundle, the smoke run
(train both models, benchmark, pipeline stage), split files joined back with their sha256s, and a
run cut short by its budget. Synthetic 64 px caches (no mediapipe), tiny models, random weights."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from training import preprocess  # noqa: E402
from tsnet_hf import TSNet, preset_config  # noqa: E402
from tsnet_hf.errors import InputError  # noqa: E402
from tsnet_hf.layouts import BODY_POINTS, FACE_POINTS  # noqa: E402

import gpu_run  # noqa: E402
from helpers import write_cache_index, write_cached_video  # noqa: E402

SIZE = 64
SCRIPT = ROOT / "benchmarks" / "gpu_run.py"


# ----- fixtures ---------------------------------------------------------------------------------------------


def write_cache(folder: Path, mode: str, videos: int = 3, frames: int = 24) -> Path:
    """A raw cache in preprocess.py's format: a drifting random figure (no detector needed)."""
    settings = preprocess.CacheSettings(mode, SIZE)
    stored, count = settings.stored_size, FACE_POINTS if mode == "face" else BODY_POINTS
    names = []
    for v in range(videos):
        rng = np.random.default_rng(v)
        base = np.concatenate([rng.uniform(0.3 * stored, 0.7 * stored, (count, 2)), np.ones((count, 1))], 1)
        points = np.stack([base + [3 * np.sin(t / 3 + v), 2 * np.cos(t / 4), 0] for t in range(frames)]).astype(
            np.float32
        )
        images = np.empty((frames, stored, stored, 3), np.uint8)
        for t in range(frames):
            images[t] = (rng.uniform(60, 200, 3)).astype(np.uint8)
            images[t, int(points[t, 0, 1]) :, :, 1] = 220 - 40 * v
        names.append(write_cached_video(folder, f"{mode}{v}-{v:08d}", settings, images, points))
    return write_cache_index(folder, settings, names)


def write_weights(folder: Path) -> Path:
    """VGG16 / AlexNet `features` and LPIPS linear weights with the real shapes, random values."""
    from training.vision import import_torchvision

    models = import_torchvision().models
    folder.mkdir(parents=True)
    for name, network in ((gpu_run.VGG, models.vgg16), (gpu_run.ALEXNET, models.alexnet)):
        features = network(weights=None).features.state_dict()
        save_file({f"features.{k}": v.half() for k, v in features.items()}, str(folder / name))
    save_file(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
        str(folder / gpu_run.LPIPS_LIN),
    )
    return folder


def write_init(folder: Path, mode: str) -> Path:
    """A tiny blend checkpoint at half the run's size (the run trains it further at SIZE)."""
    torch.manual_seed(0)
    TSNet(preset_config("tiny", mode, image_size=SIZE // 2, output="blend")).save_pretrained(folder)
    return folder


def prepare_argv(root: Path, bundle: Path, *extra) -> list[str]:
    return [
        "--prepare",
        str(bundle),
        "--face-data",
        str(root / "face"),
        "--body-data",
        str(root / "body"),
        "--weights",
        str(root / "weights"),
        "--init-face",
        str(root / "init-face"),
        "--init-body",
        str(root / "init-body"),
        "--size",
        str(SIZE),
        "--work",
        str(root / "work"),
        *extra,
    ]


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpu-inputs")
    for mode in gpu_run.MODES:
        write_cache(root / mode, mode)
        write_init(root / f"init-{mode}", mode)
    write_weights(root / "weights")
    return root


@pytest.fixture(scope="session")
def bundle(inputs, tmp_path_factory):
    """(bundle folder, what --prepare printed)."""
    folder = tmp_path_factory.mktemp("gpu-bundle") / "bundle"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *prepare_argv(inputs, folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return folder, result.stdout


def run_gpu_script(bundle: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--smoke",
            "--work",
            str(out.parent / f"{out.name}-work"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="session")
def smoke_run(bundle, tmp_path_factory):
    """(out folder, completed process) of a whole smoke run with room to finish every stage."""
    out = tmp_path_factory.mktemp("gpu-smoke") / "out"
    result = run_gpu_script(bundle[0], out, "--budget", "600")
    return out, result


# ----- split and join ------------------------------------------------------------------------------------------


def test_split_files_join_back_and_every_sha256_is_checked(tmp_path):
    source, out, fetched = tmp_path / "big.bin", tmp_path / "out", tmp_path / "joined"
    out.mkdir()
    data = os.urandom(2500)
    source.write_bytes(data)
    entry = gpu_run.split_into(source, out, limit=1000)
    assert [p["name"] for p in entry["parts"]] == ["big.bin.part-00", "big.bin.part-01", "big.bin.part-02"]
    assert [p["bytes"] for p in entry["parts"]] == [1000, 1000, 500]
    small = tmp_path / "small.txt"
    small.write_bytes(b"abc")
    gpu_run.record_file(out, "big.bin", entry)
    gpu_run.record_file(out, "small.txt", gpu_run.split_into(small, out, limit=1000))
    joined = gpu_run.join(out, fetched)
    assert (fetched / "big.bin").read_bytes() == data and (fetched / "small.txt").read_bytes() == b"abc"
    assert {p.name for p in joined} == {"big.bin", "small.txt"}
    part = out / "big.bin.part-01"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(InputError, match="part-01 does not match its sha256"):
        gpu_run.join(out, tmp_path / "again")
    part.unlink()
    with pytest.raises(InputError, match="part-01 is missing: fetch all 3 file"):
        gpu_run.join(out, tmp_path / "again")
    with pytest.raises(InputError, match="has no readable manifest.json"):
        gpu_run.join(tmp_path / "nothing", tmp_path / "again")


def test_join_from_the_command_line_unpacks_archives(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "hello.txt").write_text("hello")
    with tarfile.open(tmp_path / "face-64.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "hello.txt", "face-64/hello.txt")
    gpu_run.record_file(out, "face-64.tar.gz", gpu_run.split_into(tmp_path / "face-64.tar.gz", out, limit=100))
    (out / "results.json").write_text("{}")
    assert gpu_run.main(["--join", str(out), "--into", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "face-64" / "hello.txt").read_text() == "hello"
    assert (tmp_path / "back" / "results.json").is_file()


# ----- pieces ------------------------------------------------------------------------------------------------------


def test_the_probe_halves_the_batch_until_a_step_fits():
    freed = []

    def step(batch):
        if batch > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return 0.01 * batch

    batch, seconds, tries = gpu_run.probe_batch(step, 32, lambda: freed.append(1))
    assert (batch, seconds) == (4, 0.04)
    assert [t["batch"] for t in tries] == [32, 16, 8, 4] and [t["fits"] for t in tries] == [False] * 3 + [True]
    assert len(freed) == 3
    with pytest.raises(InputError, match="Not even one clip per step fits"):
        gpu_run.probe_batch(lambda b: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")), 4)
    with pytest.raises(ValueError):  # anything but memory propagates
        gpu_run.probe_batch(lambda b: (_ for _ in ()).throw(ValueError("bug")), 4)


def test_int8_weights_round_trip_within_half_a_step_per_channel():
    torch.manual_seed(0)
    model = TSNet(preset_config("tiny", "face", output="blend"))
    state = model.state_dict()
    packed = gpu_run.quantize_int8(state)
    assert all(packed[k].dtype == torch.int8 for k, v in state.items() if v.ndim >= 2)
    restored = gpu_run.dequantize_int8(packed)
    assert restored.keys() == state.keys()
    for key, value in state.items():
        if value.ndim >= 2:
            step = value.abs().flatten(1).amax(1) / 127
            error = (restored[key] - value).abs().flatten(1).amax(1)
            assert torch.all(error <= step / 2 + 1e-6), key
    TSNet(model.config).load_state_dict(restored)  # strict: every key, every shape


def test_bench_specs_put_the_headline_first_and_compile_rows_last():
    plan = gpu_run.BenchPlan.for_run(smoke=False, batched=64)
    specs = gpu_run.bench_specs(plan)
    assert specs[0] == {
        "kind": "authors",
        "preset": "paper",
        "output": "decoder",
        "K": 3,
        "batch": 1,
        "dtype": "fp32",
        "compile": False,
    }
    assert specs[1]["kind"] == "ours" and (specs[1]["preset"], specs[1]["K"], specs[1]["batch"], specs[1]["dtype"]) == (
        "paper",
        3,
        64,
        "bf16",
    )
    eager = [s for s in specs if s["kind"] == "ours" and not s["compile"]]
    assert len(eager) == 3 * 3 * 2 * 2 == len({json.dumps(s, sort_keys=True) for s in eager})
    assert specs[2] == dict(specs[1], compile=True)  # the compiled headline before the eager grid
    first_other = next(i for i, s in enumerate(specs) if s["compile"] and i > 2)
    assert all(s["compile"] for s in specs[first_other:])
    assert {s["K"] for s in specs if s["kind"] == "authors"} == {1, 3, 5}


# ----- --prepare ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # gpu_run.py in a subprocess (the bundle fixture)
def test_prepare_builds_a_checked_bundle_and_prints_the_run_call(bundle, inputs):
    folder, printed = bundle
    info = json.loads((folder / "bundle.json").read_text())
    assert info["size"] == SIZE and info["init"]["kind"] == "int8" and info["weights"]["vgg_format"] == "int8"
    assert info["holdout"] == {"face": ["face2-00000002"], "body": ["body2-00000002"]}
    assert info["caches"]["frame_stride"] >= 1 and info["caches"]["storage"] == "mp4v"
    assert info["weights"]["vgg_layers_used"] == 26 and set(info["weights"]["vgg_dropped"]) == {
        "features.26.weight",
        "features.26.bias",
        "features.28.weight",
        "features.28.bias",
    }
    for name, entry in info["files"].items():
        assert gpu_run.sha256_file(folder / name) == entry["sha256"]
    for mode in gpu_run.MODES:
        assert preprocess.read_cache_settings(folder / "data" / mode).storage == "mp4v"
        with np.load(folder / "subject" / f"{mode}.npz") as subject:
            assert subject["points"].shape[0] == len(subject["offsets"]) - 1 >= 4
    assert info["tree_bytes"] + gpu_run.folder_bytes(folder) <= gpu_run.CARRY_LIMIT
    assert "command:   PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --bundle" in printed
    assert '--out "$OUT" --budget 540' in printed and "timeout_s: 600" in printed and "carry:" in printed
    assert gpu_run.read_bundle(folder)["size"] == SIZE


@pytest.mark.slow  # gpu_run.py in a subprocess
def test_prepare_refuses_a_bundle_over_the_carry_limit_in_one_sentence(inputs, tmp_path):
    # What counts: the tree without checkpoints/ (the bundle carries the starting weights; they move aside).
    tree = sum(v for k, v in gpu_run.tree_files().items() if not k.startswith("checkpoints/")) / gpu_run.MiB
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *prepare_argv(inputs, tmp_path / "b", "--carry-limit-mib", f"{tree + 1.5:.2f}", "--margin-mib", "0"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: The tree and the weights take") and message.count(". ") == 0
    assert not (tmp_path / "b").exists()


def test_the_caches_take_the_smallest_frame_stride_that_fits(inputs, tmp_path):
    raw = {mode: inputs / mode for mode in gpu_run.MODES}
    whole = gpu_run.fit_caches(raw, tmp_path / "all", 10 * gpu_run.MiB, "mp4v", None, 1, print)
    assert whole["frame_stride"] == 1 and whole["frames"] == {"face": 72, "body": 72}
    budget = int(whole["bytes"] * 0.6)
    fitted = gpu_run.fit_caches(raw, tmp_path / "fitted", budget, "mp4v", None, None, print)
    assert fitted["frame_stride"] >= 2 and gpu_run.folder_bytes(tmp_path / "fitted") == fitted["bytes"] <= budget
    assert preprocess.read_cache_settings(tmp_path / "fitted" / "face").frame_stride == fitted["frame_stride"]
    with pytest.raises(InputError, match="At --frame-stride 1 the caches take"):
        gpu_run.fit_caches(raw, tmp_path / "forced", budget, "mp4v", None, 1, print)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all", "fitted"]  # no trial folder left behind


@pytest.mark.slow  # gpu_run.py in a subprocess
def test_a_damaged_bundle_is_refused_before_the_run(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle[0], copy)
    with open(copy / "subject" / "face.npz", "ab") as handle:
        handle.write(b"!")
    with pytest.raises(InputError, match="face.npz is missing or differs from bundle.json"):
        gpu_run.read_bundle(copy)


# ----- the smoke run -----------------------------------------------------------------------------------------------


@pytest.mark.slow  # gpu_run.py in a subprocess
def test_the_smoke_run_trains_benchmarks_and_runs_the_pipeline(smoke_run, tmp_path):
    out, result = smoke_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "done", json.dumps(results["stages"], indent=1)
    assert set(results["stages"]) == {"setup", "train_face", "train_body", "pipeline", "bench"}
    for mode in gpu_run.MODES:
        train = results["train"][mode]
        assert train["batch"] == 2 and train["steps_done"] == 3 and train["probe"][0]["fits"]
        assert train["history"] and "lpips" in train["history"][-1]
        assert results["pipeline"][mode]["bf16_check"]["frames"] == 4
        assert results["pipeline"][mode]["pipeline"]["warm"]["frames"] == 12
    rows = results["bench"]["rows"]
    assert {(r["kind"], r["K"]) for r in rows} >= {("authors", 3), ("ours", 1), ("ours", 3), ("ours", 5)}
    assert all("frames_per_s" in r for r in rows), [r for r in rows if "frames_per_s" not in r]
    assert any(r["compile"] for r in rows) and results["bench"]["summary"]["per_K"]["3"]["speedup"] > 0
    assert "| ours | tiny | blend | 3 |" in results["bench"]["markdown"]
    assert (out / "log.txt").read_text().count("\n") > 5
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= gpu_run.OUT_MAX_FILES and all(p.stat().st_size <= gpu_run.OUT_MAX_FILE for p in out.iterdir())
    assert {"results.json", "log.txt", "manifest.json", "face-64.tar.gz", "body-64.tar.gz", "extras.tar.gz"} <= set(
        files
    )
    joined = tmp_path / "joined"
    gpu_run.join(out, joined)
    model_dir = joined / "face-64" / "model"
    assert all(v.dtype == torch.float16 for v in load_file(str(model_dir / "model.safetensors")).values())
    model = TSNet.from_pretrained(model_dir)
    assert model.config.image_size == SIZE and model.config.output == "blend"
    assert (joined / "face-64" / "log.txt").is_file() and (joined / "body-64" / "metrics.jsonl").is_file()


@pytest.mark.slow  # gpu_run.py in a subprocess
def test_a_run_cut_short_by_its_budget_still_leaves_valid_results(bundle, tmp_path):
    out = tmp_path / "out"
    result = run_gpu_script(bundle[0], out, "--budget", "3")
    assert result.returncode == 1
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "cut short" and results["finished"]
    assert results["stages"]["setup"]["status"] == "done"
    assert all(s["status"].startswith(("skipped", "cut short", "done")) for s in results["stages"].values())
    assert "skipped" in results["stages"]["bench"]["status"]
    manifest = json.loads((out / "manifest.json").read_text())
    gpu_run.join(out, tmp_path / "joined")  # whatever came back is whole and checked
    assert set(manifest["files"]) <= {"face-64.tar.gz", "body-64.tar.gz", "extras.tar.gz"}


@pytest.mark.slow  # gpu_run.py in a subprocess
def test_a_run_stopped_mid_way_keeps_what_it_finished(bundle, tmp_path):
    """SIGTERM (a tool's time limit) while the body model trains: the face archive, a valid
    results.json naming the signal, and no stage process left running."""
    import signal
    import time

    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--bundle",
            str(bundle[0]),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--smoke",
            "--budget",
            "600",
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while "face-64.tar.gz" not in (gpu_run.read_json(out / "manifest.json") or {}).get("files", {}):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "stopped by SIGTERM" and results["stages"]["train_face"]["status"] == "done"
    gpu_run.join(out, tmp_path / "joined")
    assert TSNet.from_pretrained(tmp_path / "joined" / "face-64" / "model").config.image_size == SIZE
    assert processes_with(f"--work {tmp_path / 'work'}") == []


def processes_with(text: str) -> list[str]:
    """Command lines of the running processes that contain `text` (Linux /proc)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_the_run_without_out_or_bundle_is_one_clear_error(tmp_path, capsys):
    env_out = os.environ.pop("OUT", None)
    try:
        assert gpu_run.main(["--bundle", str(tmp_path), "--device", "cpu", "--smoke"]) == 2
        assert (
            capsys.readouterr().err.strip() == "error: Give --out DIR (on the GPU machine the device tool sets $OUT)."
        )
    finally:
        if env_out is not None:
            os.environ["OUT"] = env_out
