"""Assemble the Hugging Face Space folder for the demo, and upload it when asked.

    python space/build_space.py OUT_DIR --dry-run             # write the folder only
    python space/build_space.py OUT_DIR --repo-id USER/NAME   # write it, then upload it

The folder holds what a Gradio Space runs: README.md (the Space card, with its front matter),
app.py, the tsnet_hf package as source (so the shipped checkpoints/ beside it are found by
`tsnet_hf.cli.default_checkpoint`), requirements.txt, packages.txt, and every checkpoint folder
in checkpoints/ that has a config.json. Uploading uses `huggingface_hub.HfApi().upload_folder`
(the Space is created if missing) and needs a token (`hf auth login` or HF_TOKEN).

Exit status 0 on success; 1 with one line on stderr when something is missing or the upload fails.
"""

import argparse
import shutil
import sys
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
            raise BuildError(f"{out} exists and does not look like an earlier Space build: "
                             "give an empty or new folder.")
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
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise BuildError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it (and be online), "
                         "or use --dry-run to write the folder only.")
    if get_token() is None:
        raise BuildError("No Hugging Face token found: run `hf auth login` or set HF_TOKEN, then try again.")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private or None, exist_ok=True)
        # delete_patterns: files of an earlier upload that this build no longer has (a renamed
        # module, a removed checkpoint) go; README.md and .gitattributes are always rewritten or kept.
        api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="space",
                          delete_patterns=["tsnet_hf/**", "checkpoints/**"],
                          commit_message="Update the TS-Net demo (space/build_space.py)")
    except Exception as error:  # network, permission, bad id: one sentence, not a traceback
        raise BuildError(f"Uploading to the Space {repo_id} failed ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'no message'}): check the id, "
                         "your token's write access and the network.") from None
    return f"https://huggingface.co/spaces/{repo_id}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Assemble (and upload) the TS-Net demo's Hugging Face Space.")
    parser.add_argument("out", type=Path, help="folder to write the Space into (replaced if it is an earlier build)")
    parser.add_argument("--repo-id", help="Space to upload to, as USER/NAME (created if missing)")
    parser.add_argument("--dry-run", action="store_true", help="write the folder only, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space as private")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.dry_run and not args.repo_id:
            raise BuildError("Give --repo-id USER/NAME to upload, or --dry-run to write the folder only.")
        files = assemble(args.out)
        size = sum(path.stat().st_size for path in files)
        print(f"wrote {len(files)} files ({size / 1e6:.1f} MB) to {args.out}; "
              f"checkpoints: {', '.join(p.name for p in shipped_checkpoints()) or 'none'}")
        if not args.dry_run:
            print(f"uploaded to {upload(args.out, args.repo_id, args.private)}")
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
