"""Math accuracy in killable worker processes: verdicts, the string fast path, and timeouts.

A test about the workers uses answers only SymPy can decide (`fast_verdict` is None for each, checked)
and proves through `VerifierPool.verified` that a worker gave the verdict, not the parent.

    PYTHONPATH=.. python -m pytest -q tests/test_verify.py
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from r1distill.rewards.verify import VerifierPool, fast_verdict

# Math-Verify evaluates this power in C with the GIL held: only killing its worker stops it.
STUCK = "\\boxed{9^{9^{9^{9}}}}"


def _sympy_only(golds, responses) -> None:
    """Fail unless the parent's fast path leaves every pair to a worker."""
    decided = [(gold, response) for gold, response in zip(golds, responses) if fast_verdict(gold, response) is not None]
    assert not decided, f"the fast path decides {decided}: not a test of the workers"


def _worker_pids() -> set[int]:
    """The verifier workers alive now: children of this process's forkserver."""
    return {worker.pid for child in psutil.Process().children() for worker in child.children() if worker.status() != psutil.STATUS_ZOMBIE}


def test_verdicts():
    # Equal only as expressions, intervals, sets, matrices: no text or number comparison settles them.
    golds = ["\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{2}}{2}", "(1,3]\\cup[5,\\infty)", "(1,3]\\cup[5,\\infty)", "\\{1, 2\\}",
             "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "x^2", "\\"]
    responses = ["So \\boxed{\\frac{2}{\\sqrt{8}}}.", "So \\boxed{\\frac{2}{\\sqrt{2}}}.", "\\boxed{[5,\\infty)\\cup(1,3]}",
                 "\\boxed{(1,3)\\cup[5,\\infty)}", "\\boxed{\\{2,1\\}}", "\\boxed{\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}}",
                 "I do not know.", "\\boxed{3}"]
    _sympy_only(golds, responses)
    with VerifierPool(workers=2, timeout=10) as pool:
        judgements = pool.judge(golds + [None], responses + ["\\boxed{3}"])
        assert pool.verified == len(golds), "every row but the one without a gold was a worker's verdict"
    assert [j.verdict for j in judgements] == ["correct", "incorrect", "correct", "incorrect", "correct", "incorrect", "no_answer",
                                               "gold_unparseable", "no_gold"]
    assert [j.score for j in judgements] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, None, None]


def test_what_the_fast_path_settles_never_reaches_a_worker():
    with VerifierPool(workers=1, timeout=10) as pool:
        verdicts = [j.verdict for j in pool.judge(["\\frac{1}{2}", "12", "12"], ["So \\boxed{0.5}.", "\\boxed{12}", "\\boxed{13}"])]
        assert pool.verified == 0
    assert verdicts == ["correct", "correct", "incorrect"]


def test_a_pathological_answer_times_out_and_the_replacement_worker_verifies_the_rest():
    golds = ["1", "\\{1, 2\\}", "x^2 + 2x + 1", "x^2 + 2x + 1"]
    responses = [STUCK, "\\boxed{\\{2,1\\}}", "\\boxed{(x+1)^2}", "\\boxed{(x-1)^2}"]
    _sympy_only(golds, responses)
    started = time.monotonic()
    # A budget that a fresh worker's first parse (Math-Verify builds its LaTeX parser then) meets on a busy machine.
    with VerifierPool(workers=1, timeout=3.0) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
        assert (pool.timeouts, pool.verified) == (1, 3), "one worker killed, its replacement gave the other verdicts"
        again = [j.verdict for j in pool.judge(["y = 2x + 3"], ["\\boxed{y = 3 + 2x}"])]
        assert pool.verified == 4, "the replacement worker keeps working"
    assert verdicts == ["timeout", "correct", "correct", "incorrect"]
    assert again == ["correct"]
    assert time.monotonic() - started < 30


@pytest.mark.timeout(60)
def test_a_worker_killed_between_calls_is_replaced_before_it_is_given_rows():
    # Between two GRPO steps (or two filter batches) the OOM killer takes an idle worker: the next
    # rows go to a fresh worker, none of them gets the dead one's 'error'. The forkserver reports a
    # death a moment after the worker is gone (it raced the next call about once in 40 kills), so the
    # kill is repeated.
    with VerifierPool(workers=1, timeout=20) as pool:
        assert [j.verdict for j in pool.judge(["\\frac{\\sqrt{2}}{2}"], ["\\boxed{\\frac{2}{\\sqrt{8}}}"])] == ["correct"]
        for kill in range(1, 13):
            (killed,) = _worker_pids()
            os.kill(killed, signal.SIGKILL)
            psutil.wait_procs([psutil.Process(killed)], timeout=10)
            golds, responses = [f"(1,{kill + 2}]\\cup[{kill + 4},\\infty)"], [f"\\boxed{{[{kill + 4},\\infty)\\cup(1,{kill + 2}]}}"]
            _sympy_only(golds, responses)
            assert [j.verdict for j in pool.judge(golds, responses)] == ["correct"], f"kill {kill}"
            assert pool.verified == kill + 1, "a worker gave the verdict after the kill"
            assert killed not in _worker_pids() and len(_worker_pids()) == 1


def test_fast_path_decides_only_what_is_certain():
    from r1distill.rewards.verify import fast_verdict

    assert fast_verdict("\\frac{3}{4}", "\\boxed{0.75}").verdict == "correct"
    assert fast_verdict("1,000", "\\boxed{1000}").verdict == "correct"
    assert fast_verdict("12", "\\boxed{12.5}").verdict == "incorrect"
    assert fast_verdict("12", "first \\boxed{12}, then \\boxed{13}") is None, "with two boxed answers Math-Verify decides"
    assert fast_verdict("0.333333", "\\boxed{\\frac{1}{3}}") is None, "close values are left to Math-Verify's rounding"
    assert fast_verdict("x^2", "\\boxed{x^2 + 0}") is None


def test_trl_style_accuracy_reward_scores_plain_and_conversational_completions():
    from r1distill.rewards import rule

    with rule("accuracy", workers=1, timeout=5) as reward:
        completions = [
            "<think>\n2+2\n</think>\n\nSo \\boxed{4}.",
            # Equal to the gold only as expressions: a worker's verdict.
            [{"role": "assistant", "content": "<think>\nhmm\n</think>\n\n\\boxed{\\frac{8}{\\sqrt{4}}}"}],
            "<think>\n\\boxed{4} is tempting\n</think>\n\nNo: \\boxed{5}.",
            "no answer at all",
        ]
        _sympy_only(["4"], [completions[1][0]["content"]])
        assert reward(completions, answer=["4", "4", "4", None], trainer_state=None) == [1.0, 1.0, 0.0, None]
        assert reward.__name__ == "accuracy_reward"


def test_a_pair_repeated_in_one_call_reaches_the_workers_once():
    # Only SymPy can tell that x * x is x^2 and x + x is not: the fast path leaves every row to a worker.
    # A GRPO group of 8 states two answers four times each; then a repeated answer against another gold.
    golds = ["x^2"] * 8 + ["2x"] * 2
    responses = ["The answer is \\boxed{x \\cdot x}.", "So \\boxed{x + x}."] * 5
    _sympy_only(golds, responses)
    with VerifierPool(workers=2, timeout=10) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
        assert pool.verified == len(set(zip(golds, responses))), "each (gold, response) pair verified once"
    assert verdicts == ["correct", "incorrect"] * 4 + ["incorrect", "correct"]


@pytest.mark.timeout(60)
def test_a_hostile_answer_repeated_by_a_whole_group_costs_one_timeout():
    started = time.monotonic()
    with VerifierPool(workers=1, timeout=3.0) as pool:
        verdicts = [j.verdict for j in pool.judge(["1"] * 8 + ["x^2"], ["\\boxed{9^{9^{9^{9}}}}"] * 8 + ["\\boxed{x \\cdot x}"])]
        assert pool.timeouts == 8, "every row that gets the verdict counts"
        assert pool.verified == 1, "the last row's verdict is a worker's"
    assert verdicts == ["timeout"] * 8 + ["correct"], "the replacement worker verifies the rest"
    assert time.monotonic() - started < 15, "one budget of 3 s, not eight"


def test_the_tasks_of_a_small_batch_use_every_idle_worker(monkeypatch):
    # A batch with only two tasks must run on both workers at once, not one behind the other.
    first, second = "x^2", "x^3"
    workers = []
    assign = VerifierPool._assign

    def recording(pool, worker, task):
        workers.append(worker.process.pid)
        assign(pool, worker, task)

    monkeypatch.setattr(VerifierPool, "_assign", recording)
    with VerifierPool(workers=2, timeout=10) as pool:
        verdicts = [j.verdict for j in pool.judge([first, second], ["\\boxed{x \\cdot x}"] * 2)]
    assert verdicts == ["correct" if gold == "x^2" else "incorrect" for gold in (first, second)]
    assert len(set(workers)) == 2


# Pairs only SymPy can decide, over the kinds of object latex2sympy builds (intervals, unions, sets,
# tuples, matrices, equations, real symbols, trigonometric functions), half of them right.
SYMPY_ONLY = [
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{12}}{4}}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}}"),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "\\boxed{[\\pi^2/8, 5\\pi^2/4]}"),
    ("(-\\infty, 3) \\cup (5, \\infty)", "\\boxed{(5,\\infty) \\cup (-\\infty,3)}"),
    ("(-\\infty, 3) \\cup (5, \\infty)", "\\boxed{(-\\infty, 5)}"),
    ("\\{1, 2\\}", "\\boxed{\\{2,1\\}}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix} + 0}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}}"),
    ("x^2 + 2x + 1", "\\boxed{(x+1)^2}"),
    ("x^2 + 2x + 1", "\\boxed{(x-1)^2}"),
    ("\\cot x", "\\boxed{\\frac{\\cos x}{\\sin x}}"),
    ("y = 2x + 3", "\\boxed{y = 3 + 2x}"),
    ("(3, \\frac{\\pi}{2})", "\\boxed{(3, \\pi/2)}"),
    ("(3, \\frac{\\pi}{2})", "\\boxed{(\\pi/2, 3)}"),
    # Math-Verify reads the written order of a chain of equations (kept outside the expression's args).
    ("y = 2x = 4", "\\boxed{y=4}"),
    ("y = 2x = 4", "\\boxed{y=2x}"),
]


def test_a_gold_parsed_ahead_or_by_another_worker_gives_the_verdicts_of_a_fresh_parse():
    golds, responses = [g for g, _ in SYMPY_ONLY], [r for _, r in SYMPY_ONLY]
    _sympy_only(golds, responses)
    with VerifierPool(workers=2, timeout=20) as fresh:
        expected = [j.verdict for j in fresh.judge(golds, responses)]
        assert fresh.verified == len(SYMPY_ONLY)
    assert {"correct", "incorrect"} == set(expected)
    with VerifierPool(workers=2, timeout=20) as pool:
        distinct = len(set(golds))
        assert pool.prepare(golds + ["12", "\\frac{3}{4}", None, " "]) == distinct, "each distinct gold once; exact numbers and blanks skipped"
        assert pool.prepare(golds) == 0, "nothing parsed twice"
        assert [j.verdict for j in pool.judge(golds, responses)] == expected
        # Rows of one gold apart from each other go out as separate tasks, to either worker: none parses
        # it, but two golds whose parse does not survive pickling (the union of intervals and the chain
        # of equations) are parsed again by each call.
        assert [j.verdict for j in pool.judge(golds[::-1], responses[::-1])] == expected[::-1]
        assert pool.gold_parses == distinct + 2 * 2


def test_a_gold_parsed_in_one_call_serves_every_worker_in_the_next():
    with VerifierPool(workers=2, timeout=20) as pool:
        assert [j.verdict for j in pool.judge(["x^2"], ["\\boxed{x \\cdot x}"])] == ["correct"]
        # Three tasks (the x^2 rows are not adjacent), spread over both workers: only x^3 is new.
        verdicts = [j.verdict for j in pool.judge(["x^2", "x^3", "x^2"], ["\\boxed{x + x}", "\\boxed{x \\cdot x^2}", "\\boxed{x^{2} + 0}"])]
        assert verdicts == ["incorrect", "correct", "correct"]
        assert pool.gold_parses == 2 and pool.verified == 4


@pytest.mark.timeout(90)
def test_parsing_ahead_costs_a_hostile_gold_one_budget_and_stops_when_asked():
    import threading

    # Math-Verify takes about 6 s on this machine to give up on 800 nested braces: the worker is killed
    # after its budget and the next gold goes on. The budget leaves room for the replacement's first parse
    # (Math-Verify builds its LaTeX parser then: 0.4 s on an idle core, over 0.5 s on a busy machine).
    hostile = "{" * 800 + "1" + "}" * 800
    stop = threading.Event()
    with VerifierPool(workers=1, timeout=2.0) as pool:
        started = time.monotonic()
        assert pool.prepare([hostile, "x^2"]) == 1
        assert time.monotonic() - started < 30
        assert pool.timeouts == 0, "no row timed out: no row was judged"
        assert [j.verdict for j in pool.judge(["x^2", hostile], ["\\boxed{x \\cdot x}", "\\boxed{3}"])] == ["correct", "timeout"]
        stop.set()
        assert pool.prepare(["x^3", "\\sqrt{2}"], stop) == 0, "a set stop parses nothing more"
        assert pool.gold_parses == 1


def test_a_shared_gold_parse_comes_back_unevaluated_or_not_at_all():
    import math_verify
    import sympy

    from r1distill.rewards.verify import _pickle, _unpickle

    # Math-Verify keeps 2^{10}, x + x and 9^{9^{9^{9}}} as written; rebuilt with evaluation they would be
    # 1024, 2x and a number no machine can hold.
    for gold in ("2^{10}", "x + x", "9^{9^{9^{9}}}", "\\begin{pmatrix} 1+1 \\\\ 2 \\end{pmatrix}", "(3, \\frac{\\pi}{2})"):
        parsed = math_verify.parse(f"${gold}$")
        blob = _pickle(parsed)
        assert blob is not None and sympy.srepr(_unpickle(blob)) == sympy.srepr(parsed), gold
    # Not shared, each worker parses them: SymPy cannot rebuild this union unevaluated, and pickling
    # drops the written order latex2sympy keeps beside the args of a set and of a chain of equations.
    for gold in ("(-\\infty, 3) \\cup (5, \\infty)", "\\{2, 1\\}", "y = 2x = 4"):
        assert _pickle(math_verify.parse(f"${gold}$")) is None, gold


def test_training_processes_of_one_machine_share_its_cores(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert VerifierPool().workers == cores
    # accelerate launch / torchrun with 2 processes on this machine: each rank's pool gets half the cores.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert VerifierPool().workers == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    assert VerifierPool().workers == 1
