"""The settings sft and rl share (LoRA, checkpoints kept, resume, trackers, the Hub, the split, held-out pass@1): one field
with one doc each, checked once in `shared_problems` (the training extra's libraries too). The stages' configs inherit them, so
`r1distill sft --help` and `r1distill rl --help` list them after the stage's own options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import context
from r1distill.errors import missing_training

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr")
REPORTERS = ("tensorboard", "wandb", "trackio", "mlflow")


@dataclass(kw_only=True)
class TrainingSettings:
    """What every training stage has besides its own settings (see the module docstring)."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory at long lengths, about 30% slower."""
    lora_r: int | None = None
    """Train a PEFT LoRA adapter of this rank instead of every weight (in rl the KL reference is then the frozen base)."""
    lora_alpha: int | None = None
    """LoRA scaling alpha [default: 2 x --lora-r]."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA adapters' input."""
    lora_target_modules: list[str] = field(default_factory=list)
    """Module name the LoRA adapters wrap, e.g. q_proj; repeat it [default: every linear layer but the output head]."""
    merge_lora: bool = False
    """Save the LoRA adapters merged into full weights, for servers that cannot load adapters."""
    save_total_limit: int = 2
    """Checkpoints kept in OUT; older ones are deleted."""
    resume: bool = False
    """Continue the run in OUT from its last checkpoint; the step count goes on, and a higher step or epoch limit extends the run."""
    report_to: list[str] = field(default_factory=list)
    """Also send metrics to this tracker; repeat it."""
    push_to_hub: str | None = None
    """Upload the saved model to this Hub model repository ('user/name'), token from HF_TOKEN."""
    split: str = "train"
    """Split of a Hub dataset or save_to_disk folder."""
    eval_every: int | None = None
    """Every N optimizer steps and after the last, answer each --eval-prompts prompt once (greedy) and score pass@1 with the shared verifier, into metrics.jsonl and the report."""
    eval_prompts: str | None = None
    """Held-out prompt table (problem and answer columns, e.g. a `r1distill synth` output) that --eval-every scores."""
    eval_max_tokens: int = 1024
    """Tokens each held-out answer may take, thinking included."""

    def shared_problems(self, stage: str, output: str, lr_scheduler: str) -> list[str]:
        """The problems with these settings, with the stage's name, -o OUT and --lr-scheduler, for its `check`."""
        missing = missing_training(stage)
        problems = [missing] if missing else []
        if lr_scheduler not in SCHEDULERS:
            problems.append(f"--lr-scheduler must be one of {', '.join(SCHEDULERS)}, got {lr_scheduler!r}")
        unknown = [r for r in self.report_to if r not in REPORTERS]
        if unknown:
            problems.append(f"--report-to {unknown[0]!r} is unknown; use {', '.join(REPORTERS)}")
        if self.save_total_limit < 1:
            problems.append(f"--save-total-limit must be at least 1, got {self.save_total_limit}")
        if self.lora_r is None:
            given = [f"--{n.replace('_', '-')}" for n in ("lora_alpha", "lora_target_modules", "merge_lora") if getattr(self, n)]
            if given:
                problems.append(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --lora-r")
        elif self.lora_r < 1 or (self.lora_alpha is not None and self.lora_alpha < 1):
            problems.append("--lora-r and --lora-alpha must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if (self.eval_every is None) != (self.eval_prompts is None):
            problems.append("--eval-every and --eval-prompts go together: give both (the steps between scores and the held-out prompts) or neither")
        if self.eval_every is not None and self.eval_every < 1:
            problems.append(f"--eval-every must be at least 1, got {self.eval_every}")
        if self.eval_max_tokens < 1:
            problems.append(f"--eval-max-tokens must be at least 1, got {self.eval_max_tokens}")
        writable = next(parent for parent in (Path(output).absolute(), *Path(output).absolute().parents) if parent.exists())
        if not os.access(writable, os.W_OK):
            problems.append(f"-o {output}: {writable} is not writable (read-only or not yours); choose another folder")
        return problems

    def held_out_context_problem(self, model: str) -> str | None:
        """Why a held-out answer of --eval-max-tokens (plus its prompt) does not fit `model`, or None."""
        if self.eval_every is None:
            return None
        return context.generation_problem(model, self.eval_max_tokens, "--eval-max-tokens", vllm=False, max_model_len=None, length_option="--max-model-len")
