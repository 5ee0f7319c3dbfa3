"""r1distill rl: GRPO on the shared rule rewards with TRL's GRPOTrainer (R1-Zero from a base model, R1's
later RL stages on a student).

    r1distill rl runs/countdown.jsonl -o runs/zero --model smollm2-135m --template r1-zero \\
        --reward countdown --reward format --max-steps 4 --num-generations 4 --batch-size 4 --max-completion-length 64   # CPU
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m r1distill.cli rl runs/math -o runs/zero-7b \\
        --config recipes/rl/r1-zero-math-qwen2.5-math-7b.yaml                                                           # 8 GPUs

DeepSeek-R1-Zero learned to reason from GRPO (group-relative advantages over several samples per
prompt, a clipped ratio, a KL penalty), a minimal prompt and two rule rewards; R1 repeats it on the
SFT'd model with a language-consistency reward and ends with rules mixed with a preference model.
Here the rewards are the exact objects `r1distill filter` judges with, so what was filtered for is
what is optimised; the trainer is TRL's and this module only prepares what goes into it:

1. `plan_run`: every option, OUT, the rewards, the prompts and the model's config are checked, and
   TRL's GRPOConfig is built (one-line UsageErrors, nothing written, no weights loaded). The prompt is
   the R1-Zero text (raw, no template) or the model's chat template (r1distill's think-keeping one when
   the model's strips the reasoning); a template that closes the think block in its generation prompt
   is refused while the format reward is on, since no completion could pass it. Under `accelerate
   launch` one process reads the prompts, the others read its result (training/ranks.py).
2. `build_trainer`: the policy is loaded (fp32, bf16 autocast on GPUs that have it) and stops at its
   template's end-of-turn token; each rule is wrapped to score only the policy's completion
   (rewards.py); an optional sequence-classification reward model joins them. Meanwhile the
   accuracy rule's verifier workers parse the prompts' gold answers (`golds_parsed_meanwhile`).
3. `train`: metrics.jsonl (per-reward means and stds, reward, completion lengths and clipped share,
   KL, clip ratios, learning rate, sample completions) and a bar with the reward; --resume continues.
4. `save`: weights (or LoRA adapters, or merged), tokenizer, template, generation config and a model
   card, the same way `sft` saves (training/).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from r1distill import hub, rewards
from r1distill.console import metric_change, metric_text, summary_table
from r1distill.errors import UsageError, first_line
from r1distill.prompts import R1_ZERO
from r1distill.rl.config import RESUMABLE, RLConfig
from r1distill.training.prompts import PromptStats, load_prompt_set, rendered_prompt, trainer_rows
from r1distill.rewards.judge import Judge, JudgedAccuracy
from r1distill.rl.rewards import POLICY_COLUMNS, PolicyReward, Rollouts
from r1distill.schema import ANSWER, THINK_CLOSE, THINK_OPEN
from r1distill.training import model as policy
from r1distill.training import output, ranks
from r1distill.training.callbacks import MetricsLog, TrainProgress
from r1distill.training.heldout import HeldOut, held_out_callbacks, load_held_out
from r1distill.training.recipe import trainer_arguments
from r1distill.training.card import model_card, template_section
from r1distill.training.template import Template, generation_prompt_tail, install, rl_template, turn_end_token

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything a run needs besides the weights, built and checked before they load."""

    cfg: RLConfig
    model_path: str
    tokenizer: object
    template: Template | None
    """The chat template (None with --template r1-zero)."""
    added_tokens: list[str]
    end_of_turn: str | None
    prefilled_think: bool
    """The chat template's generation prompt ends in <think>, which completions then lack."""
    rules: list
    """The shared rule objects, in the order of --reward."""
    weights: list[float]
    """One per rule, then --reward-model-weight with a reward model."""
    rows: list[dict]
    stats: PromptStats
    args: object
    """TRL's GRPOConfig."""
    checkpoint: str | None
    started: datetime
    held_out: HeldOut | None
    """--eval-prompts, rendered as the policy is prompted."""


@dataclass
class RLSummary:
    """The outcome of one run."""

    output: str
    steps: int
    stats: PromptStats
    first: dict
    """The first logged training metrics."""
    last: dict
    """The last logged training metrics."""
    timeouts: int
    """Answers whose verification timed out (accuracy reward None)."""


def rl(cfg: RLConfig) -> RLSummary:
    """Run the rl stage (see the module docstring); the CLI and the Python API both call this."""
    plan = plan_run(cfg)
    with ExitStack() as stack:
        for rule in plan.rules:
            stack.enter_context(rule)  # the accuracy rule's verifier workers stop with the run
        with golds_parsed_meanwhile(plan):
            trainer = build_trainer(plan)
        train(trainer, plan)
        return save(trainer, plan)


@contextmanager
def golds_parsed_meanwhile(plan: Plan) -> Iterator[None]:
    """Parse the prompts' gold answers in the accuracy rule's workers while the block runs (the policy
    loads: the workers would sit idle), so a training step only reads the policy's answers.

    Parsing stops when the block ends, finished or not (a gold left over is parsed in the step that
    needs it, as without this), so the run never waits for it beyond the golds in hand; a verifier
    that cannot work raises here, after the block.
    """
    accuracy = next((rule for rule in plan.rules if isinstance(rule, rewards.Accuracy)), None)
    if accuracy is None:
        yield
        return
    stop, failed = threading.Event(), []
    started = time.monotonic()

    def parse() -> None:
        try:
            parsed = accuracy.prepare([row.get(ANSWER) for row in plan.rows], stop=stop)
            rest = "; the others are parsed in the steps that need them" if stop.is_set() else ""
            if parsed:  # plain numbers are never parsed ahead: a numeric dataset says nothing
                log.info("parsed %d gold answers while the policy loaded (%.1f s)%s", parsed, time.monotonic() - started, rest)
        except Exception as err:  # a thread's exception would only be printed: the caller raises it
            failed.append(err)

    thread = threading.Thread(target=parse, name="r1distill-parse-golds", daemon=True)
    try:
        thread.start()
        yield
    finally:
        stop.set()
        # The pool is closed after this block, so the thread must be out of it first, even when
        # Ctrl-C comes again while it finishes the golds in hand (two per worker at most).
        while thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt:
                continue
    if failed:
        raise failed[0]


def _rules(cfg: RLConfig) -> tuple[list, list[float]]:
    options = {
        "accuracy": {"mode": cfg.accuracy, "timeout": cfg.timeout},
        "format": {"lenient": cfg.lenient_format, "layout": "r1-zero" if cfg.template == "r1-zero" else "r1"},
        "language": {"language": cfg.language},
        "length": {"max_tokens": cfg.length_max_tokens},
        "code": cfg.code_options(),
    }
    rules, weights = [], []
    for name, weight in cfg.reward_weights():
        if name == "judge":  # a server judge, one step's requests bounded by --judge-deadline; policies' completions never repeat: no cache
            judge = Judge(cfg, None, deadline=cfg.judge_deadline)
            judge.open()  # one preflight request now: a wrong URL, model or key is one line before any weight loads
            rules.append(JudgedAccuracy(rewards.rule("accuracy", **options["accuracy"]), judge))
            weights.append(weight)
            continue
        try:
            rules.append(rewards.rule(name, **options.get(name, {})))
        except ValueError as err:
            raise UsageError(f"--reward {name}: {err}") from err
        weights.append(weight)
    return rules, weights


def plan_run(cfg: RLConfig) -> Plan:
    """Step 1: check everything; raises UsageError before any weight loads."""
    from transformers import AutoTokenizer

    started = datetime.now(timezone.utc)
    cfg.check()
    rules, weights = _rules(cfg)
    checkpoint = output.check_output(cfg, "rl", RESUMABLE)
    if cfg.push_to_hub:
        hub.check_repo(cfg.push_to_hub, "--push-to-hub")
    if cfg.reward_model is not None:
        _check_reward_model(cfg.reward_model)
        weights.append(cfg.reward_model_weight)
    model_path = policy.model_path(cfg.model)
    # Its config is fetched now: a Hub policy that check() could not read offline is measured here, before the data.
    if problem := cfg.context_problem():
        raise UsageError(problem)
    needed = list(dict.fromkeys(c for rule in rules for c in rule.columns if c not in POLICY_COLUMNS))
    (rows, stats), _ = ranks.once(lambda: _prompts(cfg, needed), timeout=int(cfg.trl.get("ddp_timeout", ranks.DDP_TIMEOUT)))
    policy.check_lora_targets(cfg, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"  # GRPOTrainer generates from left-padded prompts
    template, added, end_of_turn, prefilled = None, [], None, False
    if cfg.template == "chat":
        template = rl_template(tokenizer)
        added = install(tokenizer, template)
        tail = generation_prompt_tail(tokenizer, template.text)
        if THINK_CLOSE in tail and any(rule.name == "format" for rule in rules):
            raise UsageError(
                f"--template chat: the model's generation prompt closes the think block ({tail.strip()!r}), so no completion "
                "can pass the format reward; drop --reward format, or use a model or --template that lets it think"
            )
        prefilled = tail.rstrip().endswith(THINK_OPEN)
        end_of_turn = turn_end_token(tokenizer, template.text)
    args = _grpo_config(cfg, weights)
    held_out = None
    if cfg.eval_prompts is not None:
        held_out = load_held_out(cfg.eval_prompts, lambda problem: rendered_prompt(tokenizer, problem, cfg.template, cfg.system))
    return Plan(cfg, model_path, tokenizer, template, added, end_of_turn, prefilled, rules, weights, rows, stats, args, checkpoint, started, held_out)


def _prompts(cfg: RLConfig, needed: list[str]) -> tuple[list[dict], PromptStats]:
    """The trainer's rows and how the input became them (read by one process of a launch, ranks.py)."""
    rows, stats = load_prompt_set(cfg.input, cfg.split, needed, cfg.min_pass_rate, cfg.max_pass_rate)
    log.info(stats.line())
    return trainer_rows(rows, cfg.template, cfg.system), stats


def _check_reward_model(path: str) -> None:
    """A reward model must be a sequence-classification model (TRL reads its single logit as the reward)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(policy.model_path(path))
    except UsageError as err:
        raise UsageError(str(err).replace("--model", "--reward-model", 1)) from err
    if not any(name.endswith("ForSequenceClassification") for name in config.architectures or []):
        raise UsageError(f"--reward-model {path}: is a {', '.join(config.architectures or ['model'])}, not a sequence-classification reward model")


def _grpo_config(cfg: RLConfig, weights: list[float]):
    """TRL's GRPOConfig for these settings and the recipe's other GRPOConfig fields; its checks become UsageErrors.

    Built before the weights load: under ZeRO-3 from_pretrained then loads them sharded.
    """
    from trl import GRPOConfig

    try:
        return GRPOConfig(
            **trainer_arguments(cfg),
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            beta=cfg.beta,
            epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high,
            loss_type=cfg.loss_type,
            scale_rewards=cfg.scale_rewards,
            mask_truncated_completions=cfg.mask_truncated_completions,
            reward_weights=weights,
            use_vllm=cfg.use_vllm,
            vllm_mode=cfg.vllm_mode,
            vllm_server_base_url=cfg.vllm_server_url,
            **cfg.trl,
        )
    except (TypeError, ValueError) as err:
        raise UsageError(f"GRPO settings: {first_line(err)}") from err


def build_trainer(plan: Plan):
    """Step 2: load the policy and build TRL's GRPOTrainer with the wrapped rewards."""
    import datasets
    from trl import GRPOTrainer

    cfg, tokenizer = plan.cfg, plan.tokenizer
    model = policy.load(plan.model_path, tokenizer, plan.end_of_turn)
    # What TRL stops generation at: the model's stop tokens and the tokenizer's EOS.
    eos = model.generation_config.eos_token_id
    stop_ids = {tokenizer.eos_token_id, *([] if eos is None else [eos] if isinstance(eos, int) else eos)}
    rollouts = Rollouts(lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]],
                        "r1" if plan.template else "r1-zero")
    reward_funcs = [PolicyReward(rule, stop_ids, plan.prefilled_think, rollouts, first=i == 0) for i, rule in enumerate(plan.rules)]
    if cfg.reward_model is not None:
        reward_funcs.append(policy.model_path(cfg.reward_model))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=plan.args,
        train_dataset=datasets.Dataset.from_list(plan.rows),
        processing_class=tokenizer,
        peft_config=policy.lora_config(cfg, tokenizer, plan.added_tokens),
        callbacks=[MetricsLog(cfg.output, extra=lambda: {"samples": rollouts.samples(cfg.log_samples)}), TrainProgress("reward"),
                   *held_out_callbacks(cfg, plan.held_out, tokenizer, mode=cfg.accuracy, layout="r1-zero" if cfg.template == "r1-zero" else "r1")],
    )
    return trainer


def train(trainer, plan: Plan) -> None:
    """Step 3: train (from the last checkpoint with --resume), recording the run in OUT first."""
    output.train(trainer, Path(plan.cfg.output), plan.checkpoint, _record(plan, finished=None))


def _record(plan: Plan, finished: dict | None) -> dict:
    return output.run_record(plan.cfg, plan.started, plan.template.name if plan.template else "r1-zero", finished)


def save(trainer, plan: Plan) -> RLSummary:
    """Step 4: the policy, tokenizer, template, generation config and model card in OUT."""
    cfg, out = plan.cfg, Path(plan.cfg.output)
    policy.save(trainer, cfg)
    logged = [h for h in trainer.state.log_history if "reward" in h]
    timeouts = sum(rule.timeouts for rule in plan.rules if isinstance(rule, (rewards.Accuracy, JudgedAccuracy)))
    summary = RLSummary(str(out), trainer.state.global_step, plan.stats, logged[0] if logged else {}, logged[-1] if logged else {}, timeouts)
    if not trainer.is_world_process_zero():
        return summary
    output.finish(out, cfg, _card(plan, summary), _record(plan, output.finished(summary.steps, reward=summary.last.get("reward"))))
    return summary


def _card(plan: Plan, summary: RLSummary) -> str:
    cfg = plan.cfg
    names = [rule.__name__ for rule in plan.rules] + ([f"reward model `{cfg.reward_model}`"] if cfg.reward_model else [])
    mix = ", ".join(f"{name} x {weight:g}" for name, weight in zip(names, plan.weights))
    reward = summary.last.get("reward")
    if plan.template is None:
        prompting = f"""## Prompt

Trained on the R1-Zero prompt as raw text (no chat template); prompt it the same way, with the question
in place of `{{prompt}}`, and read the answer from the `<answer>` block:

```
{R1_ZERO}
```
"""
    else:
        prompting = template_section(plan.template.name, plan.template.reason, plan.end_of_turn or plan.tokenizer.eos_token)
    sections = f"""## Training

GRPO (TRL's GRPOTrainer) on {plan.stats.line()}. Rewards: {mix}. {cfg.num_generations} completions per prompt
of at most {cfg.max_completion_length} tokens at temperature {cfg.temperature:g}; loss `{cfg.loss_type}`, KL beta {cfg.beta:g},
clipping {cfg.epsilon:g}/{cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon:g}, reward scaling `{cfg.scale_rewards}`,
truncated completions {"masked" if cfg.mask_truncated_completions else "kept"} in the loss. `metrics.jsonl` holds the curves.

{prompting}"""
    outcome = f"{summary.steps:,} GRPO steps, final mean reward {reward:.3f}" if reward is not None else f"{summary.steps:,} GRPO steps"
    return model_card(cfg, "rl", plan.started, outcome, sections)


def print_summary(summary: RLSummary) -> None:
    if not ranks.is_main_process():
        return  # every rank of a launch has the same summary: one table is enough
    first, last = summary.first, summary.last
    rows = [
        ("prompts", f"{summary.stats.kept:,}"),
        ("steps", f"{summary.steps:,}"),
        ("reward (first → last)", metric_change(first, last, "reward")),
        *((key.removeprefix("rewards/").removesuffix("/mean"), metric_change(first, last, key))
          for key in last if key.startswith("rewards/") and key.endswith("/mean")),
        ("completion length (first → last)", metric_change(first, last, "completions/mean_length", 1)),
        ("clipped share (last)", metric_text(last, "completions/clipped_ratio")),
        ("KL (last)", metric_text(last, "kl", 4)),
        ("verification timeouts", f"{summary.timeouts:,}"),
    ]
    summary_table(f"rl → {summary.output}", rows)
