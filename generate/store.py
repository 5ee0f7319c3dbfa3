"""Crash-proof storage of traces in OUT: an append-only journal, atomic Parquet shards, and compaction.

Every finished request is appended to a journal file the moment it arrives (one JSON line, flushed),
so `kill -9` loses only the requests still in flight. Every `rows_per_shard` rows or
`seconds_per_shard` seconds the journal is turned into a Parquet shard written to a temporary file
and renamed into place, then deleted. The shard's name comes from the journal's, so converting the
same journal twice (a kill between the rename and the delete) writes the same shard again: recovery
at the next start is idempotent.

Each `--shard i/N` worker has its own journal folder and lock, so N machines write into one OUT
without clashing; all of them read every shard to know what is already done. When a rerun redoes a
row (cut off by a smaller max_tokens, or failed), the newer row wins and `compact` drops the stale one
from older shards, under a lock shared by all workers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill.errors import UsageError, first_line

log = logging.getLogger(__name__)

JOURNAL_DIR = ".journal"
SHARD_GLOB = "traces-*.parquet"
STATE_COLUMNS = ["id", "request_key", "finish_reason", "max_tokens", "completion_tokens", "error", "created_at"]


def now_us() -> int:
    """Microseconds since the epoch (UTC): the created_at of a new row."""
    return time.time_ns() // 1000


def read_state(out: Path) -> pl.DataFrame:
    """The newest row per id over every shard in `out`, with the STATE_COLUMNS."""
    files = sorted(out.glob(SHARD_GLOB))
    if not files:
        return pl.DataFrame(
            schema={
                "id": pl.String,
                "request_key": pl.String,
                "finish_reason": pl.String,
                "max_tokens": pl.Int32,
                "completion_tokens": pl.Int32,
                "error": pl.String,
                "created_at": pl.Datetime("us", "UTC"),
            }
        )
    try:
        rows = pl.read_parquet(files, columns=STATE_COLUMNS)
    except Exception as err:
        raise UsageError(f"{out}: cannot read its trace shards ({first_line(err)}); is it a `r1distill generate` output?") from err
    return rows.sort("created_at").unique("id", keep="last", maintain_order=True)


class TraceStore:
    """Journal and shards of one worker (`tag`) in `out`; use as a context manager."""

    def __init__(
        self,
        out: Path,
        tag: str,
        build_table: Callable[[list[dict]], pa.Table],
        rows_per_shard: int = 1000,
        seconds_per_shard: float = 60.0,
    ) -> None:
        self.out = out
        self.tag = tag
        self.build_table = build_table
        self.rows_per_shard = rows_per_shard
        self.seconds_per_shard = seconds_per_shard
        self.journal_dir = out / JOURNAL_DIR / tag
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        self._seq = 0
        self._journal: Path | None = None
        self._journal_fd = -1
        self._rows: list[dict] = []
        self._journal_opened = 0.0
        self._lock = None

    def __enter__(self) -> TraceStore:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.journal_dir / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self._lock.close()
            raise UsageError(f"{self.out}: another `r1distill generate` is writing shard {self.tag} here; wait for it or use another -o") from err
        self.recover()
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
        if self._lock:
            self._lock.close()

    def recover(self) -> int:
        """Turn journals left by a killed run into shards; returns the rows recovered."""
        for stale in self.journal_dir.glob("*.tmp"):
            stale.unlink()
        recovered = 0
        for journal in sorted(self.journal_dir.glob("*.jsonl")):
            rows = _read_journal(journal)
            if rows:
                self._write_shard(journal.stem, rows)
                recovered += len(rows)
            journal.unlink()
        if recovered:
            log.info("recovered %d finished rows from an interrupted run", recovered)
        return recovered

    def append(self, row: dict) -> None:
        """Journal one finished row (durable against a process kill once this returns)."""
        if self._journal is None:
            self._journal = self._journal_path()
            self._journal_fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._journal_opened = time.monotonic()
        # One unbuffered write per row: once it returns the row is in the OS, safe from a process kill.
        line = memoryview(orjson.dumps(row) + b"\n")
        while line:
            line = line[os.write(self._journal_fd, line) :]
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_shard or time.monotonic() - self._journal_opened >= self.seconds_per_shard:
            self.flush()

    def flush(self) -> None:
        """Turn the current journal into a shard."""
        if self._journal is None:
            return
        path = self._journal
        os.close(self._journal_fd)
        self._journal = None
        self._seq += 1
        if self._rows:
            self._write_shard(path.stem, self._rows)
        self._rows = []
        path.unlink()

    def _journal_path(self) -> Path:
        return self.journal_dir / f"{self.run_id}-{self._seq:05d}.jsonl"

    def _write_shard(self, stem: str, rows: list[dict]) -> None:
        table = self.build_table(rows)
        final = self.out / f"traces-{self.tag}-{stem}.parquet"
        tmp = self.journal_dir / f"{final.name}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)

    def compact(self) -> int:
        """Drop rows that a newer row with the same id superseded; returns how many were dropped."""
        with open(self.out / JOURNAL_DIR / "compact.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in self.out.glob(".traces-*.tmp"):
                stale.unlink()
            files = sorted(self.out.glob(SHARD_GLOB))
            if not files:
                return 0
            ids = pl.concat(
                [pl.read_parquet(f, columns=["id", "created_at"]).with_columns(pl.lit(i).alias("file")) for i, f in enumerate(files)]
            )
            newest = ids.sort("created_at", "file").unique("id", keep="last").select("id", "created_at", "file")
            stale = ids.join(newest, on=["id", "created_at", "file"], how="anti")
            for index in stale["file"].unique().to_list():
                self._rewrite_without(files[index], newest.filter(pl.col("file") == index))
            return stale.height

    def _rewrite_without(self, path: Path, keep: pl.DataFrame) -> None:
        table = pq.read_table(path)
        rows = pl.from_arrow(table.select(["id", "created_at"])).with_row_index()
        kept = table.take(rows.join(keep, on=["id", "created_at"], how="semi")["index"].to_arrow())
        if kept.num_rows == 0:
            path.unlink()
            return
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(kept, tmp)
        os.replace(tmp, path)


def _read_journal(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as lines:
        for line in lines:
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                # Only the last line can be torn (killed mid-write); it was in flight, not finished.
                continue
    return rows
