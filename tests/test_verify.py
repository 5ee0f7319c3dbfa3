"""Math accuracy in killable worker processes: verdicts, the string fast path, and timeouts."""

from __future__ import annotations

import time

import pytest

from r1distill.rewards.verify import VerifierPool


def test_verdicts():
    golds = ["\\frac{1}{2}", "\\frac{1}{2}", "12", "12", None, "\\"]
    responses = ["So \\boxed{0.5}.", "The answer is \\boxed{\\frac{1}{3}}.", "\\boxed{12}", "I do not know.", "\\boxed{3}", "\\boxed{3}"]
    with VerifierPool(workers=2, timeout=10) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
        scores = [j.score for j in pool.judge(golds, responses)]
    assert verdicts == ["correct", "incorrect", "correct", "no_answer", "no_gold", "gold_unparseable"]
    assert scores == [1.0, 0.0, 1.0, 0.0, None, None]


def test_a_pathological_answer_times_out_and_the_rest_goes_on():
    golds = ["1", "1", "7", "7"]
    responses = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{1}", "\\boxed{7.0}", "\\boxed{8}"]
    started = time.monotonic()
    with VerifierPool(workers=1, timeout=1.0) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
        again = [j.verdict for j in pool.judge(["2"], ["\\boxed{2.0}"])]
        assert pool.timeouts == 1
    assert verdicts == ["timeout", "correct", "correct", "incorrect"]
    assert again == ["correct"], "the replacement worker keeps working"
    assert time.monotonic() - started < 30


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
            [{"role": "assistant", "content": "<think>\nhmm\n</think>\n\n\\boxed{\\frac{8}{2}}"}],
            "<think>\n\\boxed{4} is tempting\n</think>\n\nNo: \\boxed{5}.",
            "no answer at all",
        ]
        assert reward(completions, answer=["4", "4", "4", None], trainer_state=None) == [1.0, 1.0, 0.0, None]
        assert reward.__name__ == "accuracy_reward"


def test_a_pair_repeated_in_one_call_reaches_the_workers_once(monkeypatch):
    sent = []
    assign = VerifierPool._assign

    def counting(pool, worker, task):
        sent.extend((task.gold, response) for response in task.responses)
        assign(pool, worker, task)

    monkeypatch.setattr(VerifierPool, "_assign", counting)
    # Only SymPy can tell that x * x is x^2 and x + x is not: the fast path leaves every row to a worker.
    # A GRPO group of 8 states two answers four times each; then a repeated answer against another gold.
    golds = ["x^2"] * 8 + ["2x"] * 2
    responses = ["The answer is \\boxed{x \\cdot x}.", "So \\boxed{x + x}."] * 5
    with VerifierPool(workers=2, timeout=10) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
    assert verdicts == ["correct", "incorrect"] * 4 + ["incorrect", "correct"]
    assert sorted(sent) == sorted(set(zip(golds, responses))), "each (gold, response) pair verified once"


@pytest.mark.timeout(60)
def test_a_hostile_answer_repeated_by_a_whole_group_costs_one_timeout():
    started = time.monotonic()
    with VerifierPool(workers=1, timeout=3.0) as pool:
        verdicts = [j.verdict for j in pool.judge(["1"] * 8 + ["x^2"], ["\\boxed{9^{9^{9^{9}}}}"] * 8 + ["\\boxed{x \\cdot x}"])]
        assert pool.timeouts == 8, "every row that gets the verdict counts"
    assert verdicts == ["timeout"] * 8 + ["correct"], "the replacement worker verifies the rest"
    assert time.monotonic() - started < 15, "one budget of 3 s, not eight"


def test_the_tasks_of_a_small_batch_use_every_idle_worker_whatever_their_golds_hash_to(monkeypatch):
    # Two golds whose parses would be cached on the same worker: a batch with only their two tasks must
    # still run on both workers at once, not one behind the other.
    golds = ["x^2", "x^3", "x^4"]
    first, second = next((a, b) for a in golds for b in golds if a < b and hash(a) % 2 == hash(b) % 2)
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
