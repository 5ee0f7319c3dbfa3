"""Dataset input: every supported form loads; every unusable input is one line, exit code 2, nothing written."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill.cli import app
from r1distill.data import load_prompts
from r1distill.errors import UsageError
from r1distill.schema import stable_id

ROWS = [
    {"id": "a", "problem": "What is 1+1?", "answer": "2", "level": 1},
    {"id": "b", "problem": "What is 2+2?", "answer": "4", "level": 2},
]


def _expect_rows(frame: pl.DataFrame) -> None:
    assert frame["prompt_id"].to_list() == ["a", "b"]
    assert frame["problem"].to_list() == ["What is 1+1?", "What is 2+2?"]
    assert frame["answer"].to_list() == ["2", "4"]
    assert frame["level"].to_list() == [1, 2]


@pytest.mark.parametrize("form", ["jsonl", "json", "parquet", "csv", "parquet_folder", "save_to_disk"])
def test_every_supported_form_loads(tmp_path, form):
    frame = pl.DataFrame(ROWS)
    if form == "jsonl":
        source = write_jsonl(tmp_path / "p.jsonl", ROWS)
    elif form == "json":
        source = tmp_path / "p.json"
        source.write_text(json.dumps(ROWS))
    elif form == "parquet":
        source = tmp_path / "p.parquet"
        frame.write_parquet(source)
    elif form == "csv":
        source = tmp_path / "p.csv"
        frame.write_csv(source)
    elif form == "parquet_folder":
        source = tmp_path / "shards"
        source.mkdir()
        frame[:1].write_parquet(source / "part-0.parquet")
        frame[1:].write_parquet(source / "part-1.parquet")
    else:
        source = tmp_path / "saved"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(source))
    _expect_rows(load_prompts(source))


def test_column_mapping_and_number_answers(tmp_path):
    rows = [{"question": "Q1", "gold": 12, "uid": 7}, {"question": "Q2", "gold": "1/2", "uid": 8}]
    frame = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows), "question", "gold", "uid")
    assert frame.columns[:3] == ["prompt_id", "problem", "answer"]
    assert frame["prompt_id"].to_list() == ["7", "8"]
    assert frame["answer"].to_list() == ["12", "1/2"]


def test_default_ids_are_stable_hashes_and_repeats_are_kept_once(tmp_path):
    rows = [{"problem": "Q1"}, {"problem": "Q2"}, {"problem": "Q1"}]
    frame = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert frame["prompt_id"].to_list() == [stable_id("Q1"), stable_id("Q2")]
    assert frame["answer"].null_count() == 2


def test_input_columns_that_clash_with_trace_columns_are_renamed(tmp_path):
    rows = [{"problem": "Q1", "prompt_id": "x"}]
    frame = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert frame["input_prompt_id"].to_list() == ["x"]


def _bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("problem\nQ1\n")
    write_jsonl(tmp_path / "nocol.jsonl", [{"question": "Q1"}])
    (tmp_path / "empty.jsonl").write_text("")
    write_jsonl(tmp_path / "number.jsonl", [{"problem": "Q1"}, {"problem": 12}])
    pl.DataFrame({"problem": [1, 2]}).write_parquet(tmp_path / "number.parquet")
    write_jsonl(tmp_path / "null.jsonl", [{"problem": "Q1"}, {"problem": None}])
    write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "problem": "Q1"}, {"id": 2, "problem": "Q2"}, {"id": 1, "problem": "Q3"}])
    (tmp_path / "broken.jsonl").write_text('{"problem": "Q1"}\n{"problem": \n')
    (tmp_path / "latin1.jsonl").write_bytes('{"problem": "caf\xe9"}\n'.encode("latin-1"))
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "nothing").mkdir()
    return {
        "missing.jsonl": ("no such file", None),
        "notes.txt": ("unknown format", None),
        "nocol.jsonl": ("no column 'problem'", "--problem-column"),
        "empty.jsonl": ("empty", None),
        "number.jsonl": ("row 1", "problem"),
        "number.parquet": ("row 0", "problem"),
        "null.jsonl": ("row 1", "problem"),
        "dup.jsonl": ("duplicate id '1'", "row 2"),
        "broken.jsonl": ("line 2", None),
        "latin1.jsonl": ("UTF-8", None),
        "garbage.parquet": ("cannot be read", None),
        "nothing": ("no Parquet shards", None),
    }


def test_bad_inputs_give_one_line_exit_2_and_write_nothing(tmp_path):
    runner = CliRunner()
    for name, (needle, also) in _bad_inputs(tmp_path).items():
        out = tmp_path / f"out-{name}"
        # The openai backend reads the input before it asks the server anything, and needs no training extra.
        result = runner.invoke(app, ["generate", str(tmp_path / name), "-o", str(out), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert name in lines[0] and needle in lines[0], (name, lines[0])
        if also:
            assert also in lines[0], (name, lines[0])
        assert not out.exists(), name


def test_a_named_column_that_does_not_exist_is_an_error(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(UsageError, match="no column 'gold'.*--answer-column"):
        load_prompts(source, answer_column="gold")


def test_a_hub_id_that_cannot_be_reached_is_one_line(monkeypatch):
    import huggingface_hub.constants

    # Offline mode makes the failure immediate instead of waiting on network timeouts.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match="^some-org/some-dataset: cannot load from the Hugging Face Hub"):
        load_prompts("some-org/some-dataset")
