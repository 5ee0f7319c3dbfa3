"""r1distill distill: on-policy distillation with TRL's DistillationTrainer; the student writes, the teacher
scores every token it wrote.

    r1distill distill runs/prompts.jsonl -o runs/onpolicy --teacher smollm2-135m --student runs/smollm2-half \\
        --max-steps 4 --batch-size 4 --max-completion-length 32 --lr 1e-5                                 # CPU
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m r1distill.cli distill runs/math -o runs/od-1.5b \\
        --config recipes/distill/r1-distill-qwen-7b-into-qwen2.5-1.5b.yaml                                 # 8 GPUs

`r1distill sft` trains on the teacher's traces (off-policy: the student imitates text it would not
have written, one sampled token per position). Here the student samples a completion of each prompt,
the teacher reads it, and the loss is the divergence between the two next-token distributions at
every completion token (reverse KL with --beta 1: the student is pushed off what the teacher finds
unlikely, on the prefixes the student itself produces). The signal per token is the whole teacher
distribution, and the student learns from its own mistakes, so far fewer prompts reach the teacher's
accuracy than SFT on sampled traces when both share a tokenizer (the R1-Distill family and Qwen2.5).
The trainer is TRL's; this module only prepares what goes into it:

1. `plan_run`: every option, OUT, the prompts, both models' configs and their tokenizers are checked
   (one-line UsageErrors, nothing written, no weights loaded) and TRL's DistillationConfig is built.
   The prompt is rl's (the student's chat template or r1distill's think-keeping one, or R1-Zero's text),
   or the teacher's template with the teacher's tokenizer (--template teacher), which the student keeps.
2. `build_trainer`: the student (fp32 weights, bf16 autocast on GPUs that have it, stopping at its
   template's end-of-turn token) and the frozen teacher are loaded, both output heads cut to the same
   number of rows when only their padding differs (Qwen2.5-7B pads to 152,064, 1.5B to 151,936).
3. `train`: metrics.jsonl (the divergence as `loss`, the student's entropy, completion lengths, the
   clipped share, tokens/s) and a bar; --resume continues from the last checkpoint.
4. `save`: weights (or LoRA adapters, or merged), tokenizer, template, generation config and a model
   card, as sft and rl save (training/).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from r1distill import hub
from r1distill.console import metric_change, metric_text, summary_table
from r1distill.errors import UsageError, first_line
from r1distill.onpolicy.config import RESUMABLE, DistillConfig, tokenizer_problem
from r1distill.training import model as student
from r1distill.training import output, ranks
from r1distill.training.callbacks import MetricsLog, TrainProgress
from r1distill.training.card import divergence_name, model_card, template_section
from r1distill.training.heldout import HeldOut, held_out_callbacks, load_held_out
from r1distill.training.prompts import PromptStats, load_prompt_set, rendered_prompt, trainer_rows
from r1distill.training.recipe import trainer_arguments
from r1distill.training.template import Template, install, rl_template, turn_end_token

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything a run needs besides the weights, built and checked before they load."""

    cfg: DistillConfig
    student_path: str
    teacher_path: str
    tokenizer: object
    template: Template | None
    """The chat template (None with --template r1-zero)."""
    added_tokens: list[str]
    end_of_turn: str | None
    rows: list[dict]
    stats: PromptStats
    args: object
    """TRL's DistillationConfig."""
    checkpoint: str | None
    started: datetime
    held_out: HeldOut | None
    """--eval-prompts, rendered as the student is prompted."""


@dataclass
class DistillSummary:
    """The outcome of one run."""

    output: str
    steps: int
    stats: PromptStats
    first: dict
    """The first logged training metrics."""
    last: dict
    """The last logged training metrics."""


def distill(cfg: DistillConfig) -> DistillSummary:
    """Run the distill stage (see the module docstring); the CLI and the Python API both call this."""
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    train(trainer, plan)
    return save(trainer, plan)


def plan_run(cfg: DistillConfig) -> Plan:
    """Step 1: check everything; raises UsageError before any weight loads."""
    from transformers import AutoTokenizer

    started = datetime.now(timezone.utc)
    cfg.check()
    checkpoint = output.check_output(cfg, "distill", RESUMABLE)
    if cfg.push_to_hub:
        hub.check_repo(cfg.push_to_hub, "--push-to-hub")
    student_path = student.model_path(cfg.model)
    try:
        teacher_path = student.model_path(cfg.teacher)
    except UsageError as err:
        raise UsageError(str(err).replace("--model", "--teacher", 1)) from err
    # Both configs and tokenizers are on this machine now: what check() could not read offline is checked here.
    problems = [problem for problem in cfg.context_problems() if problem]
    if not cfg.cross_tokenizer and (problem := tokenizer_problem(student_path, teacher_path, cfg.template, local_only=False)):
        problems.append(problem.replace(student_path, cfg.model).replace(teacher_path, cfg.teacher))
    if problems:
        raise UsageError("; ".join(problems))
    (rows, stats), _ = ranks.once(lambda: _prompts(cfg), timeout=int(cfg.trl.get("ddp_timeout", ranks.DDP_TIMEOUT)))
    student.check_lora_targets(cfg, student_path)
    # --template teacher: the student takes the teacher's tokenizer (the same regular vocabulary, checked above).
    tokenizer = AutoTokenizer.from_pretrained(teacher_path if cfg.template == "teacher" else student_path)
    tokenizer.padding_side = "left"  # the trainer generates from left-padded prompts
    template, added, end_of_turn = None, [], None
    if cfg.template == "teacher":
        if not tokenizer.chat_template:
            raise UsageError(f"--template teacher: {cfg.teacher} has no chat template; use --template chat or r1-zero")
        # Only its generation prompt is rendered: whether it keeps the thinking of earlier turns does not matter here.
        template = Template(tokenizer.chat_template, "teacher", "the teacher's own template, with its tokenizer: the teacher is prompted as it was trained")
    elif cfg.template == "chat":
        template = rl_template(tokenizer)
    if template is not None:
        added = install(tokenizer, template)
        if added:
            # The teacher reads the same token ids: tokens new to the vocabulary would be random rows to it.
            raise UsageError(
                f"--student {cfg.model}: the {template.name} chat template ({template.reason}) adds the tokens "
                f"{', '.join(added)}, which the teacher has never seen; use --template teacher, a student whose chat template keeps <think> in assistant turns, or --template r1-zero"
            )
        end_of_turn = turn_end_token(tokenizer, template.text)
    args = _gold_config(cfg, teacher_path) if cfg.cross_tokenizer else _distillation_config(cfg)
    if cfg.cross_tokenizer:
        # GOLD reads chat rows (its collator renders the prompt, all but the last turn); with lmbda 1 the
        # empty assistant turn is never trained, every completion is the student's own.
        rows = [{"messages": [*row["prompt"], {"role": "assistant", "content": ""}]} for row in rows]
    held_out = None
    if cfg.eval_prompts is not None:
        held_out = load_held_out(cfg.eval_prompts, lambda problem: rendered_prompt(tokenizer, problem, _prompt_style(cfg), cfg.system))
    return Plan(cfg, student_path, teacher_path, tokenizer, template, added, end_of_turn, rows, stats, args, checkpoint, started, held_out)


def _prompts(cfg: DistillConfig) -> tuple[list[dict], PromptStats]:
    """The trainer's rows and how the input became them (read by one process of a launch, ranks.py)."""
    rows, stats = load_prompt_set(cfg.input, cfg.split, [], None, None)
    log.info(stats.line())
    return trainer_rows(rows, _prompt_style(cfg), cfg.system), stats


def _prompt_style(cfg: DistillConfig) -> str:
    """How generate's prompt builder writes the problem: chat messages (either chat template) or the R1-Zero text."""
    return "r1-zero" if cfg.template == "r1-zero" else "chat"


def _distillation_config(cfg: DistillConfig):
    """TRL's DistillationConfig for these settings and the recipe's other fields; its checks become UsageErrors.

    Built before the weights load: under ZeRO-3 from_pretrained then loads them sharded.
    """
    from trl import DistillationConfig

    try:
        return DistillationConfig(
            **trainer_arguments(cfg),
            beta=cfg.beta,
            temperature=cfg.temperature,
            max_completion_length=cfg.max_completion_length,
            use_vllm=cfg.use_vllm,
            vllm_mode=cfg.vllm_mode,
            vllm_server_base_url=cfg.vllm_server_url,
            **cfg.trl,
        )
    except (TypeError, ValueError) as err:
        raise UsageError(f"distillation settings: {first_line(err)}") from err


def _gold_config(cfg: DistillConfig, teacher_path: str):
    """TRL's GOLDConfig (--cross-tokenizer): fully on-policy (lmbda 1), the ULD loss over the teacher's own
    tokenizer, the same sampling as DistillationConfig's (top_p 1, where GOLD's default is 0.95)."""
    from trl.experimental.gold import GOLDConfig

    try:
        return GOLDConfig(
            **trainer_arguments(cfg),
            lmbda=1.0,
            beta=cfg.beta,
            temperature=cfg.temperature,
            max_completion_length=cfg.max_completion_length,
            max_length=None,  # the prompts and completions were measured against both models' positions
            use_uld_loss=True,
            teacher_tokenizer_name_or_path=teacher_path,
            use_vllm=cfg.use_vllm,
            vllm_mode=cfg.vllm_mode,
            vllm_server_base_url=cfg.vllm_server_url,
            **{"top_p": 1.0, **cfg.trl},
        )
    except (TypeError, ValueError) as err:
        raise UsageError(f"GOLD settings (--cross-tokenizer): {first_line(err)}") from err


def load_teacher(path: str, rows: int | None):
    """The frozen teacher in eval mode: bf16 on GPUs that have it (no optimizer keeps fp32 copies of it),
    else fp32, with its output head cut or grown to `rows` (the student's; None: its own, for GOLD).

    The rows that differ are padding (ids past both tokenizers' tokens, checked in `plan_run`): cut, the
    teacher's distribution is renormalised over the same ids as the student's; grown, the new rows are
    zero (logit 0, negligible beside a trained model's), never random ones the student would chase."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    teacher.requires_grad_(False)
    teacher.eval()
    before = teacher.get_input_embeddings().num_embeddings
    if rows is not None and before != rows:
        log.info("teacher: output head resized from %d to %d rows, the student's (rows past the tokenizer's tokens are padding)", before, rows)
        teacher.resize_token_embeddings(rows, mean_resizing=False)
        with torch.no_grad():
            for layer in (teacher.get_input_embeddings(), teacher.get_output_embeddings()):
                layer.weight[before:] = 0
    return teacher


def build_trainer(plan: Plan):
    """Step 2: load the student and the teacher and build TRL's DistillationTrainer (GOLD's with --cross-tokenizer)."""
    import datasets

    cfg, tokenizer = plan.cfg, plan.tokenizer
    model = student.load(plan.student_path, tokenizer, plan.end_of_turn)
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise UsageError(f"--student {cfg.model}: its embeddings have {rows:,} rows for {len(tokenizer):,} tokens")
    teacher = load_teacher(plan.teacher_path, None if cfg.cross_tokenizer else rows)
    if cfg.cross_tokenizer:
        from trl.experimental.gold import GOLDTrainer as Trainer
    else:
        from trl import DistillationTrainer as Trainer
    return Trainer(
        model=model,
        teacher_model=teacher,
        args=plan.args,
        train_dataset=datasets.Dataset.from_list(plan.rows),
        processing_class=tokenizer,
        peft_config=student.lora_config(cfg, tokenizer, plan.added_tokens),
        callbacks=[MetricsLog(cfg.output), TrainProgress("loss"),
                   *held_out_callbacks(cfg, plan.held_out, tokenizer, mode=cfg.accuracy, layout="r1-zero" if cfg.template == "r1-zero" else "r1")],
    )


def train(trainer, plan: Plan) -> None:
    """Step 3: train (from the last checkpoint with --resume), recording the run in OUT first."""
    output.train(trainer, Path(plan.cfg.output), plan.checkpoint, _record(plan, finished=None))


def _record(plan: Plan, finished: dict | None) -> dict:
    return output.run_record(plan.cfg, plan.started, plan.template.name if plan.template else "r1-zero", finished)


def save(trainer, plan: Plan) -> DistillSummary:
    """Step 4: the student, tokenizer, template, generation config and model card in OUT."""
    cfg, out = plan.cfg, Path(plan.cfg.output)
    student.save(trainer, cfg)
    logged = [h for h in trainer.state.log_history if "loss" in h and "learning_rate" in h]
    summary = DistillSummary(str(out), trainer.state.global_step, plan.stats, logged[0] if logged else {}, logged[-1] if logged else {})
    if not trainer.is_world_process_zero():
        return summary
    output.finish(out, cfg, _card(plan, summary), _record(plan, output.finished(summary.steps, loss=summary.last.get("loss"))))
    return summary


def _card(plan: Plan, summary: DistillSummary) -> str:
    cfg = plan.cfg
    trainer = ("TRL's experimental GOLD trainer, across tokenizers: the ULD loss over text-aligned spans" if cfg.cross_tokenizer
               else "TRL's DistillationTrainer")
    if plan.template is None:
        prompting = "## Prompt\n\nTrained on the R1-Zero prompt as raw text (no chat template); prompt it the same way.\n"
    else:
        prompting = template_section(plan.template.name, plan.template.reason, plan.end_of_turn or plan.tokenizer.eos_token)
    sections = f"""## Training

On-policy distillation from `{cfg.teacher}` ({trainer}) on {plan.stats.line()}: the student
wrote one completion of at most {cfg.max_completion_length} tokens per prompt at temperature {cfg.temperature:g}, and
the loss was the {divergence_name(cfg.beta)} between its next-token distributions and the teacher's at every
completion token. `metrics.jsonl` holds the curves.

{prompting}"""
    loss = summary.last.get("loss")
    outcome = f"{summary.steps:,} steps, final divergence {loss:.4f}" if loss is not None else f"{summary.steps:,} steps"
    return model_card(cfg, "distill", plan.started, outcome, sections)


def print_summary(summary: DistillSummary) -> None:
    if not ranks.is_main_process():
        return  # every rank of a launch has the same summary: one table is enough

    first, last = summary.first, summary.last
    summary_table(f"distill → {summary.output}", [
        ("prompts", f"{summary.stats.kept:,}"),
        ("steps", f"{summary.steps:,}"),
        ("divergence to the teacher (first → last)", metric_change(first, last, "loss", 4)),
        ("student entropy (first → last)", metric_change(first, last, "entropy")),
        ("completion length (first → last)", metric_change(first, last, "completions/mean_length", 1)),
        ("clipped share (last)", metric_text(last, "completions/clipped_ratio")),
    ])
