"""Math accuracy that can never hang: Math-Verify in worker processes that are killed on timeout.

Math-Verify's own timeouts use signals (so they fail outside the main thread) and cannot interrupt
C-level SymPy work: `\\boxed{9^{9^{9^{9}}}}` can pin a core for minutes. So verification runs in a
small pool of worker processes; the parent watches every item and kills a worker that overruns its
budget, records the item as `timeout` (its own verdict, not "incorrect": nobody knows), and starts a
fresh worker for the rest. Cheap cases never reach a worker (`fast_verdict`): an answer equal to the
gold as text or as an exact number is correct, two plain numbers far apart are incorrect. A gold answer
is parsed once for the pool: the rows of one prompt travel together to one worker, which sends the
parse back pickled, and every later task with that gold, on any worker, carries the parse instead of
parsing again (`prepare` parses a dataset's golds ahead: rl does it while the policy loads); a parse
that would not come back from pickling exactly as it was is not shared, and parsed where needed. A
(gold, response) pair repeated within one call (samples of a prompt that word their answer alike) is
verified once, and a gold that takes too long to parse times out all of its rows in one budget.

Verdicts: correct (1.0), incorrect (0.0), no_answer (0.0: nothing to compare), gold_unparseable and
no_gold (None: cannot verify), timeout (None), error (None: the worker died on it).

The pool must never be the thing that hangs or lingers. The parent never blocks on a worker: tasks
reach a worker through a sender thread, so a worker stuck in SymPy with a full pipe cannot stop the
parent from watching the clock. A worker that dies (a crash, the OOM killer, a script that starts the
pool without a `__main__` guard) is logged at WARNING with its exit status, its item is `error` (one
that died idle, between two calls, is replaced before it gets any), and
`MAX_DEATHS` deaths in a row stop the run with a `VerifierError`: a reward that is silently None for
every row is worse than a stopped run. Workers ignore Ctrl-C (the parent handles it and kills them) and
die with their parent, even while C code holds the GIL: on Linux the kernel kills a worker when the
forkserver exits, and the forkserver exits when the parent does.

The prediction is what Math-Verify extracts from the response (`text.answer_region`: the text after
the thinking), the same call a plain `math_verify.parse(response)` makes, so verdicts match a naive row-by-row loop; only the
last `text.ANSWER_CHARS` of a response are read, which bounds the cost of megabyte-long answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from queue import SimpleQueue

from r1distill import processes
from r1distill.errors import StageError
from r1distill.rewards.text import ANSWER_CHARS, Judgement, extract_final_answer, normalize_answer

log = logging.getLogger(__name__)

PIPELINE = 2
GOLD_CACHE = 100_000
"""Parsed gold answers the pool keeps (pickles of a few hundred bytes each), the oldest dropped first."""
MAX_SHARED_PARSE = 4_096
"""Bytes of a pickled gold parse beyond which it is not shared (MATH-500's largest is 365)."""
MAX_DEATHS = 3
"""Worker deaths in a row (timeouts not counted) after which the run stops with a VerifierError."""
CORRECT = Judgement(1.0, "correct")
INCORRECT = Judgement(0.0, "incorrect")
NO_ANSWER = Judgement(0.0, "no_answer")
GOLD_UNPARSEABLE = Judgement(None, "gold_unparseable")
NO_GOLD = Judgement(None, "no_gold")
TIMEOUT = Judgement(None, "timeout")
ERROR = Judgement(None, "error")

MAX_NUMBER_CHARS = 600
"""Longest number (in characters) the fast path converts: Python refuses to turn a string of more than
`sys.get_int_max_str_digits()` digits into an int (4,300 by default, never under 640), and the
conversion costs quadratic time. A longer number goes to Math-Verify in a worker, whose time is bounded."""
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_SIMPLE_FRACTION = re.compile(r"([+-]?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")


def exact_number(text: str) -> Fraction | None:
    r"""The exact value of a plain number or a \frac of two integers, else None.

    >>> exact_number("\\frac{3}{4}"), exact_number("-2.50"), exact_number("1,000")
    (Fraction(3, 4), Fraction(-5, 2), Fraction(1000, 1))
    >>> exact_number("x+1") is None
    True
    >>> exact_number("9" * 5_000) is None  # too long to convert safely: Math-Verify decides
    True
    """
    text = "".join(text.split()).strip("$")
    if len(text) > MAX_NUMBER_CHARS:
        return None
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


class VerifierError(StageError):
    """The verifier's workers keep dying, so no answer can be checked; the message says what to do."""


def _die_with_parent() -> None:
    """Tie this worker's life to the pool's parent, even while SymPy runs C code that holds the GIL."""
    # Ctrl-C reaches the whole process group; the parent handles it by killing the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Every forkserver child inherits the write end of the pipe whose end of file tells the
    # forkserver that its parent is gone: a worker holding it would keep the forkserver, its own
    # parent, alive after the parent died. Workers start no processes, so they let it go.
    from multiprocessing import forkserver

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    if not processes.die_with_parent():
        # Elsewhere a thread notices, at the latest when SymPy next lets go of the GIL.
        processes.exit_when_gone(os.getppid(), parent=True)


def _unpickle(blob: bytes) -> list:
    """A parsed gold from `_pickle`'s bytes, made by a worker from a gold (never a foreign pickle).

    SymPy rebuilds an expression by calling its constructors, which evaluate by default: Math-Verify's
    unevaluated `2^{10}` would come back as 1024 (a different expression for `verify`), and a
    `9^{9^{9^{9}}}` would be computed. Rebuilt without evaluation, it is the expression that was parsed.
    """
    import sympy

    with sympy.evaluate(False):
        return pickle.loads(blob)


def _state(parsed: list) -> str:
    """A parse as text: its tree (`srepr`: every node, argument and assumption) and the instance
    attributes of its nodes, which SymPy's pickling drops (latex2sympy keeps the written order of a set
    or of a chain like `y = 2x = 4` in one, and Math-Verify reads it)."""
    import sympy

    parts = [sympy.srepr(parsed)]
    for item in parsed:
        elements = item if isinstance(item, sympy.MatrixBase) else [item] if isinstance(item, sympy.Basic) else []
        for node in (node for element in elements for node in sympy.preorder_traversal(element)):
            if getattr(node, "__dict__", None):
                parts.append(f"{type(node).__name__} {sorted((key, sympy.srepr(value)) for key, value in vars(node).items())}")
    return "\n".join(parts)


def _pickle(parsed: list) -> bytes | None:
    """A parsed gold as bytes for other workers, or None (parsed again where needed) when `_unpickle`
    would not give back the same parse (`_state`: a chain of equations or a set, whose written order
    pickling loses; a union of intervals with infinite ends, which SymPy cannot rebuild unevaluated),
    or when it is too big to travel with every task and stay in the pool's memory."""
    try:
        blob = pickle.dumps(parsed)
        return blob if len(blob) <= MAX_SHARED_PARSE and _state(_unpickle(blob)) == _state(parsed) else None
    except Exception:
        return None


def _worker(conn: Connection) -> None:
    """Verify (gold, responses) tasks sent over `conn`, one reply per item, until the parent goes."""
    _die_with_parent()
    if hasattr(sys, "set_int_max_str_digits"):  # Python before 3.10.7 has no such limit
        # Numbers too long for the parent's fast path end up here (an answer of 5,000 digits): SymPy
        # converts them like any other, and the parent's clock bounds what that may cost.
        sys.set_int_max_str_digits(0)
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        try:
            task_id, gold, parsed, responses = conn.recv()
        except EOFError:
            return
        # Parsing a gold costs more than verifying against it (Math-Verify's LaTeX parser is pure
        # Python), and the same gold comes back (samples of a prompt, later epochs): the parse goes
        # back to the parent, pickled, and comes with every later task for that gold.
        fresh = None
        if parsed is not None:
            parsed_gold = _unpickle(parsed)
        else:
            try:
                parsed_gold = math_verify.parse(f"${gold}$", parsing_timeout=None)
            except Exception:
                parsed_gold = []
            fresh = _pickle(parsed_gold) or b""
        conn.send((task_id, -1, fresh))
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


def _send(conn: Connection, outbox: SimpleQueue) -> None:
    """Pass one worker the tasks put in `outbox` (None: stop), in a thread of the parent.

    A task larger than the pipe's buffer waits here until the worker has finished the one before; in
    the parent's loop it would stop the clock that times the worker out.
    """
    while (task := outbox.get()) is not None:
        try:
            conn.send(task)
        except OSError:
            return  # the worker is gone: the parent's loop reads its end of file and replaces it


def _default_workers() -> int:
    """The cores this process may run on (all of them on macOS, which has no sched_getaffinity), shared
    with the other training processes of its machine under `accelerate launch` or torchrun
    (LOCAL_WORLD_SIZE): eight GPU processes on 16 cores get two workers each, not sixteen."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        processes_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes_here = 1
    return max(1, cores // processes_here)


def _exit_cause(exitcode: int | None) -> str:
    """How a worker ended, for a log line: a signal by name (the OOM killer sends SIGKILL), else its exit code."""
    if exitcode is None or exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")


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
    outbox: SimpleQueue
    """Tasks for the `sender` thread to pass on."""
    sender: threading.Thread
    tasks: deque[_Task] = field(default_factory=deque)
    """Tasks handed over and not finished, in the order the worker runs them; the first one is running."""
    next_item: int = 0
    """Index of the running item within tasks[0]."""
    gold_parsed: bool = False
    """Whether tasks[0]'s gold has been parsed (a timeout before that is the gold's)."""
    deadline: float = 0.0


@dataclass
class VerifierPool:
    """A pool of Math-Verify workers with a hard per-item time budget; use as a context manager."""

    workers: int = field(default_factory=_default_workers)
    """Worker processes (default: the usable cores, shared among the training processes of the machine)."""
    timeout: float = 5.0
    """Seconds one item (or one gold answer's parsing) may take before its worker is killed."""

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that already imported Math-Verify and SymPy, and this module with
        # the package around it (pyarrow included): a replacement for a killed worker, started in the
        # middle of a step, imports none of them again. (Preloading the caller's main module as well
        # would save its import too, but makes runpy warn in every worker of `python -m r1distill.cli`.)
        self._context.set_forkserver_preload(["math_verify", __name__])
        self._pool: list[_Worker] = []
        self._golds: dict[str, bytes] = {}
        """Gold answer -> its pickled parse, sent with every task for that gold (b"": cannot be sent, parse it)."""
        self._deaths = 0
        self.timeouts = 0
        self.gold_parses = 0
        """Gold answers the workers parsed (a gold whose parse was already known is not counted)."""
        self.verified = 0
        """Rows a worker gave its verdict (rows the fast path or a repeat settled, timeouts and errors not
        counted): how much of the work needed SymPy at all."""

    def __enter__(self) -> VerifierPool:
        self._pool = [self._start() for _ in range(self.workers)]
        return self

    def __exit__(self, *exc) -> None:
        # Workers hold nothing worth a clean exit, and one may be stuck in SymPy.
        for worker in self._pool:
            self._stop(worker)
        self._pool = []

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        outbox: SimpleQueue = SimpleQueue()
        sender = threading.Thread(target=_send, args=(parent, outbox), name=f"verifier-send-{process.pid}", daemon=True)
        sender.start()
        return _Worker(process, parent, outbox, sender)

    @staticmethod
    def _stop(worker: _Worker, grace: float = 0.0) -> None:
        """Kill a worker (after `grace` seconds to exit by itself, keeping its own exit status) and its sender."""
        worker.process.join(grace)
        worker.process.kill()
        worker.process.join()
        # A sender blocked on the dead worker's pipe has its send fail; an idle one reads the None.
        worker.outbox.put(None)
        worker.sender.join()
        worker.conn.close()

    def judge(self, golds: Sequence[str | None], responses: Sequence[str | None]) -> list[Judgement]:
        """One Judgement per (gold, response) pair; consecutive rows with the same gold share one parse,
        and a pair seen earlier in the call is verified once and shares that verdict."""
        results: list[Judgement | None] = [None] * len(golds)
        queue: deque[_Task] = deque()
        verified = self.verified
        # The samples of one prompt often state the same answer in the same words: Math-Verify reads
        # nothing but the pair, so a repeat takes the first one's verdict (a timeout too: it would
        # only cost another full budget) instead of a second round of SymPy.
        first: dict[tuple[str, str], int] = {}
        repeats: list[tuple[int, int]] = []
        for row, (gold, response) in enumerate(zip(golds, responses)):
            if gold is None or not str(gold).strip():
                results[row] = NO_GOLD
                continue
            gold, response = str(gold), (response or "")[-ANSWER_CHARS:]
            verdict = fast_verdict(gold, response)
            if verdict is not None:
                results[row] = verdict
                continue
            if (gold, response) in first:
                repeats.append((row, first[gold, response]))
                continue
            first[gold, response] = row
            if queue and queue[-1].gold == gold:
                queue[-1].rows.append(row)
                queue[-1].responses.append(response)
            else:
                queue.append(_Task(len(queue), gold, [row], [response]))
        self._run(queue, results)
        for row, source in repeats:
            results[row] = results[source]
            self.timeouts += results[row] is TIMEOUT
        log.debug("%d of %d rows needed Math-Verify, %d repeated an earlier pair", self.verified - verified, len(golds), len(repeats))
        return results  # type: ignore[return-value]

    def prepare(self, golds: Iterable[str | None], stop: threading.Event | None = None) -> int:
        """Parse gold answers before the rows that need them arrive, each distinct one once, in the
        workers under the same budget; returns how many were parsed.

        rl calls it while the policy loads, when the workers would sit idle: a training step then only
        parses and verifies the policy's answers. Exact numbers are skipped (the fast path settles
        their rows, and they parse quickly when it does not), and so are golds beyond what the pool
        keeps. Once `stop` is set it only finishes the golds in the workers' hands (two each at most);
        golds left over are parsed when their rows come, as without it.
        """
        todo = [gold for gold in dict.fromkeys(str(g) for g in golds if g is not None and str(g).strip())
                if gold not in self._golds and exact_number(gold) is None]
        parsed = self.gold_parses
        self._run(deque(_Task(i, gold, [], []) for i, gold in enumerate(todo[: GOLD_CACHE - len(self._golds)])), [], stop)
        return self.gold_parses - parsed

    def _run(self, queue: deque[_Task], results: list[Judgement | None], stop: threading.Event | None = None) -> None:
        # Between calls nobody watches the workers: one that died meanwhile (the OOM killer between two
        # GRPO steps) is replaced, and counted, before it is handed rows it would never see. An idle
        # worker has nothing to say, so a readable pipe is the end of file its death left: the kernel
        # closes it at once, while is_alive() waits for the forkserver to report the exit, which can
        # come after the next rows were handed out (1 call in 40 here).
        for worker in [w for w in self._pool if not w.process.is_alive() or (not w.tasks and w.conn.poll())]:
            self._retire(worker, queue, results, died=True)
        while True:
            if stop is not None and stop.is_set():
                queue.clear()  # what the workers hold is finished; the rest is dropped
            if not queue and not any(worker.tasks for worker in self._pool):
                return
            # An idle worker takes the next task. A second task in hand saves a worker the wait for the
            # parent between tasks, but only while the queue has work for every worker: a GRPO batch
            # has a few tasks, and one queued behind a long parse would keep the batch waiting while
            # another worker sits idle.
            while queue:
                idle = [w for w in self._pool if not w.tasks]
                if idle:
                    worker = idle[0]
                elif len(queue) >= len(self._pool) and any(len(w.tasks) < PIPELINE for w in self._pool):
                    worker = min(self._pool, key=lambda w: len(w.tasks))
                else:
                    break
                self._assign(worker, queue.popleft())
            # Idle workers are watched too: one that dies between tasks is replaced, and counted.
            watched = {worker.conn: worker for worker in self._pool}
            deadline = min(w.deadline for w in self._pool if w.tasks)
            for conn in wait(list(watched), timeout=max(0.0, deadline - time.monotonic())):
                worker = watched[conn]
                try:
                    _, index, verdict = conn.recv()
                except (EOFError, OSError):
                    self._retire(worker, queue, results, died=True)
                    continue
                self._deaths = 0
                worker.deadline = time.monotonic() + self.timeout
                task = worker.tasks[0]
                if index < 0:
                    worker.gold_parsed = True
                    if verdict is not None:  # the worker parsed the gold: its pickle, for every later task
                        self._remember(task.gold, verdict)
                else:
                    results[task.rows[index]] = Judgement(*verdict)
                    self.verified += 1
                    worker.next_item = index + 1
                if worker.next_item == len(task.rows):
                    worker.tasks.popleft()
                    worker.next_item, worker.gold_parsed = 0, False
            now = time.monotonic()
            for worker in [w for w in watched.values() if w.tasks and w.deadline <= now]:
                self._retire(worker, queue, results, died=False)

    def _assign(self, worker: _Worker, task: _Task) -> None:
        if not worker.tasks:
            worker.deadline = time.monotonic() + self.timeout
        worker.tasks.append(task)
        worker.outbox.put((task.task_id, task.gold, self._golds.get(task.gold) or None, task.responses))

    def _remember(self, gold: str, parsed: bytes) -> None:
        self.gold_parses += 1
        self._golds[gold] = parsed
        if len(self._golds) > GOLD_CACHE:
            del self._golds[next(iter(self._golds))]

    def _retire(self, worker: _Worker, queue: deque[_Task], results: list[Judgement | None], died: bool) -> None:
        """Replace a worker that died or overran its budget: its item gets `error` or `timeout`, the rest is requeued."""
        pid = worker.process.pid
        self._stop(worker, grace=1.0 if died else 0.0)
        stuck: list[int] = []
        if worker.tasks:
            task = worker.tasks.popleft()
            queue.extendleft(reversed(worker.tasks))
            if not worker.gold_parsed:
                stuck = task.rows  # it never got past the gold: every row of it shares the fate
            else:
                stuck = task.rows[worker.next_item : worker.next_item + 1]
                rest = slice(worker.next_item + 1, None)
                if task.rows[rest]:
                    queue.appendleft(_Task(task.task_id, task.gold, task.rows[rest], task.responses[rest]))
        for row in stuck:
            results[row] = ERROR if died else TIMEOUT
        if died:
            self._deaths += 1
            cause = _exit_cause(worker.process.exitcode)
            log.warning("Math-Verify worker %d %s; %d row(s) get verdict 'error'; worker restarted", pid, cause, len(stuck))
            if self._deaths >= MAX_DEATHS:
                raise VerifierError(
                    f"Math-Verify workers died {self._deaths} times in a row, the last one {cause}: if they are killed, "
                    "free memory or lower --workers; if they exit at start, start the verifier from a script only "
                    'under `if __name__ == "__main__":`'
                ) from None  # the dead worker's broken pipe adds nothing
        else:
            self.timeouts += len(stuck)
            log.debug("verification timed out after %.1fs; worker restarted", self.timeout)
        self._pool[self._pool.index(worker)] = self._start()
