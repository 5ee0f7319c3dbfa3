"""r1distill sft: fine-tune a student on distilled traces with TRL's SFTTrainer.

    r1distill sft runs/sft -o runs/student --model smollm2-135m --max-steps 20 --max-length 1024    # CPU
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m r1distill.cli sft runs/sft -o runs/qwen-7b \\
        --config recipes/sft/qwen2.5-math-7b.yaml                                                   # 8 GPUs

The distilled R1 students are plain SFT; what breaks reproductions is plumbing, so this stage makes
the right thing the default and checks it before any GPU time is spent:

1. `plan`: every option, OUT, the data and the model's config are checked (one-line UsageErrors, nothing
   written, no weights loaded); the chat template is chosen (template.py) and train/serve parity is
   proved on the data; rows are tokenized once with assistant masks and those longer than
   --max-length are dropped and counted; one line states what will be trained.
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

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from r1distill import hub, models
from r1distill.console import summary_table
from r1distill.distill.callbacks import METRICS_FILE, MetricsLog, TrainProgress
from r1distill.distill.card import model_card
from r1distill.distill.config import RESUMABLE, SFTConfig
from r1distill.distill.data import DataStats, load_conversations, tokenize
from r1distill.distill.template import Template, choose_template, end_of_turn_token, missing_tokens, parity
from r1distill.errors import UsageError, first_line

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


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
    checkpoint = _check_output(cfg)
    if cfg.push_to_hub:
        hub.check_repo(cfg.push_to_hub, "--push-to-hub")
    conversations, kinds = load_conversations(cfg.input, cfg.split)
    model_path = _model_path(cfg.model, cfg.max_length)
    _check_lora_targets(cfg, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    template = choose_template(tokenizer, cfg.template, conversations, kinds)
    added = missing_tokens(tokenizer, template)
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
        log.info("added the special tokens %s to the tokenizer (the embeddings grow to match)", ", ".join(added))
    tokenizer.chat_template = template.text
    log.info("chat template: %s (%s)", template.name, template.reason)
    try:
        statement = parity(tokenizer, template.text, conversations, kinds)
    except ValueError as err:
        raise UsageError(f"the {template.name} template fails the train/serve parity check: {err}") from err
    log.info(statement)
    train_rows, eval_rows, stats = tokenize(conversations, kinds, tokenizer, template.text, cfg.max_length, cfg.truncate, cfg.eval_fraction, cfg.seed)
    log.info(stats.line(cfg.max_length))
    return Plan(cfg, model_path, tokenizer, template, added, end_of_turn_token(tokenizer, template.text), statement, train_rows, eval_rows, stats, checkpoint, started)


def _settings(cfg: SFTConfig) -> dict:
    """The settings that define a run in OUT, with paths made absolute so a rerun from elsewhere matches."""
    settings = asdict(cfg)
    for name in ("input", "model"):
        if Path(settings[name]).exists():
            settings[name] = str(Path(settings[name]).resolve())
    return settings


def _check_output(cfg: SFTConfig) -> str | None:
    """None for a fresh OUT, the last checkpoint for --resume; UsageError for an OUT that holds another run."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: is a file; choose a folder")
    if not out.exists() or not any(out.iterdir()):
        if cfg.resume:
            raise UsageError(f"--resume: {out} holds no run to resume; drop --resume to start one")
        return None
    if not (out / RUN_FILE).exists():
        raise UsageError(f"-o {out}: exists, is not empty and holds no r1distill sft run; choose a new folder")
    recorded = json.loads((out / RUN_FILE).read_text())["settings"]
    current = _settings(cfg)
    # The student and the data first: they are what a user recognises a run by.
    differ = sorted((n for n in current if n not in RESUMABLE and recorded.get(n) != current[n]), key=lambda n: ("model", "input", n).index(n))
    if differ:
        name = differ[0]
        raise UsageError(
            f"-o {out}: holds a different run ({name} {recorded.get(name)!r} there, {current[name]!r} now"
            f"{f', and {len(differ) - 1} more settings' if len(differ) > 1 else ''}); choose a new folder, or give that run's settings"
        )
    if not cfg.resume:
        raise UsageError(f"-o {out}: holds a run with these settings; pass --resume to continue it from its last checkpoint, or choose a new folder")
    checkpoint = _last_complete_checkpoint(out)
    if checkpoint is None:
        raise UsageError(f"--resume: {out} holds no complete checkpoint-* folder (the run died before --save-steps); start a new folder")
    return str(checkpoint)


def _last_complete_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint-N with its trainer_state.json, which the trainer writes last: a process
    killed while saving leaves a newer folder without it, which would fail to load."""
    checkpoints = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for checkpoint in checkpoints:
        if (checkpoint / "trainer_state.json").exists():
            return checkpoint
        log.warning("%s is incomplete (the run was killed while saving it): resuming from an older checkpoint", checkpoint)
    return None


def _model_path(model: str, max_length: int) -> str:
    """The folder or Hub id to load, after checking that its config can be read (no weights are loaded)."""
    from transformers import AutoConfig

    path = models.resolve(model)
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") != 1
    if looks_local and not (Path(path).expanduser() / "config.json").exists():
        raise UsageError(f"--model {model}: no such model folder (no config.json); give a local model folder, a Hub id like 'Qwen/Qwen2.5-Math-1.5B', or smollm2-135m")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:  # OSError, ValueError, HF hub errors: all mean the same to the user
        raise UsageError(f"--model {model}: cannot be loaded ({first_line(err)})") from err
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    if positions and max_length > positions:
        log.warning("--max-length %d is beyond %s's %d positions: the longer samples train it past its pretraining context", max_length, model, positions)
    return str(Path(path).expanduser()) if looks_local else path


def _check_lora_targets(cfg: SFTConfig, model_path: str) -> None:
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


def build_trainer(plan: Plan):
    """Step 2: load the student and build TRL's SFTTrainer on the tokenized rows."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    cfg, tokenizer = plan.cfg, plan.tokenizer
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    evaluating = plan.eval is not None
    # Built before the weights load: under ZeRO-3 from_pretrained then loads them sharded.
    args = TRLConfig(
        output_dir=cfg.output,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        lr_scheduler_kwargs={"min_lr_rate": 0.1} if cfg.lr_scheduler == "cosine_with_min_lr" else None,
        warmup_steps=cfg.warmup_ratio,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        activation_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=cfg.eval_steps or cfg.save_steps,
        seed=cfg.seed,
        report_to=cfg.report_to or "none",
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        use_liger_kernel=cfg.use_liger_kernel,
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    model = AutoModelForCausalLM.from_pretrained(plan.model_path, dtype=torch.float32, attn_implementation=cfg.attn_implementation)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    # The student stops at the template's end-of-turn token, whatever else the base model stopped at.
    end = tokenizer.convert_tokens_to_ids(plan.end_of_turn)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    model.generation_config.eos_token_id = eos + [end] if end not in eos else eos
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=plan.train,
        eval_dataset=plan.eval,
        processing_class=tokenizer,
        peft_config=_lora(plan, model),
        callbacks=[MetricsLog(cfg.output), TrainProgress()],
    )
    # transformers' own bar and log printer would print to stdout; TrainProgress replaces both.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _lora(plan: Plan, model):
    if plan.cfg.lora_r is None:
        return None
    from peft import LoraConfig

    cfg = plan.cfg
    # Tokens the template added have fresh embeddings: they must train even though the base is frozen.
    added = {"embed_tokens": plan.tokenizer.convert_tokens_to_ids(plan.added_tokens)} if plan.added_tokens else None
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules or "all-linear",
        trainable_token_indices=added,
        task_type="CAUSAL_LM",
    )


def train(trainer, plan: Plan) -> None:
    """Step 3: train (from the last checkpoint with --resume), recording the run in OUT first."""
    out = Path(plan.cfg.output)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        _write_run(out, plan, finished=None)
    if plan.checkpoint:
        log.info("resuming from %s", plan.checkpoint)
        if trainer.is_world_process_zero():
            _trim_metrics(out, int(plan.checkpoint.rsplit("-", 1)[-1]))
    trainer.train(resume_from_checkpoint=plan.checkpoint)


def _trim_metrics(out: Path, step: int) -> None:
    """Drop the metrics of steps after the checkpoint (the resumed run does them again, so each step is
    logged once) and a last line a kill cut short."""
    metrics = out / METRICS_FILE
    if not metrics.exists():
        return
    kept = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    metrics.write_text("".join(kept), encoding="utf-8")


def _write_run(out: Path, plan: Plan, finished: dict | None) -> None:
    record = {"settings": _settings(plan.cfg), "started": plan.started.isoformat(), "template": plan.template.name, "finished": finished}
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def save(trainer, plan: Plan) -> SFTSummary:
    """Step 4: the student, tokenizer, template, generation config and model card in OUT."""
    cfg, out = plan.cfg, Path(plan.cfg.output)
    # save_model gathers sharded weights (ZeRO-3, FSDP) and writes the tokenizer with the chosen template.
    trainer.save_model(str(out))
    history = trainer.state.log_history
    train_loss = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    eval_loss = next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None)
    summary = SFTSummary(str(out), trainer.state.global_step, train_loss, eval_loss, plan.stats, plan.template.name)
    if not trainer.is_world_process_zero():
        return summary
    model = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.lora_r is not None:
        # An adapter folder holds no generation config; the base model's (with the end-of-turn token) is written beside it.
        model.get_base_model().generation_config.save_pretrained(out)
        if cfg.merge_lora:
            _merge(out)
    (out / "README.md").write_text(model_card(plan, summary))
    _write_run(out, plan, finished={"at": datetime.now(timezone.utc).isoformat(), "steps": summary.steps, "train_loss": train_loss, "eval_loss": eval_loss})
    if cfg.push_to_hub:
        hub.push_model(out, cfg.push_to_hub)
    return summary


def _merge(out: Path) -> None:
    """Replace the adapter files in OUT by full weights with the adapters merged in (read back from disk,
    so it works the same whatever sharding trained them)."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(out)).merge_and_unload()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink(missing_ok=True)
    merged.save_pretrained(str(out))


def print_summary(summary: SFTSummary) -> None:
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
