"""Decontamination: n-gram overlap with benchmarks, per-benchmark names, and reading benchmark files."""

from __future__ import annotations

import doctest

import polars as pl
import pytest

import r1distill.filter.decontaminate as decontaminate_module
from conftest import write_jsonl
from r1distill.errors import UsageError
from r1distill.filter.decontaminate import decontaminate, load_benchmark, ngrams

AIME = "Let N be the number of ordered pairs of positive integers whose product is 2024. Find N mod 1000."
MATH = "A rectangle has perimeter 30 and area 56; what is the length of its longer side?"


def _frame(*problems: str) -> pl.DataFrame:
    return pl.DataFrame({"prompt_id": [f"p{i}" for i in range(len(problems))], "problem": list(problems)}, schema={"prompt_id": pl.String, "problem": pl.String})


def test_doctests():
    result = doctest.testmod(decontaminate_module)
    assert result.attempted > 0 and result.failed == 0


def test_ngrams_ignore_case_and_punctuation():
    assert ngrams("One, TWO; three-four!", 2) == {("one", "two"), ("two", "three"), ("three", "four")}
    assert ngrams("$x^{2}$ + y", 8) == {("x", "2", "y")}
    assert ngrams("a b c d", 4) == {("a", "b", "c", "d")}


def test_a_shared_8_gram_is_a_hit_and_7_words_are_not():
    copied = "Alice writes: " + " ".join(AIME.split()[3:11]) + " and more words after it."
    near_miss = "Alice writes: " + " ".join(AIME.split()[3:10]) + " and more words after it."
    result = decontaminate(_frame(copied, near_miss, "Unrelated question about a triangle's area and its angles."), [("aime24", [AIME])])
    assert result.columns == ["prompt_id", "drop_reason", "benchmark"]
    assert result.rows() == [("p0", "contaminated", "aime24"), ("p1", None, None), ("p2", None, None)]


def test_rephrased_formatting_does_not_hide_a_copy():
    reformatted = "let n be THE number of ordered pairs of positive integers, whose product is $2024$!"
    assert decontaminate(_frame(reformatted), [("aime24", [AIME])])["benchmark"].to_list() == ["aime24"]


def test_each_problem_names_its_benchmark_and_counts_come_per_benchmark():
    both = AIME + " " + MATH
    prompts = _frame(MATH, AIME, both, "Nothing to see here, just a long enough unrelated problem text.", AIME.lower())
    result = decontaminate(prompts, [("aime24", [AIME]), ("math500", ["Another problem, long enough to have some 8-grams in it.", MATH])])
    # A problem that overlaps two benchmarks counts for the first one listed.
    assert result["benchmark"].to_list() == ["math500", "aime24", "aime24", None, "aime24"]
    assert result["drop_reason"].to_list() == ["contaminated"] * 3 + [None, "contaminated"]
    counts = dict(result["benchmark"].drop_nulls().value_counts().rows())
    assert counts == {"aime24": 3, "math500": 1}
    swapped = decontaminate(prompts, [("math500", [MATH]), ("aime24", [AIME])])
    assert swapped["benchmark"][2] == "math500"


def test_short_benchmark_question_only_matches_itself():
    benchmark = [("toy", ["What is 2+2?"])]
    prompts = _frame(
        "What is the smallest prime larger than 100 that is also one more than a square?",
        "what is 2 + 2",
        "What is 2+2? Explain why the answer is even and at most ten.",
        "What is 2?",
    )
    assert decontaminate(prompts, benchmark)["benchmark"].to_list() == [None, "toy", None, None]


def test_empty_inputs():
    assert decontaminate(_frame(AIME), [])["drop_reason"].to_list() == [None]
    empty = decontaminate(_frame(), [("aime24", [AIME])])
    assert empty.height == 0
    assert empty.schema == pl.Schema({"prompt_id": pl.String, "drop_reason": pl.String, "benchmark": pl.String})


def test_two_benchmarks_with_one_name_are_refused():
    with pytest.raises(UsageError, match="two benchmarks are both named 'test'"):
        decontaminate(_frame(AIME), [("test", [AIME]), ("test", [MATH])])


def test_load_benchmark_finds_a_question_column(tmp_path):
    source = write_jsonl(tmp_path / "aime24.jsonl", [{"id": 1, "question": AIME, "answer": "5"}, {"id": 2, "question": None, "answer": "1"}])
    assert load_benchmark(str(source)) == ("aime24", [AIME])


def test_load_benchmark_prefers_problem_and_honours_a_named_column(tmp_path):
    source = tmp_path / "math500.parquet"
    pl.DataFrame({"question": ["q"], "problem": [MATH], "body": [AIME]}).write_parquet(source)
    assert load_benchmark(str(source)) == ("math500", [MATH])
    assert load_benchmark(str(source), column="body") == ("math500", [AIME])
    assert load_benchmark(f"{source}:body") == ("math500", [AIME])


def test_load_benchmark_reads_a_folder_of_shards(tmp_path):
    folder = tmp_path / "gpqa"
    folder.mkdir()
    pl.DataFrame({"Question": [MATH]}).write_parquet(folder / "part-0.parquet")
    assert load_benchmark(str(folder)) == ("gpqa", [MATH])


def test_missing_text_column_names_the_file_and_its_columns(tmp_path):
    source = write_jsonl(tmp_path / "bench.jsonl", [{"text": AIME, "answer": "5"}])
    with pytest.raises(UsageError) as error:
        load_benchmark(str(source))
    message = str(error.value)
    assert message.startswith(f"{source}: no problem text column")
    assert "columns: text, answer" in message and f"{source}:COLUMN" in message
    with pytest.raises(UsageError, match="no column 'body' \\(columns: text, answer\\)"):
        load_benchmark(str(source), column="body")


def test_unusable_benchmark_tables_are_usage_errors(tmp_path):
    numbers = write_jsonl(tmp_path / "numbers.jsonl", [{"problem": 1}, {"problem": 2}])
    with pytest.raises(UsageError, match="column 'problem' must hold text"):
        load_benchmark(str(numbers))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UsageError, match="empty.jsonl: the benchmark table is empty"):
        load_benchmark(str(empty))
    with pytest.raises(UsageError, match="no such file"):
        load_benchmark(str(tmp_path / "missing.jsonl") + ":problem")
