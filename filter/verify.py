"""Math accuracy that can never hang: Math-Verify in worker processes that are killed on timeout.

Math-Verify's own timeouts use signals (so they fail outside the main thread) and cannot interrupt
C-level SymPy work: `\\boxed{9^{9^{9^{9}}}}` can pin a core for minutes. So verification runs in a
small pool of worker processes; the parent watches every item and kills a worker that overruns its
budget, records the item as `timeout` (its own verdict, not "incorrect": nobody knows), and starts a
fresh worker for the rest. Cheap cases never reach a worker: an extracted answer that equals the gold
after `rewards.normalize_answer` is correct at once. Each gold answer is parsed once per prompt in a worker
(the rows of one prompt travel together), and a gold that takes too long to parse times out all of
its rows in one budget.

Verdicts: correct (1.0), incorrect (0.0), no_answer (0.0: nothing to compare), gold_unparseable and
no_gold (None: cannot verify), timeout (None).

The prediction is what Math-Verify extracts from the response (the text after the thinking), the same
call a plain `math_verify.parse(response)` makes, so verdicts match a naive row-by-row loop; only the
last `MAX_RESPONSE_CHARS` of a response are read, which bounds the cost of megabyte-long answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from r1distill.filter.rewards import Judgement, extract_final_answer, normalize_answer

log = logging.getLogger(__name__)

MAX_RESPONSE_CHARS = 20_000
CORRECT = Judgement(1.0, "correct")
INCORRECT = Judgement(0.0, "incorrect")
NO_ANSWER = Judgement(0.0, "no_answer")
GOLD_UNPARSEABLE = Judgement(None, "gold_unparseable")
NO_GOLD = Judgement(None, "no_gold")
TIMEOUT = Judgement(None, "timeout")

def _worker(conn: Connection) -> None:
    """Verify (gold, responses) tasks sent over `conn`, one reply per item, until told to stop."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        task = conn.recv()
        if task is None:
            return
        task_id, gold, responses = task
        try:
            parsed_gold = math_verify.parse(f"${gold}$", parsing_timeout=None)
        except Exception:
            parsed_gold = []
        conn.send((task_id, -1, None))
        for index, response in enumerate(responses):
            if not parsed_gold:
                verdict = GOLD_UNPARSEABLE
            else:
                try:
                    predicted = math_verify.parse(response, parsing_timeout=None)
                    if not predicted:
                        verdict = NO_ANSWER
                    elif math_verify.verify(parsed_gold, predicted, timeout_seconds=None):
                        verdict = CORRECT
                    else:
                        verdict = INCORRECT
                except Exception:
                    # Math-Verify raising (deep recursion on pathological LaTeX, say) means it could not read the answer.
                    verdict = NO_ANSWER
            conn.send((task_id, index, tuple(verdict)))


@dataclass
class _Task:
    task_id: int
    gold: str
    rows: list[int]
    responses: list[str]


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: _Task | None = None
    next_item: int = 0
    deadline: float = 0.0
    gold_parsed: bool = False


@dataclass
class VerifierPool:
    """A pool of Math-Verify workers with a hard per-item time budget; use as a context manager."""

    workers: int = field(default_factory=lambda: max(1, len(os.sched_getaffinity(0))))
    """Worker processes (default: the usable cores)."""
    timeout: float = 5.0
    """Seconds one item (or one gold answer's parsing) may take before its worker is killed."""

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that already imported Math-Verify and SymPy: a replacement for
        # a killed worker starts in milliseconds, not seconds.
        self._context.set_forkserver_preload(["math_verify"])
        self._pool: list[_Worker] = []
        self.timeouts = 0

    def __enter__(self) -> VerifierPool:
        self._pool = [self._start() for _ in range(self.workers)]
        return self

    def __exit__(self, *exc) -> None:
        for worker in self._pool:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            worker.process.join(1)
            if worker.process.is_alive():
                worker.process.kill()
        self._pool = []

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def judge(self, golds: Sequence[str | None], responses: Sequence[str | None]) -> list[Judgement]:
        """One Judgement per (gold, response) pair; consecutive rows with the same gold share one parse."""
        results: list[Judgement | None] = [None] * len(golds)
        queue: deque[_Task] = deque()
        for row, (gold, response) in enumerate(zip(golds, responses)):
            if gold is None or not str(gold).strip():
                results[row] = NO_GOLD
                continue
            response = (response or "")[-MAX_RESPONSE_CHARS:]
            extracted = extract_final_answer(response)
            if extracted is not None and normalize_answer(extracted) == normalize_answer(str(gold)):
                results[row] = CORRECT
                continue
            if queue and queue[-1].gold == gold:
                queue[-1].rows.append(row)
                queue[-1].responses.append(response)
            else:
                queue.append(_Task(len(queue), str(gold), [row], [response]))
        self._run(queue, results)
        return results  # type: ignore[return-value]

    def _run(self, queue: deque[_Task], results: list[Judgement | None]) -> None:
        busy: dict[Connection, _Worker] = {}
        while queue or busy:
            for worker in self._pool:
                if worker.task is None and queue:
                    self._assign(worker, queue.popleft())
                    busy[worker.conn] = worker
            now = time.monotonic()
            ready = wait(list(busy), timeout=max(0.0, min(w.deadline for w in busy.values()) - now)) if busy else []
            for conn in ready:
                worker = busy[conn]
                try:
                    _, index, verdict = conn.recv()
                except (EOFError, OSError):
                    self._replace(worker, busy, queue, results)
                    continue
                worker.deadline = time.monotonic() + self.timeout
                if index < 0:
                    worker.gold_parsed = True
                    continue
                results[worker.task.rows[index]] = Judgement(*verdict)
                worker.next_item = index + 1
                if worker.next_item == len(worker.task.rows):
                    worker.task = None
                    del busy[conn]
            now = time.monotonic()
            for worker in [w for w in busy.values() if w.deadline <= now]:
                self._replace(worker, busy, queue, results)

    def _assign(self, worker: _Worker, task: _Task) -> None:
        worker.task, worker.next_item, worker.gold_parsed = task, 0, False
        worker.deadline = time.monotonic() + self.timeout
        worker.conn.send((task.task_id, task.gold, task.responses))

    def _replace(self, worker: _Worker, busy: dict, queue: deque[_Task], results: list[Judgement | None]) -> None:
        """Kill an overrunning (or dead) worker, time out its item, requeue the rest of its task."""
        task = worker.task
        worker.process.kill()
        worker.process.join()
        del busy[worker.conn]
        if not worker.gold_parsed:
            stuck = task.rows  # the gold itself would not parse in time: every row of it times out
        else:
            stuck = task.rows[worker.next_item : worker.next_item + 1]
            rest = slice(worker.next_item + 1, None)
            if task.rows[rest]:
                queue.appendleft(_Task(task.task_id, task.gold, task.rows[rest], task.responses[rest]))
        for row in stuck:
            results[row] = TIMEOUT
        self.timeouts += len(stuck)
        log.debug("verification timed out after %.1fs; worker restarted", self.timeout)
        index = self._pool.index(worker)
        self._pool[index] = self._start()
