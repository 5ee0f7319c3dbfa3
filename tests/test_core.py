"""The shared core: rewards and backends usable by every stage, canonical completions, the tables.

Run alone: python -m pytest -q tests/test_core.py
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import types

import polars as pl
import pytest

from r1distill.backends import Request, Sampling, make_backend, map_finish_reason
from r1distill.backends.openai_compat import parse_reply
from r1distill.data import load_prompts
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.rewards import rule
from r1distill.schema import SFT_SCHEMA, canonical_completion, split_reasoning, trace_table

THINKING = "Two plus two is four, so the sum is four."


def _trace(prompt_id: str, sample: int, text: str, answer: str | None, *, prefilled: bool = False, finish: str = "stop") -> dict:
    """A trace row as `generate` stores it, through the same canonical form."""
    completion = canonical_completion(text, prefilled_think=prefilled)
    reasoning, response = split_reasoning(completion)
    return {
        "id": f"{prompt_id}:{sample}", "prompt_id": prompt_id, "sample": sample, "problem": f"Problem {prompt_id}: what is 2+2?",
        "answer": answer, "prompt": [{"role": "user", "content": f"Problem {prompt_id}"}], "completion": completion,
        "reasoning": reasoning, "response": response, "finish_reason": finish, "completion_tokens": 20, "prompt_tokens": 5,
        "model": "teacher", "backend": "openai", "max_tokens": 64, "request_key": "k", "error": "HTTP 500" if finish == "error" else None,
        "created_at": 0,
    }


# --- importing the shared packages ----------------------------------------------------------------


def test_importing_backends_and_rewards_loads_no_stage_and_no_heavy_library():
    code = (
        "import sys, r1distill.backends, r1distill.rewards;"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in ('r1distill', 'torch', 'aiohttp', 'polars', 'rich', 'vllm', 'math_verify'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "r1distill.backends" in loaded and "r1distill.rewards" in loaded
    stages = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in ("generate", "filter", "distill", "rl", "eval", "cli")]
    assert stages == []
    assert [m for m in loaded if not m.startswith("r1distill")] == []


# --- canonical completions ------------------------------------------------------------------------


def test_a_prefilled_think_trace_passes_format_and_accuracy_with_default_options(tmp_path):
    # The model's text starts inside the thinking: the template, not the model, wrote "<think>".
    rows = [_trace("p1", 0, f"{THINKING}\n</think>\n\nThe sum is \\boxed{{4}}.", "4", prefilled=True)]
    assert rows[0]["completion"].startswith("<think>\n" + THINKING)
    folder = tmp_path / "traces"
    folder.mkdir()
    pl.from_arrow(trace_table(rows)).write_parquet(folder / "traces-0.parquet")
    filter_traces(FilterConfig(str(folder), str(tmp_path / "sft"), workers=1))
    scored = pl.read_parquet(tmp_path / "sft" / "scored" / "*.parquet").row(0, named=True)
    assert (scored["format_verdict"], scored["accuracy_verdict"], scored["keep"]) == ("ok", "correct", True)
    sft = pl.read_parquet(tmp_path / "sft" / "data" / "*.parquet").row(0, named=True)
    assert sft["messages"][-1]["content"] == f"<think>\n{THINKING}\n</think>\n\nThe sum is \\boxed{{4}}."


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", ("stop", None)), ("eos_token", ("stop", None)), (None, ("stop", None)), ("length", ("length", None)),
     ("content_filter", ("error", "finish_reason 'content_filter'")), ("abort", ("error", "finish_reason 'abort'"))],
)
def test_unknown_finish_reasons_are_errors_that_carry_the_reason(reason, expected):
    assert map_finish_reason(reason) == expected
    body = json.dumps({"choices": [{"message": {"content": "partial"}, "finish_reason": reason}]}).encode()
    result = parse_reply(Request("p:0", []), body)
    assert (result.finish_reason, result.error) == expected


# --- no answer from thinking or a cut-off response ------------------------------------------------


@pytest.mark.parametrize("mode", ["math", "choice", "exact"])
def test_thinking_only_and_cut_off_completions_have_no_answer(mode):
    gold = {"math": "4", "choice": "C", "exact": "4"}[mode]
    said = {"math": "\\boxed{4}", "choice": "The answer is (C).", "exact": "\\boxed{4}"}[mode]
    completions = [
        f"<think>\nI am sure: {said}",  # thinking that never closes, whatever it says
        "<think>\nLet me list the steps.\n</think>\n\nSteps:\n1. add\n2. check\n3. " + ("C." if mode == "choice" else "4."),
        f"<think>\nhm\n</think>\n\n{said}",  # the control: the same answer stated in the response
    ]
    with rule("accuracy", mode=mode, workers=1) as accuracy:
        judged = accuracy.judge(completions, answer=[gold] * 3, finish_reason=["length", "length", "stop"])
    assert [j.verdict for j in judged] == ["no_answer", "no_answer", "correct"]
    assert [j.score for j in judged] == [0.0, 0.0, 1.0]


def test_the_routed_accuracy_reward_on_a_table_mixing_math_choice_and_exact():
    completions = [
        "<think>\nx times x\n</think>\n\n\\boxed{x \\cdot x}",  # only SymPy can tell this equals x^2
        "<think>\nseven is prime\n</think>\n\nThe answer is (B).",
        "<think>\nthe capital\n</think>\n\n\\boxed{\\text{Paris}}",
        "<think>\nhm\n</think>\n\n\\boxed{x+1}",
        "<think>\nhm\n</think>\n\nThe answer is (A).",
    ]
    columns = {"answer": ["x^2", "B", "paris", "x^2", "B"], "task": ["math", "choice", "exact", "math", "choice"]}
    with rule("accuracy", mode_column="task", workers=1) as accuracy:
        assert [j.verdict for j in accuracy.judge(completions, **columns)] == ["correct", "correct", "correct", "incorrect", "incorrect"]
        assert accuracy(completions, **columns, trainer_state=None) == [1.0, 1.0, 1.0, 0.0, 0.0]
        with pytest.raises(ValueError, match="'task' holds 'essay'"):
            accuracy.judge(completions[:1], answer=["x^2"], task=["essay"])


# --- backends -------------------------------------------------------------------------------------


class _FakeVLLM(types.ModuleType):
    """A stand-in `vllm` module: an engine that fails on one prompt, and records how it was built."""

    def __init__(self) -> None:
        super().__init__("vllm")
        self.built: dict = {}
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                fake.built = kwargs
                self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=kwargs["max_model_len"]))

            def get_tokenizer(self):
                return lambda text, add_special_tokens: {"input_ids": [ord(c) for c in text]}

            def generate(self, prompts, params, use_tqdm):
                if any(chr(81) in "".join(map(chr, p["prompt_token_ids"])) for p in prompts):  # "Q": the poisoned prompt
                    raise RuntimeError("CUDA error: an illegal memory access was encountered")
                out = types.SimpleNamespace(text="<think>\nok\n</think>\n\n4", finish_reason="abort", token_ids=[1, 2])
                return [types.SimpleNamespace(outputs=[out], prompt_token_ids=p["prompt_token_ids"]) for p in prompts]

        self.LLM = LLM
        self.SamplingParams = dict


def test_the_vllm_backend_turns_engine_failures_into_error_rows_and_passes_max_model_len(monkeypatch):
    fake = _FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    # The backend asks vLLM's platform whether it runs on a CPU (float32, eager there): a GPU here.
    monkeypatch.setitem(sys.modules, "vllm.platforms", types.SimpleNamespace(current_platform=types.SimpleNamespace(is_cpu=lambda: False)))
    backend = make_backend("vllm", "some/model", Sampling(64, 0.6, 0.95), max_model_len=4096, batch_size=1)
    assert fake.built["max_model_len"] == 4096 and fake.built["model"] == "some/model"
    raw = [
        Request("a:0", [{"role": "user", "content": "fine"}], raw=True), Request("b:0", [{"role": "user", "content": "Q"}], raw=True),
        Request("c:0", [{"role": "user", "content": "x" * 4096}], raw=True),  # one token per character: no room to answer
    ]
    results = []
    asyncio.run(backend.run(raw, results.append))
    by_key = {r.key: r for r in results}
    assert by_key["b:0"].finish_reason == "error" and "illegal memory access" in by_key["b:0"].error
    assert by_key["c:0"].finish_reason == "error" and by_key["c:0"].error.startswith("prompt_too_long: the prompt has 4096 tokens")
    # An aborted request is an error too, carrying vLLM's reason, not a silent "stop".
    assert (by_key["a:0"].finish_reason, by_key["a:0"].error) == ("error", "finish_reason 'abort'")


def test_make_backend_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        make_backend("tgi", "m", Sampling(8, 0.0, 1.0))


# --- the tables: SFT rows as a prompt set, generation errors apart --------------------------------


def test_a_filter_output_is_a_prompt_table_and_failed_generations_do_not_count_as_failed_samples(tmp_path):
    right = f"<think>\n{THINKING}\n</think>\n\nSo \\boxed{{4}}."
    wrong = f"<think>\n{THINKING}\n</think>\n\nSo \\boxed{{5}}."
    rows = [
        _trace("p1", 0, right, "4"), _trace("p1", 1, "", "4", finish="error"), _trace("p1", 2, "", "4", finish="error"),
        _trace("p2", 0, right, "4"), _trace("p2", 1, wrong, "4"),
    ]
    folder = tmp_path / "traces"
    folder.mkdir()
    pl.from_arrow(trace_table(rows)).write_parquet(folder / "traces-0.parquet")
    out = tmp_path / "sft"
    summary = filter_traces(FilterConfig(str(folder), str(out), keep="first:1", workers=1))
    stats = json.loads((out / "stats.json").read_text())
    assert summary.generation_errors == stats["generation_errors"] == 2
    assert "generation_error" not in stats["dropped"] and stats["dropped"] == {"accuracy": 1}
    sft = pl.read_parquet(out / "data" / "*.parquet")
    assert sft.columns == SFT_SCHEMA.names
    # p1: one sample generated, and it is right (the two server errors say nothing about difficulty).
    assert dict(zip(sft["prompt_id"], sft["pass_rate"])) == {"p1": 1.0, "p2": 0.5}
    prompts = load_prompts(out, id_column="prompt_id").sort("prompt_id")
    assert prompts["problem"].to_list() == ["Problem p1: what is 2+2?", "Problem p2: what is 2+2?"]
    assert prompts["answer"].to_list() == ["4", "4"] and prompts["pass_rate"].to_list() == [1.0, 0.5]
