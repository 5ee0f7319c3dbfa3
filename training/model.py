"""The model a training stage starts from and what it saves: checked before any weight loads, loaded in
full precision, told to stop at its template's end-of-turn token, optionally wrapped in LoRA adapters,
and saved in a plain Hugging Face layout (adapters merged on request)."""

from __future__ import annotations

from pathlib import Path

from r1distill import models
from r1distill.errors import UsageError, first_line


def model_path(model: str) -> str:
    """The folder or Hub id to load, after checking that its config can be read (no weights are loaded)."""
    from transformers import AutoConfig

    path = models.resolve(model)
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") != 1
    if looks_local and not (Path(path).expanduser() / "config.json").exists():
        raise UsageError(f"--model {model}: no such model folder (no config.json); give a local model folder, a Hub id like 'Qwen/Qwen2.5-Math-1.5B', or smollm2-135m")
    try:
        AutoConfig.from_pretrained(path)
    except Exception as err:  # OSError, ValueError, HF hub errors: all mean the same to the user
        raise UsageError(f"--model {model}: cannot be loaded ({first_line(err)})") from err
    return str(Path(path).expanduser()) if looks_local else path


def check_lora_targets(cfg, model_path: str) -> None:
    """Every --lora-target-modules name must exist in the model: checked on a weightless (meta) copy."""
    if cfg.lora_r is None or not cfg.lora_target_modules:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules() if isinstance(module, torch.nn.Linear)})
    missing = [name for name in cfg.lora_target_modules if name not in linear]
    if missing:
        raise UsageError(f"--lora-target-modules {', '.join(missing)}: no such linear module in {cfg.model}; it has {', '.join(linear)}")


def load(model_path: str, tokenizer, end_of_turn: str | None, attn_implementation: str | None = None):
    """The model in fp32 (bf16 autocast comes from the trainer on GPUs that have it), its embeddings grown to
    the tokenizer, and `end_of_turn` added to its stop tokens, whatever else the base model stopped at."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation=attn_implementation)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if end_of_turn is not None:
        end = tokenizer.convert_tokens_to_ids(end_of_turn)
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        model.generation_config.eos_token_id = eos + [end] if end not in eos else eos
    return model


def lora_config(cfg, tokenizer, added_tokens: list[str]):
    """PEFT's LoraConfig for `cfg` (lora_r, lora_alpha, lora_dropout, lora_target_modules), None without --lora-r."""
    if cfg.lora_r is None:
        return None
    from peft import LoraConfig

    # Tokens the template added have fresh embeddings: they must train even though the base is frozen.
    added = {"embed_tokens": tokenizer.convert_tokens_to_ids(added_tokens)} if added_tokens else None
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules or "all-linear",
        trainable_token_indices=added,
        task_type="CAUSAL_LM",
    )


def save(trainer, cfg) -> None:
    """Weights (or adapters, or merged), tokenizer with its template and the generation config in `cfg.output`."""
    out = Path(cfg.output)
    # save_model gathers sharded weights (ZeRO-3, FSDP) and writes the tokenizer with its template.
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero() or cfg.lora_r is None:
        return
    # An adapter folder holds no generation config; the base model's (with the end-of-turn token) is written beside it.
    trainer.accelerator.unwrap_model(trainer.model).get_base_model().generation_config.save_pretrained(out)
    if cfg.merge_lora:
        _merge(out)


def _merge(out: Path) -> None:
    """Replace the adapter files in OUT by full weights with the adapters merged in (read back from disk,
    so it works the same whatever sharding trained them)."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(out)).merge_and_unload()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink(missing_ok=True)
    merged.save_pretrained(str(out))
