"""Rule rewards: every verdict of every reward, adversarial inputs, and the TRL-facing functions."""

from __future__ import annotations

import doctest
from contextlib import closing

import polars as pl
import pytest

import r1distill.rewards as rewards
import r1distill.rewards.accuracy
import r1distill.rewards.rules
import r1distill.rewards.text
from r1distill.rewards import (
    RULES,
    Judgement,
    judge_choice,
    judge_exact,
    judge_format,
    judge_language,
    judge_length,
    judge_repetition,
    judge_truncated,
    rule,
)
from r1distill.rewards.rules import repetition_ratio, word_scripts
from r1distill.rewards.text import aligned_rows, completion_text, extract_final_answer, normalize_answer, split_thinking

MB = 1 << 20


def r1(thinking: str, answer: str) -> str:
    """A completion in R1's layout."""
    return f"<think>\n{thinking}\n</think>\n\n{answer}"


def chat(text: str) -> list[dict[str, str]]:
    """A TRL conversational completion."""
    return [{"role": "assistant", "content": text}]


COLUMN_NAMES = {"answer", "finish_reason", "completion_tokens", "completion_ids"}


def one(judge, completion, **keywords) -> Judgement:
    """The judgement of a single completion: columns given as single values, options as they are."""
    return judge([completion], **{name: [value] if name in COLUMN_NAMES else value for name, value in keywords.items()})[0]


@pytest.mark.parametrize("module", [rewards, r1distill.rewards.text, r1distill.rewards.rules, r1distill.rewards.accuracy])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --- helpers ------------------------------------------------------------------------------------


def test_completion_text_takes_the_last_message_of_a_conversation():
    conversation = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert completion_text(conversation) == "4"
    assert completion_text("plain") == "plain"
    assert completion_text([]) == ""
    assert completion_text([{"role": "assistant", "content": None}]) == ""


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r1("a", "b"), ("a", "b")),
        ("a\n</think>\nb", ("a", "b")),  # pre-filled <think>
        ("<think>\ncut off", ("cut off", "")),
        ("no thinking", (None, "no thinking")),
        ("<think>a</think>b</think>c", ("a", "b</think>c")),  # split at the first closing tag
        ("", (None, "")),
    ],
)
def test_split_thinking(completion, expected):
    assert split_thinking(completion) == expected


def test_columns_are_aligned_and_a_missing_column_is_null():
    rows = list(aligned_rows(["a", chat("b")], answer=("x", None), finish_reason=pl.Series(["stop", "length"]), n=None))
    assert rows == [("a", "x", "stop", None), ("b", None, "length", None)]
    with pytest.raises(ValueError, match="finish_reason"):
        judge_truncated(["a", "b"], finish_reason=["stop"])
    with pytest.raises(TypeError, match="answer"):
        list(aligned_rows(["a"], answer="x"))  # a single value is not a column


# Texts that make naive regexes, loops or recursion blow up, each 1 MB.
PATHOLOGICAL = {
    "periods": "Answer: C" + "." * MB,
    "unclosed answer tags": "<answer>" * (MB // 8),
    "dollars and periods": "$." * (MB // 2),
    "unclosed boxes": "\\boxed{" * (MB // 7),
    "answer phrases": "the answer is " * (MB // 14),
    "unclosed tags": "<a" * (MB // 2),
    "backslashes": "\\" * MB,
}


@pytest.mark.timeout(10)  # each takes well under a second; quadratic code takes minutes
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_every_judge_is_linear_on_pathological_text(name):
    text = PATHOLOGICAL[name]
    for mode in ("choice", "exact"):
        for reason in ("stop", "length"):
            [judgement] = rule("accuracy", mode=mode).judge([text], answer=["C"], finish_reason=[reason])
            assert isinstance(judgement, Judgement)
    for name in RULES[1:]:
        [judgement] = rule(name).judge([text], answer=["C"], finish_reason=["length"])
        assert isinstance(judgement, Judgement)


# --- extract_final_answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"so \boxed{\frac{a}{b^{2}}} done", r"\frac{a}{b^{2}}"),
        (r"\boxed{1} hmm, rather \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5$", "5"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are literal
        (r"\boxed{\left\{ x > 0 \right.}", r"\left\{ x > 0 \right."),  # ... even unbalanced ones
        (r"\boxed{5}}}", "5"),  # extra closing braces after the answer
        (r"\boxed{3} ... \boxed{4", None),  # the last one never closes: no final answer
        (r"\boxed{}", None),
        (r"\boxed{  }", None),
        ("<answer> 12 </answer>", "12"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("<answer>1", None),
        (r"<answer>\boxed{9}</answer>", "9"),
        ("The answer is 4.", None),
        ("", None),
    ],
)
def test_extract_final_answer(response, expected):
    assert extract_final_answer(response) == expected


def test_extract_final_answer_copes_with_deep_nesting_and_unbalanced_braces():
    nested = "{" * 500 + "x" + "}" * 500
    assert extract_final_answer(rf"\boxed{{{nested}}}") == nested
    deeper = "{" * 50_000 + "x" + "}" * 50_000  # far past any recursion limit
    assert extract_final_answer(rf"\boxed{{{deeper}}}") == deeper
    assert extract_final_answer(r"\boxed{" + "{" * 500 + "x") is None
    assert extract_final_answer(r"\boxed{" + "{" * MB) is None


def test_extract_final_answer_on_a_1mb_response():
    assert extract_final_answer("x " * (MB // 2) + r"\boxed{42}") == "42"
    assert extract_final_answer("}{" * (MB // 2)) is None


# --- format -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "lenient", "verdict"),
    [
        (r1("2+2=4", "4"), False, "ok"),
        ("\n  " + r1("2+2=4", "4"), False, "ok"),
        (r1("2+2=4", "4"), True, "ok"),
        ("2+2=4\n</think>\n\n4", True, "ok"),
        ("4", False, "missing_think"),
        ("4", True, "missing_think"),
        ("", False, "missing_think"),
        ("2+2=4\n</think>\n\n4", False, "missing_think"),
        ("The tag comes late <think>2+2=4</think> 4", False, "missing_think"),
        ("<think>\n2+2=", False, "unclosed_think"),
        ("<think>\n2+2=", True, "unclosed_think"),
        ("<think>\n \n</think>\n\n4", False, "empty_thinking"),
        ("<think></think>4", False, "empty_thinking"),
        ("\n</think>\n\n4", True, "empty_thinking"),
        (r1("2+2=4", " \n "), False, "empty_answer"),
        ("2+2=4</think>", True, "empty_answer"),
        ("<think>a</think>b<think>c</think>d", False, "nested_think"),
        ("<think>a<think>b</think>c", False, "nested_think"),
        ("<think>a</think>b</think>c", False, "nested_think"),
        ("a</think>b</think>c", True, "nested_think"),
        ("a <think> b </think> c", True, "nested_think"),
    ],
)
def test_format(completion, lenient, verdict):
    assert judge_format([completion], lenient=lenient) == [Judgement(1.0 if verdict == "ok" else 0.0, verdict)]


def test_format_lenient_and_conversational_completions():
    prefilled = "2+2=4\n</think>\n\n4"
    assert [j.verdict for j in judge_format([prefilled], lenient=True) + judge_format([prefilled])] == ["ok", "missing_think"]
    assert judge_format([chat(r1("hm", "4")), chat("4")]) == [Judgement(1.0, "ok"), Judgement(0.0, "missing_think")]


# --- language -----------------------------------------------------------------------------------

ZH = "我们计算答案"  # six Han characters: six words
EN = "so we compute the final answer"  # six words


@pytest.mark.parametrize(
    ("thinking", "language", "score"),
    [
        (EN, "en", 1.0),
        (EN, "zh", 0.0),
        (ZH, "zh", 1.0),
        (ZH, "en", 0.0),
        (f"{ZH} {EN}", "zh", 0.5),
        (f"{EN}，{ZH}", "en", 0.5),
        (f"{ZH}{ZH}{ZH} {EN}", "zh", 0.75),
        (r"所以 \frac{1}{2} \cdot \sqrt{4} = 1", "zh", 1.0),  # LaTeX commands and digits are not words
        ("Мы складываем числа", "ru", 1.0),
        ("Мы складываем numbers", "ru", 2 / 3),
        ("نحن نجمع الأرقام", "ar", 1.0),
        ("우리는 숫자를 더합니다", "ko", 1.0),
        ("これは日本語です", "ja", 1.0),
        ("これは日本語です", "zh", 3 / 8),  # 日本語 is Han, the five kana are not
    ],
)
def test_language_share(thinking, language, score):
    judgement = one(judge_language, r1(thinking, "42"), language=language)
    assert judgement.score == pytest.approx(score)
    assert judgement.verdict == ("consistent" if score >= 0.95 else "mixed")


def test_language_threshold():
    thinking = " ".join(["word"] * 19) + " 字"  # 19 of 20 words are English
    assert judge_language([r1(thinking, "x")]) == [Judgement(0.95, "consistent")]
    assert judge_language([r1(thinking, "x")], min_share=0.99) == [Judgement(0.95, "mixed")]


def test_language_reads_the_thinking_then_the_whole_completion():
    english_r1 = r1("we add the numbers", "答案是四")  # the answer's language does not count
    assert judge_language([english_r1])[0].score == 1.0
    assert judge_language(["答案是四"], language="zh")[0].score == 1.0  # no tags: the whole completion
    assert judge_language(["<think>\n我们把数字"], language="zh")[0].score == 1.0  # truncated, tag not a word


@pytest.mark.parametrize("text", ["", r1("12 + 34 = 46!", "46"), r1(r"\frac{1}{2} \cdot 4", "2"), "  \n"])
def test_language_without_words_cannot_be_judged(text):
    assert one(judge_language, text) == Judgement(None, "no_text")


def test_language_target_and_unknown_language():
    assert [j.score for j in judge_language([r1(EN, "a"), r1(ZH, "b")], language="zh")] == [0.0, 1.0]
    with pytest.raises(ValueError, match="klingon"):
        rule("language", language="klingon")  # refused when bound, before any row


def test_word_scripts_ignore_tags_and_latex():
    assert word_scripts(r"<think>\alpha + x_1 = 数</think>") == {"latin": 1, "han": 1}


@pytest.mark.parametrize(
    ("text", "words"),
    [(r"<think>Let x_1 = \frac{a2b}{c}; it's 3 apples.</think>", 8), ("12 + 34 = 46!", 0), ("", 0)],  # Let x a b c it s apples
)
def test_word_scripts_count_ascii_text_as_any_text(text, words):
    assert word_scripts(text) == ({"latin": words} if words else {})
    # ASCII text takes a shortcut; a dash, which is no word, sends the same text down the general path.
    assert word_scripts(text + " \u2014") == word_scripts(text)


# --- truncated and length -----------------------------------------------------------------------


def test_truncated_verdicts():
    judged = judge_truncated(["a"] * 5, finish_reason=["stop", "length", "error", None, "abort"])
    assert judged == [
        Judgement(1.0, "complete"),
        Judgement(0.0, "truncated"),
        Judgement(0.0, "error"),
        Judgement(None, "unknown"),
        Judgement(None, "unknown"),
    ]
    assert judge_truncated(["a", "b"]) == [Judgement(None, "unknown")] * 2


@pytest.mark.parametrize(
    ("tokens", "verdict"), [(9, "too_short"), (10, "ok"), (15, "ok"), (20, "ok"), (21, "too_long")]
)
def test_length_bounds_are_inclusive(tokens, verdict):
    judgement = one(judge_length, "a few words", completion_tokens=tokens, min_tokens=10, max_tokens=20)
    assert judgement == Judgement(1.0 if verdict == "ok" else 0.0, verdict)


def test_length_prefers_the_policys_token_ids_then_the_trace_column_then_words():
    assert one(judge_length, "one", completion_ids=[1, 2, 3, 4], completion_tokens=1, min_tokens=3).verdict == "ok"
    assert one(judge_length, "one two three", completion_tokens=None, max_tokens=2).verdict == "too_long"
    assert one(judge_length, "one", completion_ids=[1, 2, 3, 4], min_tokens=3).verdict == "ok"
    assert one(judge_length, "one", min_tokens=3).verdict == "too_short"
    assert one(judge_length, "", completion_tokens=None) == Judgement(1.0, "ok")  # no bounds
    assert judge_length([chat("a b c")], max_tokens=2)[0].verdict == "too_long"
    with pytest.raises(ValueError, match="min_tokens"):
        rule("length", min_tokens=10, max_tokens=5)


# --- repetition ---------------------------------------------------------------------------------


def test_repetition_ratio():
    assert repetition_ratio("a b a b a b", n=2) == pytest.approx(0.6)  # 5 bigrams, 2 distinct
    assert repetition_ratio("a b a b a b", n=3) == pytest.approx(0.5)
    assert repetition_ratio("a b c", n=4) == 0.0
    assert repetition_ratio("") == 0.0


def test_repetition_verdicts():
    assert judge_repetition(["a b a b a b"], n=2) == [Judgement(pytest.approx(0.4), "repetitive")]
    assert judge_repetition(["a b a b a b"], n=3) == [Judgement(pytest.approx(0.5), "ok")]  # not above 0.5
    assert judge_repetition(["a b a b a b"], n=3, max_ratio=0.4)[0].verdict == "repetitive"
    assert judge_repetition(["", "too short", r1("First add.", "Then halve.")]) == [Judgement(1.0, "ok")] * 3


@pytest.mark.timeout(10)
def test_repetition_of_a_1mb_loop_is_flagged_in_linear_time():
    loop = r1("Wait, let me recompute. " * (MB // 24 + 1), "")
    assert len(loop) > MB
    [judgement] = judge_repetition([loop])
    assert judgement.verdict == "repetitive" and judgement.score < 0.001
    distinct = " ".join(f"w{i}" for i in range(MB // 6))
    assert len(distinct) > MB
    assert judge_repetition([distinct]) == [Judgement(1.0, "ok")]


# --- choice -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "gold", "verdict"),
    [
        (r"So \boxed{C}.", "C", "correct"),
        (r"So \boxed{\text{(c)}}.", "C", "correct"),
        ("The answer is (C).", "(C)", "correct"),
        ("Answer: C", "c", "correct"),
        ("**Answer:** C", " C. ", "correct"),
        ("The correct option is D because of symmetry.", "D", "correct"),
        ("After elimination:\n\n**D**", "D", "correct"),
        ("The answer is (A)... wait, the answer is (B).", "B", "correct"),
        (r"Answer: A. No: \boxed{B}", "B", "correct"),
        (r"\boxed{42}, so the answer is (J)", "J", "correct"),
        ("Answer: B", "C", "incorrect"),
        ("The answer is (a)", "C", "incorrect"),
        ("I cannot decide.", "C", "no_answer"),
        ("The answer is a prime number.", "A", "no_answer"),  # "a" is not choice A
        ("", "C", "no_answer"),
        ("Answer: C", "42", "gold_unparseable"),
        ("Answer: C", "CD", "gold_unparseable"),
        ("Answer: C", "K", "gold_unparseable"),
        ("Answer: C", None, "no_gold"),
        ("Answer: C", "  ", "no_gold"),
    ],
)
def test_choice(response, gold, verdict):
    score = {"correct": 1.0, "incorrect": 0.0, "no_answer": 0.0}.get(verdict)
    assert one(judge_choice, r1("Let me think.", response), answer=gold) == Judgement(score, verdict)


def test_choice_reads_the_response_not_the_thinking():
    assert one(judge_choice, r1("The answer is (C).", "Answer: B"), answer="C").verdict == "incorrect"
    assert one(judge_choice, "<think>\nThe answer is (C).", answer="C").verdict == "no_answer"  # truncated
    assert one(judge_choice, chat(r1("hm", "Answer: C")), answer="C").verdict == "correct"
    assert judge_choice(["Answer: C"]) == [Judgement(None, "no_gold")]


# --- exact --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "gold", "verdict"),
    [
        (r"Thus \boxed{\frac{1}{2}}.", r"\frac{1}{2}", "correct"),
        (r"Thus \boxed{\frac{1}{2}}.", r"\frac12", "incorrect"),
        (r"\boxed{ \text{Paris} }", "paris", "correct"),
        ("$42$.", "42", "correct"),
        ("<answer> 12 </answer> (I hope)", "12", "correct"),
        ("Some reasoning first.\n\nParis", "PARIS", "correct"),
        ("Some reasoning first.\n\n**Final Answer:** Paris.\n\n", "Paris", "correct"),
        ("The answer is Paris", "Paris", "incorrect"),  # the whole last line is the answer
        ("Paris", "Lyon", "incorrect"),
        ("", "Paris", "no_answer"),
        ("\n \n", "Paris", "no_answer"),
        ("Answer:", "Paris", "no_answer"),
        ("Paris", None, "no_gold"),
    ],
)
def test_exact(response, gold, verdict):
    score = {"correct": 1.0, "incorrect": 0.0, "no_answer": 0.0}.get(verdict)
    assert one(judge_exact, r1("Let me think.", response), answer=gold) == Judgement(score, verdict)


def test_exact_reads_the_response_not_the_thinking():
    assert one(judge_exact, r1(r"\boxed{41}", r"\boxed{42}"), answer="42").verdict == "correct"
    assert one(judge_exact, r1(r"\boxed{42}", ""), answer="42").verdict == "no_answer"
    assert one(judge_exact, "<think>\nit is \\boxed{42}", answer="42").verdict == "no_answer"  # truncated
    assert one(judge_exact, r1("x", "y\n" * (MB // 2) + r"\boxed{42}"), answer="42").verdict == "correct"


@pytest.mark.timeout(10)
def test_normalize_answer():
    assert normalize_answer(r" $\text{New York}$. ") == normalize_answer("new york") == "newyork"
    assert normalize_answer("**42**") == "42"
    assert normalize_answer("4.2") == "4.2"  # only trailing periods go
    assert normalize_answer("Paris..." + "." * MB) == "paris"


# --- registry and TRL functions -----------------------------------------------------------------

COMPLETIONS = [r1("we add", r"\boxed{C}"), chat("2+2=4\n</think>\n\nAnswer: B"), "<think>\nWait, wait, wait"]
COLUMNS = {
    "answer": ["C", "C", None],
    "finish_reason": ["stop", "stop", "length"],
    "completion_tokens": [10, None, 4096],
    # what TRL adds besides dataset columns
    "prompts": ["q1", "q2", "q3"],
    "completion_ids": [[1] * 10, [1] * 6, [1] * 4096],
    "trainer_state": object(),
    "log_metric": print,
}


def test_registry_names_every_reward():
    assert RULES == ("accuracy", "format", "language", "length", "truncated", "repetition", "code")
    with pytest.raises(ValueError, match="unknown rule"):
        rule("vibes")
    with pytest.raises(ValueError, match="no option 'language'"):
        rule("format", language="en")
    with pytest.raises(ValueError, match="accuracy"):
        rule("accuracy", language="en")


@pytest.mark.parametrize("name", RULES)
def test_trl_reward_functions_are_named_and_aligned(name):
    with closing(rule(name, **({"mode": "choice"} if name == "accuracy" else {}))) as reward:
        assert reward.__name__ == f"{name}_reward"
        scores = reward(completions=COMPLETIONS, **COLUMNS)
        assert scores == [judgement.score for judgement in reward.judge(COMPLETIONS, **COLUMNS)]
        assert len(scores) == len(COMPLETIONS)
        assert all(score is None or (isinstance(score, float) and 0.0 <= score <= 1.0) for score in scores)
        assert reward(completions=[]) == []


# Dataset columns named like options: TRL passes them as keywords, and they must change nothing.
OPTION_NAMED_COLUMNS = {"language": ["zh"] * 3, "max_tokens": [1] * 3, "min_tokens": [10**6] * 3, "n": [1] * 3,
                        "lenient": [True] * 3, "mode": ["exact"] * 3, "max_ratio": [0.0] * 3, "min_share": [1.0] * 3}


@pytest.mark.parametrize("name", RULES)
def test_dataset_columns_named_like_options_have_no_effect(name):
    with closing(rule(name, **({"mode": "choice"} if name == "accuracy" else {}))) as reward:
        assert reward(COMPLETIONS, **COLUMNS, **OPTION_NAMED_COLUMNS) == reward(COMPLETIONS, **COLUMNS)


def test_trl_rewards_score_the_rows_as_expected():
    assert rule("format")(COMPLETIONS) == [1.0, 0.0, 0.0]
    assert rule("format", lenient=True)(COMPLETIONS) == [1.0, 1.0, 0.0]
    assert rule("truncated")(COMPLETIONS, **COLUMNS) == [1.0, 1.0, 0.0]
    assert rule("length", max_tokens=8)(COMPLETIONS, **COLUMNS) == [0.0, 1.0, 0.0]  # completion_ids win
    assert rule("language")(COMPLETIONS, **COLUMNS) == [1.0, None, 1.0]
    with rule("accuracy", mode="choice") as choice, rule("accuracy", mode="exact") as exact:
        assert choice(COMPLETIONS, **COLUMNS) == [1.0, 0.0, None]
        assert exact(COMPLETIONS, **COLUMNS) == [1.0, 0.0, None]
