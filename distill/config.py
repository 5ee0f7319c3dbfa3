"""Settings of `r1distill sft`, written once: each field's doc is its --help text, its check is in `check`.

A recipe (`--config recipe.yaml`) is a YAML mapping of these fields; options given on the command line
win over it. `read_recipe` checks its keys and value types before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from r1distill import context, requirements
from r1distill.errors import UsageError
from r1distill.training import recipe
from r1distill.training.settings import TrainingSettings

TEMPLATES = ("auto", "model", "r1distill")


@dataclass
class SFTConfig(TrainingSettings):
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
    eval_fraction: float = 0.0
    """Share of the rows held out to report an eval loss (0: none)."""
    eval_steps: int | None = None
    """Optimizer steps between eval-loss measurements [default: --save-steps]."""
    logging_steps: int = 10
    """Optimizer steps between lines of metrics.jsonl."""
    save_steps: int = 500
    """Optimizer steps between checkpoints (what --resume continues from)."""
    seed: int = 0
    """Seed of the data order, the eval split, LoRA's initialisation and dropout."""
    use_liger_kernel: bool = False
    """Liger's fused Triton kernels (GPU; needs `pip install 'r1distill[gpu]'`)."""
    attn_implementation: str | None = None
    """Attention kernel: sdpa (PyTorch's, always there), or flash_attention_2 (padding-free packing without a block mask; needs the flash_attn package, built from source) [default: transformers' choice, sdpa]."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the model card."""

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings (the input and model are checked later)."""
        problems = self.shared_problems("sft", self.output, self.lr_scheduler)
        if self.template not in TEMPLATES:
            problems.append(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.max_length < 16:
            problems.append(f"--max-length must be at least 16, got {self.max_length}")
        if self.epochs <= 0 or self.lr <= 0:
            problems.append("--epochs and --lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        for name in ("batch_size", "grad_accum", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.eval_steps is not None and self.eval_steps < 1:
            problems.append(f"--eval-steps must be at least 1, got {self.eval_steps}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            problems.append(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        problems += requirements.missing(self)
        if self.max_length >= 16 and (problem := context.training_problem(self.model, self.max_length, "--max-length")):
            problems.append(problem)
        if problem := self.held_out_context_problem(self.model):
            problems.append(problem)
        if problems:
            raise UsageError("; ".join(problems))


# Settings that may change between the runs of one OUT: how long, how often, where to report.
RESUMABLE = ("epochs", "max_steps", "resume", "logging_steps", "save_steps", "save_total_limit", "eval_steps", "report_to",
             "push_to_hub", "merge_lora", "command", "eval_every", "eval_prompts", "eval_max_tokens")


def read_recipe(path: str | Path) -> dict:
    """The settings in a YAML recipe, each checked to be a field of SFTConfig and of its type (DATA and -o
    are given on the command line, so a recipe cannot set `input`, `output` or `command`)."""
    return recipe.read_recipe(path, SFTConfig, "sft")
