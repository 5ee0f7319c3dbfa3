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

Nothing in a journal may block later runs: every row is coerced to the trace schema before it is
journaled, and a line that still cannot become a table row is moved, with its reason, to
`.journal/rejected-<tag>.jsonl` (the next run generates it again). A shard reaches its final name
only after its bytes and the folder entry are on disk, and so does a compacted one, so a power loss
cannot take a row away from both the journal and the shards.

OUT may sit in a shared folder: every file is written as `r1distill.files` writes (random temporary
names, never through a symlink), and the locks and journals are opened without following a link or
truncating what is there.
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
from typing import TypeVar

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill import files
from r1distill.errors import UsageError, first_line
from r1distill.outputs import SHARD_GLOB
from r1distill.schema import coerce_row, scan_shards

log = logging.getLogger(__name__)

T = TypeVar("T")

JOURNAL_DIR = ".journal"
STATE_COLUMNS = ["id", "request_key", "finish_reason", "max_tokens", "completion_tokens", "error", "created_at"]
# How a row that does not fit the table fails to convert (wrong type, missing column, null in a required one).
CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, KeyError, OverflowError)
# A shard can vanish between listing and reading when another worker's compaction drops it; list again.
READ_ATTEMPTS = 10


def now_us() -> int:
    """Microseconds since the epoch (UTC): the created_at of a new row."""
    return time.time_ns() // 1000


def read_rows(out: Path, columns: list[str]) -> pl.DataFrame | None:
    """These columns of every row of every shard in `out`; None when it has no shard."""
    return _read_shards(out, lambda shards: scan_shards(shards).select(columns).collect())


def read_state(out: Path) -> pl.DataFrame:
    """The newest row per id over every shard in `out`, with the STATE_COLUMNS."""
    rows = read_rows(out, STATE_COLUMNS)
    if rows is None:
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
    return rows.sort("created_at").unique("id", keep="last", maintain_order=True)


def has_superseded_rows(out: Path) -> bool:
    """Whether some id has more than one row in `out` (a redo not compacted yet)."""
    duplicated = pl.col("id").is_duplicated().any()
    return bool(_read_shards(out, lambda shards: scan_shards(shards).select(duplicated).collect().item()))


def _read_shards(out: Path, read: Callable[[list[Path]], T]) -> T | None:
    """`read` of every shard in `out` (None when there is none), listed again if one vanishes meanwhile."""
    attempt = 0
    while True:
        shards = sorted(out.glob(SHARD_GLOB))
        if not shards:
            return None
        try:
            return read(shards)
        except FileNotFoundError as err:
            # Compaction by another --shard or data-parallel worker removed it: its rows are in newer shards.
            attempt += 1
            if attempt == READ_ATTEMPTS:
                raise UsageError(f"{out}: its shards kept vanishing while being read ({first_line(err)}); is a run compacting it?") from err
            time.sleep(0.01 * attempt)
        except Exception as err:
            raise UsageError(f"{out}: cannot read its trace shards ({first_line(err)}); is it a `r1distill generate` output?") from err


def record_run(path: Path, header: dict, run: dict) -> None:
    """Write manifest `path` as `header` plus its runs, `run` replacing the entry started at the same time.

    Earlier runs are kept, so the manifest describes every run that wrote to the folder. A manifest
    from before it kept runs becomes the first entry. Written to a temporary file, then renamed.
    """
    runs = []
    if path.exists():
        old = orjson.loads(path.read_bytes())
        if "runs" in old:
            runs = old["runs"]
        else:
            legacy = {"started_at": "created_at", "finished_at": "finished_at", "command": "command", "options": "settings",
                      "versions": "versions", "counts": "counts"}
            runs = [{key: old.get(was) for key, was in legacy.items()}]
    runs = [entry for entry in runs if entry.get("started_at") != run["started_at"]] + [run]
    files.write_bytes(path, orjson.dumps(header | {"runs": runs}, option=orjson.OPT_INDENT_2) + b"\n")


class TraceStore:
    """Journal and shards of one worker (`tag`) in `out`; use as a context manager.

    `rejected` counts the journal lines it moved to `rejected_path` since it was created.
    """

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
        self._journal_file = None
        self._rows: list[dict] = []
        self._journal_opened = 0.0
        self._lock = None
        self.rejected_path = out / JOURNAL_DIR / f"rejected-{tag}.jsonl"
        self.rejected = 0

    def __enter__(self) -> TraceStore:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        lock = files.open_append(self.journal_dir / "lock")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise UsageError(f"{self.out}: another `r1distill generate` is writing shard {self.tag} here; wait for it or use another -o") from err
            self._lock = lock
            self.recover()
        except BaseException:
            # __exit__ does not run when __enter__ raises: a lock kept open here would refuse every later
            # run of this process (the data-parallel parent, a notebook) until garbage collection.
            self._release()
            lock.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        """Close the journal (kept on disk for the next run's recovery) and give up the lock."""
        if self._journal is not None:
            self._journal_file.close()
            self._journal = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def recover(self) -> int:
        """Turn journals left by a killed run into shards; returns the rows recovered."""
        # This worker's lock is held: a temporary here is one a killed run of it left.
        files.remove_temps(self.journal_dir, "*")
        recovered = 0
        for journal in sorted(self.journal_dir.glob("*.jsonl")):
            rows, unreadable = _read_journal(journal)
            self._reject(journal.stem, unreadable)
            # Rows journaled before replies were coerced may hold values the table refuses; most can be saved.
            rows = [coerce_row(row) for row in rows]
            if rows:
                recovered += self._write_shard(journal.stem, rows)
            journal.unlink()
        if recovered:
            log.info("recovered %d finished rows from an interrupted run", recovered)
        return recovered

    def append(self, row: dict) -> dict:
        """Journal one finished row, coerced to the trace schema (durable against a process kill once this returns).

        Returns the row as journaled.
        """
        row = coerce_row(row)
        if self._journal is None:
            self._journal = self._journal_path()
            self._journal_file = files.open_append(self._journal, buffering=0)
            self._journal_opened = time.monotonic()
        # One unbuffered write per row: once it returns the row is in the OS, safe from a process kill.
        line = memoryview(orjson.dumps(row) + b"\n")
        while line:
            line = line[self._journal_file.write(line) :]
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_shard or time.monotonic() - self._journal_opened >= self.seconds_per_shard:
            self.flush()
        return row

    def flush(self) -> None:
        """Turn the current journal into a shard."""
        if self._journal is None:
            return
        path = self._journal
        self._journal_file.close()
        self._journal = None
        self._seq += 1
        if self._rows:
            self._write_shard(path.stem, self._rows)
        self._rows = []
        path.unlink()

    def _journal_path(self) -> Path:
        return self.journal_dir / f"{self.run_id}-{self._seq:05d}.jsonl"

    def _write_shard(self, stem: str, rows: list[dict]) -> int:
        """Write `rows` as the shard named after journal `stem`; returns how many it holds (the rest are rejected)."""
        try:
            table = self.build_table(rows)
        except CONVERSION_ERRORS:
            rows = self._reject_unconvertible(stem, rows)
            if not rows:
                return 0
            table = self.build_table(rows)
        # Its temporary lives in this worker's journal folder, which no other worker's cleanup touches.
        files.write_parquet(self.out / f"traces-{self.tag}-{stem}.parquet", table, temp_dir=self.journal_dir)
        # The journal is deleted next: the shard's name must be on disk first.
        _fsync(self.out)
        return len(rows)

    def _reject_unconvertible(self, stem: str, rows: list[dict]) -> list[dict]:
        """The rows that convert on their own; the others go to the rejected file. Only run after a failed conversion."""
        good, bad = [], []
        for row in rows:
            try:
                self.build_table([row])
            except CONVERSION_ERRORS as err:
                bad.append((f"{type(err).__name__}: {first_line(err)}", row))
            else:
                good.append(row)
        self._reject(stem, bad)
        return good

    def _reject(self, stem: str, rejects: list[tuple[str, object]]) -> None:
        """Append (reason, row or line) pairs to the rejected file, durably: their journal is deleted next."""
        if not rejects:
            return
        at = datetime.now(timezone.utc).isoformat()
        lines = b"".join(
            orjson.dumps({"reason": reason, "journal": stem, "rejected_at": at, "row": row}, default=str) + b"\n" for reason, row in rejects
        )
        with files.open_append(self.rejected_path) as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.rejected += len(rejects)
        log.warning(
            "%d journal rows could not be stored and were moved to %s (first: %s); the next run generates them again",
            len(rejects), self.rejected_path, rejects[0][0],
        )

    def compact(self) -> int:
        """Drop rows that a newer row with the same id superseded; returns how many were dropped."""
        with files.open_append(self.out / JOURNAL_DIR / "compact.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Only compaction writes temporaries beside the shards, and it holds this lock.
            files.remove_temps(self.out, SHARD_GLOB)
            shards = sorted(self.out.glob(SHARD_GLOB))
            if not shards:
                return 0
            # A stale row may only go once the shard holding its newer row is surely on disk.
            _fsync(self.out)
            ids = pl.concat(
                [pl.read_parquet(f, columns=["id", "created_at"]).with_columns(pl.lit(i).alias("file")) for i, f in enumerate(shards)]
            )
            newest = ids.sort("created_at", "file").unique("id", keep="last").select("id", "created_at", "file")
            stale = ids.join(newest, on=["id", "created_at", "file"], how="anti")
            for index in stale["file"].unique().to_list():
                self._rewrite_without(shards[index], newest.filter(pl.col("file") == index))
            if stale.height:
                _fsync(self.out)
            return stale.height

    def _rewrite_without(self, path: Path, keep: pl.DataFrame) -> None:
        table = pq.read_table(path)
        rows = pl.from_arrow(table.select(["id", "created_at"])).with_row_index()
        kept = table.take(rows.join(keep, on=["id", "created_at"], how="semi")["index"].to_arrow())
        if kept.num_rows == 0:
            path.unlink()
            return
        files.write_parquet(path, kept)


def _fsync(folder: Path) -> None:
    """Flush a folder's entries (a rename, a removal) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_journal(path: Path) -> tuple[list[dict], list[tuple[str, object]]]:
    """The rows of a journal, and (reason, line) for each whole line that is not a JSON object."""
    rows, unreadable = [], []
    with open(path, "rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                # Torn: the process was killed mid-write, so the request was still in flight, not finished.
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                unreadable.append((f"not JSON: {first_line(err)}", line.decode("utf-8", "replace").rstrip("\n")))
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                unreadable.append(("not a JSON object", row))
    return rows, unreadable
