"""Assemble the Hugging Face Space folder for the demo, and upload it when asked.

    python space/build_space.py OUT_DIR --dry-run             # write the folder, list what would be uploaded
    python space/build_space.py OUT_DIR --dry-run --check --python /path/to/space-venv/bin/python
    python space/build_space.py OUT_DIR --repo-id USER/NAME   # write it, then upload it

The folder holds what a Gradio Space runs: README.md (the Space card, with its front matter),
app.py, the tsnet_hf package as source (so the shipped checkpoints/ beside it are found by
`tsnet_hf.cli.default_checkpoint`), requirements.txt, packages.txt, and every checkpoint folder
in checkpoints/ that has a config.json. Uploading uses `huggingface_hub.HfApi().upload_folder`
(the Space is created if missing) and needs a token (`hf auth login` or HF_TOKEN).

`--check` runs the built folder under another interpreter (`--python`, default this one): every
pin of its requirements.txt and README's sdk_version must be the installed version there, then
the app is imported from the folder and its page built with the shipped checkpoints, offline. A
different Python minor version than the card's python_version is reported, not failed (the Space
runs Python 3.10 on ZeroGPU; a machine without it checks the packages and the page).

Exit status 0 on success; 1 with one line on stderr when something is missing, the check fails or
the upload fails.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "space"
COPIED_FILES = {  # destination in the Space -> source in the repository
    "README.md": SPACE / "README.md",
    "requirements.txt": SPACE / "requirements.txt",
    "packages.txt": SPACE / "packages.txt",
    "app.py": REPO / "app.py",
}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
# Torch releases Hugging Face's ZeroGPU documentation lists as supported (with Python 3.10.13):
# the Space's torch pin must be one of them (tests/test_app.py checks it).
ZEROGPU_TORCH = ("2.1.0", "2.1.1", "2.1.2", "2.2.0", "2.2.2", "2.4.0", "2.5.1", "2.6.0", "2.7.1", "2.8.0")
ZEROGPU_PYTHON = "3.10"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


class BuildError(Exception):
    """Something the user must fix; its message is one sentence."""


def shipped_checkpoints(folder: Path = REPO / "checkpoints") -> list[Path]:
    """Checkpoint folders (with a config.json) in the repository's checkpoints/."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if (path / "config.json").is_file())


def assemble(out: Path) -> list[Path]:
    """Write the Space folder at `out` (emptied first when it is an earlier build); returns its files."""
    out = Path(out)
    if out.resolve() in (REPO.resolve(), *REPO.resolve().parents):
        raise BuildError(f"{out} is the repository or one of its parents: give a new folder for the Space.")
    if out.exists():
        if not (out / "app.py").is_file() and any(out.iterdir()):
            raise BuildError(
                f"{out} exists and does not look like an earlier Space build: give an empty or new folder."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, source in COPIED_FILES.items():
        if not source.is_file():
            raise BuildError(f"{source} is missing: restore it from git.")
        shutil.copy2(source, out / name)
    shutil.copytree(REPO / "tsnet_hf", out / "tsnet_hf", ignore=IGNORED)
    for checkpoint in shipped_checkpoints():
        shutil.copytree(checkpoint, out / "checkpoints" / checkpoint.name, ignore=IGNORED)
    return sorted(path for path in out.rglob("*") if path.is_file())


def upload(out: Path, repo_id: str, private: bool) -> str:
    """Create the Space if needed and upload the folder; returns its URL. Fails fast offline."""
    # Imported here, not at the top: `--check-here` must import tsnet_hf from the Space folder.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tsnet_hf.upload import create_and_upload, upload_blocker

    problem = upload_blocker("--dry-run to write the folder only")
    if problem:
        raise BuildError(problem)

    def failure(error):
        return BuildError(
            f"Uploading to the Space {repo_id} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no message'}): check the id, "
            "your token's write access and the network."
        )

    # delete_patterns: files of an earlier upload that this build no longer has (a renamed
    # module, a removed checkpoint) go; README.md and .gitattributes are always rewritten or kept.
    create_and_upload(
        out,
        repo_id,
        "space",
        {"space_sdk": "gradio", "private": private or None},
        {"delete_patterns": ["tsnet_hf/**", "checkpoints/**"]},
        "Update the TS-Net demo (space/build_space.py)",
        failure,
    )
    return f"https://huggingface.co/spaces/{repo_id}"


def read_pins(folder: Path) -> dict[str, str]:
    """name -> version of the Space's exact pins: requirements.txt, and gradio from the card's sdk_version."""
    pins = {}
    for line in (folder / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    card = (folder / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^sdk_version: *(\S+)$", card, re.M)
    if found:
        pins["gradio"] = found.group(1)
    return pins


def card_python(folder: Path) -> str | None:
    found = re.search(r'^python_version: *"?([\d.]+)"?$', (folder / "README.md").read_text(encoding="utf-8"), re.M)
    return found.group(1) if found else None


def check_here(folder: Path) -> list[str]:
    """Run in the interpreter to check: pins against installed versions, then import the app from
    `folder` and build its page. Returns notes; raises BuildError on the first failure."""
    notes, wrong = [], []
    for name, version in read_pins(folder).items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if found.split("+")[0] != version:
            wrong.append(f"{name} {found} (the Space pins {version})")
    if wrong:
        raise BuildError(f"this environment does not match the Space's pins: {'; '.join(wrong)}.")
    here, wanted = f"{sys.version_info.major}.{sys.version_info.minor}", card_python(folder)
    if wanted and here != wanted:
        notes.append(f"Python {here} here; the Space runs Python {wanted}")
    os.environ.update(OFFLINE)
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    # Imported here, after sys.path names the built folder: the check must run the Space's own copy.
    import app  # noqa: F401  (the Space's entry point imports cleanly)
    from tsnet_hf import demo

    if not Path(demo.__file__).resolve().is_relative_to(folder.resolve()):
        raise BuildError(f"tsnet_hf was imported from {demo.__file__}, not from the Space folder {folder}.")
    settings = demo.load_settings(demo.build_parser().parse_args(["--device", "cpu"]))
    demo.build_demo(settings)
    notes.append(f"page built with {', '.join(f'{m}: {s}' for m, s in settings.sources.items()) or 'no checkpoint'}")
    return notes


def check(out: Path, python: str) -> str:
    """`check_here` in a fresh `python` process (another virtual environment, e.g. with the Space's pins)."""
    env = {**os.environ, **OFFLINE}
    env.pop("PYTHONPATH", None)  # the folder's own tsnet_hf, not a checkout's
    try:
        result = subprocess.run(
            [python, str(Path(__file__).resolve()), str(Path(out).resolve()), "--check-here"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(
            f"Could not run {python} to check the Space ({type(error).__name__}): give a working "
            "interpreter with --python."
        ) from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise BuildError(f"the Space check under {python} failed: {lines[-1].removeprefix('error: ')}")
    return result.stdout.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Assemble (and upload) the TS-Net demo's Hugging Face Space.")
    parser.add_argument("out", type=Path, help="folder to write the Space into (replaced if it is an earlier build)")
    parser.add_argument("--repo-id", help="Space to upload to, as USER/NAME (created if missing)")
    parser.add_argument("--dry-run", action="store_true", help="write the folder only, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space as private")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the built folder: pins installed, app imports, page builds (see --python)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter whose environment --check uses (e.g. a venv with the Space's pins)",
    )
    parser.add_argument("--check-here", action="store_true", help=argparse.SUPPRESS)  # what --check runs
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.check_here:
            print("\n".join(f"ok: {note}" for note in check_here(args.out)))
            return 0
        if not args.dry_run and not args.repo_id:
            raise BuildError("Give --repo-id USER/NAME to upload, or --dry-run to write the folder only.")
        files = assemble(args.out)
        size = sum(path.stat().st_size for path in files)
        print(
            f"wrote {len(files)} files ({size / 1e6:.1f} MB) to {args.out}; "
            f"checkpoints: {', '.join(p.name for p in shipped_checkpoints()) or 'none'}"
        )
        if args.dry_run:
            target = f"https://huggingface.co/spaces/{args.repo_id}" if args.repo_id else "the Space"
            print(f"would upload to {target}:")
            for path in files:
                print(f"  {path.relative_to(args.out).as_posix()}  {path.stat().st_size / 1e3:.0f} kB")
        if args.check:
            print(check(args.out, args.python))
        if not args.dry_run:
            print(f"uploaded to {upload(args.out, args.repo_id, args.private)}")
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
