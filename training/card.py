"""The model card (README.md) of a trained model: what was trained on what, the chat template and how to
prompt it, the command, every setting and the versions. Each stage writes its own sections."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from r1distill import __version__
from r1distill.redact import redact_command, redact_settings

VERSIONS = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def divergence_name(beta: float) -> str:
    """What on-policy distillation's loss is called at `beta` (TRL's generalized JSD), for its card and the report.

    >>> divergence_name(1.0), divergence_name(0.25)
    ('reverse KL', 'generalized JSD (beta 0.25)')
    """
    return {0.0: "forward KL", 1.0: "reverse KL", 0.5: "Jensen-Shannon divergence"}.get(beta, f"generalized JSD (beta {beta:g})")


def model_card(cfg, stage: str, started: datetime, outcome: str, sections: str) -> str:
    """The card of a model trained by `r1distill <stage>` with settings `cfg` (a settings dataclass with
    input, output, model, lora_r, merge_lora and command); `outcome` ends the first paragraph. The command
    and the settings are recorded redacted (a server URL's password, rl's `trl: {hub_token: ...}`; redact.py)."""
    settings = redact_settings({k: v for k, v in asdict(cfg).items() if k != "command"})
    versions = ", ".join(f"{name} {version(name)}" for name in VERSIONS)
    weights = "full weights" if cfg.lora_r is None else "LoRA merged into full weights" if cfg.merge_lora else f"LoRA adapters (r={cfg.lora_r})"
    tags = "\n".join(f"- {tag}" for tag in ("reasoning", "distillation", "r1distill", stage))
    return f"""---
library_name: transformers
base_model: {base_model(cfg.model)}
tags:
{tags}
---

# {Path(cfg.output).name}

A reasoning model trained by `r1distill {stage}` {__version__} on {started:%Y-%m-%d}: {weights} of
`{cfg.model}` trained on `{Path(cfg.input).name}`, {outcome}.

{sections.strip()}

## Reproduce

```
{" ".join(redact_command(cfg.command)) if cfg.command else f"r1distill {stage} ..."}
```

Settings: `{json.dumps(settings)}`

Versions: r1distill {__version__}, Python {platform.python_version()}, {versions}.
"""


def template_section(name: str, reason: str, end_of_turn: str, parity: str | None = None) -> str:
    """The card's chat-template section: which template, why, the stop token and the thinking switch."""
    return f"""## Chat template

`{name}`: {reason}. The template is saved with the tokenizer; the turn ends
with `{end_of_turn}`, which `generation_config.json` lists as an end-of-sequence token, so generation stops.
{parity + "." if parity else ""}

Thinking or not at inference: the model learned to choose from the data. To decide for it, render
the prompt with `tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)`
(pre-fills `<think>`, always reasons) or `enable_thinking=False` (pre-fills an empty think block,
answers at once); with vLLM pass `chat_template_kwargs={{"enable_thinking": False}}`. These switches
exist in the `r1distill` template; a model's own template may name them otherwise.
"""


def base_model(model: str) -> str:
    """The card's base_model: the Hub id, also for the embedded model."""
    from r1distill.models import EMBEDDED

    return EMBEDDED[model].source if model in EMBEDDED else model
