"""Publishing an output folder on the Hub: a `filter` dataset or `generate` traces as a dataset repository,
an `sft` student as a model repository.

The token comes from HF_TOKEN or the `hf auth login` cache and is only handed to huggingface_hub:
it is never printed, logged or written. Every problem (no token, a bad repo id, no network, a
refusal from the Hub) is one line.

What is uploaded is an allow-list of the files the stages are known to write (`files_to_push`), not
"everything but": a folder also holds files that must never leave the machine, such as the trainer's
pickled `training_args.bin` (its TrainingArguments, a `hub_token` included), generate's journal, a
checkpoint, or whatever a user dropped there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from r1distill.errors import UsageError, first_line

log = logging.getLogger(__name__)

# What each kind of repository receives. huggingface_hub matches these with fnmatch on the path in the
# folder, where `*` also crosses `/`: `*.parquet` takes data/train-*.parquet and an eval's generations.
DATASET_FILES = ["*.parquet", "README.md", "stats.json", "manifest.json", "manifest-*-of-*.json", "results.json"]
"""Parquet data (generate's traces, filter's data/ and scored/, eval's samples), the card, filter's stats,
generate's manifests and eval's results, all recorded redacted."""
MODEL_FILES = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "adapter_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "tokenizer.model", "chat_template.jinja", "chat_template.json", "README.md", "metrics.jsonl",
]
"""The weights (or LoRA adapters), the model and generation configs, the tokenizer with its template, the card and the curves."""
# Never uploaded even when named above: hidden files and folders (generate's journal and locks,
# temporary files); for a model, anything in a subfolder (checkpoints: a model repository is flat).
IGNORE = [".*", "*/.*", "*.tmp"]
_SELECTION = {"dataset": (DATASET_FILES, IGNORE), "model": (MODEL_FILES, [*IGNORE, "*/*"])}


def push(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the dataset repository `repo_id`; returns the repository's URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; give the -o folder of `r1distill filter` or `generate`")
    if not any(folder.glob("*.parquet")) and not any(folder.glob("data/*.parquet")):
        raise UsageError(f"{folder}: holds no Parquet files (expected data/train-*.parquet or traces-*.parquet)")
    return _upload(folder, repo_id, "dataset", private, check_repo(repo_id, "--repo-id"))


def push_model(folder: str | Path, repo_id: str) -> str:
    """Upload a trained model folder (without its checkpoints) to the model repository `repo_id`; returns its URL."""
    return _upload(Path(folder), repo_id, "model", False, check_repo(repo_id, "--push-to-hub"))


def files_to_push(folder: str | Path, repo_type: str) -> list[str]:
    """The files (paths in `folder`) that a push to a `repo_type` ('dataset' or 'model') repository
    uploads, selected by huggingface_hub's own filter with the patterns `_upload` gives it; no network."""
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    allow, ignore = _SELECTION[repo_type]
    found = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return list(filter_repo_objects(found, allow_patterns=allow, ignore_patterns=ignore))


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


def _upload(folder: Path, repo_id: str, repo_type: str, private: bool, token: str) -> str:
    from huggingface_hub import HfApi

    allow, ignore = _SELECTION[repo_type]
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, allow_patterns=allow, ignore_patterns=ignore,
            commit_message="Upload with r1distill",
        )
    except Exception as err:
        # Connection errors, 401/403 from the Hub, offline mode: all one line, and the token scrubbed.
        raise UsageError(f"could not push {folder} to {repo_id}: {first_line(err, secret=token)}") from err
    log.info("pushed %s to %s", folder, url)
    return str(url)
