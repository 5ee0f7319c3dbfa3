"""What the teacher is asked, and how its answer splits into thinking and response.

Two templates:
- `chat`: the model's own chat template, an optional system prompt, and a user turn that asks for the
  final answer in \\boxed{} (DeepSeek's recommended math prompt), so the filter stage can verify it.
- `r1-zero`: the exact R1-Zero prompt of the DeepSeek-R1 paper, sent as raw text with no chat template.

The split (`schema.split_reasoning`, shared with the rewards) understands the three ways teachers return thinking: inline `<think>...</think>`, a template
that pre-fills `<think>` so the completion starts inside the thinking (R1-Distill models), and a
separate `reasoning_content` / `reasoning` field (vLLM with a reasoning parser, the DeepSeek API).
"""

from __future__ import annotations

from r1distill.schema import THINK_OPEN, r1_layout, split_reasoning

__all__ = ["R1_ZERO", "TEMPLATES", "build_messages", "ends_inside_think", "full_completion", "split_reasoning"]

TEMPLATES = ("chat", "r1-zero")

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

DEFAULT_USER_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."


def build_messages(problem: str, template: str, system: str | None, prompt_template: str | None) -> list[dict[str, str]]:
    """The messages for one problem.

    `{problem}` is substituted literally (not with str.format), so templates can say `\\boxed{}`.

    >>> build_messages("1+1?", "chat", "Be brief.", None)[1]["content"]
    '1+1?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
    >>> build_messages("1+1?", "r1-zero", None, None)[0]["content"].endswith("</answer>. User: 1+1?. Assistant:")
    True
    """
    if template == "r1-zero":
        question = prompt_template.replace("{problem}", problem) if prompt_template else problem
        return [{"role": "user", "content": R1_ZERO.replace("{prompt}", question)}]
    user = (prompt_template or DEFAULT_USER_TEMPLATE).replace("{problem}", problem)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def ends_inside_think(rendered_prompt: str) -> bool:
    """Whether a rendered prompt pre-fills an opened think block (the completion starts inside it)."""
    tail = rendered_prompt.rstrip()
    return tail.endswith(THINK_OPEN)


def full_completion(text: str, reasoning: str | None) -> str:
    """The completion as one text: a separately returned thinking is put back in R1's layout."""
    return text if reasoning is None else r1_layout(reasoning, text)
