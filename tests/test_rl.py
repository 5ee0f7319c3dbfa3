"""The rl stage on CPU with a 2-layer random Llama and the real SmolLM2 tokenizer: GRPO end to end through
the CLI with the real rewards (accuracy through the verifier workers, format, language) and a reward model,
the rewards inside RL against filter's verdicts, the r1-zero path with resume, recipes and every
configuration error.

    PYTHONPATH=.. python -m pytest -q tests/test_rl.py
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, run_cli, write_jsonl

# The stage's own module imports transformers: without the training extra the whole file skips.
pytest.importorskip("trl", reason="needs the training extra: pip install -e '.[train]'")
from r1distill.cli import app
from r1distill.errors import UsageError
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.rewards import rule
from r1distill.rl.config import RLConfig, read_recipe
from r1distill.rl.rewards import PolicyReward, Rollouts
from r1distill.rl.run import _grpo_config, build_trainer, golds_parsed_meanwhile, plan_run, rl
from r1distill.schema import FINISH_LENGTH, FINISH_STOP

REPO = Path(__file__).resolve().parents[1]
END = 2  # <|im_end|> in the SmolLM2 tokenizer: a stop token of the chat template


@pytest.fixture(scope="module")
def reward_model(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random sequence-classification reward model: continuous rewards that differ within a group."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    target = tmp_path_factory.mktemp("reward-model")
    LlamaForSequenceClassification(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _generate_output(folder: Path) -> Path:
    """A `generate` output: two samples per prompt, with trace columns that describe the teacher's completions."""
    rows = [
        {"id": f"p{i}:{s}", "prompt_id": f"p{i}", "sample": s, "problem": f"What is {i} plus {i}?", "answer": str(2 * i),
         "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "completion": "<think>\nx\n</think>\n\n\\boxed{0}",
         "reasoning": "x", "response": "\\boxed{0}", "finish_reason": "stop", "completion_tokens": 99999, "model": "teacher"}
        for i in range(1, 7) for s in range(2)
    ]
    folder.mkdir()
    pl.DataFrame(rows).write_parquet(folder / "traces-0.parquet")
    return folder


def _filter_scores(tmp_path: Path, completions: list[str], finish: list[str], answers: list[str]) -> pl.DataFrame:
    """filter's scored table for `completions` (as traces), sorted by row."""
    traces = tmp_path / "as-traces"
    traces.mkdir()
    pl.DataFrame([
        {"id": f"p{i}:0", "prompt_id": f"p{i}", "sample": 0, "problem": f"problem number {i} here", "answer": answer, "completion": text,
         "finish_reason": reason}
        for i, (text, reason, answer) in enumerate(zip(completions, finish, answers))
    ]).write_parquet(traces / "traces-0.parquet")
    out = tmp_path / "as-filter"
    filter_traces(FilterConfig(str(traces), str(out), checks=["accuracy", "format", "language"], dedup="none"))
    return pl.read_parquet(out / "scored" / "*.parquet").with_columns(pl.col("id").str.extract(r"p(\d+)").cast(pl.Int64).alias("row")).sort("row")


def test_cli_runs_grpo_end_to_end_and_the_rewards_are_filters(tmp_path, tiny_model, reward_model):
    from safetensors.torch import load_file

    out = tmp_path / "policy"
    result = run_cli("rl", str(_generate_output(tmp_path / "traces")), "-o", str(out), "--model", str(tiny_model),
                     "--reward", "accuracy", "--reward", "format=0.5", "--reward", "language", "--reward-model", str(reward_model),
                     "--max-steps", "2", "--num-generations", "4", "--batch-size", "4", "--max-completion-length", "12",
                     "--lr", "1e-3", "--beta", "0.01", "--log-samples", "100", "--save-steps", "1")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "12 rows in, 6 prompts" in said and "chat template: model" in said and "reward (first → last)" in said
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        for key in ("reward", "reward_std", "learning_rate", "kl", "completions/mean_length", "completions/max_length", "completions/clipped_ratio",
                    "clip_ratio/region_mean", "rewards/accuracy_reward/mean", "rewards/accuracy_reward/std", "rewards/format_reward/mean",
                    "rewards/language_reward/mean", "rewards/accuracy_reward/unscored", "format/pass", "thinking/mean_tokens"):
            assert key in m, key
        assert len(m["samples"]) == 4 and {"prompt", "completion", "finish_reason", "rewards", "verdicts"} <= m["samples"][0].keys()
    # The policy's own completions were scored, not the teacher's (whose traces say stop, 99999 tokens, boxed 0).
    samples = [s for m in steps for s in m["samples"]]
    assert {s["finish_reason"] for s in samples} <= {FINISH_STOP, FINISH_LENGTH} and "\\boxed{0}" not in {s["completion"] for s in samples}
    # Every reward inside RL is what filter says of the same completion, accuracy through its verifier workers.
    answers = [str(2 * int(s["prompt"].split()[2])) for s in samples]
    scored = _filter_scores(tmp_path, [s["completion"] for s in samples], [s["finish_reason"] for s in samples], answers)
    for name in ("accuracy", "format", "language"):
        assert scored[f"{name}_verdict"].to_list() == [s["verdicts"][name] for s in samples], name
        assert scored[f"{name}_score"].to_list() == [s["rewards"][name] for s in samples], name
    # Weights changed after a step (the reward model's scores differ within every group).
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert len(changed) == len(before), set(before) - set(changed)
    # A plain HF layout that stops at the chat template's end-of-turn token, with a model card.
    config = json.loads((out / "generation_config.json").read_text())
    assert END in (config["eos_token_id"] if isinstance(config["eos_token_id"], list) else [config["eos_token_id"]])
    card = (out / "README.md").read_text()
    assert "r1distill rl" in card and "accuracy_reward x 1, format_reward x 0.5, language_reward x 1, reward model" in card
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and (out / "chat_template.jinja").exists()


def test_rewards_inside_rl_see_only_the_policys_completion_and_equal_filters(tmp_path):
    completions = [
        "<think>\nTwo and two make four.\n</think>\n\nSo \\boxed{4}",  # correct, stopped
        "<think>\nTwo and two make four.\n</think>\n\nSo \\boxed{5}",  # incorrect
        "<think>\nTwo and two make four.\n</think>\n\nSteps:\n1. add\n4",  # cut off, no explicit answer: no_answer
        "Two and two make four.\n</think>\n\n\\boxed{4}",  # a template pre-filled <think>: put back, as generate stores it
        "<think>\n我们 先 计算 two plus two\n</think>\n\n\\boxed{4}",  # mixed language
    ]
    ids = [[5, END], [5, END], [5, 6], [5, END], [5, END]]
    # Dataset columns named like trace columns describe a teacher's completion: never used.
    leaks = {"finish_reason": ["stop"] * 5, "completion_tokens": [1] * 5, "reasoning": ["x"] * 5, "response": ["\\boxed{4}"] * 5}
    rollouts, logged = Rollouts(lambda texts: [len(text.split()) for text in texts]), {}
    with rule("accuracy", timeout=5) as accuracy:
        rewards = [PolicyReward(r, {END}, prefilled_think=True, rollouts=rollouts, first=i == 0)
                   for i, r in enumerate([accuracy, rule("format"), rule("language")])]
        chat = [[{"role": "assistant", "content": text}] for text in completions]
        scores = {r.__name__: r(prompts=["q"] * 5, completions=chat, completion_ids=ids, answer=["4"] * 5, log_metric=logged.__setitem__, **leaks)
                  for r in rewards}
    assert scores["accuracy_reward"] == [1.0, 0.0, 0.0, 1.0, 1.0] and logged["rewards/accuracy_reward/unscored"] == 0.0
    canonical = [row["completion"] for row in rollouts.samples(5)]
    assert canonical[3].startswith("<think>\n") and [row["finish_reason"] for row in rollouts.samples(5)][2] == FINISH_LENGTH
    scored = _filter_scores(tmp_path, canonical, [row["finish_reason"] for row in rollouts.samples(5)], ["4"] * 5)
    for name in ("accuracy", "format", "language"):
        assert scored[f"{name}_score"].to_list() == scores[f"{name}_reward"], name
        assert scored[f"{name}_verdict"].to_list() == [row["verdicts"][name] for row in rollouts.samples(5)], name
    # Logged per step whatever the rewards: the format check's pass share and the thinking length (5 words, 4 times, then 6).
    assert logged["format/pass"] == (scored["format_verdict"] == "ok").mean() and logged["thinking/mean_tokens"] == 26 / 5


def test_a_verification_that_times_out_is_none_and_never_stalls_a_step_even_from_a_thread():
    hostile = [[{"role": "assistant", "content": "<think>\nbig\n</think>\n\n\\boxed{9^{9^{9^{9}}}}"}], [{"role": "assistant", "content": "\\boxed{4}"}]]
    result, logged = {}, {}
    with rule("accuracy", timeout=1, workers=1) as accuracy:
        reward = PolicyReward(accuracy, {END}, prefilled_think=False, rollouts=Rollouts(), first=True)
        # TRL runs rewards in the training thread, async ones in an event-loop thread: no signals are involved.
        worker = threading.Thread(target=lambda: result.update(scores=reward(prompts=["q", "q"], completions=hostile, completion_ids=[[END], [END]],
                                                                             answer=["5", "4"], log_metric=logged.__setitem__)))
        started = time.monotonic()
        worker.start()
        worker.join(60)
        assert not worker.is_alive() and time.monotonic() - started < 60
        assert accuracy.timeouts == 1
    assert result["scores"] == [None, 1.0] and logged["rewards/accuracy_reward/unscored"] == 0.5


@pytest.mark.timeout(300)
def test_gold_answers_are_parsed_while_the_policy_loads_and_the_parsing_stops_with_the_load(tmp_path, tiny_model):
    def plan(name: str, count: int):
        # Symbolic golds: exact numbers are left to the fast path and never parsed ahead.
        rows = [{"problem": f"Expand p{n}.", "answer": f"x^{{{n}}} + {n}y"} for n in range(count)]
        return plan_run(RLConfig(str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), str(tmp_path / name), model=str(tiny_model),
                                 rewards=["accuracy", "format"], num_generations=2, batch_size=2, max_completion_length=8, max_steps=1))

    waited = plan("waited", 12)
    accuracy = waited.rules[0]
    try:
        with golds_parsed_meanwhile(waited):
            # A policy that takes its time to load: the workers parse every gold meanwhile.
            deadline = time.monotonic() + 120
            while (accuracy._pool is None or accuracy._pool.gold_parses < 12) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert accuracy._pool.gold_parses == 12
        scores = accuracy(["\\boxed{x^{3} + 3y}", "\\boxed{3y + x^3}", "\\boxed{x^3 + 3}"], answer=["x^{3} + 3y"] * 3)
        assert scores == [1.0, 1.0, 0.0] and accuracy._pool.gold_parses == 12, "the step parsed no gold"
    finally:
        accuracy.close()
    hurried = plan("hurried", 2000)
    accuracy = hurried.rules[0]
    try:
        started = time.monotonic()
        with golds_parsed_meanwhile(hurried):
            pass  # loaded at once: the parsing stops, the run does not wait for 2,000 golds
        assert time.monotonic() - started < 60 and accuracy._pool.gold_parses < 2000
    finally:
        accuracy.close()


def test_r1_zero_path_trains_and_resumes_from_a_checkpoint(tmp_path, tiny_model):
    prompts = tmp_path / "countdown.jsonl"
    assert CliRunner().invoke(app, ["synth", "countdown", "-n", "8", "-o", str(prompts)]).exit_code == 0
    cfg = RLConfig(str(prompts), str(tmp_path / "zero"), model=str(tiny_model), template="r1-zero", rewards=["countdown", "format"],
                   num_generations=2, batch_size=2, max_completion_length=8, max_steps=2, save_steps=1, log_samples=1)
    plan = plan_run(cfg)
    row = plan.rows[0]
    # Raw text, no chat template; the dataset holds only what the rewards read.
    assert isinstance(row["prompt"], str) and row["prompt"].startswith("A conversation between User and Assistant") and row["prompt"].endswith("Assistant:")
    assert set(row) == {"prompt", "numbers", "target"} and plan.template is None
    assert plan.rules[1].options["layout"] == "r1-zero"
    summary = rl(cfg)
    assert summary.steps == 2 and (tmp_path / "zero" / "checkpoint-2" / "trainer_state.json").exists()
    with pytest.raises(UsageError, match="pass --resume"):
        plan_run(cfg)
    with pytest.raises(UsageError, match="holds a different run \\(lr"):
        plan_run(RLConfig(**{**cfg.__dict__, "lr": 1e-3, "resume": True}))
    summary = rl(RLConfig(**{**cfg.__dict__, "resume": True, "max_steps": 3}))
    assert summary.steps == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "zero" / "metrics.jsonl").read_text().splitlines() if '"reward"' in line]
    assert steps == [1, 2, 3]  # each step logged once
    card = (tmp_path / "zero" / "README.md").read_text()
    assert "R1-Zero prompt as raw text" in card


def test_lora_and_vllm_settings_reach_the_trainer(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(4)])
    cfg = RLConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), rewards=["format"], num_generations=2, batch_size=2, max_completion_length=4,
                   max_steps=1, lora_r=4, lora_target_modules=["q_proj"], epsilon_high=0.28, loss_type="grpo", scale_rewards="none",
                   mask_truncated_completions=True)
    plan = plan_run(cfg)
    args = plan.args
    assert (args.epsilon_high, args.loss_type, args.scale_rewards, args.mask_truncated_completions) == (0.28, "grpo", "none", True)
    trainer = build_trainer(plan)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    # vLLM is not installable here: its settings are checked against GRPOConfig without it.
    server = _grpo_config(RLConfig(str(data), str(tmp_path / "v"), use_vllm=True, vllm_mode="server", vllm_server_url="http://gpu-0:8000",
                                   num_generations=2, batch_size=2), [1.0])
    assert (server.use_vllm, server.vllm_mode, server.vllm_server_base_url) == (True, "server", "http://gpu-0:8000")


def test_prompt_sets_pass_rate_band_and_columns(tmp_path, tiny_model):
    from r1distill.training.prompts import load_prompt_set

    rows = [{"messages": [], "kind": "reasoning", "prompt_id": f"p{i}", "problem": f"q{i}", "answer": str(i), "pass_rate": i / 4} for i in range(5)]
    rows += [{"messages": [], "kind": "reasoning", "prompt_id": "p1", "problem": "q1", "answer": "1", "pass_rate": 0.25}]  # a second kept sample
    rows += [{"messages": [], "kind": "non_reasoning", "prompt_id": "c0", "problem": "hello", "answer": None, "pass_rate": None}]
    data = write_jsonl(tmp_path / "filtered.jsonl", rows)
    kept, stats = load_prompt_set(str(data), "train", ["answer"], 0.2, 0.8)
    assert [row["problem"] for row in kept] == ["q1", "q2", "q3"] and list(kept[0]) == ["problem", "answer"]
    assert (stats.rows_in, stats.prompts, stats.outside_band, stats.kept) == (7, 5, 2, 3)
    # A prompt without a gold answer cannot be scored by accuracy: dropped and counted.
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b"}])
    kept, stats = load_prompt_set(str(partial), "train", ["answer"], None, None)
    assert [row["problem"] for row in kept] == ["a"] and stats.no_answer == 1


def _bad_configurations(tmp_path: Path, tiny_model: Path, tiny_think_model: Path) -> list[tuple[list[str], str]]:
    good = write_jsonl(tmp_path / "good.jsonl", [{"problem": "What is 1 plus 1?", "answer": "2"}])
    no_answers = write_jsonl(tmp_path / "no-answers.jsonl", [{"problem": "What is 1 plus 1?"}])
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("num_generatoins: 4\n")
    ours = tmp_path / "ours.yaml"
    ours.write_text("learning_rate: 1e-6\n")
    bad_value = tmp_path / "bad-value.yaml"
    bad_value.write_text("generation_batch_size: 12\n")  # GRPOConfig's own check: a multiple of the global batch
    # A template whose generation prompt pre-fills an empty think block: no completion can think.
    closed = tmp_path / "closed-think"
    closed.mkdir()
    for name in tiny_think_model.iterdir():
        (closed / name.name).write_bytes(name.read_bytes())
    (closed / "chat_template.jinja").write_text((tiny_think_model / "chat_template.jinja").read_text().replace("<think>\n", "<think>\n\n</think>\n\n"))
    model = ["--model", str(tiny_model)]
    return [
        ([str(good), *model, "--batch-size", "6", "--num-generations", "4"], "must be a multiple of --num-generations 4"),
        ([str(good), *model, "--reward", "vibes"], "--reward 'vibes' is unknown"),
        ([str(good), *model, "--reward", "accuracy=lots"], "the weight after '=' must be a number"),
        ([str(good), *model, "--use-vllm"], "--use-vllm needs vllm, which is not installed"),
        ([str(good), "--model", str(closed)], "closes the think block"),
        ([str(no_answers), *model], "no 'answer' column, and the accuracy (or arithmetic) reward needs the gold answer"),
        ([str(good), *model, "--reward", "countdown"], "no column(s) numbers, target"),
        ([str(good), *model, "--min-pass-rate", "0.2"], "no 'pass_rate' column"),
        ([str(good), *model, "--config", str(unknown_key)], "unknown setting(s) num_generatoins"),
        ([str(good), *model, "--config", str(ours)], "learning_rate (write lr)"),
        ([str(good), *model, "--config", str(bad_value)], "GRPO settings: generation_batch_size (12) must be divisible by the global batch size (8)"),
        ([str(good), *model, "--reward-model", str(tiny_model)], "not a sequence-classification reward model"),
        ([str(good), *model, "--resume"], "holds no run to resume"),
        ([str(good), *model, "--template", "r1-zero", "--system", "Be brief."], "--system applies to --template chat only"),
    ]


def test_every_configuration_error_is_one_line_before_any_model_loads(tmp_path, tiny_model, tiny_think_model):
    runner = CliRunner()
    for args, message in _bad_configurations(tmp_path, tiny_model, tiny_think_model):
        out = tmp_path / "out"
        assert_usage_error(runner.invoke(app, ["rl", *args, "-o", str(out)]), message, out)


def test_recipes_take_any_grpo_field_and_the_command_line_wins(tmp_path, tiny_model):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 3e-6\nnum_generations: 2\nnum_iterations: 2\ntop_p: 0.9\n")
    assert read_recipe(recipe) == {"lr": 3e-6, "num_generations": 2, "trl": {"num_iterations": 2, "top_p": 0.9}}
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is 1 plus 1?", "answer": "2"}])
    plan = plan_run(RLConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), batch_size=2, **read_recipe(recipe)))
    assert (plan.args.learning_rate, plan.args.num_iterations, plan.args.top_p) == (3e-6, 2, 0.9)
    result = CliRunner().invoke(app, ["rl", str(data), "-o", str(tmp_path / "o"), "--config", str(recipe), "--num-generations", "3", "--batch-size", "4"])
    assert result.exit_code == 2 and "--num-generations 3" in result.stderr  # the command line won over the recipe


def test_shipped_rl_recipes_are_valid(tmp_path):
    recipes = sorted((REPO / "recipes" / "rl").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"r1-zero-countdown-qwen2.5-3b", "r1-zero-math-qwen2.5-math-7b", "stage2-language-1.5b"}
    for path in recipes:
        # A recipe without a model takes it on the command line (an SFT'd student, not the embedded SmolLM2).
        cfg = RLConfig(input="data", output=str(tmp_path / path.stem), **{"model": "someone/student-1.5b", **read_recipe(path)})
        # vLLM is not installed here: every other setting is checked, and GRPOConfig takes the vLLM ones.
        RLConfig(**{**cfg.__dict__, "use_vllm": False, "vllm_server_url": None}).check()
        args = _grpo_config(cfg, [w for _, w in cfg.reward_weights()])
        assert args.use_vllm and args.num_generations >= 8 and args.activation_checkpointing
