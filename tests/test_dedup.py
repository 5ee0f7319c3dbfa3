"""Deduplication: exact repeats under normalization, near repeats by MinHash LSH, stable order and results."""

from __future__ import annotations

import doctest
import json
import os
import random
import subprocess
import sys

import polars as pl
import pytest

import r1distill.filter.dedup as dedup_module
from r1distill.errors import UsageError
from r1distill.filter.dedup import dedup, exact_duplicates, near_duplicates, normalize_text

VOCABULARY = [f"{stem}{i}" for stem in ("alpha", "beta", "gamma", "delta") for i in range(50)]


def _frame(*problems: str) -> pl.DataFrame:
    return pl.DataFrame({"prompt_id": [f"p{i}" for i in range(len(problems))], "problem": list(problems)}, schema={"prompt_id": pl.String, "problem": pl.String})


def _text(seed: int, words: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def _replace_word(text: str, position: int, word: str = "CHANGED") -> str:
    words = text.split()
    words[position] = word
    return " ".join(words)


def test_doctests():
    result = doctest.testmod(dedup_module)
    assert result.attempted > 0 and result.failed == 0


def test_normalize_text_ignores_case_spacing_width_and_final_punctuation_only():
    assert normalize_text("  Solve\tFOR x\n\n in  2x = 4 .  ") == "solve for x in 2x = 4"
    assert normalize_text("Ｃｏｍｐｕｔｅ ２+３?!") == "compute 2+3"
    assert normalize_text("Straße") == normalize_text("STRASSE")
    # Math punctuation inside or closing the text is content.
    assert normalize_text("Compute 2+3") != normalize_text("Compute 2*3")
    assert normalize_text("Evaluate f(x)") == "evaluate f(x)"


def test_exact_duplicates_point_to_the_first_in_input_order():
    prompts = _frame("What is 2+2?", "Find x.", "  WHAT  is\n2+2 ", "what is 2+2.", "What is 2+3?")
    result = exact_duplicates(prompts)
    assert result.columns == ["prompt_id", "duplicate_of"]
    assert result["prompt_id"].to_list() == ["p0", "p1", "p2", "p3", "p4"]
    assert result["duplicate_of"].to_list() == [None, None, "p0", "p0", None]


def test_near_duplicate_with_one_word_changed_is_found_and_unrelated_texts_are_not():
    base = _text(0)
    half = " ".join(base.split()[:30] + _text(3).split()[:30])
    prompts = _frame(base, _text(1), _replace_word(base, 30), _text(2), half)
    result = near_duplicates(prompts, threshold=0.8)
    assert result["duplicate_of"].to_list() == [None, None, "p0", None, None]


def test_near_duplicates_keep_the_first_and_point_at_kept_prompts():
    base = _text(0)
    # Reversed input: the changed text comes first and is kept.
    prompts = _frame(_replace_word(base, -1), base, base)
    assert near_duplicates(prompts)["duplicate_of"].to_list() == [None, "p0", "p0"]


def test_short_and_empty_texts():
    # Under 5 words a text is one shingle: it matches only the same words.
    prompts = _frame("Find x", "find x.", "Find y", "", "   ")
    assert near_duplicates(prompts)["duplicate_of"].to_list() == [None, "p0", None, None, None]
    assert exact_duplicates(prompts)["duplicate_of"].to_list() == [None, "p0", None, None, "p3"]


def test_near_duplicates_are_the_same_in_every_process():
    # Pairs around the threshold: only a hash that differs between processes would change the outcome.
    texts = []
    for seed in range(40):
        base = _text(seed, words=30)
        texts += [base, _replace_word(base, 15)]
    prompts = _frame(*texts)
    expected = near_duplicates(prompts, threshold=0.6)["duplicate_of"].to_list()
    assert expected == near_duplicates(prompts, threshold=0.6)["duplicate_of"].to_list()
    assert 0 < sum(d is not None for d in expected) < 40  # the data really is borderline
    script = (
        "import json, sys, polars as pl\n"
        "from r1distill.filter.dedup import near_duplicates\n"
        "texts = json.loads(sys.stdin.read())\n"
        "frame = pl.DataFrame({'prompt_id': [f'p{i}' for i in range(len(texts))], 'problem': texts})\n"
        "print(json.dumps(near_duplicates(frame, threshold=0.6)['duplicate_of'].to_list()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True, env=env, check=True)
    assert json.loads(run.stdout) == expected


@pytest.mark.parametrize("mode", ["exact", "near", "none"])
def test_empty_frame(mode):
    result = dedup(_frame(), mode)
    assert result.height == 0
    assert result.schema == pl.Schema({"prompt_id": pl.String, "drop_reason": pl.String, "duplicate_of": pl.String})
    assert near_duplicates(_frame()).schema == pl.Schema({"prompt_id": pl.String, "duplicate_of": pl.String})
    assert exact_duplicates(_frame()).schema == pl.Schema({"prompt_id": pl.String, "duplicate_of": pl.String})


def test_dedup_modes_and_reasons():
    base = _text(0)
    prompts = _frame(base, base.upper() + ".", _replace_word(base, 30), _text(1))
    exact = dedup(prompts, "exact")
    assert exact.rows() == [("p0", None, None), ("p1", "duplicate", "p0"), ("p2", None, None), ("p3", None, None)]
    near = dedup(prompts, "near")
    assert near.columns == ["prompt_id", "drop_reason", "duplicate_of"]
    assert near.rows() == [("p0", None, None), ("p1", "duplicate", "p0"), ("p2", "near_duplicate", "p0"), ("p3", None, None)]
    assert dict(near["drop_reason"].value_counts().rows()) == {None: 2, "duplicate": 1, "near_duplicate": 1}
    assert dedup(prompts, "none")["drop_reason"].null_count() == 4


def test_near_threshold_controls_what_counts_as_near():
    base = _text(0, words=20)
    # One middle word in 20: Jaccard (20-9)/(20+1) ~ 0.52, under 0.8 but over 0.3.
    prompts = _frame(base, _replace_word(base, 10))
    assert dedup(prompts, "near", threshold=0.8)["drop_reason"].to_list() == [None, None]
    assert dedup(prompts, "near", threshold=0.3)["drop_reason"].to_list() == [None, "near_duplicate"]


def test_bad_mode_and_threshold_are_usage_errors():
    with pytest.raises(UsageError, match="unknown dedup mode 'fuzzy'; use one of exact, near, none"):
        dedup(_frame("a"), "fuzzy")
    for threshold in (1.5, 0.99):
        with pytest.raises(UsageError, match=f"near-duplicate threshold {threshold} cannot be used .*; give a Jaccard similarity between"):
            dedup(_frame("a"), "near", threshold=threshold)
