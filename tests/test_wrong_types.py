"""Columns of the wrong type, malformed stats.json and an -o under a file: one line naming what to fix, exit 2.

    python -m pytest tests/test_wrong_types.py -q
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, write_jsonl
from r1distill.cli import app

runner = CliRunner()
TRACE = {"problem": "1+1?", "answer": "2", "completion": "<think>\nadd\n</think>\n\nSo \\boxed{2}.", "finish_reason": "stop"}
# (column, a value of the wrong type): what each stage refuses.
WRONG = {
    "struct_answer": ("answer", {"value": "2"}),
    "list_answer": ("answer", ["2"]),
    "list_prompt": ("prompt", ["1+1?", "2+2?"]),  # a prompt is text or a list of {role, content} messages
    "text_completion_tokens": ("completion_tokens", "many"),
    "messages_completion": ("completion", [{"role": "assistant", "content": "2"}]),
}


def _table(tmp_path, case: str, suffix: str):
    column, value = WRONG[case]
    rows = [{**TRACE, column: value}]
    if suffix == ".parquet":  # read by filter in streamed Arrow batches, not through data.read_table
        path = tmp_path / "traces.parquet"
        pl.DataFrame(rows).write_parquet(path)
        return path, column
    return write_jsonl(tmp_path / "traces.jsonl", rows), column


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("case", ["struct_answer", "list_answer", "list_prompt", "text_completion_tokens"])
def test_filter_names_a_column_of_the_wrong_type(tmp_path, case, suffix):
    table, column = _table(tmp_path, case, suffix)
    out = tmp_path / "out"
    result = runner.invoke(app, ["filter", str(table), "-o", str(out), "--check", "accuracy", "--workers", "1"])
    assert_usage_error(result, f"{table}: column '{column}' holds", out)


@pytest.mark.parametrize("case", ["messages_completion", "struct_answer", "list_answer", "text_completion_tokens"])
def test_eval_completions_names_a_column_of_the_wrong_type(tmp_path, case):
    table, column = _table(tmp_path, case, ".jsonl")
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--completions", str(table), "-o", str(out), "--workers", "1"])
    assert_usage_error(result, f"{table}: column '{column}' holds", out)


@pytest.mark.parametrize(
    ("key", "value"), [("kept", 3), ("dropped", ["format"]), ("verdicts", {"accuracy": ["correct"]}), ("rows_in", "many"), ("hints", "one")]
)
def test_report_names_the_key_of_a_malformed_stats_json(tmp_path, key, value):
    folder = tmp_path / "filtered"
    (folder / "data").mkdir(parents=True)
    (folder / "stats.json").write_text(json.dumps({"rows_in": 1, "kept": {"reasoning": 1}, key: value}))
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(folder), "-o", str(out)])
    assert_usage_error(result, f"stats.json: '{key}' must be", out)


@pytest.mark.parametrize(
    "command",
    [
        lambda table, out: ["synth", "countdown", "-o", f"{out}.jsonl"],
        lambda table, out: ["filter", str(table), "-o", str(out), "--check", "accuracy"],
        lambda table, out: ["eval", "--completions", str(table), "-o", str(out)],
    ],
    ids=["synth", "filter", "eval"],
)
def test_an_output_under_a_regular_file_is_refused_up_front(tmp_path, command):
    table = write_jsonl(tmp_path / "traces.jsonl", [TRACE])
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = afile / "out"
    result = runner.invoke(app, command(table, out))
    assert_usage_error(result, f"{afile} is a file, not a folder", out)
    assert afile.read_text() == "not a folder"
