"""r1distill sft: fine-tune a student on distilled traces with TRL's SFTTrainer.

    r1distill sft runs/sft -o runs/student --model smollm2-135m --max-steps 20 --max-length 1024    # CPU
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m r1distill.cli sft runs/sft -o runs/qwen-7b \\
        --config recipes/sft/qwen2.5-math-7b.yaml                                                   # 8 GPUs

The distilled R1 students are plain SFT; what breaks reproductions is plumbing, so this stage makes
the right thing the default and checks it before any GPU time is spent:

1. `plan`: every option, OUT, the data and the model's config are checked (one-line UsageErrors, nothing
   written, no weights loaded); the chat template is chosen (template.py) and train/serve parity is
   proved on the data; rows are tokenized once with assistant masks and those longer than
   --max-length are dropped and counted; one line states what will be trained. Under `accelerate
   launch` one process reads and tokenizes, the others read its result (training/ranks.py).
2. `build_trainer`: the student is loaded (fp32 weights, bf16 autocast on GPUs that have it), its
   generation config learns the end-of-turn token, and TRL's SFTTrainer is built on the tokenized
   rows: TRL turns the masks into labels (assistant tokens only) and then packs them best-fit,
   padding-free, so packing never trains a prompt token.
3. `train`: with metrics.jsonl and a progress bar; --resume continues from OUT's last checkpoint.
4. `save`: weights (or LoRA adapters, or merged), tokenizer, template, generation config and a model
   card in OUT, a plain HF layout that `r1distill generate --model OUT` and vLLM load.

The trainer is TRL's; this module only prepares what goes into it and checks what comes out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from r1distill import context, hub
from r1distill.console import summary_table
from r1distill.distill.config import RESUMABLE, SFTConfig
from r1distill.distill.data import DataStats, load_conversations, tokenize
from r1distill.training.template import Template, choose_template, end_of_turn_token, install, parity
from r1distill.errors import UsageError
from r1distill.training import model as student
from r1distill.training import output, ranks
from r1distill.prompts import build_messages
from r1distill.training.callbacks import MetricsLog, TrainProgress
from r1distill.training.heldout import HeldOut, held_out_callbacks, load_held_out
from r1distill.training.recipe import trainer_arguments
from r1distill.training.card import model_card, template_section

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything a run needs besides the weights, built and checked before they load."""

    cfg: SFTConfig
    model_path: str
    tokenizer: object
    template: Template
    added_tokens: list[str]
    end_of_turn: str
    parity: str
    train: object
    eval: object
    stats: DataStats
    checkpoint: str | None
    """The checkpoint --resume continues from."""
    started: datetime
    held_out: HeldOut | None
    """--eval-prompts, rendered as the student will be prompted."""


@dataclass
class SFTSummary:
    """The outcome of one run."""

    output: str
    steps: int
    train_loss: float | None
    eval_loss: float | None
    stats: DataStats
    template: str


def sft(cfg: SFTConfig) -> SFTSummary:
    """Run the sft stage (see the module docstring); the CLI and the Python API both call this."""
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    train(trainer, plan)
    return save(trainer, plan)


def plan_run(cfg: SFTConfig) -> Plan:
    """Step 1: check everything and tokenize the data; raises UsageError before any weight loads."""
    from transformers import AutoTokenizer

    started = datetime.now(timezone.utc)
    cfg.check()
    checkpoint = output.check_output(cfg, "sft", RESUMABLE)
    if cfg.push_to_hub:
        hub.check_repo(cfg.push_to_hub, "--push-to-hub")
    model_path = student.model_path(cfg.model)
    # Its config is fetched now: a Hub student that check() could not read offline is measured here, before the data.
    if problem := context.training_problem(cfg.model, cfg.max_length, "--max-length"):
        raise UsageError(problem)
    student.check_lora_targets(cfg, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data, here = ranks.once(lambda: _prepare(cfg, tokenizer))
    # The process that prepared the data installed the template in its tokenizer; the others do it now.
    added = data.added if here else install(tokenizer, data.template)
    held_out = None
    if cfg.eval_prompts is not None:
        # Asked as generate asks a teacher, through the installed template: the prompt the student is served with.
        held_out = load_held_out(cfg.eval_prompts, lambda problem: tokenizer.apply_chat_template(
            build_messages(problem, "chat", None, None), tokenize=False, add_generation_prompt=True))
    return Plan(cfg, model_path, tokenizer, data.template, added, end_of_turn_token(tokenizer, data.template.text), data.parity,
                data.train, data.eval, data.stats, checkpoint, started, held_out)


@dataclass
class _Prepared:
    """What reading and tokenizing the data gives, made by one process and shared with the others (ranks.py)."""

    template: Template
    added: list[str]
    parity: str
    train: object
    eval: object
    stats: DataStats


def _prepare(cfg: SFTConfig, tokenizer) -> _Prepared:
    """Read the conversations, choose and install the template, prove parity and tokenize (UsageErrors on bad data)."""
    conversations, kinds = load_conversations(cfg.input, cfg.split)
    template = choose_template(tokenizer, cfg.template, conversations, kinds)
    added = install(tokenizer, template)
    try:
        statement = parity(tokenizer, template.text, conversations, kinds)
    except ValueError as err:
        raise UsageError(f"the {template.name} template fails the train/serve parity check: {err}") from err
    log.info(statement)
    train_rows, eval_rows, stats = tokenize(conversations, kinds, tokenizer, template.text, cfg.max_length, cfg.truncate, cfg.eval_fraction, cfg.seed)
    log.info(stats.line(cfg.max_length))
    return _Prepared(template, added, statement, train_rows, eval_rows, stats)


def build_trainer(plan: Plan):
    """Step 2: load the student and build TRL's SFTTrainer on the tokenized rows."""
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    cfg, tokenizer = plan.cfg, plan.tokenizer
    evaluating = plan.eval is not None
    # Built before the weights load: under ZeRO-3 from_pretrained then loads them sharded.
    args = TRLConfig(
        **trainer_arguments(cfg),
        per_device_eval_batch_size=cfg.batch_size,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=cfg.eval_steps or cfg.save_steps,
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        use_liger_kernel=cfg.use_liger_kernel,
    )
    model = student.load(plan.model_path, tokenizer, plan.end_of_turn, cfg.attn_implementation)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=plan.train,
        eval_dataset=plan.eval,
        processing_class=tokenizer,
        peft_config=student.lora_config(cfg, tokenizer, plan.added_tokens),
        callbacks=[MetricsLog(cfg.output), TrainProgress(), *held_out_callbacks(cfg, plan.held_out, tokenizer)],
    )
    return trainer


def train(trainer, plan: Plan) -> None:
    """Step 3: train (from the last checkpoint with --resume), recording the run in OUT first."""
    output.train(trainer, Path(plan.cfg.output), plan.checkpoint, _record(plan, finished=None))


def _record(plan: Plan, finished: dict | None) -> dict:
    return output.run_record(plan.cfg, plan.started, plan.template.name, finished)


def save(trainer, plan: Plan) -> SFTSummary:
    """Step 4: the student, tokenizer, template, generation config and model card in OUT."""
    cfg, out = plan.cfg, Path(plan.cfg.output)
    student.save(trainer, cfg)
    history = trainer.state.log_history
    train_loss = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    eval_loss = next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None)
    summary = SFTSummary(str(out), trainer.state.global_step, train_loss, eval_loss, plan.stats, plan.template.name)
    if not trainer.is_world_process_zero():
        return summary
    output.finish(out, cfg, _card(plan, summary), _record(plan, output.finished(summary.steps, train_loss=train_loss, eval_loss=eval_loss)))
    return summary


def _card(plan: Plan, summary: SFTSummary) -> str:
    loss = f"{summary.train_loss:.4f}" if summary.train_loss is not None else "-"
    eval_loss = f", eval loss {summary.eval_loss:.4f}" if summary.eval_loss is not None else ""
    sections = f"""## Data

{plan.stats.line(plan.cfg.max_length)}. Loss on assistant tokens only (thinking and end-of-turn token
included; system and user turns excluded), packing {"on" if plan.cfg.packing else "off"}.

{template_section(plan.template.name, plan.template.reason, plan.end_of_turn, plan.parity)}"""
    return model_card(plan.cfg, "sft", plan.started, f"{summary.steps:,} optimizer steps, final train loss {loss}{eval_loss}", sections)


def print_summary(summary: SFTSummary) -> None:
    if not ranks.is_main_process():
        return  # every rank of a launch has the same summary: one table is enough
    rows = [
        ("rows trained", f"{summary.stats.train_rows:,}"),
        ("dropped as too long" if not summary.stats.truncate else "cut at --max-length", f"{summary.stats.too_long:,}"),
        ("trained tokens per epoch", f"{summary.stats.trained_tokens:,}"),
        ("steps", f"{summary.steps:,}"),
        ("train loss", f"{summary.train_loss:.4f}" if summary.train_loss is not None else "-"),
        ("eval loss", f"{summary.eval_loss:.4f}" if summary.eval_loss is not None else "-"),
        ("template", summary.template),
    ]
    summary_table(f"sft → {summary.output}", rows)
