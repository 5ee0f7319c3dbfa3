"""How r1distill writes a file: never half of one, never through a link someone else planted.

Outputs often sit in shared folders (a team's runs/, a cluster's scratch, /tmp), and the next run
reads what the last one wrote. Two rules follow:

1. A reader never sees half a file. A torn run.json, pipeline.json or manifest would stop every later
   run, a torn shard would lose its rows. So a file is written whole to a temporary file in the same
   folder, flushed to disk, then renamed over its target (`os.replace` is atomic): a kill or a full
   disk at any moment leaves the old file or the new one, and a failed write removes its temporary.
2. A name others can guess is a name they can plant first. A symlink at a fixed temporary name
   (`.results.json.tmp` -> ~/.bashrc) turns `open(name, "w")` into "truncate ~/.bashrc". Temporary
   files get random names and are created with O_EXCL (`tempfile.mkstemp`), which neither opens an
   existing file nor follows a symlink; the few files opened in place (locks, append-only logs) are
   opened with O_NOFOLLOW, must be regular files, and are never truncated.

Only `kill -9` or a power cut leaves a temporary behind, named `.<target name>.<random>.tmp`
(`push` never uploads such names). `remove_temps` removes those names and nothing else, and is only
called by a stage on a folder it owns while it holds that folder's lock.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, BinaryIO

from r1distill.errors import UsageError

TEMP_SUFFIX = ".tmp"


def temp_glob(name: str) -> str:
    """The glob that matches this module's temporary files for targets named `name` (itself a glob).

    >>> temp_glob("results.json"), temp_glob("traces-*.parquet")
    ('.results.json.*.tmp', '.traces-*.parquet.*.tmp')
    """
    return f".{name}.*{TEMP_SUFFIX}"


@contextmanager
def replacing(path: Path, *, temp_dir: Path | None = None, private: bool = False) -> Iterator[BinaryIO]:
    """A binary handle whose bytes become `path` when the block ends without an exception.

    Until then `path` keeps its old content; on an exception the temporary file is removed. A symlink
    at `path` is replaced, never followed. `temp_dir` holds the temporary file instead of `path`'s
    folder (same filesystem; a folder no other process cleans). The file gets the permissions any new
    file would (the umask), or owner-only with `private`.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=temp_dir or path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if not private:
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            # Else a power cut after the rename could leave an empty file where the old one was.
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_bytes(path: Path, data: bytes, *, private: bool = False) -> None:
    """`path` holds `data`, written as `replacing` writes."""
    with replacing(path, private=private) as handle:
        handle.write(data)


def write_text(path: Path, text: str, *, private: bool = False) -> None:
    """`path` holds `text` (UTF-8), written as `replacing` writes.

    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text(folder / "note.txt", "old"); write_text(folder / "note.txt", "new")
    >>> (folder / "note.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('new', ['note.txt'])
    >>> import shutil; shutil.rmtree(folder)
    """
    write_bytes(path, text.encode("utf-8"), private=private)


def write_json(path: Path, value: object) -> None:
    """`path` holds `value` as indented JSON with a final newline, written as `replacing` writes."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_parquet(path: Path, table, *, temp_dir: Path | None = None) -> None:
    """`path` holds a polars DataFrame or a pyarrow Table as Parquet, written as `replacing` writes."""
    with replacing(path, temp_dir=temp_dir) as handle:
        if hasattr(table, "write_parquet"):
            table.write_parquet(handle)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, handle)


def open_append(path: Path, mode: str = "ab", **options) -> IO:
    """`path` opened to append (created if missing): never through a symlink, never truncated.

    For locks and append-only logs, whose names are fixed. Anything but a regular file at `path` (a
    symlink, a FIFO) is a UsageError naming it. `options` go to `open` (encoding, buffering).
    """
    # O_NONBLOCK: a FIFO planted at `path` fails to open instead of hanging; a regular file ignores it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):
            raise UsageError(_not_regular(path)) from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(_not_regular(path))
    return os.fdopen(fd, mode, **options)


def private_temp(folder: Path, name: str, data: bytes) -> Path:
    """A new file in `folder` holding `data` that only its owner can read, named as a temporary of `name`.

    For a file handed to another process (secrets included); the caller removes it when done.
    """
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        os.unlink(path)
        raise
    return Path(path)


def remove_temps(folder: Path, name: str) -> int:
    """Remove the temporary files a killed writer left in `folder` for targets named `name` (a glob); returns how many.

    Only names of this module's pattern go (see `temp_glob`); call it only on a folder the caller owns
    while no other writer uses it, or it would take a temporary still being written.
    """
    removed = 0
    for stale in folder.glob(temp_glob(name)):
        if not stale.is_dir() or stale.is_symlink():
            with suppress(FileNotFoundError):
                stale.unlink()
                removed += 1
    return removed


def output_problem(output: str | Path) -> str | None:
    """Why the file or folder `output` (-o) cannot be created, or None; stages check it before any work.

    The nearest folder above it that exists must be a folder, not a file (`-o afile/out`), and one this
    user may write to; the stage checks what `output` itself may already be.
    """
    path = Path(output).absolute()
    above = next(parent for parent in path.parents if parent.exists())
    if not above.is_dir():
        return f"-o {output}: {above} is a file, not a folder; choose a path whose parents are folders"
    if not os.access(above, os.W_OK):
        return f"-o {output}: {above} is not writable (read-only or not yours); choose another folder"
    return None


def _not_regular(path: Path) -> str:
    return f"{path}: is a symbolic link or not a regular file; r1distill never writes through one (remove it and run again)"


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (another thread may be creating files)."""
    with suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
