"""The optional GPU packages a stage's settings need, named before any data is read.

vLLM, DeepSpeed, flash-attn and Liger are not dependencies (they need an NVIDIA GPU, and flash-attn
builds from source), so a setting that needs one must say so at once: otherwise the ImportError comes
as a traceback after the whole dataset is tokenized (flash-attn), or from `accelerate launch` itself
(DeepSpeed). `missing` is the one place that maps settings to packages; every stage's `check()` and
`r1distill run --check` (for a stage's `accelerate:` launch config) ask it. Packages are looked up
with `importlib.util.find_spec`, which imports nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

GPU_EXTRA = "pip install 'r1distill[gpu]'"


@dataclass(frozen=True)
class Package:
    """An optional package: the module that proves it is installed and how to install it."""

    module: str
    install: str


PACKAGES = {
    "vllm": Package("vllm", GPU_EXTRA),
    "deepspeed": Package("deepspeed", GPU_EXTRA),
    "liger-kernel": Package("liger_kernel", GPU_EXTRA),
    # Not in the extra: it compiles against the local CUDA and torch for a long while.
    "flash-attn": Package("flash_attn", "pip install flash-attn --no-build-isolation"),
}

# The attention kernels of transformers that come from a package of their own.
ATTENTION_PACKAGES = {"flash_attention_2": "flash-attn"}


def _needs(settings) -> list[tuple[str, str]]:
    """(package, the setting that needs it) for a stage's settings dataclass (generate, eval, sft, rl)."""
    needs = []
    if getattr(settings, "backend", None) == "vllm" and getattr(settings, "completions", None) is None:
        needs.append(("vllm", "--backend vllm"))
    if getattr(settings, "use_vllm", False):
        needs.append(("vllm", "--use-vllm"))
    trl = getattr(settings, "trl", None) or {}
    if getattr(settings, "use_liger_kernel", False) or trl.get("use_liger_kernel"):
        needs.append(("liger-kernel", "use_liger_kernel"))
    model_kwargs = trl.get("model_init_kwargs") if isinstance(trl.get("model_init_kwargs"), dict) else {}
    for attention in (getattr(settings, "attn_implementation", None), model_kwargs.get("attn_implementation")):
        if attention in ATTENTION_PACKAGES:
            needs.append((ATTENTION_PACKAGES[attention], f"attn_implementation {attention}"))
    return needs


def _launch_needs(launch_config: str | Path) -> list[tuple[str, str]]:
    """(package, why) for an `accelerate launch` config file: DeepSpeed for a ZeRO config."""
    import yaml

    try:
        config = yaml.safe_load(Path(launch_config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []  # the launcher reports an unreadable file itself
    if isinstance(config, dict) and (config.get("distributed_type") == "DEEPSPEED" or "deepspeed_config" in config):
        return [("deepspeed", f"accelerate config {launch_config}")]
    return []


def missing(settings, launch_config: str | Path | None = None) -> list[str]:
    """What a stage's `settings` (None: none) and the `accelerate launch` config it runs under need that
    is not installed, one problem per package naming the settings and the install command; [] if none."""
    needs = (_needs(settings) if settings is not None else []) + (_launch_needs(launch_config) if launch_config else [])
    reasons: dict[str, list[str]] = {}
    for package, why in needs:
        if importlib.util.find_spec(PACKAGES[package].module) is None and why not in reasons.setdefault(package, []):
            reasons[package].append(why)
    return [
        f"{', '.join(whys)} {'needs' if len(whys) == 1 else 'need'} {package}, which is not installed: {PACKAGES[package].install} (NVIDIA GPU)"
        for package, whys in reasons.items() if whys
    ]
