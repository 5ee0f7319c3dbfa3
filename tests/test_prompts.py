"""Templates and the reasoning split."""

from __future__ import annotations


from r1distill.backends import ends_inside_think
from r1distill.prompts import R1_ZERO, build_messages
from r1distill.schema import split_reasoning


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
