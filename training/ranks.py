"""Several training processes (`accelerate launch`, torchrun): the data is prepared once and shared.

Under `accelerate launch` every rank runs the whole stage. Reading, checking and tokenizing a dataset
of R1 traces is minutes of single-threaded Python per process, so eight ranks would do it eight times.
`once` runs that work on the main process first and saves its result as Arrow files (datasets) and a
pickle (the rest) in a folder of r1distill's cache; the other ranks wait, then read it, as TRL's own
`global_then_local_main_first` does for its dataset maps: on a filesystem the nodes share, only the
global main prepares; on node-local disks the local main of each node does, once per node. The folder
is removed once every rank holds the result in memory, so a run leaves nothing behind.

The wait is a barrier of the process group that the trainer then reuses, initialised here as
transformers' TrainingArguments would (the CPU under ACCELERATE_USE_CPU, its ddp_timeout). One process
is the single-process path as before: the work runs in place, nothing is written or waited for.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from r1distill import models
from r1distill.errors import StageError, UsageError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

DDP_TIMEOUT = 1800
"""Seconds a rank waits at a barrier: TrainingArguments' ddp_timeout default, which covers the main's preparation."""

_RESULT = "result.pkl"
_FAILED = "failed.json"


def world_size() -> int:
    """Training processes in the run: `accelerate launch` and torchrun set WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process of global rank 0 (the only one in a single-process run)."""
    return int(os.environ.get("RANK", "0")) == 0


def once(compute: Callable[[], T], timeout: int = DDP_TIMEOUT) -> tuple[T, bool]:
    """(compute()'s result, whether this process computed it): computed by one process per filesystem and
    read by the others (see the module docstring). When the computing process raises, the others raise too
    as soon as it has, without doing the work: the same UsageError (each rank says its one line, as they
    did when every rank read the data), or a StageError pointing at its messages, and the folder is removed."""
    if world_size() == 1:
        return compute(), True
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=timedelta(seconds=timeout))
    # A name new to this launch: a folder a killed earlier run left can never be read as this run's.
    token = broadcast_object_list([uuid.uuid4().hex if state.is_main_process else None])[0]
    folder = models.cache_dir() / "shared" / token
    result, computed, failure = None, False, None
    # Failures are kept inside the block: accelerate releases the others only when the leaders leave it.
    with state.main_process_first(), state.local_main_process_first():
        if (folder / _FAILED).exists():
            failure = _failure(folder / _FAILED)
        elif not (folder / _RESULT).exists():
            try:
                result, computed = compute(), True
                _save(result, folder)
            except Exception as err:
                failure = err
                folder.mkdir(parents=True, exist_ok=True)
                said = {"usage": isinstance(err, UsageError), "message": str(err) if isinstance(err, UsageError) else first_line(err)}
                (folder / _FAILED).write_text(json.dumps(said), encoding="utf-8")
    if failure is None and not computed:
        result = _load(folder)
        log.debug("rank %d read the data the main process prepared (%s)", state.process_index, folder)
    state.wait_for_everyone()  # every rank holds the result (or knows the failure): the folder can go
    if state.is_local_main_process:
        shutil.rmtree(folder, ignore_errors=True)
    if failure is not None:
        raise failure
    return result, computed


def _failure(path: Path) -> Exception:
    """The error of the process that failed to prepare the data, for the others to raise."""
    said = json.loads(path.read_text(encoding="utf-8"))
    if said["usage"]:
        return UsageError(said["message"])
    return StageError(f"the main process failed while preparing the data ({said['message']}); its messages are above")


class _Pickler(pickle.Pickler):
    """Pickles a result with each datasets.Dataset in it saved beside as Arrow files: a tokenized dataset is
    too large for one pickle."""

    def __init__(self, file, folder: Path) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.folder = folder
        self.saved = 0

    def persistent_id(self, obj):
        import datasets

        if not isinstance(obj, datasets.Dataset):
            return None
        name = f"dataset-{self.saved}"
        self.saved += 1
        obj.save_to_disk(str(self.folder / name))
        return name


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, folder: Path) -> None:
        super().__init__(file)
        self.folder = folder

    def persistent_load(self, name):
        import datasets

        # In memory, as the main process holds it: the folder goes away, and the trainer's own maps then
        # run as they would in one process.
        return datasets.load_from_disk(str(self.folder / name), keep_in_memory=True)


def _save(result, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / _RESULT).open("wb") as out:  # the others read it only after the barrier
        _Pickler(out, folder).dump(result)


def _load(folder: Path):
    with (folder / _RESULT).open("rb") as source:
        return _Unpickler(source, folder).load()
