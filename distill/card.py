"""The model card (README.md) of a trained student: data, template, how to prompt it, command, settings, versions."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from r1distill import __version__

VERSIONS = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def model_card(plan, summary) -> str:
    cfg = plan.cfg
    settings = {k: v for k, v in asdict(cfg).items() if k != "command"}
    versions = ", ".join(f"{name} {version(name)}" for name in VERSIONS)
    weights = "full weights" if cfg.lora_r is None else "LoRA merged into full weights" if cfg.merge_lora else f"LoRA adapters (r={cfg.lora_r})"
    loss = f"{summary.train_loss:.4f}" if summary.train_loss is not None else "-"
    eval_loss = f", eval loss {summary.eval_loss:.4f}" if summary.eval_loss is not None else ""
    return f"""---
library_name: transformers
base_model: {_base(cfg.model)}
tags:
- reasoning
- distillation
- r1distill
- sft
---

# {Path(cfg.output).name}

A reasoning student fine-tuned by `r1distill sft` {__version__} on {plan.started:%Y-%m-%d}: {weights} of
`{cfg.model}` trained on `{Path(cfg.input).name}`, {summary.steps:,} optimizer steps, final train loss {loss}{eval_loss}.

## Data

{plan.stats.line(cfg.max_length)}. Loss on assistant tokens only (thinking and end-of-turn token
included; system and user turns excluded), packing {"on" if cfg.packing else "off"}.

## Chat template

`{plan.template.name}`: {plan.template.reason}. The template is saved with the tokenizer; the turn ends
with `{plan.end_of_turn}`, which `generation_config.json` lists as an end-of-sequence token, so generation stops.
{plan.parity}.

Thinking or not at inference: the student learned to choose from the data. To decide for it, render
the prompt with `tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)`
(pre-fills `<think>`, always reasons) or `enable_thinking=False` (pre-fills an empty think block,
answers at once); with vLLM pass `chat_template_kwargs={{"enable_thinking": False}}`. These switches
exist in the `r1distill` template; a student's own template may name them otherwise.

## Reproduce

```
{" ".join(cfg.command) if cfg.command else "r1distill sft ..."}
```

Settings: `{json.dumps(settings)}`

Versions: r1distill {__version__}, Python {platform.python_version()}, {versions}.
"""


def _base(model: str) -> str:
    """The card's base_model: the Hub id, also for the embedded model."""
    from r1distill.models import EMBEDDED

    return EMBEDDED[model].source if model in EMBEDDED else model
