"""Everything that scores a completion, written once for filter, rl (GRPO with TRL) and eval.

DeepSeek-R1 scores with rules, not learned reward models. Each rule is a judge that returns a
`Judgement` (score and verdict) per completion; the filter stage keeps verdicts to say why a row was
dropped, TRL wants the scores. `rule(name, **options)` binds a rule's options once and returns an
object that is both: `.judge(completions, **columns)` gives Judgements, calling it gives TRL's
`list[float | None]`. It reads only the dataset columns it names (`.columns`), so a dataset column
called `language`, `max_tokens` or `n` never changes an option.

    >>> reward = rule("language", language="en")
    >>> reward.__name__, reward(["<think>\\nWe add.\\n</think>\\n\\n4"], language=["zh"])
    ('language_reward', [1.0])

Rules (options; columns read):
- accuracy: the final answer against the gold, routed per row to math / choice / exact
  (mode, mode_column, timeout, workers; answer, finish_reason, the mode column). See accuracy.py.
- format: R1's `<think>...</think>` layout, or R1-Zero's with an `<answer>` block (lenient, layout).
- language: share of the thinking's words in the target language, R1's consistency reward
  (language, min_share).
- length: completion length in tokens within bounds (min_tokens, max_tokens; completion_ids,
  completion_tokens).
- truncated: whether generation stopped by itself (finish_reason).
- repetition: 1 - the word n-gram repetition ratio (n, max_ratio).

- code: the response's last code block run against the row's tests in a sandbox (tests_column,
  max_tests, cpu_seconds, all_or_nothing, allow_unsandboxed, workers; the tests column,
  finish_reason). See code.py.

Task rules (TASKS), for the synthetic tasks of `r1distill synth` (see tasks.py):
- countdown: the equation reaches the target from the given numbers (numbers, target, finish_reason).
- arithmetic: the integer answer is exact (answer, finish_reason).

The LLM judge (judge.py) is the accuracy rule plus a model asked through `backends` about the rows it
cannot decide: `JudgedAccuracy(Accuracy(...), Judge(JudgeSettings(...), cache))`, the same reward
object for filter's `--check judge`, eval's `--accuracy judge` and rl's `--reward judge`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from r1distill.rewards.accuracy import ACCURACY_MODES, Accuracy, judge_choice, judge_exact, stated_answer
from r1distill.rewards.code import CodeReward, CodeSettings
from r1distill.rewards.rules import (
    FORMAT_LAYOUTS,
    LANGUAGE_SCRIPTS,
    judge_format,
    judge_language,
    judge_length,
    judge_repetition,
    judge_truncated,
)
from r1distill.rewards.tasks import judge_arithmetic, judge_countdown
from r1distill.rewards.text import Judgement, answer_region, completion_text, extract_final_answer, split_thinking
from r1distill.rewards.verify import VerifierPool

__all__ = [
    "ACCURACY_MODES", "CodeReward", "CodeSettings", "FORMAT_LAYOUTS", "LANGUAGE_SCRIPTS", "RULES", "TASKS", "Accuracy", "Judgement", "Rule", "VerifierPool",
    "answer_region", "completion_text", "extract_final_answer", "judge_arithmetic", "judge_choice", "judge_countdown",
    "judge_exact", "judge_format", "judge_language", "judge_length", "judge_repetition", "judge_truncated", "rule",
    "split_thinking", "stated_answer",
]

# name -> (judge, the per-row columns it reads); every other keyword-only parameter is an option.
_JUDGES: dict[str, tuple[Callable[..., list[Judgement]], tuple[str, ...]]] = {
    "format": (judge_format, ()),
    "language": (judge_language, ()),
    "length": (judge_length, ("completion_ids", "completion_tokens")),
    "truncated": (judge_truncated, ("finish_reason",)),
    "repetition": (judge_repetition, ()),
    "countdown": (judge_countdown, ("numbers", "target", "finish_reason")),
    "arithmetic": (judge_arithmetic, ("answer", "finish_reason")),
}
TASKS = ("countdown", "arithmetic")
RULES = ("accuracy", *(name for name in _JUDGES if name not in TASKS), "code")


class Rule:
    """A rule with its options bound: `.judge(completions, **columns)` for verdicts, a call for TRL scores."""

    def __init__(self, name: str, judge: Callable[..., list[Judgement]], columns: tuple[str, ...], options: dict[str, Any]) -> None:
        self.name = name
        self.columns = columns
        """The dataset columns this rule reads; every other keyword is ignored."""
        self.options = options
        self.__name__ = f"{name}_reward"  # TRL logs a reward function under its __name__
        self._judge = judge
        judge([], **options)  # bad option values (an unknown language, min > max) fail here, not mid-run

    def judge(self, completions: list, **columns: Any) -> list[Judgement]:
        picked = {name: columns[name] for name in self.columns if name in columns}
        return self._judge(completions, **picked, **self.options)

    def __call__(self, completions: list, **columns: Any) -> list[float | None]:
        return [judgement.score for judgement in self.judge(completions, **columns)]

    def close(self) -> None:
        """Nothing to release; every rule has the same lifecycle as `Accuracy`, which holds worker processes."""

    def __enter__(self) -> Rule:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"rule({', '.join([repr(self.name)] + [f'{k}={v!r}' for k, v in self.options.items()])})"


def rule(name: str, **options: Any) -> Rule | Accuracy | CodeReward:
    """The rule `name` with `options` bound (see the module docstring); raises ValueError on a bad name,
    an unknown option or a bad option value.

    >>> rule("length", max_tokens=3)(["a b c d"], max_tokens=[100], completion_tokens=[None])
    [0.0]
    """
    if name in ("accuracy", "code"):
        try:
            return Accuracy(**options) if name == "accuracy" else CodeReward(**options)
        except TypeError as err:  # an unknown keyword
            raise ValueError(f"rule {name!r}: {err}") from err
    if name not in _JUDGES:
        raise ValueError(f"unknown rule {name!r}; use one of {', '.join(RULES + TASKS)}")
    judge, columns = _JUDGES[name]
    allowed = [p.name for p in inspect.signature(judge).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in columns]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"rule {name!r} has no option {unknown[0]!r}; its options: {', '.join(allowed) or 'none'}")
    return Rule(name, judge, columns, options)
