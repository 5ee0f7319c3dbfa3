"""Writing filter's output: the SFT rows (kept traces as chat messages, then the mixed-in
non-reasoning conversations), laid out as a Hugging Face dataset repository.

A reasoning row's assistant turn is `schema.r1_layout(reasoning, response)`; a non-reasoning answer
carries no think block, or an empty one (`--no-think empty`), as R1's non-reasoning SFT data did.
Rows are written part by part and renamed to `train-XXXXX-of-YYYYY.parquet` once the count is known.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill.data import read_table
from r1distill.errors import UsageError
from r1distill.schema import FINISH_STOP, KIND_NON_REASONING, KIND_REASONING, PASS_RATE, SFT_SCHEMA, r1_layout

if TYPE_CHECKING:
    from r1distill.filter.run import FilterConfig

log = logging.getLogger(__name__)


def write_sft(
    batches: Iterable[pl.DataFrame], source_name: str, scored: pl.DataFrame, out: Path, cfg: FilterConfig, extra: pl.DataFrame | None
) -> dict[str, int]:
    """Pass 2: stream the kept rows of `batches` (the input again) into data/train-*.parquet, then the non-reasoning rows."""
    data = out / "data"
    data.mkdir(parents=True)
    kept = scored.filter("keep").select("id", pl.col("source").alias("kept_source"), pl.col(PASS_RATE).alias("kept_pass_rate"))
    parts: list[Path] = []
    reasoning_rows = 0
    for rows in batches:
        rows = rows.join(kept, on="id", how="inner", maintain_order="left")
        if rows.height == 0:
            continue
        # Only a generate-style prompt (a list of messages) is reused; a plain-text prompt column is not.
        chat_prompt = "prompt" in rows.columns and isinstance(rows.schema["prompt"], pl.List)
        prompts = rows["prompt"].to_list() if chat_prompt else [None] * rows.height
        messages = [
            [m for m in (prompt or [{"role": "user", "content": problem}])] + [{"role": "assistant", "content": r1_layout(reasoning or "", response or "")}]
            for prompt, problem, reasoning, response in zip(prompts, rows["problem"].to_list(), rows["reasoning"].to_list(), rows["response"].to_list())
        ]
        table = pa.table(
            {
                "id": rows["id"].to_list(),
                "prompt_id": rows["prompt_id"].to_list(),
                "messages": messages,
                "kind": [KIND_REASONING] * rows.height,
                "source": rows["kept_source"].fill_null(Path(source_name).name).to_list(),
                "problem": rows["problem"].to_list(),
                "answer": rows["answer"].to_list(),
                PASS_RATE: rows["kept_pass_rate"].to_list(),
            },
            schema=SFT_SCHEMA,
        )
        parts.append(_write_part(data, len(parts), table))
        reasoning_rows += rows.height
    non_reasoning_rows = 0
    if extra is not None:
        if cfg.non_reasoning_count is not None:
            wanted = cfg.non_reasoning_count
        elif cfg.non_reasoning_ratio is not None:
            wanted = round(cfg.non_reasoning_ratio * reasoning_rows)
        else:
            wanted = extra.height
        if wanted > extra.height:
            log.warning("asked for %d non-reasoning rows, %s has %d: using all", wanted, cfg.non_reasoning, extra.height)
            wanted = extra.height
        picked = sorted(random.Random(cfg.seed).sample(range(extra.height), wanted))
        chosen = extra[picked]
        messages = [
            [m if m["role"] != "assistant" else {"role": "assistant", "content": _render_no_think(m["content"], cfg.no_think)} for m in conversation]
            for conversation in chosen["messages"].to_list()
        ]
        table = pa.table(
            {
                "id": chosen["id"].to_list(),
                "prompt_id": chosen["id"].to_list(),
                "messages": messages,
                "kind": [KIND_NON_REASONING] * chosen.height,
                "source": [Path(cfg.non_reasoning).name] * chosen.height,
                "problem": [next((m["content"] for m in c if m["role"] == "user"), None) for c in messages],
                "answer": [None] * chosen.height,
                PASS_RATE: [None] * chosen.height,
            },
            schema=SFT_SCHEMA,
        )
        if chosen.height:
            parts.append(_write_part(data, len(parts), table))
        non_reasoning_rows = chosen.height
    if not parts:
        # A file without row groups: readers see the columns and no rows (a row group of 0 rows makes
        # `datasets` fail with "BatchSize must be greater than 0").
        empty = data / "part-00000.parquet"
        pq.ParquetWriter(empty, SFT_SCHEMA).close()
        parts.append(empty)
    for index, part in enumerate(parts):
        part.rename(data / f"train-{index:05d}-of-{len(parts):05d}.parquet")
    return {"reasoning": reasoning_rows, "non_reasoning": non_reasoning_rows}


def _write_part(folder: Path, index: int, table: pa.Table) -> Path:
    path = folder / f"part-{index:05d}.parquet"
    pq.write_table(table, path)
    return path


def _render_no_think(content: str, style: str) -> str:
    """A non-reasoning answer as the student should learn it: no think block, or an empty one."""
    content = content or ""
    if "</think>" in content:
        content = content.split("</think>", 1)[1].strip()
    return content if style == "none" else f"<think>\n\n</think>\n\n{content}"


def load_non_reasoning(source: str) -> pl.DataFrame:
    """Conversations as `id` and `messages`, from a messages column or prompt/response columns. A generate
    output (a teacher answering with `--chat-template-kwargs enable_thinking=false`) gives only its
    finished rows: a failed or cut-off answer is no conversation to learn from."""
    frame = read_table(source)
    if "finish_reason" in frame.columns:
        finished = frame.filter(pl.col("finish_reason") == FINISH_STOP)
        if finished.height < frame.height:
            log.info("%s: %d of %d rows failed or were cut off and are not mixed in", source, frame.height - finished.height, frame.height)
        frame = finished
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty" + (" of finished rows" if "finish_reason" in frame.columns else ""))
    if "messages" in frame.columns:
        messages = frame["messages"].to_list()
        if not all(isinstance(c, list) and c and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in c) for c in messages):
            raise UsageError(f"{source}: column 'messages' must hold lists of {{role, content}}")
        if not all(any(m["role"] == "assistant" for m in c) for c in messages):
            row = next(i for i, c in enumerate(messages) if not any(m["role"] == "assistant" for m in c))
            raise UsageError(f"{source}: row {row} of 'messages' has no assistant turn")
    else:
        prompt = next((c for c in ("problem", "prompt", "question", "instruction") if c in frame.columns), None)
        answer = next((c for c in ("response", "completion", "answer", "output") if c in frame.columns), None)
        if prompt is None or answer is None:
            raise UsageError(f"{source}: needs a 'messages' column, or a problem/prompt column and a response/completion column (columns: {', '.join(frame.columns)})")
        messages = [[{"role": "user", "content": str(p)}, {"role": "assistant", "content": str(a)}] for p, a in zip(frame[prompt].to_list(), frame[answer].to_list())]
    ids = frame["id"].cast(pl.String).to_list() if "id" in frame.columns else [f"{Path(source).stem}-{i}" for i in range(frame.height)]
    return pl.DataFrame({"id": ids, "messages": messages})


def follow_umask(folder: Path) -> None:
    """mkdtemp makes its folder private (0700); the finished dataset gets the permissions any new folder would."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
