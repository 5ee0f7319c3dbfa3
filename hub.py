"""Publishing an output folder (a `filter` dataset or `generate` traces) as a Hub dataset repository.

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
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; give the -o folder of `r1distill filter` or `generate`")
    if not any(folder.glob("*.parquet")) and not any(folder.glob("data/*.parquet")):
        raise UsageError(f"{folder}: holds no Parquet files (expected data/train-*.parquet or traces-*.parquet)")
    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("it needs a namespace")
    except HFValidationError as err:
        raise UsageError(f"--repo-id {repo_id!r} is not a valid repository id like 'user/name' ({first_line(err)})") from err
    token = get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset", ignore_patterns=IGNORE, commit_message="Upload with r1distill push")
    except Exception as err:
        # Connection errors, 401/403 from the Hub, offline mode: all one line, and the token scrubbed.
        raise UsageError(f"could not push {folder} to {repo_id}: {first_line(err, secret=token)}") from err
    log.info("pushed %s to %s", folder, url)
    return str(url)
