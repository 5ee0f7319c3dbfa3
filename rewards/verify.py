"""Math accuracy that can never hang: Math-Verify in worker processes that are killed on timeout.

Math-Verify's own timeouts use signals (so they fail outside the main thread) and cannot interrupt
C-level SymPy work: `\\boxed{9^{9^{9^{9}}}}` can pin a core for minutes. So verification runs in a
small pool of worker processes; the parent watches every item and kills a worker that overruns its
budget, records the item as `timeout` (its own verdict, not "incorrect": nobody knows), and starts a
fresh worker for the rest. Cheap cases never reach a worker (`fast_verdict`): an answer equal to the
gold as text or as an exact number is correct, two plain numbers far apart are incorrect. Each gold
answer is parsed once per prompt (the rows of one prompt travel together to one worker, which also
caches parsed golds that come back), and a gold that takes too long to parse times out all of its
rows in one budget.

Verdicts: correct (1.0), incorrect (0.0), no_answer (0.0: nothing to compare), gold_unparseable and
no_gold (None: cannot verify), timeout (None).

The prediction is what Math-Verify extracts from the response (`text.answer_region`: the text after
the thinking), the same call a plain `math_verify.parse(response)` makes, so verdicts match a naive row-by-row loop; only the
last `MAX_RESPONSE_CHARS` of a response are read, which bounds the cost of megabyte-long answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait

from r1distill.rewards.text import Judgement, extract_final_answer, normalize_answer

log = logging.getLogger(__name__)

MAX_RESPONSE_CHARS = 20_000
PIPELINE = 2
GOLD_CACHE = 10_000
CORRECT = Judgement(1.0, "correct")
INCORRECT = Judgement(0.0, "incorrect")
NO_ANSWER = Judgement(0.0, "no_answer")
GOLD_UNPARSEABLE = Judgement(None, "gold_unparseable")
NO_GOLD = Judgement(None, "no_gold")
TIMEOUT = Judgement(None, "timeout")

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_SIMPLE_FRACTION = re.compile(r"([+-]?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")


def exact_number(text: str) -> Fraction | None:
    r"""The exact value of a plain number or a \frac of two integers, else None.

    >>> exact_number("\\frac{3}{4}"), exact_number("-2.50"), exact_number("1,000")
    (Fraction(3, 4), Fraction(-5, 2), Fraction(1000, 1))
    >>> exact_number("x+1") is None
    True
    """
    text = "".join(text.split()).strip("$")
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(text):
        return Fraction(text)
    fraction = _SIMPLE_FRACTION.fullmatch(text)
    if fraction and int(fraction[3]) != 0:
        sign = -1 if fraction[1] == "-" else 1
        return sign * Fraction(int(fraction[2]), int(fraction[3]))
    return None


def fast_verdict(gold: str, response: str) -> Judgement | None:
    r"""A verdict without SymPy where it is certain, else None (ask Math-Verify).

    Correct: the last boxed answer equals the gold as text (after `normalize_answer`) or as an exact
    number. Incorrect: both are plain numbers that differ by more than 1e-4 relative, and the
    response has a single boxed answer (with several, Math-Verify accepts any of them).

    >>> fast_verdict("\\frac{1}{2}", "so \\boxed{0.5}"), fast_verdict("12", "\\boxed{13}")
    (Judgement(score=1.0, verdict='correct'), Judgement(score=0.0, verdict='incorrect'))
    >>> fast_verdict("x^2", "\\boxed{x \\cdot x}") is None
    True
    """
    extracted = extract_final_answer(response)
    if extracted is None:
        return None
    if normalize_answer(extracted) == normalize_answer(gold):
        return CORRECT
    expected, given = exact_number(gold), exact_number(extracted)
    if expected is None or given is None:
        return None
    if expected == given:
        return CORRECT
    if abs(expected - given) > Fraction(1, 10_000) * max(1, abs(expected)) and response.count("\\boxed") == 1:
        return INCORRECT
    return None


def _worker(conn: Connection) -> None:
    """Verify (gold, responses) tasks sent over `conn`, one reply per item, until told to stop."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # Parsing a gold costs more than verifying against it, and the same gold comes back (samples of a
    # prompt, popular answers); the parent routes equal golds to the same worker.
    golds: dict[str, list] = {}
    while True:
        task = conn.recv()
        if task is None:
            return
        task_id, gold, responses = task
        if gold not in golds:
            try:
                golds[gold] = math_verify.parse(f"${gold}$", parsing_timeout=None)
            except Exception:
                golds[gold] = []
            if len(golds) > GOLD_CACHE:
                del golds[next(iter(golds))]
        parsed_gold = golds[gold]
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
    tasks: deque[_Task] = field(default_factory=deque)
    """Tasks sent and not finished, in the order the worker runs them; the first one is running."""
    next_item: int = 0
    """Index of the running item within tasks[0]."""
    gold_parsed: bool = False
    """Whether tasks[0]'s gold has been parsed (a timeout before that is the gold's)."""
    deadline: float = 0.0


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
            verdict = fast_verdict(str(gold), response)
            if verdict is not None:
                results[row] = verdict
                continue
            if queue and queue[-1].gold == gold:
                queue[-1].rows.append(row)
                queue[-1].responses.append(response)
            else:
                queue.append(_Task(len(queue), str(gold), [row], [response]))
        self._run(queue, results)
        return results  # type: ignore[return-value]

    def _run(self, queue: deque[_Task], results: list[Judgement | None]) -> None:
        while queue or any(worker.tasks for worker in self._pool):
            # Two tasks in hand, so a worker never waits for the parent between tasks; a task goes to
            # the worker its gold hashes to when that one has room (its parse is cached there).
            while queue and any(len(w.tasks) < PIPELINE for w in self._pool):
                home = self._pool[hash(queue[0].gold) % len(self._pool)]
                worker = home if len(home.tasks) < PIPELINE else min(self._pool, key=lambda w: len(w.tasks))
                self._assign(worker, queue.popleft())
            busy = {worker.conn: worker for worker in self._pool if worker.tasks}
            now = time.monotonic()
            for conn in wait(list(busy), timeout=max(0.0, min(w.deadline for w in busy.values()) - now)):
                worker = busy[conn]
                try:
                    _, index, verdict = conn.recv()
                except (EOFError, OSError):
                    self._replace(worker, queue, results)
                    continue
                worker.deadline = time.monotonic() + self.timeout
                if index < 0:
                    worker.gold_parsed = True
                    continue
                task = worker.tasks[0]
                results[task.rows[index]] = Judgement(*verdict)
                worker.next_item = index + 1
                if worker.next_item == len(task.rows):
                    worker.tasks.popleft()
                    worker.next_item, worker.gold_parsed = 0, False
            now = time.monotonic()
            for worker in [w for w in busy.values() if w.tasks and w.deadline <= now]:
                self._replace(worker, queue, results)

    def _assign(self, worker: _Worker, task: _Task) -> None:
        if not worker.tasks:
            worker.deadline = time.monotonic() + self.timeout
        worker.tasks.append(task)
        worker.conn.send((task.task_id, task.gold, task.responses))

    def _replace(self, worker: _Worker, queue: deque[_Task], results: list[Judgement | None]) -> None:
        """Kill an overrunning (or dead) worker, time out its item, requeue the rest of its work."""
        worker.process.kill()
        worker.process.join()
        task = worker.tasks.popleft()
        for waiting in reversed(worker.tasks):
            queue.appendleft(waiting)
        worker.tasks.clear()
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
        self._pool[self._pool.index(worker)] = self._start()
