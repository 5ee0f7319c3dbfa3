"""The rule rewards besides accuracy: format, language consistency, length, truncation, repetition.

Each rule is a *judge*, `(completions, *, <columns>, <options>) -> list[Judgement]`: per-row columns
(TRL's dataset columns, a trace table's columns) are keyword lists aligned with `completions`, options
are single values. The registry in `r1distill.rewards` binds options once and hands a judge only the
columns it names, so a dataset column can never be taken for an option.
Higher scores are better, in [0, 1]; None means the rule cannot judge the row (TRL skips it).
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from r1distill.rewards.text import Judgement, aligned_rows, split_thinking
from r1distill.schema import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, THINK_CLOSE, THINK_OPEN


FORMAT_LAYOUTS = ("r1", "r1-zero")
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _format(text: str, lenient: bool, layout: str) -> Judgement:
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
    if layout == "r1-zero":
        answer = answer.strip()
        one_block = answer.count(_ANSWER_OPEN) == 1 and answer.count(_ANSWER_CLOSE) == 1
        if not (one_block and answer.startswith(_ANSWER_OPEN) and answer.endswith(_ANSWER_CLOSE)):
            return Judgement(0.0, "no_answer_block")
        if not answer[len(_ANSWER_OPEN) : -len(_ANSWER_CLOSE)].strip():
            return Judgement(0.0, "empty_answer")
    return Judgement(1.0, "ok")


def judge_format(completions: list, *, lenient: bool = False, layout: str = "r1") -> list[Judgement]:
    """R1's layout: one `<think>` block at the start with non-empty thinking, then a non-empty answer.

    `layout="r1-zero"` is the layout the R1-Zero prompt asks for: after the thinking, one
    `<answer>...</answer>` block with non-empty content and nothing else, `<think> ... </think> <answer> ... </answer>`.

    `generate` stores the completions of templates that pre-fill `<think>` (R1-Distill models) with the
    opening tag put back, so they pass as they are. `lenient` also accepts a completion with no opening
    tag but a closing one, for tables written by other tools (and raw GRPO completions of such models).

    >>> judge_format(["<think>\\n2+2=4\\n</think>\\n\\n4", "2+2=4\\n</think>\\n\\n4", "<think>\\n2+2="])[1:]
    [Judgement(score=0.0, verdict='missing_think'), Judgement(score=0.0, verdict='unclosed_think')]
    >>> judge_format(["2+2=4\\n</think>\\n\\n4"], lenient=True)
    [Judgement(score=1.0, verdict='ok')]
    >>> [v for _, v in judge_format([" <think> 2+2=4 </think> <answer> 4 </answer>", "<think>2+2=4</think> 4"], layout="r1-zero")]
    ['ok', 'no_answer_block']
    """
    if layout not in FORMAT_LAYOUTS:
        raise ValueError(f"unknown format layout {layout!r}; use one of {', '.join(FORMAT_LAYOUTS)}")
    return [_format(text, lenient, layout) for (text,) in aligned_rows(completions)]


_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d"
# Han and kana characters are words on their own (those scripts do not separate words by spaces);
# other words are runs of letters, so digits, punctuation and underscores separate or vanish.
_WORD = re.compile(rf"(?P<han>[{_HAN}])|(?P<kana>[{_KANA}])|(?P<letters>[^\W\d_{_HAN}{_KANA}]+)")
_NOT_WORDS = re.compile(r"\\[A-Za-z]+|</?[A-Za-z]+>")  # LaTeX commands, <think>-style tags
_ASCII_WORD = re.compile(r"[A-Za-z]+")  # what _WORD matches in ASCII text
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
    text = _NOT_WORDS.sub(" ", text)
    if text.isascii():
        # Every word of ASCII text is a run of Latin letters: counted in one pass in C rather than
        # match by match in Python: the language reward of 4,000 MATH-500 traces takes 0.08 s, not 0.22 s.
        words = len(_ASCII_WORD.findall(text))
        return Counter({"latin": words} if words else {})
    return Counter(_script(m.group()[0]) if m.lastgroup == "letters" else m.lastgroup for m in _WORD.finditer(text))


def _language(completion: str, language: str, min_share: float) -> Judgement:
    reasoning = split_thinking(completion)[0]
    counts = word_scripts(completion if reasoning is None else reasoning)
    total = sum(counts.values())
    if total == 0:
        return Judgement(None, "no_text")
    share = sum(counts[script] for script in LANGUAGE_SCRIPTS[language]) / total
    return Judgement(share, "consistent" if share >= min_share else "mixed")


def judge_language(completions: list, *, language: str = "en", min_share: float = 0.95) -> list[Judgement]:
    """R1's language-consistency reward: the share of the reasoning's words in the target language.

    Languages are told apart by script, so "en" counts Latin words (French counts too) and "ja" counts
    Han and kana; each Han or kana character is one word. Letters inside formulas are Latin words.
    The thinking is judged when the completion has one, else the whole completion.

    >>> judge_language(["<think>\\nWe add the numbers.\\n</think>\\n\\n4"])
    [Judgement(score=1.0, verdict='consistent')]
    >>> judge_language(["<think>\\n我们 add them\\n</think>\\n\\n4"], language="zh")
    [Judgement(score=0.5, verdict='mixed')]
    """
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LANGUAGE_SCRIPTS)}")
    return [_language(text, language, min_share) for (text,) in aligned_rows(completions)]


_FINISH_VERDICTS = {
    FINISH_STOP: Judgement(1.0, "complete"), FINISH_LENGTH: Judgement(0.0, "truncated"), FINISH_ERROR: Judgement(0.0, "error")
}


def judge_truncated(completions: list, *, finish_reason: list | None = None) -> list[Judgement]:
    """Whether generation stopped by itself: a trace cut off at max_tokens has no final answer.

    Without a finish_reason (absent, null, or a value other than stop/length/error) the row is unknown.

    >>> judge_truncated(["a", "b"], finish_reason=["length", None])
    [Judgement(score=0.0, verdict='truncated'), Judgement(score=None, verdict='unknown')]
    """
    rows = aligned_rows(completions, finish_reason=finish_reason)
    return [_FINISH_VERDICTS.get(reason, Judgement(None, "unknown")) for _, reason in rows]


def _length(text: str, ids: list | None, tokens: int | None, min_tokens: int | None, max_tokens: int | None) -> Judgement:
    if ids is not None:
        tokens = len(ids)
    elif tokens is None:
        tokens = len(text.split())
    if min_tokens is not None and tokens < min_tokens:
        return Judgement(0.0, "too_short")
    if max_tokens is not None and tokens > max_tokens:
        return Judgement(0.0, "too_long")
    return Judgement(1.0, "ok")


def judge_length(
    completions: list, *, completion_tokens: list | None = None, completion_ids: list | None = None,
    min_tokens: int | None = None, max_tokens: int | None = None,
) -> list[Judgement]:
    """Whether a completion's length lies within [min_tokens, max_tokens] (None: no bound).

    The length is the number of token ids TRL passes as `completion_ids` (the policy's own output, which a
    dataset column cannot stand in for); else the trace column `completion_tokens`; failing both, the
    number of whitespace-separated words, a rough stand-in.

    >>> [verdict for _, verdict in judge_length(["a b c", "a", "a b c d e"], min_tokens=2, max_tokens=4)]
    ['ok', 'too_short', 'too_long']
    >>> judge_length(["short text"], completion_tokens=[900], max_tokens=512)
    [Judgement(score=0.0, verdict='too_long')]
    """
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise ValueError(f"min_tokens ({min_tokens}) is larger than max_tokens ({max_tokens}): every row would fail")
    rows = aligned_rows(completions, completion_ids=completion_ids, completion_tokens=completion_tokens)
    return [_length(text, ids, tokens, min_tokens, max_tokens) for text, ids, tokens in rows]


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


def judge_repetition(completions: list, *, n: int = 4, max_ratio: float = 0.5) -> list[Judgement]:
    """Degenerate loops, common in truncated traces: score 1 - `repetition_ratio`, "repetitive" above `max_ratio`.

    >>> [verdict for _, verdict in judge_repetition(["Wait, let me check again. " * 100, "Add, then halve."])]
    ['repetitive', 'ok']
    """
    ratios = [repetition_ratio(text, n) for (text,) in aligned_rows(completions)]
    return [Judgement(1.0 - ratio, "repetitive" if ratio > max_ratio else "ok") for ratio in ratios]


