"""Templates and the reasoning split; also runs the doctests of the modules that have them."""

from __future__ import annotations

import doctest
import importlib

import pytest

from r1distill.generate.prompts import R1_ZERO, build_messages, ends_inside_think, split_reasoning


@pytest.mark.parametrize(
    "module",
    [
        "r1distill.schema",
        "r1distill.generate.prompts",
        "r1distill.generate.backends",
        "r1distill.generate.backends.openai_compat",
        "r1distill.redact",
        "r1distill.generate.backends.vllm_offline",
        "r1distill.filter.verify",
        "r1distill.generate.run",
    ],
)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_r1_zero_is_the_papers_prompt_word_for_word():
    assert R1_ZERO == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first "
        "thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and "
        "answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
        "here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
    )


def test_chat_messages_with_system_and_custom_template_keep_braces_literal():
    messages = build_messages("Find x if {x} = 2.", "chat", "You are careful.", "Q: {problem}\nAnswer in \\boxed{}.")
    assert messages == [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "Q: Find x if {x} = 2.\nAnswer in \\boxed{}."},
    ]


def test_split_handles_every_layout():
    assert split_reasoning("<think>a</think>b") == ("a", "b")
    assert split_reasoning("a</think>b") == ("a", "b"), "a template that pre-fills <think> leaves only the closing tag"
    assert split_reasoning("cut off", prefilled_think=True) == ("cut off", "")
    assert split_reasoning("<think>\ncut off") == ("cut off", "")
    assert split_reasoning("x</think>y</think>z") == ("x", "y</think>z"), "only the first closing tag ends the thinking"
    assert split_reasoning("", reasoning="r") == ("r", "")
    assert split_reasoning("plain answer") == (None, "plain answer")


def test_prefill_detection():
    assert ends_inside_think("<|Assistant|><think>\n")
    assert not ends_inside_think("<|Assistant|>")
