"""The accuracy reward: is the final answer right? Routed per row to math, multiple choice or exact match.

One object serves the filter stage (`judge`, verdicts per row), GRPO (`__call__`, a TRL reward function
returning `list[float | None]`) and eval, so a policy is trained on exactly the check its data was
filtered with. The answer is read from `answer_region` only: thinking that never closes, or a response
cut off with no explicit final answer, has none (`no_answer`), so a truncated trace cannot score from
its thinking.

Modes: `math` (Math-Verify in killable worker processes, see verify.py), `choice` (letters A-J) and
`exact` (normalised string). A row's mode is the `mode` option, or the value of the dataset column named
by `mode_column` (a benchmark mixing math and multiple-choice rows).

Verdicts: correct (1.0), incorrect (0.0), no_answer (0.0), no_gold and gold_unparseable (None: cannot
verify), timeout (None), error (None: a verifier worker died).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from r1distill.rewards.code import extract_code
from r1distill.rewards.text import Judgement, aligned_rows, answer_region, completion_text, extract_final_answer, normalize_answer
from r1distill.rewards.verify import CORRECT, GOLD_UNPARSEABLE, INCORRECT, NO_ANSWER, NO_GOLD, VerifierPool

ACCURACY_MODES = ("math", "choice", "exact")

_LETTER = re.compile(r"[\s(\[{*]*([A-Ja-j])[\s)\]}*.:]*")  # only ever fullmatched: linear
# "The answer is (C)", "Answer: C", "**Answer:** C", "correct option is B"; a bare letter must be a
# capital standing alone, so "the answer is a prime" does not read as choice A. Every run of
# whitespace follows a token that is not whitespace, so no two repeats compete for the same spaces:
# "answer" and 100,000 spaces cost linear time, not cubic ("is" needs a space before it: the lookbehind).
_CHOICE_PHRASE = re.compile(
    r"(?i:answer|option|choice)\s*(?:(?<=\s)is\s*)?(?:[:：]\s*)?(?:\*\*\s*)?(?:\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9]))"
)
_ANSWER_LABEL = re.compile(r"^(?:\*\*)?(?:final\s+)?answer\s*(?:(?<=\s)is\s*)?(?:[:：]\s*)?(?:\*\*\s*)?", re.IGNORECASE)


def _has_gold(gold: Any) -> bool:
    return gold is not None and bool(str(gold).strip())


def _choice_letter(text: str) -> str | None:
    match = _LETTER.fullmatch(normalize_answer(text))
    return match.group(1).upper() if match else None


def _chosen_letter(response: str) -> str | None:
    boxed = extract_final_answer(response)
    if boxed is not None and (letter := _choice_letter(boxed)):
        return letter
    phrases = _CHOICE_PHRASE.findall(response)
    if phrases:
        return "".join(phrases[-1]).upper()
    lines = response.strip().splitlines()
    return _choice_letter(lines[-1]) if lines else None


def _choice(response: str, gold: Any) -> Judgement:
    if not _has_gold(gold):
        return NO_GOLD
    gold_letter = _choice_letter(str(gold))
    if gold_letter is None:
        return GOLD_UNPARSEABLE
    letter = _chosen_letter(response)
    if letter is None:
        return NO_ANSWER
    return CORRECT if letter == gold_letter else INCORRECT


def judge_choice(completions: list, *, answer: list | None = None, finish_reason: list | None = None) -> list[Judgement]:
    r"""Multiple choice (GPQA style, letters A-J): the letter the response picks against the gold letter.

    The pick is the last \boxed{X}, else the last phrase like "answer is (C)" / "Answer: C", else a lone
    letter on the last line; the thinking is not searched. Gold may be "C", "(C)" or "c".

    >>> judged = judge_choice(["<think>\nB?\n</think>\n\nThe answer is (C).", "Answer: B", "Hmm.", "C", "<think>\nC"],
    ...                       answer=["C", "(c)", "C", "42", "C"])
    >>> [verdict for _, verdict in judged]
    ['correct', 'incorrect', 'no_answer', 'gold_unparseable', 'no_answer']
    """
    rows = aligned_rows(completions, answer=answer, finish_reason=finish_reason)
    return [_choice(answer_region(text, reason), gold) for text, gold, reason in rows]


def _exact_stated(response: str) -> str:
    stated = extract_final_answer(response)
    if stated is None:
        lines = response.strip().splitlines()  # the last line is not blank once the response is stripped
        stated = _ANSWER_LABEL.sub("", lines[-1].strip()) if lines else ""
    return stated


def _exact(response: str, gold: Any) -> Judgement:
    if not _has_gold(gold):
        return NO_GOLD
    stated = _exact_stated(response)
    if not stated:
        return NO_ANSWER
    return CORRECT if normalize_answer(stated) == normalize_answer(str(gold)) else INCORRECT


def judge_exact(completions: list, *, answer: list | None = None, finish_reason: list | None = None) -> list[Judgement]:
    r"""Exact match of the final answer (see `extract_final_answer`; else the response's last non-empty
    line, without an "Answer:" label) against the gold, both normalized by `normalize_answer`.

    >>> judged = judge_exact([r"So \boxed{\text{Paris}}.", "Final answer: Lyon", "<think>\nParis"], answer=["paris"] * 3)
    >>> [verdict for _, verdict in judged]
    ['correct', 'incorrect', 'no_answer']
    """
    rows = aligned_rows(completions, answer=answer, finish_reason=finish_reason)
    return [_exact(answer_region(text, reason), gold) for text, gold, reason in rows]


_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def stated_answer(completion: str, finish_reason: str | None = None, mode: str = "math") -> str | None:
    r"""The final answer a completion states, read as `mode` reads it, from `answer_region` only; None if none.

    math: the last \boxed{} or <answer> block, else the response's last number (Math-Verify reads plain
    text too); choice: the letter picked; exact: what `judge_exact` compares; code: the program run. eval's majority vote
    groups samples by these.

    >>> stated_answer("<think>\nhm\n</think>\n\nSo \\boxed{\\frac{1}{2}}."), stated_answer("<think>\nhm\n</think>\n\nShe pays 1,250 dollars.")
    ('\\frac{1}{2}', '1,250')
    >>> stated_answer("<think>\nhm\n</think>\n\nThe answer is (C).", mode="choice"), stated_answer("<think>\nit is 4")
    ('C', None)
    """
    region = answer_region(completion_text(completion), finish_reason)
    if mode == "choice":
        return _chosen_letter(region)
    if mode == "exact":
        return _exact_stated(region) or None
    if mode == "code":
        return extract_code(region)
    stated = extract_final_answer(region)
    if stated is None and (numbers := _NUMBER.findall(region)):
        stated = numbers[-1].rstrip(",")
    return stated


class Accuracy:
    r"""The routed accuracy check; a TRL reward function when called, a judge through `judge`.

    Math rows go to a pool of Math-Verify workers started on the first math row and kept until
    `close` (or the end of a `with` block); they die with the process that started them.

    >>> with Accuracy(mode="exact") as accuracy:
    ...     accuracy(["<think>\nhm\n</think>\n\n\\boxed{Paris}", "<think>\nParis"], answer=["paris", "paris"], language=["fr", "fr"])
    [1.0, 0.0]
    """

    def __init__(self, mode: str = "math", mode_column: str | None = None, timeout: float = 5.0, workers: int | None = None) -> None:
        if mode not in ACCURACY_MODES:
            raise ValueError(f"unknown accuracy mode {mode!r}; use one of {', '.join(ACCURACY_MODES)}")
        if timeout <= 0 or (workers is not None and workers < 1):
            raise ValueError("timeout must be > 0 and workers >= 1")
        self.name = "accuracy"
        self.mode = mode
        self.mode_column = mode_column
        self.timeout = timeout
        self.workers = workers
        self.columns = ("answer", "finish_reason") + ((mode_column,) if mode_column else ())
        """The dataset columns this reward reads; every other keyword is ignored."""
        self.__name__ = "accuracy_reward"  # TRL logs a reward function under its __name__
        self._pool: VerifierPool | None = None

    def judge(self, completions: list, **columns: Any) -> list[Judgement]:
        """One Judgement per completion; reads only `self.columns` of `columns`."""
        answers = columns.get("answer")
        modes = columns.get(self.mode_column) if self.mode_column else None
        rows = list(aligned_rows(completions, answer=answers, finish_reason=columns.get("finish_reason"), mode=modes))
        results: list[Judgement | None] = [None] * len(rows)
        math_rows = []
        for i, (text, gold, reason, mode) in enumerate(rows):
            mode = mode or self.mode
            region = answer_region(text, reason)
            if mode == "math":
                if not _has_gold(gold):
                    results[i] = NO_GOLD
                elif not region.strip():
                    results[i] = NO_ANSWER
                else:
                    math_rows.append((i, str(gold), region))
            elif mode == "choice":
                results[i] = _choice(region, gold)
            elif mode == "exact":
                results[i] = _exact(region, gold)
            else:
                raise ValueError(f"column {self.mode_column!r} holds {mode!r}; use one of {', '.join(ACCURACY_MODES)}")
        if math_rows:
            judged = self._verifier().judge([gold for _, gold, _ in math_rows], [region for _, _, region in math_rows])
            for (i, _, _), judgement in zip(math_rows, judged):
                results[i] = judgement
        return results  # type: ignore[return-value]

    def __call__(self, completions: list, **columns: Any) -> list[float | None]:
        return [judgement.score for judgement in self.judge(completions, **columns)]

    def prepare(self, answers: Iterable, stop: threading.Event | None = None) -> int:
        """Parse the gold answers of math rows before their completions come (`VerifierPool.prepare`);
        returns how many were parsed. In choice or exact mode there is nothing to parse."""
        if self.mode != "math" and not self.mode_column:
            return 0
        return self._verifier().prepare(answers, stop)  # the pool skips blank golds, as `judge` does

    def _verifier(self) -> VerifierPool:
        if self._pool is None:
            self._pool = VerifierPool(**({"workers": self.workers} if self.workers else {}), timeout=self.timeout)
            self._pool.__enter__()
        return self._pool

    @property
    def timeouts(self) -> int:
        """Math rows that timed out so far."""
        return self._pool.timeouts if self._pool else 0

    def close(self) -> None:
        """Stop the verifier workers (a later math row starts new ones)."""
        if self._pool is not None:
            self._pool.__exit__(None, None, None)
            self._pool = None

    def __enter__(self) -> Accuracy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
