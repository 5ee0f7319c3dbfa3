"""The transformers backend with tiny random models, and once with the real embedded SmolLM2."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import run_cli, write_jsonl
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.generate import GenerateConfig, generate

pytestmark = pytest.mark.train


def _problems(tmp_path, count=3):
    return write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(count)])


def test_batched_sampling_writes_one_row_per_prompt_and_sample(tmp_path, tiny_model):
    cfg = GenerateConfig(str(_problems(tmp_path)), str(tmp_path / "out"), model=str(tiny_model), num_samples=2, max_tokens=12, batch_size=4)
    summary = generate(cfg)
    traces = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")
    assert traces["id"].to_list() == [f"p{i}:{s}" for i in range(3) for s in range(2)]
    # A random model practically never emits its stop token: every row runs to the budget.
    assert traces["finish_reason"].unique().to_list() == ["length"]
    assert traces["completion_tokens"].to_list() == [12] * 6
    assert all(n > 20 for n in traces["prompt_tokens"].to_list())
    assert traces["answer"].to_list() == ["0", "0", "2", "2", "4", "4"]
    assert (summary.present, summary.truncated, summary.completion_tokens) == (6, 6, 72)


def test_stop_tokens_end_a_completion(tmp_path, tiny_stopping_model):
    cfg = GenerateConfig(str(_problems(tmp_path, 2)), str(tmp_path / "out"), model=str(tiny_stopping_model), temperature=0, max_tokens=8)
    generate(cfg)
    traces = pl.read_parquet(tmp_path / "out" / "*.parquet")
    assert traces["finish_reason"].to_list() == ["stop", "stop"]
    assert traces["completion_tokens"].to_list() == [0, 0]
    assert traces["completion"].to_list() == ["", ""]


def test_a_template_that_prefills_think_stores_the_opening_tag_and_filter_reads_it_as_thinking(tmp_path, tiny_think_model):
    cfg = GenerateConfig(str(_problems(tmp_path, 1)), str(tmp_path / "out"), model=str(tiny_think_model), max_tokens=6)
    generate(cfg)
    row = pl.read_parquet(tmp_path / "out" / "*.parquet").row(0, named=True)
    assert row["finish_reason"] == "length"
    assert row["completion"].startswith("<think>\n"), "the canonical completion carries the pre-filled opening tag"
    assert row["reasoning"] == row["completion"].removeprefix("<think>").strip() and row["response"] == ""
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"][-1]["prefilled_think"] is True
    # Default filter options: the cut-off thinking is seen as thinking (not "missing_think"), with no answer.
    filter_traces(FilterConfig(str(tmp_path / "out"), str(tmp_path / "sft"), workers=1))
    scored = pl.read_parquet(tmp_path / "sft" / "scored" / "*.parquet").row(0, named=True)
    assert (scored["format_verdict"], scored["accuracy_verdict"]) == ("unclosed_think", "no_answer")


def test_same_seed_same_completions(tmp_path, tiny_model):
    texts = []
    for run in ("a", "b"):
        cfg = GenerateConfig(str(_problems(tmp_path, 2)), str(tmp_path / run), model=str(tiny_model), max_tokens=8, seed=3)
        generate(cfg)
        texts.append(pl.read_parquet(tmp_path / run / "*.parquet").sort("id")["completion"].to_list())
    assert texts[0] == texts[1]


def test_real_smollm2_answers_a_question_through_the_cli(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is 2+3?", "answer": "5"}])
    out = tmp_path / "out"
    result = run_cli("generate", str(source), "-o", str(out), "--prompt-template", "{problem}", "--temperature", "0", "--max-tokens", "24")
    assert result.returncode == 0, result.stderr
    row = pl.read_parquet(out / "*.parquet").row(0, named=True)
    assert row["model"] == "smollm2-135m" and row["finish_reason"] == "stop"
    assert "5" in row["response"] and row["reasoning"] is None
    assert "rows" in result.stderr and "1 / 1" in result.stderr


def _warped(scores, temperature, top_p):
    """The probabilities transformers' own sampling draws from: its temperature and top-p warpers, then softmax."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    return torch.softmax(warped, dim=-1)


@pytest.mark.parametrize("k", [2, 256], ids=["nucleus past the top k", "nucleus inside the top k"])
def test_the_nucleus_sampler_draws_from_the_distribution_transformers_samples(k):
    import torch

    from r1distill.backends.hf import NucleusSampler

    torch.manual_seed(0)
    # Row 0: a nucleus of three tokens whose edge a wrong cut-off moves (0.4, 0.3, 0.2 reach 0.85; 0.06 must
    # stay out). Row 1: 40 near-equal tokens, a nucleus of about 34. With k=2 both rows are ranked in full.
    peaked = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04] + [1e-9] * 995))
    flat = torch.full((1000,), -30.0)
    flat[960:] = torch.randn(40) * 0.1
    draws = 20_000
    scores = torch.stack([peaked.repeat(draws, 1), flat.repeat(draws, 1)], dim=1).reshape(2 * draws, 1000)
    chosen = NucleusSampler(temperature=0.7, top_p=0.85, k=k)(None, scores)
    assert bool((chosen.isfinite().sum(dim=-1) == 1).all())  # one token per row, which greedy decoding picks
    tokens = chosen.argmax(dim=-1).reshape(draws, 2)
    for row, base in enumerate([peaked, flat]):
        expected = _warped(base.unsqueeze(0), 0.7, 0.85)[0]
        counts = torch.bincount(tokens[:, row], minlength=1000).float() / draws
        assert set(counts.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
        assert float((counts - expected).abs().sum()) / 2 < 0.04  # total variation; sampling noise is under 0.02
    assert set(tokens[:, 0].unique().tolist()) == {0, 1, 2}


def test_the_nucleus_sampler_at_top_p_one_draws_from_the_whole_softmax():
    import torch

    from r1distill.backends.hf import NucleusSampler

    torch.manual_seed(1)
    base = torch.randn(50)
    tokens = NucleusSampler(temperature=1.3, top_p=1.0)(None, base.repeat(20_000, 1)).argmax(dim=-1)
    counts = torch.bincount(tokens, minlength=50).float() / 20_000
    assert float((counts - torch.softmax(base / 1.3, dim=-1)).abs().sum()) / 2 < 0.04
