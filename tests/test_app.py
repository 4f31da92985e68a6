"""The Gradio demo (app.py, tsnet_hf/demo.py) and its Space (space/).

A live server (`python app.py` in a subprocess, on a free port, offline, with a tiny random
checkpoint) is driven through its `/retarget` API with gradio_client, and through the real page
in Chromium with Playwright (marked `browser`; skipped where /usr/bin/chromium or playwright is
missing). Media are generated (tests/synthetic.py): nothing here needs ../shared or the network.
"""

import inspect
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tsnet_hf import TSNet, tiny_config
from tsnet_hf.demo import OUTPUT_ORDER
from tsnet_hf.options import MISSING_POLICIES, RUN_MODES, SELECTIONS, RunOptions
from tsnet_hf.video import probe_video, read_frames

from helpers import api_inputs, serve_app
from synthetic import astronaut, moving_face_frames, write_video

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIDEO_NAMES = ("output", "side_by_side", "warped", "driving_masks", "aligned_masks")  # every model's


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A tiny face checkpoint, subject photos (one without a face) and video, a 1.2 s driving clip with
    audio, and a text file named .mp4."""
    folder = tmp_path_factory.mktemp("app-media")
    torch.manual_seed(0)
    TSNet(tiny_config("face")).save_pretrained(folder / "face-tiny")
    photo = folder / "subject.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut(256), cv2.COLOR_RGB2BGR))
    no_face = folder / "no_face.png"
    cv2.imwrite(str(no_face), np.full((256, 256, 3), 128, np.uint8))
    not_a_video = folder / "not_a_video.mp4"
    not_a_video.write_text("this is a text file, not a video\n")
    return {
        "checkpoint": folder / "face-tiny",
        "photo": photo,
        "subject_video": write_video(folder / "subject.mp4", moving_face_frames(12, seed=1)),
        "driving": write_video(folder / "driving.mp4", moving_face_frames(30, seed=2), fps=25, audio=True),
        "not_a_video": not_a_video,
        "no_face": no_face,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def server(media):
    """`python app.py --checkpoint TINY --port P` running offline; yields its URL."""
    pytest.importorskip("gradio")
    app_args = ["--checkpoint", str(media["checkpoint"]), "--no-shipped"]  # a face model only
    with serve_app(app_args, media["folder"], unset=("TSNET_BODY_CHECKPOINT",)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server, verbose=False)


def retarget(client, **inputs):
    """Call /retarget with the page's defaults for whatever is not given."""
    return client.predict(**api_inputs(**inputs), api_name="/retarget")


def unpack(outputs) -> dict:
    return dict(zip(OUTPUT_ORDER, outputs, strict=True))


# ----- the /retarget API ---------------------------------------------------------------------------


@pytest.mark.slow  # the app server (app.py in a subprocess)
def test_api_returns_every_output_with_the_driving_length(client, media):
    out = unpack(retarget(client, subject_photo=media["photo"], driving_video=media["driving"]))
    for name in VIDEO_NAMES:
        frames, _ = read_frames(out[name])
        assert len(frames) == 30, name
    assert out["blend_mask"] is None  # a decoder (paper) model has none
    info = probe_video(out["output"])
    assert info.has_audio and abs(info.fps - 25) < 1e-3  # the driving video's audio and rate
    assert probe_video(out["side_by_side"]).has_audio
    assert len(out["subject_frames"]) == 1 and out["subject_frames"][0]["caption"] == "frame 0"  # a photo
    report = out["report"]
    assert report["headers"] == ["frame", "detected", "filled", "subject frames"]
    assert [row[0] for row in report["data"]] == list(range(30))
    assert "**30 frames** at 25 fps (face)" in out["summary"] and "Time per stage" in out["summary"]


@pytest.mark.slow  # the app server (app.py in a subprocess)
def test_api_subject_video_with_a_motion_template_and_a_length_limit(client, media):
    out = unpack(
        retarget(
            client,
            subject_video=media["subject_video"],
            motion_template="face_expressions",
            mode="face",
            subject_frames=2,
            max_seconds=2,
        )
    )
    assert len(read_frames(out["output"])[0]) == 50  # 2 s of the 25 fps template
    assert len(read_frames(out["aligned_masks"])[0]) == 50
    assert len(out["subject_frames"]) > 2
    assert all(len(row[3].split()) == 2 for row in out["report"]["data"])  # K = 2 subject frames each
    assert "Used the first 2 s of the 3.1 s driving video" in out["summary"]


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ({"subject_photo": "photo", "driving_video": "not_a_video"}, "not_a_video.mp4 cannot be read as a video"),
        ({"subject_photo": "no_face", "driving_video": "driving", "mode": "face"}, "No face was found in the image"),
        ({"driving_video": "driving"}, "Upload a subject photo or video"),
        ({"subject_photo": "photo"}, "Upload or record a driving video, or choose a motion template"),
        ({"subject_photo": "photo", "subject_video": "subject_video", "driving_video": "driving"}, "not both"),
        ({"subject_photo": "photo", "driving_video": "driving", "mode": "body"}, "no body checkpoint loaded"),
        (
            {"subject_photo": "photo", "driving_video": "driving", "max_seconds": 60},
            "greater than maximum value 10",
        ),  # gradio's own check of the slider
        ({"subject_photo": "photo", "motion_template": "body_kpop", "mode": "auto"}, "no body checkpoint loaded"),
        ({"subject_photo": "photo", "motion_template": "face_talking", "mode": "body"}, "template is a face motion"),
    ],
)
@pytest.mark.slow  # the app server (app.py in a subprocess)
def test_api_bad_input_gives_one_sentence(client, media, inputs, expected):
    from gradio_client.exceptions import AppError

    inputs = {name: media.get(value, value) if isinstance(value, str) else value for name, value in inputs.items()}
    with pytest.raises(AppError) as caught:
        retarget(client, **inputs)
    message = str(caught.value)
    assert expected in message
    assert "Traceback" not in message and "\n" not in message.strip()


@pytest.mark.slow  # the app server (app.py in a subprocess)
def test_api_still_works_after_errors(client, media):
    out = unpack(retarget(client, subject_photo=media["photo"], motion_template="face_talking", max_seconds=1))
    assert len(read_frames(out["output"])[0]) == 25


# ----- the page in a real browser ----------------------------------------------------------------


def _wait_for_playable(page, selector: str, timeout_ms: int = 120_000):
    page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel + ' video');"
        " return !!(v && v.currentSrc && v.readyState >= 1 && v.duration > 0); }",
        arg=selector,
        timeout=timeout_ms,
    )


@pytest.mark.browser
def test_page_runs_and_shows_errors(server, media, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.goto(server)
            page.locator("#subject-photo input[type=file]").set_input_files(str(media["photo"]))
            page.locator("#driving-video input[type=file]").set_input_files(str(media["driving"]))
            page.wait_for_selector("#driving-video video", timeout=30_000)
            page.locator("#run").click()
            for selector in ("#output-video", "#side-by-side", "#warped", "#driving-masks", "#aligned-masks"):
                _wait_for_playable(page, selector)
            page.wait_for_selector("#subject-masks img", timeout=30_000)
            page.wait_for_selector("#live-preview img", timeout=30_000)  # the live view keeps the newest frame
            assert page.locator("#stop").is_visible()
            assert "30 frames" in page.locator("#summary").inner_text()
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            if os.environ.get("TSNET_SCREENSHOT_DIR"):  # to look at the page: keep a copy
                shutil.copy(tmp_path / "demo.png", Path(os.environ["TSNET_SCREENSHOT_DIR"]) / "demo.png")

            page.goto(server)  # a fresh page: an uploaded non-video gives a visible error, no traceback
            page.locator("#subject-photo input[type=file]").set_input_files(str(media["photo"]))
            page.locator("#driving-video input[type=file]").set_input_files(str(media["not_a_video"]))
            page.locator("#run").click()
            error = page.get_by_text("not_a_video.mp4 cannot be read as a video")
            error.wait_for(timeout=30_000)
            assert "Traceback" not in page.content()

            page.get_by_text("Face: talking (5 s)").click()  # the page stays usable: an offline example runs
            page.wait_for_selector("#template-preview video", timeout=30_000)
            page.locator("#run").click()
            _wait_for_playable(page, "#output-video")
        finally:
            browser.close()


# ----- settings, templates, Space: no server -------------------------------------------------------


def test_motion_templates_load_are_small_and_name_their_sources():
    from tsnet_hf.demo import TEMPLATES_DIR, list_templates
    from tsnet_hf.landmarks import LandmarkTrack

    templates = list_templates()
    assert {"face", "body"} <= {name.split("_")[0] for name in templates}
    sources = (TEMPLATES_DIR / "SOURCES.md").read_text()
    for name, (label, path) in templates.items():
        track = LandmarkTrack.load(path)
        assert track.mode == name.split("_")[0] and label.lower().startswith(track.mode)
        assert 2 <= len(track) / track.fps <= 6
        assert np.isfinite(track.points).all() and (track.points[..., 2] > 0).any()
        assert path.stat().st_size < 32 * 1024, f"{path.name} should stay a few KB"
        line = next(line for line in sources.splitlines() if line.startswith(f"| {path.name} "))
        assert "https://github.com/" in line and ("MIT" in line or "Apache-2.0" in line)


def test_template_preview_is_a_video_of_the_template_length(tmp_path):
    from tsnet_hf.demo import list_templates, template_preview
    from tsnet_hf.landmarks import LandmarkTrack

    label, path = list_templates()["face_expressions"]
    preview = template_preview(path, tmp_path)
    frames, _ = read_frames(preview)
    assert len(frames) == len(LandmarkTrack.load(path)) and max(frames.shape[1:3]) <= 256
    assert template_preview(path, tmp_path) == preview  # made once


def _settings(monkeypatch, *argv):
    from tsnet_hf import demo

    monkeypatch.delenv("TSNET_CHECKPOINT", raising=False)
    monkeypatch.delenv("TSNET_BODY_CHECKPOINT", raising=False)
    monkeypatch.setattr(demo, "default_checkpoint", lambda mode: None)  # as on a fresh clone
    return demo.load_settings(demo.build_parser().parse_args([*argv, "--device", "cpu"]))


def test_without_a_checkpoint_the_page_says_so_and_runs_nothing(monkeypatch, media):
    gr = pytest.importorskip("gradio")

    from tsnet_hf import demo

    settings = _settings(monkeypatch, "--cache-dir", str(media["folder"] / "cache-none"))
    assert settings.models == {}
    assert demo.NO_CHECKPOINT in demo.header_markdown(settings)
    with pytest.raises(gr.Error, match="No trained TS-Net checkpoint is shipped yet"):
        demo.Retargeter(settings)(
            str(media["photo"]),
            None,
            str(media["driving"]),
            "",
            "auto",
            3,
            "nearest",
            True,
            True,
            10,
            "interpolate",
            False,
        )


def test_checkpoints_come_from_flags_or_environment(monkeypatch, media):
    from tsnet_hf import demo

    settings = _settings(monkeypatch, "--checkpoint", str(media["checkpoint"]))
    assert set(settings.models) == {"face"} and settings.sources["face"] == str(media["checkpoint"])
    assert settings.max_seconds == demo.CPU_MAX_SECONDS and not settings.on_gpu
    monkeypatch.setenv("TSNET_CHECKPOINT", str(media["checkpoint"]))
    args = demo.build_parser().parse_args(["--device", "cpu"])
    assert args.checkpoint == str(media["checkpoint"])
    random = _settings(monkeypatch, "--random-weights")
    assert set(random.models) == {"face", "body"} and "untrained" in demo.header_markdown(random)


def test_the_shipped_checkpoint_is_the_default(monkeypatch, media):
    from tsnet_hf import demo

    monkeypatch.delenv("TSNET_CHECKPOINT", raising=False)
    monkeypatch.delenv("TSNET_BODY_CHECKPOINT", raising=False)
    shipped = {"face": media["checkpoint"], "body": None}
    monkeypatch.setattr(demo, "default_checkpoint", shipped.get)
    settings = demo.load_settings(demo.build_parser().parse_args(["--device", "cpu"]))
    assert settings.sources == {"face": str(media["checkpoint"])}
    random = demo.load_settings(demo.build_parser().parse_args(["--device", "cpu", "--random-weights"]))
    assert random.sources == {"face": "random weights", "body": "random weights"}  # random replaces shipped


def test_gpu_decorator_changes_nothing_without_spaces():
    from tsnet_hf.demo import gpu_decorator

    try:
        import spaces  # noqa: F401

        pytest.skip("the spaces package is installed")
    except ImportError:
        pass

    def function(x):
        return x

    assert gpu_decorator()(function) is function


@pytest.mark.slow  # mediapipe
def test_the_spaces_gpu_path_wraps_the_handler(monkeypatch, media):
    """On a Space the `spaces` package is there: its GPU decorator wraps the /retarget handler, and
    ZeroGPU (SPACES_ZERO_GPU) gives the GPU's length limit. A stand-in module records what happens."""
    import types

    from tsnet_hf import demo

    applied, called = [], []

    def GPU(duration=None):  # the spaces package's name
        def decorate(function):
            applied.append((duration, function.__name__))

            def on_gpu(*args, **kwargs):
                called.append(function.__name__)
                return function(*args, **kwargs)

            on_gpu.__wrapped__ = function
            return on_gpu

        return decorate

    spaces = types.ModuleType("spaces")
    spaces.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    settings = demo.load_settings(
        demo.build_parser().parse_args(["--checkpoint", str(media["checkpoint"]), "--no-shipped"])
    )
    assert (settings.device_label, settings.on_gpu, settings.max_seconds) == ("ZeroGPU", True, demo.GPU_MAX_SECONDS)
    page = demo.build_demo(settings)
    assert applied == [(demo.GPU_DURATION, "retarget")]
    handler = next(f.fn for f in page.fns.values() if f.api_name == "retarget")
    assert handler.__name__ == "on_gpu"
    updates = handler(
        str(media["photo"]), None, None, "face_talking", "face", 1, "nearest", True, True, 1, "interpolate", False
    )  # a generator: live-view frames, then the outputs
    *_, outputs = updates
    assert called == ["retarget"]
    assert probe_video(outputs[OUTPUT_ORDER.index("output")]).frame_count > 0


@pytest.mark.slow  # a Python subprocess
def test_importing_the_package_or_the_demo_does_not_import_gradio():
    code = "import sys, tsnet_hf, tsnet_hf.demo; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_build_space_dry_run_writes_a_runnable_folder(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "space"))
    try:
        import build_space
    finally:
        sys.path.pop(0)
    out = tmp_path / "space"
    assert build_space.main([str(out), "--dry-run"]) == 0
    for name in (
        "README.md",
        "app.py",
        "requirements.txt",
        "packages.txt",
        "tsnet_hf/__init__.py",
        "tsnet_hf/demo.py",
        "tsnet_hf/assets/templates/face_talking.npz",
    ):
        assert (out / name).is_file(), name
    assert not list(out.rglob("__pycache__"))
    assert build_space.main([str(out), "--dry-run"]) == 0  # an earlier build is replaced

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    capsys.readouterr()
    assert build_space.main([str(out), "--repo-id", "someone/tsnet-demo"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: HF_HUB_OFFLINE is set") and "\n" not in error
    assert build_space.main([str(tmp_path / "other")]) == 1  # neither --repo-id nor --dry-run


@pytest.mark.slow  # build_space --check runs the page in a Python subprocess
def test_build_space_lists_the_upload_and_checks_the_folder(tmp_path, capsys):
    """--dry-run lists every file it would upload; --check passes where the pins are installed (here:
    the folder's pins rewritten to this environment's versions) and names the mismatches elsewhere."""
    import re
    from importlib import metadata

    sys.path.insert(0, str(REPO / "space"))
    try:
        import build_space
    finally:
        sys.path.pop(0)
    out = tmp_path / "space"
    assert build_space.main([str(out), "--dry-run", "--repo-id", "me/tsnet-demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = lines[lines.index("would upload to https://huggingface.co/spaces/me/tsnet-demo:") + 1 :]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(line.split()[0] for line in listed) == files
    assert "checkpoints/face-blend-128/model.safetensors" in files

    pins = build_space.read_pins(out)
    mismatched = [name for name, version in pins.items() if metadata.version(name).split("+")[0] != version]
    if mismatched:
        with pytest.raises(build_space.BuildError, match="does not match the Space's pins: " + mismatched[0]):
            build_space.check(out, sys.executable)
    (out / "requirements.txt").write_text(
        "".join(f"{name}=={metadata.version(name).split('+')[0]}\n" for name in pins if name != "gradio")
    )
    card = (out / "README.md").read_text()
    (out / "README.md").write_text(re.sub(r"sdk_version: .*", f"sdk_version: {metadata.version('gradio')}", card))
    report = build_space.check(out, sys.executable)
    assert f"page built with face: {out / 'checkpoints'}" in report


def project_requirements():
    """pyproject.toml's requirements: the dependencies and every extra (packaging Requirement objects)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for name, group in project["optional-dependencies"].items() if name != "all" for r in group]
    return [Requirement(r) for r in project["dependencies"]], [Requirement(r) for r in extras]


def exact_pins(path: Path) -> dict:
    """name (normalised) -> version of a file of `name==version` lines."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_space_pins_match_pyproject():
    """The Space's exact pins lie inside pyproject.toml's ranges, cover tsnet_hf's dependencies and
    the app extra, and run on ZeroGPU: a torch it lists, Python 3.10."""
    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(REPO / "space"))
    try:
        import build_space
    finally:
        sys.path.pop(0)
    dependencies, extras = project_requirements()
    app = [r for r in extras if canonicalize_name(r.name) in ("gradio", "scikit-image")]
    space = exact_pins(REPO / "space" / "requirements.txt")
    card = (REPO / "space" / "README.md").read_text()
    assert card.startswith("---\n") and "sdk: gradio\n" in card and "app_file: app.py\n" in card
    space["gradio"] = build_space.read_pins(REPO / "space")["gradio"]
    for requirement in [*dependencies, *app]:
        name = canonicalize_name(requirement.name)
        assert name in space, f"space/requirements.txt lacks {name}"
        assert requirement.specifier.contains(space[name]), (
            f"the Space's {name}=={space[name]} is outside {requirement}"
        )
    assert space["torch"] in build_space.ZEROGPU_TORCH
    assert build_space.card_python(REPO / "space") == build_space.ZEROGPU_PYTHON == "3.10"


def test_constraints_pin_every_requirement_inside_its_range():
    """constraints.txt (pip freeze of a working environment) pins each requirement of every extra, within
    pyproject.toml's ranges, not the project itself; the README's install and CI use it."""
    from packaging.utils import canonicalize_name

    dependencies, extras = project_requirements()
    pins = exact_pins(REPO / "constraints.txt")
    assert "tsnet-hf" not in pins
    for requirement in [*dependencies, *extras]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt lacks {name}"
        assert requirement.specifier.contains(pins[name]), (
            f"constraints.txt's {name}=={pins[name]} is outside {requirement}"
        )
    assert 'pip install -e ".[all]" -c constraints.txt' in (REPO / "README.md").read_text()
    assert '-e ".[all]" -c constraints.txt' in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow  # mediapipe
def test_a_blend_model_adds_the_blend_mask_video(media, tmp_path):
    """No server: the page with a blend checkpoint shows the blend-mask video, and a run fills it."""
    gr = pytest.importorskip("gradio")
    from tsnet_hf import demo

    torch.manual_seed(0)
    settings = demo.DemoSettings(
        models={"face": TSNet(tiny_config("face", output="blend")).eval()},
        sources={"face": "random weights"},
        device="cpu",
        cache_dir=tmp_path,
    )
    page = demo.build_demo(settings)
    shown = [block for block in page.blocks.values() if getattr(block, "elem_id", None) == "blend-mask"]
    assert len(shown) == 1 and isinstance(shown[0], gr.Video) and shown[0].visible
    outputs = demo.Retargeter(settings)(
        str(media["photo"]),
        None,
        str(media["driving"]),
        "",
        "face",
        1,
        "nearest",
        True,
        True,
        0.5,
        "interpolate",
        False,
    )
    out = unpack(outputs)
    for name in (*VIDEO_NAMES, "blend_mask"):
        assert len(read_frames(out[name])[0]) == 12, name  # 0.5 s of the 25 fps driving video
    assert read_frames(out["side_by_side"])[0].shape[2] == 6 * 64  # the blend mask is one more panel


@pytest.mark.slow  # mediapipe
def test_the_run_streams_previews_and_stops_when_closed(media, tmp_path, monkeypatch):
    """No server: the Run handler yields the newest side-by-side frame while it runs; closing it
    (what the Stop button does) stops the pipeline and leaves no files."""
    pytest.importorskip("gradio")
    import tempfile
    import threading

    from tsnet_hf import demo
    from tsnet_hf.pipeline import RetargetPipeline

    generate = RetargetPipeline.generate

    def slow_generate(self, *args, **kwargs):  # a CPU-sized pace: the page looks in every 0.25 s
        time.sleep(0.3)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(RetargetPipeline, "generate", slow_generate)

    settings = demo.DemoSettings(
        models={"face": TSNet.from_pretrained(media["checkpoint"]).eval()},
        sources={"face": "tiny"},
        device="cpu",
        cache_dir=tmp_path,
    )
    inputs = (
        str(media["photo"]),
        None,
        str(media["driving"]),
        "",
        "face",
        1,
        "nearest",
        True,
        True,
        1.2,
        "interpolate",
        False,
    )
    updates = list(demo.Retargeter(settings).stream(*inputs))
    previews = [dict(zip(OUTPUT_ORDER, update))["preview"] for update in updates[:-1]]
    assert previews and all(isinstance(p, np.ndarray) and p.shape == (64, 5 * 64, 3) for p in previews)
    final = dict(zip(OUTPUT_ORDER, updates[-1]))
    assert len(read_frames(final["output"])[0]) == 30 and final["preview"].shape == (64, 5 * 64, 3)

    before = set(os.listdir(tempfile.gettempdir()))
    stream = demo.Retargeter(settings).stream(*inputs[:-3], 1.2, "interpolate", False)
    next(stream)  # the first preview: frames are being made
    stream.close()
    for _ in range(100):  # the run stops at its next chunk
        if not any(t.name == "tsnet-run" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert not any(t.name == "tsnet-run" for t in threading.enumerate())
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("tsnet-")}
    runs = tmp_path / "runs"
    assert not runs.exists() or len(list(runs.iterdir())) == 1  # only the finished run's folder


def test_a_decoder_model_page_hides_the_blend_mask(media, tmp_path):
    pytest.importorskip("gradio")
    from tsnet_hf import demo

    settings = demo.DemoSettings(
        models={"face": TSNet.from_pretrained(media["checkpoint"]).eval()},
        sources={"face": "tiny"},
        device="cpu",
        cache_dir=tmp_path,
    )
    page = demo.build_demo(settings)
    shown = [block for block in page.blocks.values() if getattr(block, "elem_id", None) == "blend-mask"]
    assert len(shown) == 1 and not shown[0].visible


@pytest.mark.shared
def test_body_template_drives_a_full_body_photo(monkeypatch, shared_dir, tmp_path):
    """The body path end to end, without a server: --random-weights, a full-body photo from ../shared."""
    from tsnet_hf import demo

    settings = _settings(monkeypatch, "--random-weights", "--cache-dir", str(tmp_path))
    photo = shared_dir / "data" / "photos" / "fullbody_mimicmotion_demo1.jpg"
    outputs = demo.Retargeter(settings)(
        str(photo), None, None, "body_kpop", "auto", 3, "nearest", True, True, 1, "interpolate", False
    )
    output, side, warped, driving_masks, aligned_masks, gallery, summary, report, blend_mask, preview = outputs
    assert blend_mask is None
    for path in (output, side, warped, driving_masks, aligned_masks):
        assert len(read_frames(path)[0]) == int(1 * 29.847)
    assert len(gallery) == 1 and len(report) == int(1 * 29.847) and "(body)" in summary


def test_the_page_takes_its_inputs_and_choices_from_one_place(media, tmp_path):
    """INPUT_ORDER is FormInputs' fields: the handler's parameters (the /retarget API's names) and
    the components wired to it; the option controls offer RunOptions' allowed values."""
    gr = pytest.importorskip("gradio")
    from tsnet_hf import demo

    assert demo.INPUT_ORDER == tuple(f.name for f in fields(demo.FormInputs))
    settings = demo.DemoSettings(
        models={"face": TSNet.from_pretrained(media["checkpoint"]).eval()},
        sources={"face": "tiny"},
        device="cpu",
        cache_dir=tmp_path,
    )
    page = demo.build_demo(settings)
    function = next(f for f in page.fns.values() if f.api_name == "retarget")
    assert tuple(inspect.signature(function.fn).parameters) == (*demo.INPUT_ORDER, "progress")
    assert [block.elem_id for block in function.inputs][:4] == [
        "subject-photo",
        "subject-video",
        "driving-video",
        "motion-template",
    ]
    radios = {
        block.label: [value for _, value in block.choices] for block in function.inputs if isinstance(block, gr.Radio)
    }
    assert radios == {
        "Mode": list(RUN_MODES),
        "Subject-frame selection": list(SELECTIONS),
        "Frames where nothing is detected": list(MISSING_POLICIES),
    }


def test_a_run_the_page_left_deletes_its_finished_result():
    """Stop (or a closed page) just as the run ends: whichever of the handler and the run's thread
    comes last deletes the finished result's folder, so the app's disk does not grow."""
    from tsnet_hf import demo

    class Result:
        cleaned = False

        def cleanup(self):
            self.cleaned = True

    gate = threading.Event()

    def pipe(subject, driving, progress, preview, **options):
        gate.wait(10)
        return result

    result = Result()
    live = demo.LiveRun()
    live.start(pipe, "subject.mp4", "driving.mp4", RunOptions())
    while not live.wait(0.01):
        gate.set()
    live.stop()  # the run had finished: the handler deletes it
    assert result.cleaned

    result, gate = Result(), threading.Event()
    live = demo.LiveRun()
    live.start(pipe, "subject.mp4", "driving.mp4", RunOptions())
    live.stop()  # the run has not finished: its thread deletes the result once it is made
    gate.set()
    assert live.finished.wait(10) and result.cleaned
