"""Rule rewards, written once for the `filter` stage and for GRPO training with TRL.

DeepSeek-R1 scores with rules, not learned reward models. Each rule here is a *judge*,
`(completions, **columns) -> list[Judgement]`: the filter stage keeps the verdict to say why a row was
dropped, and `trl_reward` turns a judge into the `list[float | None]` reward function TRL expects.
Conventions every judge follows (the accuracy reward in `verify.py` too):
- `completions` are strings or TRL conversational completions (lists of role/content messages).
- Columns are keyword lists aligned with `completions`, as TRL passes dataset columns; options
  (`language=`, `max_tokens=`, ...) are one value for all rows or such a list. Unknown keywords are
  ignored, so a judge can be handed every column of a table; a missing column is derived from the text.
- Higher scores are better, in [0, 1]; None means the rule cannot judge the row (TRL skips it).
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from r1distill.schema import THINK_CLOSE, THINK_OPEN, split_reasoning


class Judgement(NamedTuple):
    """A reward's view of one completion."""

    score: float | None  # None: the rule cannot verify this row
    verdict: str  # short snake_case label, e.g. "ok", "missing_think"


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a TRL conversational completion.

    >>> completion_text([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    '4'
    >>> completion_text(None)
    ''
    """
    if isinstance(completion, str):
        return completion
    return (completion[-1]["content"] or "") if completion else ""


def aligned_rows(completions: list, **columns: Any) -> Iterator[tuple]:
    """(completion text, *values of `columns`) per completion. A column (a list, tuple, Series: anything
    with a length but a string) must have one value per completion; any other value, like the option
    `language="zh"`, is repeated for every row.

    >>> list(aligned_rows([[{"role": "assistant", "content": "4"}], "5"], answer=["4", "4"], lenient=True))
    [('4', '4', True), ('5', '4', True)]
    """
    n = len(completions)
    aligned = []
    for name, value in columns.items():
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            value = [value] * n
        elif len(value) != n:
            raise ValueError(f"column {name!r} has {len(value)} values for {n} completions")
        aligned.append(value)
    return zip(map(completion_text, completions), *aligned)


def split_thinking(completion: str) -> tuple[str | None, str]:
    r"""(thinking, response): the split `generate` applies, at the first `</think>`.

    An opened block that never closes (a truncated trace) is all thinking; no tags at all is all response.

    >>> split_thinking("<think>\nx is 2\n</think>\n\nx = 2")
    ('x is 2', 'x = 2')
    >>> split_thinking("x is 2\n</think>\nx = 2")  # a template pre-filled <think>
    ('x is 2', 'x = 2')
    >>> split_thinking("<think>\nstill going")
    ('still going', '')
    """
    return split_reasoning(completion)


_BOXED = re.compile(r"\\(?:boxed|fbox)(?:\s*(\{)|\s+([^\s{}$]+))")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _boxed_content(text: str) -> str | None:
    r"""The argument of the last \boxed / \fbox, or None when there is none or it never closes."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    match = _BOXED.match(text, start) if start >= 0 else None
    if match is None:
        return None
    if match.group(2) is not None:  # "\boxed 5"
        return match.group(2)
    depth = 0
    # Only braces and escapes are visited (escaped braces like \{1,2\} are literal): one linear scan,
    # no recursion, whatever the nesting depth.
    for token in _BRACE_OR_ESCAPE.finditer(text, match.start(1)):
        if token.group() in "{}":
            depth += 1 if token.group() == "{" else -1
            if depth == 0:
                return text[match.end(1) : token.start()]
    return None


def extract_final_answer(response: str) -> str | None:
    r"""The final answer a response commits to: the last \boxed{} (or \fbox{}), else the last
    <answer>...</answer> block, else None.

    If the last \boxed never closes (a trace cut off mid-answer) an earlier one is not used: the model
    was still changing its answer.

    >>> extract_final_answer(r"So \boxed{3}... no: \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_final_answer("<answer> Paris </answer>")
    'Paris'
    >>> extract_final_answer(r"\boxed{\{1, 2\}") is None
    True
    """
    boxed = _boxed_content(response)
    if boxed is not None:
        return boxed.strip() or None
    # rfind/find rather than a regex: a loop of unclosed <answer> tags must not cost quadratic time
    start = response.rfind(_ANSWER_OPEN)
    end = response.find(_ANSWER_CLOSE, start)
    if start < 0 or end < 0:
        return None
    return response[start + len(_ANSWER_OPEN) : end].strip() or None


def _format(text: str, lenient: bool) -> Judgement:
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
    elif not (lenient and THINK_CLOSE in body):
        return Judgement(0.0, "missing_think")
    thinking, closed, answer = body.partition(THINK_CLOSE)
    if not closed:
        return Judgement(0.0, "unclosed_think")
    if THINK_OPEN in body or THINK_CLOSE in answer:
        return Judgement(0.0, "nested_think")
    if not thinking.strip():
        return Judgement(0.0, "empty_thinking")
    if not answer.strip():
        return Judgement(0.0, "empty_answer")
    return Judgement(1.0, "ok")


def judge_format(completions: list, *, lenient: bool | list[bool] = False, **columns: Any) -> list[Judgement]:
    """R1's layout: one `<think>` block at the start with non-empty thinking, then a non-empty answer.

    `lenient` also accepts a completion with no opening tag but a closing one: templates of
    R1-Distill models pre-fill `<think>`, so the opening tag is in the prompt, not the completion.

    >>> judge_format(["<think>\\n2+2=4\\n</think>\\n\\n4", "2+2=4\\n</think>\\n\\n4", "<think>\\n2+2="])[1:]
    [Judgement(score=0.0, verdict='missing_think'), Judgement(score=0.0, verdict='unclosed_think')]
    >>> judge_format(["2+2=4\\n</think>\\n\\n4"], lenient=True)
    [Judgement(score=1.0, verdict='ok')]
    """
    return [_format(text, bool(lenient_row)) for text, lenient_row in aligned_rows(completions, lenient=lenient)]


_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d"
# Han and kana characters are words on their own (those scripts do not separate words by spaces);
# other words are runs of letters, so digits, punctuation and underscores separate or vanish.
_WORD = re.compile(rf"(?P<han>[{_HAN}])|(?P<kana>[{_KANA}])|(?P<letters>[^\W\d_{_HAN}{_KANA}]+)")
_NOT_WORDS = re.compile(r"\\[A-Za-z]+|</?[A-Za-z]+>")  # LaTeX commands, <think>-style tags
# (first code point, last code point, script) of the letter scripts the supported languages need.
_SCRIPT_RANGES = (
    (0x0041, 0x024F, "latin"), (0x0400, 0x052F, "cyrillic"), (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0x08A0, 0x08FF, "arabic"), (0x1100, 0x11FF, "hangul"), (0x1E00, 0x1EFF, "latin"), (0x3130, 0x318F, "hangul"),
    (0xAC00, 0xD7AF, "hangul"), (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"), (0xFF21, 0xFF5A, "latin"),
)
# The scripts whose words count as each supported language (kana and Han for Japanese).
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("latin",), "zh": ("han",), "ja": ("han", "kana"), "ko": ("hangul",), "ru": ("cyrillic",), "ar": ("arabic",)
}


@functools.cache  # texts use few distinct letters, and this runs once per word
def _script(letter: str) -> str:
    return next((script for low, high, script in _SCRIPT_RANGES if low <= ord(letter) <= high), "other")


def word_scripts(text: str) -> Counter[str]:
    r"""How many words of each script `text` has; LaTeX commands, tags, digits and punctuation are not words.

    >>> sorted(word_scripts(r"所以 x = \frac{1}{2}, ok?").items())
    [('han', 2), ('latin', 2)]
    """
    return Counter(
        _script(m.group()[0]) if m.lastgroup == "letters" else m.lastgroup
        for m in _WORD.finditer(_NOT_WORDS.sub(" ", text))
    )


def _language(completion: str, reasoning: str | None, language: str, min_share: float) -> Judgement:
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LANGUAGE_SCRIPTS)}")
    if reasoning is None:
        reasoning = split_thinking(completion)[0]
    counts = word_scripts(completion if reasoning is None else reasoning)
    total = sum(counts.values())
    if total == 0:
        return Judgement(None, "no_text")
    share = sum(counts[script] for script in LANGUAGE_SCRIPTS[language]) / total
    return Judgement(share, "consistent" if share >= min_share else "mixed")


def judge_language(
    completions: list, *, reasoning: list | None = None, language: str | list = "en", min_share: float | list = 0.95,
    **columns: Any,
) -> list[Judgement]:
    """R1's language-consistency reward: the share of the reasoning's words in the target language.

    Languages are told apart by script, so "en" counts Latin words (French counts too) and "ja" counts
    Han and kana; each Han or kana character is one word. Letters inside formulas are Latin words.
    The reasoning column is used when present, else the thinking split from the completion, else the
    whole completion.

    >>> judge_language(["<think>\\nWe add the numbers.\\n</think>\\n\\n4"])
    [Judgement(score=1.0, verdict='consistent')]
    >>> judge_language(["<think>\\n我们 add them\\n</think>\\n\\n4"], language="zh")
    [Judgement(score=0.5, verdict='mixed')]
    """
    rows = aligned_rows(completions, reasoning=reasoning, language=language, min_share=min_share)
    return [_language(*row) for row in rows]


_FINISH_VERDICTS = {
    "stop": Judgement(1.0, "complete"), "length": Judgement(0.0, "truncated"), "error": Judgement(0.0, "error")
}


def judge_truncated(completions: list, *, finish_reason: list | None = None, **columns: Any) -> list[Judgement]:
    """Whether generation stopped by itself: a trace cut off at max_tokens has no final answer.

    Without a finish_reason (absent, null, or a value other than stop/length/error) the row is unknown.

    >>> judge_truncated(["a", "b"], finish_reason=["length", None])
    [Judgement(score=0.0, verdict='truncated'), Judgement(score=None, verdict='unknown')]
    """
    rows = aligned_rows(completions, finish_reason=finish_reason)
    return [_FINISH_VERDICTS.get(reason, Judgement(None, "unknown")) for _, reason in rows]


def _length(text: str, tokens: int | None, ids: list | None, min_tokens: int | None, max_tokens: int | None) -> Judgement:
    if tokens is None:
        tokens = len(ids) if ids is not None else len(text.split())
    if min_tokens is not None and tokens < min_tokens:
        return Judgement(0.0, "too_short")
    if max_tokens is not None and tokens > max_tokens:
        return Judgement(0.0, "too_long")
    return Judgement(1.0, "ok")


def judge_length(
    completions: list, *, completion_tokens: list | None = None, completion_ids: list | None = None,
    min_tokens: int | list | None = None, max_tokens: int | list | None = None, **columns: Any,
) -> list[Judgement]:
    """Whether a completion's length lies within [min_tokens, max_tokens] (None: no bound).

    The length is `completion_tokens`; where that is missing or null, the number of token ids TRL passes
    as `completion_ids`; failing both, the number of whitespace-separated words, a rough stand-in.

    >>> [verdict for _, verdict in judge_length(["a b c", "a", "a b c d e"], min_tokens=2, max_tokens=4)]
    ['ok', 'too_short', 'too_long']
    >>> judge_length(["short text"], completion_tokens=[900], max_tokens=512)
    [Judgement(score=0.0, verdict='too_long')]
    """
    rows = aligned_rows(
        completions, completion_tokens=completion_tokens, completion_ids=completion_ids, min_tokens=min_tokens, max_tokens=max_tokens
    )
    return [_length(*row) for row in rows]


def repetition_ratio(text: str, n: int = 4) -> float:
    """1 - unique/total word n-grams: 0 for text that never repeats itself, near 1 for a loop.

    One pass over a set of n-gram tuples, so a 1 MB degenerate trace costs well under a second.

    >>> repetition_ratio("a b c d e f"), round(repetition_ratio("go on " * 50, n=2), 2)
    (0.0, 0.98)
    """
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    return 1.0 - len(set(zip(*(words[i:] for i in range(n))))) / total


def judge_repetition(
    completions: list, *, n: int | list = 4, max_ratio: float | list = 0.5, **columns: Any
) -> list[Judgement]:
    """Degenerate loops, common in truncated traces: score 1 - `repetition_ratio`, "repetitive" above `max_ratio`.

    >>> [verdict for _, verdict in judge_repetition(["Wait, let me check again. " * 100, "Add, then halve."])]
    ['repetitive', 'ok']
    """
    rows = aligned_rows(completions, n=n, max_ratio=max_ratio)
    ratios = [(repetition_ratio(text, size), limit) for text, size, limit in rows]
    return [Judgement(1.0 - ratio, "repetitive" if ratio > limit else "ok") for ratio, limit in ratios]


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_LETTER = re.compile(r"[\s(\[{*]*([A-Ja-j])[\s)\]}*.:]*")
# "The answer is (C)", "Answer: C", "**Answer:** C", "correct option is B"; a bare letter must be a
# capital standing alone, so "the answer is a prime" does not read as choice A.
_CHOICE_PHRASE = re.compile(
    r"(?i:answer|option|choice)(?:\s+is)?\s*[:：]?\s*(?:\*\*)?\s*(?:\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9]))"
)
_AROUND_ANSWER = string.whitespace + "$*"
_ANSWER_LABEL = re.compile(r"^(?:\*\*)?(?:final\s+)?answer(?:\s+is)?\s*[:：]?\s*(?:\*\*)?\s*", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    r"""The form answers are compared in: \text{} wrappers, surrounding $ and * and trailing periods
    dropped, all whitespace removed, case-folded.

    >>> normalize_answer(r" $\text{New York}$. ")
    'newyork'
    """
    # str.strip, not a loop or regex: linear even for a trace that ends in a million periods
    text = _TEXT_WRAPPER.sub(r"\1", text).rstrip(_AROUND_ANSWER + ".").lstrip(_AROUND_ANSWER)
    return "".join(text.split()).casefold()


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
    if gold is None or not str(gold).strip():
        return Judgement(None, "no_gold")
    gold_letter = _choice_letter(str(gold))
    if gold_letter is None:
        return Judgement(None, "gold_unparseable")
    letter = _chosen_letter(response)
    if letter is None:
        return Judgement(0.0, "no_answer")
    return Judgement(1.0, "correct") if letter == gold_letter else Judgement(0.0, "incorrect")


def judge_choice(completions: list, *, answer: list | None = None, **columns: Any) -> list[Judgement]:
    r"""Multiple choice (GPQA style, letters A-J): the letter the response picks against the gold letter.

    The pick is the last \boxed{X}, else the last phrase like "answer is (C)" / "Answer: C", else a lone
    letter on the last line; the thinking is not searched. Gold may be "C", "(C)" or "c".

    >>> judged = judge_choice(["<think>\nB?\n</think>\n\nThe answer is (C).", "Answer: B", "Hmm.", "C"],
    ...                       answer=["C", "(c)", "C", "42"])
    >>> [verdict for _, verdict in judged]
    ['correct', 'incorrect', 'no_answer', 'gold_unparseable']
    """
    return [_choice(split_thinking(text)[1], gold) for text, gold in aligned_rows(completions, answer=answer)]


def _exact(response: str, gold: Any) -> Judgement:
    if gold is None or not str(gold).strip():
        return Judgement(None, "no_gold")
    stated = extract_final_answer(response)
    if stated is None:
        lines = response.strip().splitlines()  # the last line is not blank once the response is stripped
        stated = _ANSWER_LABEL.sub("", lines[-1].strip()) if lines else ""
    if not stated:
        return Judgement(0.0, "no_answer")
    if normalize_answer(stated) != normalize_answer(str(gold)):
        return Judgement(0.0, "incorrect")
    return Judgement(1.0, "correct")


def judge_exact(completions: list, *, answer: list | None = None, **columns: Any) -> list[Judgement]:
    r"""Exact match of the final answer (see `extract_final_answer`; else the response's last non-empty
    line, without an "Answer:" label) against the gold, both normalized by `normalize_answer`.

    >>> judged = judge_exact([r"So \boxed{\text{Paris}}.", "Final answer: Lyon", "<think>\nParis"], answer=["paris"] * 3)
    >>> [verdict for _, verdict in judged]
    ['correct', 'incorrect', 'no_answer']
    """
    return [_exact(split_thinking(text)[1], gold) for text, gold in aligned_rows(completions, answer=answer)]


JUDGES: dict[str, Callable[..., list[Judgement]]] = {
    "format": judge_format, "language": judge_language, "length": judge_length, "truncated": judge_truncated,
    "repetition": judge_repetition, "choice": judge_choice, "exact": judge_exact,
}


def trl_reward(judge: Callable[..., list[Judgement]], name: str) -> Callable[..., list[float | None]]:
    """A TRL reward function with the scores of `judge`, named `name` (TRL logs rewards by __name__).

    >>> reward = trl_reward(judge_format, "format_reward")
    >>> reward.__name__, reward(["<think>\\nhm\\n</think>\\n\\n4", "4"], prompts=["2+2?", "2+2?"])
    ('format_reward', [1.0, 0.0])
    """

    def reward(completions: list, **columns: Any) -> list[float | None]:
        return [judgement.score for judgement in judge(completions, **columns)]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"TRL reward function: the scores of {judge.__name__}."
    return reward


format_reward = trl_reward(judge_format, "format_reward")
language_reward = trl_reward(judge_language, "language_reward")
length_reward = trl_reward(judge_length, "length_reward")
truncated_reward = trl_reward(judge_truncated, "truncated_reward")
repetition_reward = trl_reward(judge_repetition, "repetition_reward")
choice_reward = trl_reward(judge_choice, "choice_reward")
exact_reward = trl_reward(judge_exact, "exact_reward")
