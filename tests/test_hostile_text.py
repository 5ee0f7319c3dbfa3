"""Hostile model output: every pattern and reward function that reads it in the parent process stays linear.

A completion is whatever a model wrote: megabytes of spaces, a keyword repeated in a loop, thousands of
unclosed braces. Each case runs under a hang guard (pytest-timeout): a pattern that backtracks
polynomially on it would hold the run for minutes to hours, and the test fails instead of timing.

    python -m pytest tests/test_hostile_text.py -q
"""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from r1distill import rewards
from r1distill.eval.metrics import vote_classes
from r1distill.rewards import accuracy, rules, tasks, text, verify

N = 100_000
HOSTILE = {
    "spaces": " " * N,
    "newlines": "\n" * N,
    "answer_spaces": "answer" + " " * N + ".",
    "answer_newlines": "The answer" + "\n" * N + "?",
    "answer_is_spaces": "answer is" + " " * N + ":" + " " * N + "**" + " " * N + "x",
    "final_answer_spaces": "**Final" + " " * N + "answer",
    "answer_repeated": "answer " * (N // 7),
    "answer_is_repeated": "The answer is: ** " * (N // 18),
    "option_repeated": "option choice answer is " * (N // 24),
    "boxed_open": "\\boxed{" * (N // 7),
    "boxed_spaces": "\\boxed" + " " * N,
    "nested_braces": "\\boxed{" + "{" * N + "}" * (N - 1),
    "text_wrappers": "\\text{" * (N // 6),
    "text_open": "\\text" + " " * N + "{" + "a" * N,
    "answer_tags": "<answer>" * (N // 8) + "</answer",
    "think_tags": "<think>" * (N // 7),
    "parentheses": "(" * N + "C" + ")" * N + "x",
    "digits": "9" * N,
    "thousands": "1," * (N // 2),
    "decimals": "1." * (N // 2),
    "fraction": "\\frac{" + "1" * N + "}{" + "2" * N,
    "letters_tag": "<" + "a" * N,
    "latex_commands": "\\a" * (N // 2),
}


def _completions(case: str) -> list[str]:
    """The hostile text as a whole completion, as the response after a closed thinking, and as the thinking."""
    body = HOSTILE[case]
    return [body, "<think>\nhm\n</think>\n\n" + body, "<think>\n" + body + "\n</think>\n\nSo \\boxed{4}."]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_reward_functions_finish_on_hostile_text(case):
    completions = _completions(case)
    answers = ["C"] * len(completions)
    # Every answer reader: choice, exact, the tasks, the stated answer eval votes with.
    assert len(rewards.judge_choice(completions, answer=answers)) == 3
    assert len(rewards.judge_exact(completions, answer=answers)) == 3
    assert len(rewards.judge_countdown(completions, numbers=[[1, 2]] * 3, target=[3] * 3)) == 3
    assert len(rewards.judge_arithmetic(completions, answer=["3"] * 3)) == 3
    stated = [[(rewards.stated_answer(c, mode=mode), False) for c in completions] for mode in rewards.ACCURACY_MODES]
    assert len(vote_classes(stated, lambda pairs: [False] * len(pairs))) == 3
    # The rules that read the whole completion, and the parent's part of math verification.
    for name in ("format", "language", "repetition", "length", "truncated"):
        assert len(rewards.rule(name)(completions)) == 3
    for completion in completions:
        verify.fast_verdict("3", completion)
        verify.exact_number(completion)
        rewards.extract_final_answer(completion)
        text.normalize_answer(completion)


# How each pattern of the reward modules runs on model output (the mode matters: a pattern with a
# leading repeat is linear when fullmatched, quadratic when searched). A new pattern must be added here.
USES = {
    (accuracy, "_LETTER"): "fullmatch",
    (accuracy, "_CHOICE_PHRASE"): "findall",
    (accuracy, "_ANSWER_LABEL"): "sub",
    (accuracy, "_NUMBER"): "findall",
    (text, "_BOXED"): "match",
    (text, "_BRACE_OR_ESCAPE"): "findall",
    (text, "_TEXT_WRAPPER"): "sub",
    (verify, "_PLAIN_NUMBER"): "fullmatch",
    (verify, "_THOUSANDS"): "fullmatch",
    (verify, "_SIMPLE_FRACTION"): "fullmatch",
    (rules, "_WORD"): "findall",
    (rules, "_NOT_WORDS"): "sub",
    (rules, "_ASCII_WORD"): "findall",
    (tasks, "_INTEGER"): "fullmatch",
}


def _patterns(module: ModuleType) -> set[str]:
    return {name for name, value in vars(module).items() if isinstance(value, re.Pattern)}


def test_every_pattern_over_model_output_is_listed():
    for module in (accuracy, text, verify, rules, tasks):
        assert _patterns(module) == {name for owner, name in USES if owner is module}, module.__name__


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_patterns_are_linear_without_the_length_bound(case):
    # 100,000 characters, five times ANSWER_CHARS: linear by construction, not only because the text is cut.
    for (module, name), use in USES.items():
        pattern = getattr(module, name)
        if use == "sub":
            pattern.sub("", HOSTILE[case])
        else:
            getattr(pattern, use)(HOSTILE[case])


@pytest.mark.timeout(30)
def test_choice_scoring_of_a_thousand_whitespace_answers_finishes():
    # gpqa-diamond scores in choice mode: 1,000 samples that end in "answer" and 100,000 spaces.
    completion = "<think>\nhm\n</think>\n\nThe answer" + " " * N + "."
    completions = [completion] * 1_000
    with rewards.rule("accuracy", mode="choice") as accuracy_reward:
        judged = accuracy_reward.judge(completions, answer=["C"] * len(completions))
    assert {verdict for _, verdict in judged} == {"no_answer"}
    assert {rewards.stated_answer(c, mode="choice") for c in completions} == {None}


def test_a_choice_phrase_still_reads_as_before():
    # The linear pattern reads what the old one read, and no more ("is" needs a space before it).
    cases = {
        "The answer is (C).": "C", "Answer: B": "B", "**Answer:** D": "D", "answer is: ** E": "E",
        "the correct option is\n\nB": "B", "Final choice (j)": "J", "answeris C": None, "the answer is a prime": None,
    }
    assert {case: rewards.stated_answer(case, mode="choice") for case in cases} == cases
    assert rewards.stated_answer("Final answer is: **Paris**", mode="exact") == "Paris**"
