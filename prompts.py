"""What a model is asked: the prompt templates every stage that prompts a model shares (generate, eval, sft, rl, distill).

Two templates:
- `chat`: the model's own chat template, an optional system prompt, and a user turn that asks for the
  final answer in \\boxed{} (DeepSeek's recommended math prompt), so the filter stage can verify it.
- `r1-zero`: the exact R1-Zero prompt of the DeepSeek-R1 paper, sent as raw text with no chat template.
- `raw`: the problem text itself sent as raw text, for prompts rendered elsewhere: eval's budget forcing
  continues a rendered prompt plus a forced prefix this way, on every backend.

How the answer comes back and is stored (inline `<think>`, a template that pre-fills `<think>`, a
separate reasoning field) is `schema.canonical_completion`.
"""

from __future__ import annotations

__all__ = ["R1_ZERO", "RAW_TEMPLATES", "TEMPLATES", "build_messages"]

TEMPLATES = ("chat", "r1-zero", "raw")
# Sent as plain text (the completions endpoint; no chat template applied).
RAW_TEMPLATES = ("r1-zero", "raw")

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
    >>> build_messages("<|im_start|>user\\n1+1?<|im_end|>\\n", "raw", None, None)[0]["content"]
    '<|im_start|>user\\n1+1?<|im_end|>\\n'
    """
    if template == "raw":
        return [{"role": "user", "content": prompt_template.replace("{problem}", problem) if prompt_template else problem}]
    if template == "r1-zero":
        question = prompt_template.replace("{problem}", problem) if prompt_template else problem
        return [{"role": "user", "content": R1_ZERO.replace("{prompt}", question)}]
    user = (prompt_template or DEFAULT_USER_TEMPLATE).replace("{problem}", problem)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]
