"""Which chat template a model trains and serves with (sft and rl), and the proof that training matches serving.

Reproductions most often fail here, silently: the R1-Distill and Qwen3 templates drop everything up to
`</think>` from assistant turns, so a student trained through them never sees the reasoning; a template
without `{% generation %}` markers gives TRL no assistant mask, so the prompt is trained too; a template
that pre-fills `<think>` at inference while the trained turns start otherwise teaches a context the
student never meets. So the student's own template is probed on a conversation that thinks, and used
only when it keeps the thinking, marks the assistant turns (itself or through TRL's training variant),
trains its end-of-turn token and passes the parity check on the data; otherwise r1distill's ChatML
template below is used. The chosen template is saved with the model, so serving renders what was trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from r1distill.errors import UsageError
from r1distill.schema import KIND_REASONING

log = logging.getLogger(__name__)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML that keeps assistant turns verbatim (thinking included). The generation block covers exactly
# what the student must write: the turn's content and its end-of-turn token, which is what stops it.
# The generation prompt ends where that block begins. `enable_thinking` (as in Qwen3) pre-fills the
# opening of a reasoning turn (True) or an empty think block (False); without it the student chooses.
R1DISTILL_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- elif enable_thinking is defined and enable_thinking %}{{- '<think>\\n' }}{%- endif %}"
    "{%- endif %}"
)

_PROBE = [
    {"role": "user", "content": "What is 6 times 7?"},
    {"role": "assistant", "content": "<think>\nPROBE-REASONING 6 times 7 is 42.\n</think>\n\nPROBE-ANSWER 42"},
]


@dataclass
class Template:
    """The chat template a run trains with."""

    text: str
    name: str
    """'model' (the student's own), 'model-training' (TRL's training variant of it) or 'r1distill'."""
    reason: str
    """Why it was chosen, for the log and the model card."""


class ParityError(ValueError):
    """The generation prompt does not end where the trained assistant turn begins."""


def choose_template(tokenizer, choice: str, conversations: list[list[dict]], kinds: list[str]) -> Template:
    """The template for `--template choice` (auto, model or r1distill); see the module docstring."""
    if choice == "r1distill":
        return Template(R1DISTILL_TEMPLATE, "r1distill", "asked for with --template r1distill")
    candidate, problem = _model_candidate(tokenizer)
    if problem is None:
        try:
            parity(tokenizer, candidate.text, conversations, kinds)
        except ParityError as err:
            problem = f"the student's template fails the train/serve parity check: {err}"
    if problem is None:
        return candidate
    if choice == "model":
        raise UsageError(f"--template model: {problem}; use --template auto or r1distill")
    return Template(R1DISTILL_TEMPLATE, "r1distill", problem)


def rl_template(tokenizer) -> Template:
    """The template `rl --template chat` prompts with and saves: the model's own when it keeps the thinking of
    assistant turns (GRPO renders only the generation prompt, but the policy is then served multi-turn and
    may be fine-tuned again), else r1distill's. GRPO trains no template span, so markers are not needed."""
    from jinja2 import TemplateError

    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        return Template(R1DISTILL_TEMPLATE, "r1distill", "the model has no chat template")
    try:
        rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False, chat_template=own)
    except (TemplateError, TypeError, ValueError) as err:
        return Template(R1DISTILL_TEMPLATE, "r1distill", f"the model's template fails on a user/assistant conversation ({str(err)[:80]})")
    if "PROBE-REASONING" not in rendered:
        return Template(R1DISTILL_TEMPLATE, "r1distill", "the model's template strips <think>...</think> from assistant turns")
    return Template(own, "model", "the model's own template (it keeps the reasoning)")


def turn_end_token(tokenizer, template: str) -> str | None:
    """The first token a template writes after an assistant turn's content (its end-of-turn token), found
    without generation markers; None when the turn ends with the text itself."""
    rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False, chat_template=template)
    after = rendered.split(_PROBE[1]["content"], 1)[-1]
    ids = tokenizer.encode(after, add_special_tokens=False)
    return next((tokenizer.convert_ids_to_tokens(t) for t in ids if tokenizer.decode([t]).strip()), None)


def generation_prompt_tail(tokenizer, template: str) -> str:
    """What the template writes after a user turn when it prompts for an answer (e.g. "<|im_start|>assistant\n",
    or "...<think>\n" for templates that pre-fill the thinking)."""
    user = [{"role": "user", "content": "PROBE-QUESTION"}]
    rendered = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, chat_template=template)
    return rendered.rsplit("PROBE-QUESTION", 1)[-1]


def _model_candidate(tokenizer) -> tuple[Template | None, str | None]:
    """(the student's template in a trainable form, None), or (None, why it cannot be trained on)."""
    from jinja2 import TemplateError
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers, is_chat_template_stop_token_trained

    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        return None, "the student has no chat template"
    try:
        rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False, chat_template=own)
    except (TemplateError, TypeError, ValueError) as err:
        return None, f"the student's template fails on a user/assistant conversation ({str(err)[:80]})"
    if "PROBE-REASONING" not in rendered:
        return None, "the student's template strips <think>...</think> from assistant turns, so the reasoning would never be trained"
    if has_generation_markers(own):
        candidate = Template(own, "model", "the student's template keeps the reasoning and marks assistant turns")
    else:
        try:
            variant = get_training_chat_template(tokenizer)
        except ValueError:
            return None, "the student's template has no {% generation %} markers for the assistant-only loss, and TRL knows no training variant of it"
        candidate = Template(variant, "model-training", "TRL's training variant of the student's template (it keeps the reasoning)")
    if not is_chat_template_stop_token_trained(tokenizer, chat_template=candidate.text):
        return None, "the student's template leaves the assistant's end-of-turn token out of the loss, so the student would not learn to stop"
    return candidate, None


def parity(tokenizer, template: str, conversations: list[list[dict]], kinds: list[str]) -> str:
    """The one-line statement that the generation prompt ends where the trained assistant turn begins.

    Checked in tokens on the first row of each kind: the conversation up to its last assistant turn,
    rendered with `add_generation_prompt=True`, must be where the full rendering starts, and the
    trained (masked) span of that turn must begin right after it. Raises ParityError otherwise.
    """
    checked = []
    for kind in (KIND_REASONING, "non_reasoning"):
        row = next((i for i, k in enumerate(kinds) if k == kind), None)
        if row is None:
            continue
        messages, name = conversations[row], kind.replace("_", "-")
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(messages[:last], chat_template=template, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(
            messages[: last + 1], chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = full["input_ids"], full["assistant_masks"]
        if ids[: len(prompt)] != prompt:
            shared = next((i for i, (a, b) in enumerate(zip(prompt, ids)) if a != b), min(len(prompt), len(ids)))
            raise ParityError(
                f"the generation prompt ends with {tokenizer.decode(prompt[shared:])!r} but the trained {name} "
                f"rows continue with {tokenizer.decode(ids[shared:shared + 8])!r}"
            )
        start = len(mask) - next((i for i, m in enumerate(reversed(mask)) if m), len(mask))
        while start > 0 and mask[start - 1]:
            start -= 1
        if start < len(prompt):
            raise ParityError(f"in the {name} rows the loss covers {tokenizer.decode(ids[start:len(prompt)])!r}, which the generation prompt already writes")
        if start > len(prompt):
            raise ParityError(f"in the {name} rows {tokenizer.decode(ids[len(prompt):start])!r} after the generation prompt is never trained")
        checked.append(name)
    return f"train/serve parity: the generation prompt ends where the trained assistant turn begins ({' and '.join(checked)} rows checked)"


def end_of_turn_token(tokenizer, template: str) -> str:
    """The token that closes a trained assistant turn: the last non-blank token of its loss span."""
    out = tokenizer.apply_chat_template(_PROBE, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [token for token, masked in zip(out["input_ids"], out["assistant_masks"]) if masked]
    return next(tokenizer.convert_ids_to_tokens(t) for t in reversed(trained) if tokenizer.decode([t]).strip())


def install(tokenizer, template: Template) -> list[str]:
    """Make `template` the tokenizer's chat template, first adding the special tokens r1distill's template
    needs that the tokenizer does not encode as one token; returns those tokens (the embeddings must grow)."""
    added = []
    if template.name == "r1distill":
        vocab = tokenizer.get_vocab()
        added = [t for t in (IM_START, IM_END) if t not in vocab or tokenizer.encode(t, add_special_tokens=False) != [vocab[t]]]
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
        log.info("added the special tokens %s to the tokenizer (the embeddings grow to match)", ", ".join(added))
    tokenizer.chat_template = template.text
    log.info("chat template: %s (%s)", template.name, template.reason)
    return added
