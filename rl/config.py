"""Settings of `r1distill rl`, written once: each field's doc is its --help text, its check is in `check`.

A recipe (`--config recipe.yaml`) may set these fields and any other field of TRL's `GRPOConfig`
(`num_iterations`, `top_p`, `vllm_gpu_memory_utilization`, `importance_sampling_level`...), which go to
the trainer as they are; options typed on the command line win over it. A GRPOConfig field that one of
these settings already sets (`learning_rate` is `lr`) must be given under this settings' name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import context, requirements
from r1distill.errors import UsageError, missing_training
from r1distill.rewards import ACCURACY_MODES, LANGUAGE_SCRIPTS, RULES, TASKS, CodeSettings
from r1distill.rewards.judge import JudgeSettings
from r1distill.training import recipe
from r1distill.training.ranks import world_size
from r1distill.training.settings import TrainingSettings

TEMPLATES = ("chat", "r1-zero")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")
REWARDS = (*RULES, *TASKS, "judge")


@dataclass
class RLConfig(TrainingSettings, CodeSettings, JudgeSettings):
    """Settings of one `r1distill rl` run (with the code reward's `CodeSettings` and the judge's `JudgeSettings`, for --reward judge)."""

    input: str
    """Prompts: a prompt table (problem, answer), a `r1distill filter` output (with pass rates) or a `generate` output; a Hub dataset id too."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder: the trained policy (plain Hugging Face layout), checkpoints, metrics.jsonl and a model card."""
    model: str = field(default="smollm2-135m", metadata={"flags": ("--model", "-m")})
    """Policy to train: 'smollm2-135m' (embedded, offline), a Hub id or a local folder (a base model for R1-Zero, an sft student for R1's later stages)."""
    rewards: list[str] = field(default_factory=lambda: ["accuracy", "format"], metadata={"flags": ("--reward",)})
    """Reward NAME or NAME=WEIGHT from the shared rules (the checks of `r1distill filter`); repeat it."""
    reward_model: str | None = None
    """A sequence-classification reward model (folder or Hub id) added to the rule rewards, R1's stage-4 mix."""
    reward_model_weight: float = 1.0
    """Weight of --reward-model in the summed reward."""
    template: str = "chat"
    """Prompt: chat (the model's chat template, asking for a boxed answer) or r1-zero (the R1-Zero prompt as raw text, for a base model; the format reward then wants <think>...</think> <answer>...</answer>)."""
    system: str | None = None
    """System prompt (chat template only)."""
    accuracy: str = "math"
    """How the accuracy reward compares answers."""
    timeout: float = 5.0
    """Seconds Math-Verify may spend on one answer; then its accuracy reward is None (no signal, never a stalled step)."""
    judge_deadline: float = 120.0
    """Seconds the judge requests of one step may take (--reward judge); the completions not judged by then score 0 and are counted (rewards/judge_reward/late)."""
    language: str = "en"
    """Target language of the reasoning (language reward)."""
    lenient_format: bool = False
    """Format reward also accepts thinking without its opening <think> tag."""
    length_max_tokens: int | None = None
    """Length reward: most completion tokens that still score 1 (needed by --reward length)."""
    min_pass_rate: float | None = None
    """Keep prompts whose pass rate in `r1distill filter` is at least this (needs a pass_rate column)."""
    max_pass_rate: float | None = None
    """Keep prompts whose pass rate in `r1distill filter` is at most this (needs a pass_rate column)."""
    num_generations: int = 8
    """Completions sampled per prompt: the group whose mean reward is each completion's baseline."""
    batch_size: int = 8
    """Completions per device per forward pass; the global batch (batch-size x grad-accum x devices) must be a multiple of --num-generations."""
    grad_accum: int = 1
    """Forward passes per optimizer step; completions are generated once for all of them."""
    max_completion_length: int = 1024
    """Most tokens per completion; longer ones are cut (and count as truncated)."""
    temperature: float = 1.0
    """Sampling temperature of the completions."""
    lr: float = 1e-6
    """Peak learning rate (R1-Zero reproductions use 1e-6 to 3e-6 on full weights; LoRA wants 1e-5 or more)."""
    lr_scheduler: str = "constant"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = 0.0
    """Share of the steps spent warming the learning rate up from 0."""
    beta: float = 0.001
    """KL penalty against the starting policy, as in DeepSeek-R1 (0: no reference model is loaded)."""
    epsilon: float = 0.2
    """Clipping range of the probability ratio (lower bound, and upper unless --epsilon-high)."""
    epsilon_high: float | None = None
    """Upper clipping bound, DAPO's clip-higher (0.28 in the DAPO paper) [default: --epsilon]."""
    loss_type: str = "dapo"
    """How token losses are averaged: grpo (per sequence, the paper's; biased toward short right answers), dapo (per token over the batch, TRL's default), dr_grpo (a constant), bnpo, cispo, sapo."""
    scale_rewards: str = "group"
    """Divide advantages by the reward standard deviation of the group (GRPO), the batch, or none (Dr. GRPO)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at --max-completion-length out of the loss (DAPO's overlong filtering)."""
    epochs: float = 1.0
    """Passes over the prompts."""
    max_steps: int | None = None
    """Stop after this many optimizer steps, overriding --epochs."""
    use_vllm: bool = False
    """Generate the completions with vLLM (GPU; needs `pip install 'r1distill[gpu]'`)."""
    vllm_mode: str = "colocate"
    """colocate: vLLM inside each training process, sharing its GPU; server: a separate `trl vllm-serve` on other GPUs or nodes."""
    vllm_server_url: str | None = None
    """Base URL of the `trl vllm-serve` server (server mode) [default: http://0.0.0.0:8000]."""
    logging_steps: int = 1
    """Optimizer steps between lines of metrics.jsonl."""
    log_samples: int = 2
    """Sample completions (with their rewards and verdicts) written to each line of metrics.jsonl."""
    save_steps: int = 100
    """Optimizer steps between checkpoints (what --resume continues from)."""
    seed: int = 0
    """Seed of the prompt order, the sampling and LoRA's initialisation."""
    trl: dict = field(default_factory=dict, metadata={"cli": False})
    """Other GRPOConfig fields, from --config, passed to the trainer as they are."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the model card."""

    def reward_weights(self) -> list[tuple[str, float]]:
        """(name, weight) of each --reward; raises UsageError on a bad one."""
        parsed = []
        for spec in self.rewards:
            name, _, weight = spec.partition("=")
            try:
                parsed.append((name.strip(), float(weight) if weight else 1.0))
            except ValueError:
                raise UsageError(f"--reward {spec!r}: the weight after '=' must be a number, e.g. accuracy=2") from None
        return parsed

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings (the prompts and model are checked later)."""
        problems = self.shared_problems("rl", self.output, self.lr_scheduler) + self.code_problems()
        for name, value, allowed in (("template", self.template, TEMPLATES), ("accuracy", self.accuracy, ACCURACY_MODES),
                                     ("language", self.language, tuple(LANGUAGE_SCRIPTS)), ("loss-type", self.loss_type, LOSS_TYPES),
                                     ("scale-rewards", self.scale_rewards, SCALE_REWARDS), ("vllm-mode", self.vllm_mode, VLLM_MODES)):
            if value not in allowed:
                problems.append(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        try:
            weights = self.reward_weights()
        except UsageError as err:
            problems.append(str(err))
            weights = []
        names = [name for name, _ in weights]
        bad = [name for name in names if name not in REWARDS]
        if bad:
            problems.append(f"--reward {bad[0]!r} is unknown; use {', '.join(REWARDS)}")
        if len(set(names)) < len(names):
            problems.append("--reward: each reward once (give a weight with NAME=WEIGHT)")
        if not names and self.reward_model is None:
            problems.append("no reward: give --reward or --reward-model")
        if "judge" in names and "accuracy" in names:
            problems.append("--reward judge is the accuracy reward with a judge for what rules cannot decide: drop --reward accuracy")
        problems += self.judge_problems("judge" in names, servers_only=True)  # a local judge would share the policy's devices
        if not self.judge_deadline > 0:
            problems.append(f"--judge-deadline must be positive, got {self.judge_deadline}")
        if "length" in names and self.length_max_tokens is None:
            problems.append("--reward length needs --length-max-tokens")
        if self.system is not None and self.template == "r1-zero":
            problems.append("--system applies to --template chat only; the r1-zero prompt is sent as it is")
        if self.num_generations < 2:
            problems.append(f"--num-generations must be at least 2 (GRPO's baseline is the group mean), got {self.num_generations}")
        elif (self.batch_size * self.grad_accum * world_size()) % self.num_generations:
            problems.append(
                f"the global batch ({self.batch_size} x {self.grad_accum} x {world_size()} device(s) = "
                f"{self.batch_size * self.grad_accum * world_size()} completions) must be a multiple of --num-generations "
                f"{self.num_generations}, so every group is complete; change --batch-size or --grad-accum"
            )
        for name in ("batch_size", "grad_accum", "max_completion_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.epochs <= 0 or self.lr <= 0 or self.temperature <= 0 or self.timeout <= 0:
            problems.append("--epochs, --lr, --temperature and --timeout must be positive")
        if self.beta < 0 or self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high < self.epsilon):
            problems.append("--beta must be >= 0, --epsilon > 0 and --epsilon-high >= --epsilon")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("min_pass_rate", "max_pass_rate"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                problems.append(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if None not in (self.min_pass_rate, self.max_pass_rate) and self.min_pass_rate > self.max_pass_rate:
            problems.append("--min-pass-rate is above --max-pass-rate: no prompt would be kept")
        if self.log_samples < 0:
            problems.append(f"--log-samples must be at least 0, got {self.log_samples}")
        problems += requirements.missing(self)
        if self.max_completion_length >= 1 and (problem := self.context_problem()):
            problems.append(problem)
        if problem := self.held_out_context_problem(self.model):
            problems.append(problem)
        if self.vllm_server_url is not None and not (self.use_vllm and self.vllm_mode == "server"):
            problems.append("--vllm-server-url needs --use-vllm --vllm-mode server")
        if problems:
            raise UsageError("; ".join(problems))


    def context_problem(self) -> str | None:
        """A prompt plus --max-completion-length must fit the policy (and colocated vLLM's
        vllm_max_model_length, a GRPOConfig field); a `trl vllm-serve` server bounds its own."""
        colocated = self.use_vllm and self.vllm_mode == "colocate"
        return context.generation_problem(self.model, self.max_completion_length, "--max-completion-length", vllm=colocated,
                                          max_model_len=self.trl.get("vllm_max_model_length") if colocated else None,
                                          length_option="vllm_max_model_length")



# Settings that may change between the runs of one OUT: how long, how often, where to report.
RESUMABLE = ("epochs", "max_steps", "resume", "logging_steps", "log_samples", "save_steps", "save_total_limit", "report_to",
             "push_to_hub", "merge_lora", "command", "vllm_server_url", "timeout", "eval_every", "eval_prompts",
             "eval_max_tokens")

# The GRPOConfig field each setting above sets; a recipe gives these under the settings' names.
TRL_NAMES = {
    "output_dir": "output", "learning_rate": "lr", "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs", "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio", "reward_weights": "rewards",
    "activation_checkpointing": "gradient_checkpointing", "gradient_checkpointing": "gradient_checkpointing",
    "vllm_server_base_url": "vllm_server_url", "log_completions": "log_samples",
    **{name: name for name in ("num_generations", "max_completion_length", "temperature", "beta", "epsilon", "epsilon_high",
                                "loss_type", "scale_rewards", "mask_truncated_completions", "max_steps", "use_vllm", "vllm_mode",
                                "logging_steps", "save_steps", "save_total_limit", "seed", "report_to")},
}


def _trl_fields(path: str, unknown: dict) -> dict:
    """The recipe keys that are other GRPOConfig fields, as the `trl` setting; UsageError for any other key."""
    missing = missing_training("rl")
    if missing:
        raise UsageError(missing)
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    ours = sorted(f"{key} (write {TRL_NAMES[key]})" for key in unknown if key in TRL_NAMES)
    if ours:
        raise UsageError(f"--config {path}: {', '.join(ours)}: these GRPOConfig fields are r1distill rl settings; give them under their names")
    bad = sorted(key for key in unknown if key not in fields)
    if bad:
        raise UsageError(f"--config {path}: unknown setting(s) {', '.join(bad)}; use the fields of `r1distill rl --help` with _ for -, or of TRL's GRPOConfig")
    remote = [key for key, value in unknown.items() if key == "trust_remote_code" and value or _asks_remote_code(value)]
    if remote:
        # TRL hands it to every from_pretrained (the reward model's too): code from a model repository would run here.
        raise UsageError(
            f"--config {path}: {remote[0]}: trust_remote_code would run the model repository's own code, and r1distill rl "
            "has no --trust-remote-code to allow it; use a model that loads without it"
        )
    return {"trl": dict(unknown)}


def _asks_remote_code(value) -> bool:
    """A GRPOConfig value (model_init_kwargs and the other kwargs, a mapping or its JSON text) that sets trust_remote_code.

    >>> _asks_remote_code({"dtype": "bfloat16", "trust_remote_code": True}), _asks_remote_code('{"trust_remote_code": true}')
    (True, True)
    >>> _asks_remote_code({"trust_remote_code": False}), _asks_remote_code("bfloat16")
    (False, False)
    """
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    if isinstance(value, dict):
        return any(key == "trust_remote_code" and bool(item) or _asks_remote_code(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_asks_remote_code(item) for item in value)
    return False


def read_recipe(path: str | Path) -> dict:
    """The settings in a YAML recipe: RLConfig fields checked and typed, other GRPOConfig fields under `trl`."""
    return recipe.read_recipe(path, RLConfig, "rl", extra=_trl_fields)
