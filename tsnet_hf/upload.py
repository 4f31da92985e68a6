"""Upload a checkpoint folder to a Hub model repository, in one command.

    tsnet-push my-face --repo-id USER/NAME --dry-run     # list what would be uploaded
    tsnet-push my-face --repo-id USER/NAME               # create the repository if needed, upload

Only the checkpoint goes up: config.json, model.safetensors and README.md (the model card); a
fine-tuning run's training/ folder and a training checkpoint's training_state/ stay local. The
card's `base_model` must be a Hub id for the Hub to accept it, so a local path there (what
tsnet-finetune writes when --from is a folder) is refused with a sentence that says what to change.
Needs a token (`hf auth login` or HF_TOKEN) and the network. `create_and_upload` is the one Hub
upload of the project: this command, training/train.py --push-to-hub and space/build_space.py.
"""

import argparse
import re
import sys
from pathlib import Path

import huggingface_hub  # HfApi and get_token are looked up at call time: tests replace them
from huggingface_hub import ModelCard, constants

from .errors import CheckpointError, TSNetError
from .hub import resolve_checkpoint

UPLOADED = ("config.json", "model.safetensors", "README.md")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


def upload_plan(folder) -> list[Path]:
    """The files of checkpoint `folder` that an upload sends.

    Raises:
        CheckpointError: not a checkpoint folder, or its card names a local base_model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"Checkpoint folder {folder} does not exist: give the folder that holds config.json and model.safetensors."
        )
    resolve_checkpoint(folder)
    _check_card(folder / "README.md")
    return [folder / name for name in UPLOADED if (folder / name).is_file()]


def _check_card(card_path: Path) -> None:
    if not card_path.is_file():
        return
    base = ModelCard.load(card_path).data.base_model
    for name in [base] if isinstance(base, str) else base or []:
        if not _REPO_ID.match(name):
            raise CheckpointError(
                f"{card_path} gives base_model {name!r}, which is not a Hub id: put the base "
                "model's Hub id (USER/NAME) there, or remove the line, before uploading."
            )


def push_checkpoint(folder, repo_id: str, private: bool = False) -> str:
    """Create the model repository if needed and upload the checkpoint; returns the commit URL.

    Raises:
        CheckpointError: offline, no token, or the upload failed.
    """
    if not _REPO_ID.match(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a Hub repository id: give USER/NAME.")
    upload_plan(folder)
    problem = upload_blocker("--dry-run to list the files only")
    if problem:
        raise CheckpointError(problem)

    def failure(error):
        return CheckpointError(
            f"Uploading {folder} to {repo_id} failed ({type(error).__name__}): check the id, "
            "your token's write access and the network."
        )

    info = create_and_upload(
        folder,
        repo_id,
        "model",
        {"private": private or None},
        {"allow_patterns": list(UPLOADED)},
        "Upload TS-Net checkpoint (tsnet-hf)",
        failure,
    )
    return str(getattr(info, "commit_url", info))


def upload_blocker(dry_run: str) -> str | None:
    """Why nothing can be uploaded from here (offline, or no token), as one sentence that ends
    with the `dry_run` alternative; None when an upload may go ahead."""
    if constants.HF_HUB_OFFLINE:
        return f"HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it (and be online), or use {dry_run}."
    if huggingface_hub.get_token() is None:
        return "No Hugging Face token found: run `hf auth login` or set HF_TOKEN, then try again."
    return None


def create_and_upload(
    folder, repo_id: str, repo_type: str, create: dict, upload: dict, commit_message: str, failure
) -> object:
    """`create_repo(repo_id, exist_ok=True, **create)`, then `upload_folder(folder, **upload)`, in
    a repository of `repo_type` ("model", "space"); returns upload_folder's answer (a CommitInfo).

    Raises:
        failure(error): whatever went wrong (network, permission, bad id), as the caller's one
            sentence, without the library's traceback.
    """
    api = huggingface_hub.HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, **create)
        return api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=commit_message, **upload
        )
    except Exception as error:  # network, permission, bad id: one sentence, not a traceback
        raise failure(error) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsnet-push", description="Upload a TS-Net checkpoint folder to the Hub.")
    parser.add_argument("folder", help="checkpoint folder (config.json, model.safetensors, README.md)")
    parser.add_argument("--repo-id", required=True, help="model repository, USER/NAME (created if missing)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = upload_plan(args.folder)
        print(f"{'would upload' if args.dry_run else 'uploading'} to https://huggingface.co/{args.repo_id}:")
        for path in files:
            print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB")
        if not args.dry_run:
            print(f"uploaded: {push_checkpoint(args.folder, args.repo_id, args.private)}")
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
