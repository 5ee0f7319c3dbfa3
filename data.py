"""Reading datasets, the same way for every stage.

A source is a `.jsonl`, `.json`, `.parquet` or `.csv` file, a folder of Parquet shards, a folder
written by `datasets.Dataset.save_to_disk`, or a Hugging Face Hub dataset id. Problems a user can fix
(a missing file, an unknown format, a missing column, an empty table, a column of the wrong type
(`check_columns`), duplicate ids) raise `UsageError` with one line that names the source, the column and the first bad row, before
any stage writes anything.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from r1distill.errors import UsageError, first_line
from r1distill.schema import ANSWER, PROBLEM, PROMPT_ID, TRACE_COLUMNS, scan_shards, stable_id

log = logging.getLogger(__name__)

FORMATS = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def read_table(source: str | Path, split: str = "train", text_column: str | None = None) -> pl.DataFrame:
    """Read any supported source into a DataFrame (see the module docstring for the forms).

    `text_column` must hold strings: JSON values are checked before polars would coerce them to text.
    """
    path = Path(source)
    if path.is_dir():
        return _read_folder(path, split)
    if path.is_file():
        return _read_file(path, text_column)
    if _HUB_ID.match(str(source)) and path.suffix.lower() not in FORMATS:
        return _read_hub(str(source), split)
    raise UsageError(f"{source}: no such file or folder (and not a Hub dataset id like 'org/name')")


def _read_file(path: Path, text_column: str | None) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _from_records(path, _jsonl_records(path), text_column)
        if suffix == ".json":
            return _from_records(path, _json_records(path), text_column)
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            if path.stat().st_size == 0:
                return pl.DataFrame()
            return pl.read_csv(path, infer_schema_length=None)
    except UsageError:
        raise
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not valid UTF-8 text ({err.reason} at byte {err.start}); re-encode the file as UTF-8") from err
    except Exception as err:  # polars/pyarrow raise many types for unreadable files
        raise UsageError(f"{path}: cannot be read as {suffix[1:]}: {first_line(err)}") from err
    raise UsageError(f"{path}: unknown format '{suffix or path.name}'; use one of {', '.join(FORMATS)}")


def _jsonl_records(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise UsageError(f"{path}: line {number} is not a JSON object")
            records.append(record)
    return records


def _json_records(path: Path) -> list[dict]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8") or "[]")
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        payload = payload["data"]
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise UsageError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
    return payload


def _from_records(path: Path, records: list[dict], text_column: str | None) -> pl.DataFrame:
    if not records:
        return pl.DataFrame()
    if text_column:
        for row, record in enumerate(records):
            value = record.get(text_column)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{path}: column '{text_column}' must hold text, row {row} holds {type(value).__name__}")
    # strict=False: mixed value types (an answer that is 12 in one row and "1/2" in another) become text.
    return pl.from_dicts(records, infer_schema_length=None, strict=False)


def _read_folder(path: Path, split: str) -> pl.DataFrame:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return _read_saved_dataset(path, split)
    shards = sorted(path.glob("*.parquet")) or sorted(path.glob(f"data/{split}-*.parquet")) or sorted(path.glob("data/*.parquet"))
    if not shards:
        raise UsageError(f"{path}: folder holds no Parquet shards and is not a datasets save_to_disk folder")
    try:
        return scan_shards(shards).collect()
    except Exception as err:
        raise UsageError(f"{path}: cannot read its Parquet shards: {first_line(err)}") from err


def _read_saved_dataset(path: Path, split: str) -> pl.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise UsageError(f"{path}: cannot be read with datasets.load_from_disk: {first_line(err)}") from err
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UsageError(f"{path}: has no split '{split}' (it has {', '.join(loaded)}); pick one with --split")
        loaded = loaded[split]
    return pl.from_arrow(loaded.with_format("arrow")[:])


def _read_hub(dataset_id: str, split: str) -> pl.DataFrame:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:
        raise UsageError(f"{dataset_id}: cannot load from the Hugging Face Hub: {first_line(err)}") from err
    return pl.from_arrow(loaded.with_format("arrow")[:])


def load_prompts(
    source: str | Path,
    problem_column: str = PROBLEM,
    answer_column: str | None = None,
    id_column: str | None = None,
    split: str = "train",
) -> pl.DataFrame:
    """Read `source` as a prompt table: `prompt_id`, `problem`, `answer`, then the other input columns.

    `answer_column` and `id_column` default to "answer" and "id" when those columns exist; naming one
    that does not exist is an error. Without an id column the id is a stable hash of the problem, and
    repeated problems are kept once.
    """
    return prompt_table(read_table(source, split, text_column=problem_column), source, problem_column, answer_column, id_column)


def prompt_table(
    frame: pl.DataFrame, source: str | Path, problem_column: str = PROBLEM, answer_column: str | None = None, id_column: str | None = None
) -> pl.DataFrame:
    """`frame`, read from `source` (named in errors), as a prompt table; see `load_prompts`."""
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty; give a dataset with at least one row")
    available = ", ".join(frame.columns)
    _require(frame, problem_column, "--problem-column", source, available)
    answer_column = _optional(frame, answer_column, ANSWER, "--answer-column", source, available)
    id_column = _optional(frame, id_column, "id", "--id-column", source, available)

    problems = frame[problem_column]
    if problems.null_count():
        row = int(problems.is_null().arg_max())
        raise UsageError(f"{source}: column '{problem_column}' is empty (null) at row {row}; every row needs a problem")
    if problems.dtype != pl.String:
        row = 0
        raise UsageError(f"{source}: column '{problem_column}' must hold text, row {row} holds {problems.dtype}")

    for option, column in (("--answer-column", answer_column), ("--id-column", id_column)):
        if column and frame[column].dtype.is_nested():
            raise UsageError(f"{source}: column '{column}' holds {frame[column].dtype}, not text or numbers; name another with {option}")
    prompt = pl.DataFrame({PROBLEM: problems})
    prompt = prompt.with_columns(
        (frame[answer_column].cast(pl.String) if answer_column else pl.lit(None, pl.String)).alias(ANSWER)
    )
    if id_column:
        ids = frame[id_column].cast(pl.String)
        if ids.null_count():
            raise UsageError(f"{source}: column '{id_column}' is null at row {int(ids.is_null().arg_max())}; give every row an id")
        repeated = ~ids.is_first_distinct()
        if repeated.any():
            row = int(repeated.arg_max())
            first = int((ids == ids[row]).arg_max())
            raise UsageError(f"{source}: column '{id_column}' has duplicate id '{ids[row]}' at row {row} (first at row {first}); ids must be unique")
    else:
        ids = problems.map_elements(stable_id, return_dtype=pl.String)
    prompt = prompt.with_columns(ids.alias(PROMPT_ID)).select(PROMPT_ID, PROBLEM, ANSWER)

    used = {problem_column, answer_column, id_column}
    extra = frame.select([c for c in frame.columns if c not in used])
    # An input column named like a trace column ("prompt", "response", "model"...) would be written twice.
    clashes = [c for c in extra.columns if c in TRACE_COLUMNS]
    if clashes:
        extra = extra.rename({c: f"input_{c}" for c in clashes})
    table = pl.concat([prompt, extra], how="horizontal")
    if not id_column:
        before = table.height
        table = table.unique(PROMPT_ID, keep="first", maintain_order=True)
        if table.height < before:
            log.warning("%s: %d repeated problems kept once (same text, same id)", source, before - table.height)
    return table


def _require(frame: pl.DataFrame, column: str, option: str, source, available: str) -> None:
    if column not in frame.columns:
        raise UsageError(f"{source}: no column '{column}' (columns: {available}); name the right one with {option}")


def _optional(frame: pl.DataFrame, column: str | None, default: str, option: str, source, available: str) -> str | None:
    if column is None:
        return default if default in frame.columns else None
    _require(frame, column, option, source, available)
    return column


@dataclass(frozen=True)
class ColumnKind:
    """What a column may hold, said in an error as "must hold <holds>"."""

    holds: str
    accepts: Callable[[pl.DataType], bool]


def _is_messages(dtype: pl.DataType) -> bool:
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    return isinstance(inner, pl.Struct) and {f.name: f.dtype for f in inner.fields} == {"role": pl.String, "content": pl.String}


# An all-null column (JSON nulls) is of type Null, and fits every kind.
TEXT = ColumnKind("text", lambda t: t in (pl.String, pl.Null))
NUMBER = ColumnKind("numbers", lambda t: t.is_numeric() or t == pl.Null)
VALUE = ColumnKind("text or numbers, one plain value per row (not a list or a record)", lambda t: t in (pl.String, pl.Null) or t.is_numeric())
PROMPT = ColumnKind("text or a list of {role, content} messages", lambda t: t in (pl.String, pl.Null) or _is_messages(t))


def check_columns(schema: Mapping[str, pl.DataType], kinds: Mapping[str, ColumnKind], source: str | Path) -> None:
    """Raise one UsageError for the first column of `kinds` in `schema` whose type is not its kind;
    columns `schema` lacks are not checked (whether a column must exist is the caller's business).

    >>> check_columns({"answer": pl.List(pl.String)}, {"answer": VALUE}, "t.jsonl")
    Traceback (most recent call last):
    r1distill.errors.UsageError: t.jsonl: column 'answer' holds List(String); it must hold text or numbers, one plain value per row (not a list or a record): convert the column, or rename it if it is not meant as 'answer'
    """
    for name, kind in kinds.items():
        if name in schema and not kind.accepts(schema[name]):
            raise UsageError(
                f"{source}: column '{name}' holds {schema[name]}; it must hold {kind.holds}: convert the column, "
                f"or rename it if it is not meant as '{name}'"
            )
