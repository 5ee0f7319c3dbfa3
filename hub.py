"""Publishing an output folder on the Hub: a `filter` dataset or `generate` traces as a dataset repository,
an `sft` student as a model repository.

The token comes from HF_TOKEN or the `hf auth login` cache and is only handed to huggingface_hub:
it is never printed, logged or written. Every problem (no token, a bad repo id, no network, a
refusal from the Hub) is one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from r1distill.errors import UsageError, first_line

log = logging.getLogger(__name__)

# Never uploaded: generate's crash journal and locks, temporary files.
IGNORE = [".journal/*", ".journal/**", "*.tmp", ".*.tmp"]


def push(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the dataset repository `repo_id`; returns the repository's URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; give the -o folder of `r1distill filter` or `generate`")
    if not any(folder.glob("*.parquet")) and not any(folder.glob("data/*.parquet")):
        raise UsageError(f"{folder}: holds no Parquet files (expected data/train-*.parquet or traces-*.parquet)")
    return _upload(folder, repo_id, "dataset", private, IGNORE, check_repo(repo_id, "--repo-id"))


def push_model(folder: str | Path, repo_id: str) -> str:
    """Upload a trained model folder (without its checkpoints) to the model repository `repo_id`; returns its URL."""
    return _upload(Path(folder), repo_id, "model", False, [*IGNORE, "checkpoint-*/**", "run.json"], check_repo(repo_id, "--push-to-hub"))


def check_repo(repo_id: str, option: str) -> str:
    """The token to push to `repo_id` with, after checking the id: a UsageError naming `option` otherwise.

    Called before a long run starts, so a typo does not surface after hours of training.
    """
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("it needs a namespace")
    except HFValidationError as err:
        raise UsageError(f"{option} {repo_id!r} is not a valid repository id like 'user/name' ({first_line(err)})") from err
    token = get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def _upload(folder: Path, repo_id: str, repo_type: str, private: bool, ignore: list[str], token: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, ignore_patterns=ignore, commit_message="Upload with r1distill")
    except Exception as err:
        # Connection errors, 401/403 from the Hub, offline mode: all one line, and the token scrubbed.
        raise UsageError(f"could not push {folder} to {repo_id}: {first_line(err, secret=token)}") from err
    log.info("pushed %s to %s", folder, url)
    return str(url)
