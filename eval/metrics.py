"""The numbers eval reports, computed from scored samples: pass@k, maj@k, shares, token means.

Every function here is pure (rows in, numbers out) so each estimator can be checked against values
worked out by hand.

- pass@k is the unbiased estimator of Chen et al. (2021) for each problem with n samples of which c
  are correct, averaged over problems; pass@1 is then the mean share correct, as the R1 papers report.
- maj@k: the samples of a problem are cut into consecutive groups of k (by sample index; a last group
  shorter than k is left out) and each group votes: samples that state equivalent answers vote
  together, samples with no answer do not vote, the answer with most votes wins and a tie goes to the
  answer stated first (lowest sample index). A group scores 1 when its winner is the gold answer; the
  problem's maj@k is the mean over its groups. With k = n that is the usual one vote over all samples.
- Which answers are equivalent: every sample the verifier judged correct states the gold; answers
  judged otherwise are the same answer when their normalised text or exact value is equal, or when
  Math-Verify says so for the pair (`same`, given by the caller, so `1/2` and `0.5` vote together).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from r1distill.rewards.text import normalize_answer
from r1distill.rewards.verify import exact_number

GOLD = 0
"""The vote class of answers the verifier judged correct."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `n` samples, `c` of them correct: 1 - C(n-c, k) / C(n, k).

    Computed as a product, stable for large n (Chen et al. 2021).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 1, 4)
    (0.25, 0.5, 0.0, 1.0)
    """
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def ks(n: int) -> list[int]:
    """The k of pass@k and maj@k for n samples: 1, 2, 4, ... up to n, and n itself.

    >>> ks(1), ks(4), ks(6)
    ([1], [1, 2, 4], [1, 2, 4, 6])
    """
    found = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return found if found[-1] == n else found + [n]


def _key(answer: str) -> str | Fraction:
    """What two answers must share to be the same without asking Math-Verify."""
    value = exact_number(answer)
    return value if value is not None else normalize_answer(answer)


def vote_classes(
    problems: Sequence[Sequence[tuple[str | None, bool]]], same: Callable[[list[tuple[str, str]]], list[bool]]
) -> list[list[int | None]]:
    """The vote class of every sample: GOLD, another int shared by equivalent answers, or None (no vote).

    `problems` holds each problem's samples as (stated answer or None, judged correct), in sample order.
    `same(pairs)` says for each pair of answers whether they are equivalent; it is asked once, for every
    problem's pairs of distinct answers that are neither correct nor equal in `_key`.

    >>> vote_classes([[("3", False), ("5", True), ("3.0", False), (None, False)]], lambda pairs: [False] * len(pairs))
    [[1, 0, 1, None]]
    """
    keyed = []
    pairs, owners = [], []
    for index, samples in enumerate(problems):
        distinct: dict = {}
        for answer, correct in samples:
            if answer is not None and not correct:
                distinct.setdefault(_key(answer), answer)
        keys = list(distinct)
        keyed.append(keys)
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                if isinstance(first, Fraction) and isinstance(second, Fraction):
                    continue  # two different exact numbers are never equivalent
                pairs.append((distinct[first], distinct[second]))
                owners.append((index, first, second))
    verdicts = same(pairs) if pairs else []
    parents: list[dict] = [{key: key for key in keys} for keys in keyed]

    def root(index: int, key):
        while parents[index][key] != key:
            key = parents[index][key]
        return key

    for (index, first, second), equal in zip(owners, verdicts):
        if equal:
            parents[index][root(index, second)] = root(index, first)
    classes = []
    for index, samples in enumerate(problems):
        number = {key: i + 1 for i, key in enumerate(keyed[index])}
        row: list[int | None] = []
        for answer, correct in samples:
            if correct:
                row.append(GOLD)
            elif answer is None:
                row.append(None)
            else:
                row.append(number[root(index, _key(answer))])
        classes.append(row)
    return classes


def majority_correct(votes: Sequence[int | None]) -> bool:
    """Whether the majority of these votes is GOLD; a tie goes to the class voted first, no vote loses.

    >>> majority_correct([1, 0, 0, 1]), majority_correct([0, 1, 1, 0]), majority_correct([None, None])
    (False, True, False)
    """
    counts: dict[int, int] = {}
    for vote in votes:
        if vote is not None:
            counts[vote] = counts.get(vote, 0) + 1
    if not counts:
        return False
    most = max(counts.values())
    winner = next(vote for vote in votes if vote is not None and counts[vote] == most)
    return winner == GOLD


def maj_at_k(votes: Sequence[int | None], k: int) -> float | None:
    """The mean over consecutive groups of k samples of whether the group's majority is GOLD; None if n < k.

    >>> maj_at_k([1, 0, 0, 1], 2), maj_at_k([1, 0, 0, 1], 4), maj_at_k([0], 2) is None
    (0.5, 0.0, True)
    """
    groups = [votes[start : start + k] for start in range(0, len(votes) - k + 1, k)]
    if not groups:
        return None
    return sum(majority_correct(group) for group in groups) / len(groups)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean over problems (sample standard deviation / sqrt(count)).

    >>> round(stderr([0.0, 1.0, 0.5, 0.5]), 4)
    0.2041
    """
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def summarize(problems: Sequence[dict]) -> dict:
    """The metrics of a set of problems. Each problem is a dict of its scored samples, in sample order:

    `verdicts` (the accuracy verdicts), `votes` (vote classes), `finish` (finish reasons),
    `thinking`, `response` and `tokens` (token counts, None when unknown).

    Verdicts correct count as correct; every other verdict as not correct (each share is reported).
    """
    verdicts = [v for problem in problems for v in problem["verdicts"]]
    n = max((len(problem["verdicts"]) for problem in problems), default=0)
    rates = [problem["verdicts"].count("correct") / len(problem["verdicts"]) for problem in problems]

    def share(name: str, values: list) -> float | None:
        return sum(value == name for value in values) / len(values) if values else None

    finish = [f for problem in problems for f in problem["finish"]]
    result = {
        "problems": len(problems),
        "samples": len(verdicts),
        "n": n,
        "pass@1": _mean(rates),
        "pass@1_stderr": stderr(rates),
        "pass@k": {},
        "maj@k": {},
        "truncated": share("length", finish),
        "no_answer": share("no_answer", verdicts),
        "timeout": share("timeout", verdicts),
        "verifier_error": share("error", verdicts),
        "mean_thinking_tokens": _mean([t for problem in problems for t in problem["thinking"]]),
        "mean_response_tokens": _mean([t for problem in problems for t in problem["response"]]),
        "mean_completion_tokens": _mean([t for problem in problems for t in problem["tokens"]]),
    }
    for k in ks(n) if n else []:
        having = [problem for problem in problems if len(problem["verdicts"]) >= k]
        result["pass@k"][str(k)] = _mean([pass_at_k(len(p["verdicts"]), p["verdicts"].count("correct"), k) for p in having])
        result["maj@k"][str(k)] = _mean([maj_at_k(p["votes"], k) for p in having])
    return result
