"""Context lengths: a stage's token budgets checked against the model's positions before anything runs.

A budget past the model's positions goes wrong quietly: vLLM caps every sequence at the model's length
(a 32k eval of Qwen2.5-Math-1.5B, which has 4,096 positions, is cut at 4k), and training or generating
past the positions runs RoPE where the model never learned it. So every stage that generates or
trains compares its budget with the positions here, in its settings' `check()`, and names the fix.

The positions are `max_position_embeddings` times the rope-scaling factor, as vLLM counts them (YaRN
scales its `original_max_position_embeddings`; llama3 and longrope already count it). The config is
read without weights: a local folder's, or a Hub model's from the local Hub cache only, so nothing is
downloaded; a Hub model not cached yet (and an earlier stage's model not made yet) is not checked here,
said at debug level: sft and rl check again once their model's config is fetched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from r1distill import models

log = logging.getLogger(__name__)

VLLM_LONG = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"
# Rope types whose max_position_embeddings already is the extended length (vLLM does not multiply them).
_COUNTED = frozenset({"default", "llama3", "longrope", "su", "mrope"})
LONGER_MODELS = "a model with longer positions (Qwen2.5 base and instruct models have 32,768 to 131,072; DeepSeek-R1-Distill-Qwen 131,072)"


@dataclass(frozen=True)
class ModelLength:
    """How many tokens of prompt plus completion a model's config allows."""

    model: str
    positions: int
    described: str
    """The positions as a message names them: "4,096 positions" or "131,072 positions (yarn x4 of 32,768)"."""


def model_length(model: str) -> ModelLength | None:
    """The positions of `model` (a local folder, a cached Hub id or the embedded alias), or None when its
    config cannot be read without a download or has no max_position_embeddings (or, in the core install,
    without transformers: the stage that needs it names the training extra instead)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        return None

    path = models.cached(model)
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        if not (local / "config.json").is_file():
            log.debug("%s: no config.json (yet); its context length is checked when it exists", model)
            return None
        path = str(local)
    try:
        # local_files_only: a Hub model is read from the local cache, never downloaded by a check.
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:  # not cached yet, or a config transformers cannot read: the stage's own loading says so
        log.debug("%s: config not readable offline (%s); context length not checked yet", model, err)
        return None
    text = config.get_text_config()
    positions = getattr(text, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions < 1:
        return None
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if isinstance(rope, dict) and rope and all(isinstance(value, dict) for value in rope.values()):
        rope = rope.get("full_attention") or next(iter(rope.values()))  # per layer type (e.g. Gemma 3)
    kind = (rope.get("rope_type") or rope.get("type") or "default") if isinstance(rope, dict) else "default"
    factor = rope.get("factor") if isinstance(rope, dict) else None
    if kind in _COUNTED or not isinstance(factor, (int, float)) or factor <= 1:
        return ModelLength(model, positions, f"{positions:,} positions")
    base = (rope.get("original_max_position_embeddings") or positions) if kind == "yarn" else positions
    scaled = int(base * factor)
    return ModelLength(model, scaled, f"{scaled:,} positions ({kind} rope scaling x{factor:g} of {base:,})")


def _long_allowed() -> bool:
    return os.environ.get(VLLM_LONG, "0").strip().lower() in ("1", "true")


def generation_problem(model: str, asked: int, option: str, *, vllm: bool, max_model_len: int | None, length_option: str) -> str | None:
    """Why a completion budget of `asked` tokens (plus its prompt) does not fit `model`, or None.

    With vLLM, `max_model_len` (given as `length_option`) replaces the positions as the limit; past the
    positions vLLM refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.
    """
    length = model_length(model)
    if length is None:
        return None
    if vllm and max_model_len is not None:
        if max_model_len > length.positions and not _long_allowed():
            return (
                f"{length_option} {max_model_len:,} is beyond {model}'s {length.described}: vLLM refuses it unless "
                f"{VLLM_LONG}=1 is set (quality past the trained positions is not guaranteed); or give {length_option} "
                f"{length.positions} or less, or {LONGER_MODELS}"
            )
        if asked >= max_model_len:
            return (f"{option} {asked:,} leaves no room for the prompt in {length_option} {max_model_len:,} ({model}); "
                    f"give a shorter {option} or a larger {length_option}")
        return None
    if asked < length.positions:
        return None
    longer = (f"; or, past the trained positions, {length_option} {asked + 2048} with {VLLM_LONG}=1" if vllm else
              "; or --backend vllm with --max-model-len and VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to run past them")
    return (f"{option} {asked:,} plus the prompt does not fit {model}'s {length.described}: give {option} "
            f"{length.positions // 2} or so (room for the prompt), or {LONGER_MODELS}{longer}")


def training_problem(model: str, asked: int, option: str) -> str | None:
    """Why training sequences of `asked` tokens do not fit `model`'s positions, or None."""
    length = model_length(model)
    if length is None or asked <= length.positions:
        return None
    return (
        f"{option} {asked:,} is beyond {model}'s {length.described}: give {option} {length.positions} or less, or "
        f"{LONGER_MODELS}, or raise its RoPE as open-r1 did for 32k traces (open-r1/Qwen2.5-Math-7B-RoPE-300k: "
        "rope_theta 300,000 and max_position_embeddings 32,768 in config.json)"
    )
