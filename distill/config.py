"""Settings of `r1distill sft`, written once: each field's doc is its --help text, its check is in `check`.

A recipe (`--config recipe.yaml`) is a YAML mapping of these fields; options given on the command line
win over it. `read_recipe` checks its keys and value types before anything else happens.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from r1distill.errors import UsageError
from r1distill.training import recipe

TEMPLATES = ("auto", "model", "r1distill")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr")
REPORTERS = ("tensorboard", "wandb", "trackio", "mlflow")


@dataclass
class SFTConfig:
    """Settings of one `r1distill sft` run."""

    input: str
    """Training conversations: a `r1distill filter` output folder, a Hub dataset id, or any table with a messages column or prompt/completion columns."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder: the trained student (plain Hugging Face layout), checkpoints, metrics.jsonl and a model card."""
    model: str = field(default="smollm2-135m", metadata={"flags": ("--model", "-m")})
    """Student: 'smollm2-135m' (embedded, offline), a Hub id or a local folder."""
    template: str = "auto"
    """Chat template: auto (the student's if it keeps <think> in assistant turns and marks them for the loss, else r1distill's), model or r1distill."""
    max_length: int = 4096
    """Most tokens per training sample (prompt and answer); longer samples are dropped and counted, or cut with --truncate."""
    truncate: bool = False
    """Cut samples longer than --max-length instead of dropping them (the cut ones lose their end, often the answer)."""
    epochs: float = 3.0
    """Passes over the training data."""
    max_steps: int | None = None
    """Stop after this many optimizer steps, overriding --epochs."""
    lr: float = 5e-5
    """Peak learning rate (the public R1 distillation reproductions use 4e-5 to 5e-5 on full weights; LoRA wants 1e-4 or more)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup (cosine_with_min_lr decays to 10% of --lr, as open-r1 does)."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up from 0."""
    batch_size: int = 1
    """Samples per device per forward pass (with packing: packed sequences of --max-length tokens)."""
    grad_accum: int = 8
    """Forward passes per optimizer step; the global batch is batch-size x grad-accum x devices."""
    packing: bool = field(default=True, metadata={"flags": ("--packing/--no-packing",)})
    """Pack samples into --max-length sequences (best-fit, no sample cut; padding-free where the attention supports it)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory at long lengths, about 30% slower."""
    lora_r: int | None = None
    """Train a PEFT LoRA adapter of this rank instead of every weight."""
    lora_alpha: int | None = None
    """LoRA scaling alpha [default: 2 x --lora-r]."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA adapters' input."""
    lora_target_modules: list[str] = field(default_factory=list)
    """Module name the LoRA adapters wrap, e.g. q_proj; repeat it [default: every linear layer but the output head]."""
    merge_lora: bool = False
    """Save the LoRA adapters merged into full weights, for servers that cannot load adapters."""
    eval_fraction: float = 0.0
    """Share of the rows held out to report an eval loss (0: none)."""
    eval_steps: int | None = None
    """Optimizer steps between eval-loss measurements [default: --save-steps]."""
    logging_steps: int = 10
    """Optimizer steps between lines of metrics.jsonl."""
    save_steps: int = 500
    """Optimizer steps between checkpoints (what --resume continues from)."""
    save_total_limit: int = 2
    """Checkpoints kept in OUT; older ones are deleted."""
    seed: int = 0
    """Seed of the data order, the eval split, LoRA's initialisation and dropout."""
    resume: bool = False
    """Continue the run in OUT from its last checkpoint; the step count goes on, and a higher step or epoch limit extends the run."""
    use_liger_kernel: bool = False
    """Liger's fused Triton kernels (GPU; needs `pip install r1distill[liger]`)."""
    attn_implementation: str | None = None
    """Attention kernel, e.g. flash_attention_2 (padding-free packing without a block mask) [default: transformers' choice]."""
    report_to: list[str] = field(default_factory=list)
    """Also send metrics to this tracker; repeat it."""
    push_to_hub: str | None = None
    """Upload the saved student to this Hub model repository ('user/name'), token from HF_TOKEN."""
    split: str = "train"
    """Split of a Hub dataset or save_to_disk folder."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the model card."""

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings (the input and model are checked later)."""
        problems = []
        if self.template not in TEMPLATES:
            problems.append(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.lr_scheduler not in SCHEDULERS:
            problems.append(f"--lr-scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}")
        unknown = [r for r in self.report_to if r not in REPORTERS]
        if unknown:
            problems.append(f"--report-to {unknown[0]!r} is unknown; use {', '.join(REPORTERS)}")
        if self.max_length < 16:
            problems.append(f"--max-length must be at least 16, got {self.max_length}")
        if self.epochs <= 0 or self.lr <= 0:
            problems.append("--epochs and --lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        for name in ("batch_size", "grad_accum", "logging_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.eval_steps is not None and self.eval_steps < 1:
            problems.append(f"--eval-steps must be at least 1, got {self.eval_steps}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            problems.append(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.lora_r is None:
            given = [f"--{n.replace('_', '-')}" for n in ("lora_alpha", "lora_target_modules", "merge_lora") if getattr(self, n)]
            if given:
                problems.append(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --lora-r")
        elif self.lora_r < 1 or (self.lora_alpha is not None and self.lora_alpha < 1):
            problems.append("--lora-r and --lora-alpha must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
            problems.append("--use-liger-kernel needs liger-kernel: pip install 'r1distill[liger]' (GPU only)")
        writable = next(parent for parent in (Path(self.output).absolute(), *Path(self.output).absolute().parents) if parent.exists())
        if not os.access(writable, os.W_OK):
            problems.append(f"-o {self.output}: {writable} is not writable (read-only or not yours); choose another folder")
        if problems:
            raise UsageError("; ".join(problems))


# Settings that may change between the runs of one OUT: how long, how often, where to report.
RESUMABLE = ("epochs", "max_steps", "resume", "logging_steps", "save_steps", "save_total_limit", "eval_steps", "report_to",
             "push_to_hub", "merge_lora", "command")


def read_recipe(path: str | Path) -> dict:
    """The settings in a YAML recipe, each checked to be a field of SFTConfig and of its type (DATA and -o
    are given on the command line, so a recipe cannot set `input`, `output` or `command`)."""
    return recipe.read_recipe(path, SFTConfig, "sft")
