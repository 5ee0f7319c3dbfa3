"""Up-front checks for GPU machines: missing GPU packages, context lengths, the benchmark registry.

    PYTHONPATH=.. python -m pytest tests/test_preflight.py -q

Everything here runs on a CPU without vLLM, DeepSpeed, flash-attn or Liger and downloads nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, run_cli, write_jsonl
from r1distill.cli import app
from r1distill.context import generation_problem, model_length
from r1distill.errors import missing_training
from r1distill.suites import BENCHMARKS
from r1distill.filter.decontaminate import load_benchmark

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "recipes" / "pipelines").glob("*.yaml"))
GPU_MODULES = {"vllm": "vllm", "deepspeed": "deepspeed", "flash-attn": "flash_attn", "liger-kernel": "liger_kernel"}
runner = CliRunner()
TRAINING_EXTRA = "the training extra"
_MISSING = re.compile(r" needs? (\S+), which is not installed| needs (the training extra)")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(GPU_MODULES[package]) is not None


@pytest.fixture
def short_model(tiny_model, tmp_path) -> Path:
    """The tiny model's config with 64 positions: only the config is read by the checks."""
    folder = tmp_path / "short-model"
    folder.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    return folder


@pytest.fixture
def unreadable_data(tmp_path) -> Path:
    """A training/prompt file that fails when read: an error about it means the data was read first."""
    path = tmp_path / "data.jsonl"
    path.write_text("{not json\n")
    return path


# The GPU packages each reference pipeline needs (vLLM for generate/eval/rl rollouts, DeepSpeed for its
# zero*.yaml launch config); the recipes default to sdpa attention, so flash-attn is not among them.
EXPECTED = {
    "distill-r1-32b-vllm-qwen2.5-1.5b": {"vllm", "deepspeed"},
    "distill-r1-api-qwen2.5-math-7b": {"vllm", "deepspeed"},
    "r1-zero-countdown-qwen2.5-3b": {"vllm", "deepspeed"},
}


@pytest.mark.parametrize("recipe", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_reference_pipeline_check_reports_only_missing_gpu_packages(recipe, tmp_path):
    # Offline: Hub models not in the cache are not measured, and nothing is downloaded.
    env = {"HF_HUB_OFFLINE": "1"}
    result = run_cli("run", str(recipe), "-o", str(tmp_path / "run"), "--check", env=env)
    missing = {package for package in EXPECTED[recipe.stem] if not _installed(package)}
    # The core install (CI's Python 3.10 run) lacks the training extra too, which every one of these
    # pipelines needs for its sft or rl stage: then that is the one other missing thing named.
    if missing_training("sft") is not None:
        missing.add(TRAINING_EXTRA)
    if missing:
        assert result.returncode == 2, result.stderr
        line = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
        problems = re.split(r"; (?=stage ')", line.split(": ", 2)[2])
        named = [next((group for group in m.groups() if group), None) if (m := _MISSING.search(problem)) else None for problem in problems]
        assert None not in named, problems
        if TRAINING_EXTRA not in missing:
            assert set(named) == missing
        else:
            # Without trl, a recipe's GRPOConfig passthrough cannot be read, so the rl stage's check stops
            # at the extra; GPU stand-ins cannot stand in for torch, so the passing check below needs it.
            assert TRAINING_EXTRA in named and set(named) <= missing, named
            return
    # With every GPU package importable (empty stand-ins), the same check passes: nothing else is wrong.
    fakes = tmp_path / "fakes"
    for module in GPU_MODULES.values():
        (fakes / module).mkdir(parents=True)
        (fakes / module / "__init__.py").write_text("")
    env["PYTHONPATH"] = os.pathsep.join([str(fakes), os.environ.get("PYTHONPATH", "")])
    passed = run_cli("run", str(recipe), "-o", str(tmp_path / "run"), "--check", env=env)
    assert passed.returncode == 0, passed.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(_installed("flash-attn"), reason="flash-attn is installed here")
def test_flash_attention_without_flash_attn_is_one_line_before_the_data(tiny_model, unreadable_data, tmp_path):
    out = tmp_path / "out"
    args = ["sft", str(unreadable_data), "-o", str(out), "--model", str(tiny_model), "--max-length", "64",
            "--attn-implementation", "flash_attention_2"]
    assert_usage_error(runner.invoke(app, args), "attn_implementation flash_attention_2 needs flash-attn, which is not installed", out)


def test_sft_length_past_the_positions_names_model_positions_and_fix(short_model, unreadable_data, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sft", str(unreadable_data), "-o", str(out), "--model", str(short_model), "--max-length", "128"])
    assert_usage_error(result, f"--max-length 128 is beyond {short_model}'s 64 positions: give --max-length 64 or less", out)
    assert "Qwen2.5-Math-7B-RoPE-300k" in result.stderr  # the fix open-r1 chose
    # At the positions it fits: the next problem is the unreadable data, found only after the check.
    result = runner.invoke(app, ["sft", str(unreadable_data), "-o", str(out), "--model", str(short_model), "--max-length", "64"])
    assert "positions" not in result.stderr


def test_generate_budget_past_the_positions_is_refused_before_the_prompts(short_model, unreadable_data, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(unreadable_data), "-o", str(out), "--model", str(short_model), "--max-tokens", "64"])
    assert_usage_error(result, f"--max-tokens 64 plus the prompt does not fit {short_model}'s 64 positions", out)


def test_rl_completion_past_the_positions_is_refused_before_the_prompts(short_model, unreadable_data, tmp_path):
    out = tmp_path / "out"
    args = ["rl", str(unreadable_data), "-o", str(out), "--model", str(short_model), "--max-completion-length", "80",
            "--num-generations", "2", "--batch-size", "2"]
    assert_usage_error(runner.invoke(app, args), f"--max-completion-length 80 plus the prompt does not fit {short_model}'s 64 positions", out)


def test_eval_counts_the_largest_thinking_budget_and_its_answer_for_every_model(tiny_model, short_model, tmp_path):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"problem": "1+1?", "answer": "2"}])
    out = tmp_path / "out"
    args = ["eval", str(bench), "-o", str(out), "--model", str(tiny_model), "--model", str(short_model), "--max-tokens", "32",
            "--thinking-budget", "8,40", "--answer-tokens", "30"]
    result = runner.invoke(app, args)
    assert_usage_error(result, f"--thinking-budget 40 plus --answer-tokens 30 = 70 plus the prompt does not fit {short_model}'s 64 positions", out)
    assert str(tiny_model) + "'s" not in result.stderr  # 2,048 positions: fits


def test_vllm_max_model_len_past_the_positions_needs_vllms_variable(short_model, monkeypatch):
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    problem = generation_problem(str(short_model), 32, "--max-tokens", vllm=True, max_model_len=128, length_option="--max-model-len")
    assert problem.startswith(f"--max-model-len 128 is beyond {short_model}'s 64 positions") and "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1" in problem
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    assert generation_problem(str(short_model), 32, "--max-tokens", vllm=True, max_model_len=128, length_option="--max-model-len") is None
    # The budget must still leave room for the prompt inside --max-model-len.
    assert "leaves no room for the prompt" in generation_problem(str(short_model), 128, "--max-tokens", vllm=True, max_model_len=128, length_option="--max-model-len")


def test_rope_scaling_multiplies_the_positions_and_a_hub_model_not_cached_is_not_measured(short_model):
    config = json.loads((short_model / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    (short_model / "config.json").write_text(json.dumps(config))
    assert model_length(str(short_model)).positions == 256
    assert generation_problem(str(short_model), 200, "--max-tokens", vllm=False, max_model_len=None, length_option="--max-model-len") is None
    # Never downloaded by a check: a Hub id outside the local cache is left to the stage.
    assert model_length("r1distill-tests/no-such-model") is None


# The split and columns of each benchmark, from its dataset card (looked up, not from this repository):
#   math500       https://huggingface.co/datasets/HuggingFaceH4/MATH-500 (files: test.jsonl; fields problem, solution, answer, subject, level, unique_id)
#   aime24        https://huggingface.co/datasets/HuggingFaceH4/aime_2024/blob/main/README.md (dataset_info: split train only; id, problem, solution, answer, url, year)
#   aime25        https://huggingface.co/datasets/math-ai/aime25/tree/main (files: test.jsonl; id, problem, answer)
#   amc23         https://huggingface.co/datasets/math-ai/amc23/tree/main (files: test-00000-of-00001.parquet; id, question, answer, url)
#   gsm8k         https://huggingface.co/datasets/openai/gsm8k (configs main and socratic, splits train and test; question, answer)
#   gpqa-diamond  https://huggingface.co/datasets/Idavidrein/gpqa (config gpqa_diamond: gpqa_diamond.csv, split train; Question, Correct Answer, Record ID)
CARDS = {
    "math500": ("HuggingFaceH4/MATH-500", None, "test", {"problem", "answer", "unique_id"}),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", {"problem", "answer", "id"}),
    "aime25": ("math-ai/aime25", None, "test", {"problem", "answer", "id"}),
    "amc23": ("math-ai/amc23", None, "test", {"question", "answer", "id"}),
    "gsm8k": ("openai/gsm8k", "main", "test", {"question", "answer"}),
    "gpqa-diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train", {"Question", "Correct Answer", "Record ID"}),
}


def test_every_registered_benchmark_names_a_split_and_columns_its_card_lists():
    assert set(BENCHMARKS) == set(CARDS)
    for name, spec in BENCHMARKS.items():
        hub, config, split, columns = CARDS[name]
        assert (spec.hub, spec.config, spec.split) == (hub, config, split), name
        assert {spec.problem, spec.answer} | ({spec.id} if spec.id else set()) <= columns, name


class _FakeDataset:
    """What `datasets.load_dataset` returns, for the few methods the readers use."""

    def __init__(self, rows: dict):
        import pyarrow as pa

        self.table = pa.table(rows)

    def with_format(self, kind):
        return self

    def __getitem__(self, item):
        return self.table


def test_decontamination_reads_a_registered_benchmark_with_its_own_split_and_column(monkeypatch):
    import datasets

    asked = []

    def load_dataset(path, name=None, split=None, **kwargs):
        asked.append((path, name, split))
        if (path, split) != ("HuggingFaceH4/aime_2024", "train"):
            raise ValueError(f"Unknown split {split!r}. Should be one of ['train'].")
        return _FakeDataset({"id": [60], "problem": ["Find the remainder when 2024 is divided by 7."], "answer": ["1"]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    name, texts = load_benchmark("HuggingFaceH4/aime_2024")
    assert (name, texts) == ("HuggingFaceH4/aime_2024", ["Find the remainder when 2024 is divided by 7."])
    assert asked == [("HuggingFaceH4/aime_2024", None, "train")]
