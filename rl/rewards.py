"""The shared rule rewards as GRPOTrainer calls them: on the policy's own completion, nothing else.

TRL calls each reward with the completions, their token ids and every dataset column. `PolicyReward`
hands the rule (the exact object `r1distill filter` judges with, through the same killable Math-Verify
workers and timeouts) only:
- the completion in canonical form: where the chat template pre-fills `<think>`, the tag is put back,
  as `generate` stores it, so format and accuracy read the thinking as thinking;
- `finish_reason` and `completion_ids` of the policy: "stop" when the last token is a stop token,
  else "length" (cut at --max-completion-length), so a cut-off response has an answer only if it
  states one explicitly, exactly as in filter;
- the dataset columns the rule names (`answer`, `numbers`...), never one named like a trace column.

A verification that times out is None for that completion (TRL leaves it out of that reward's mean
and of the group baseline if every reward is None); a step never waits more than the timeout per
answer. The share of None scores is logged per reward (`rewards/<name>/unscored`), and per step, whatever
the rewards, R1-Zero's two signs of learning to think: the share of completions that pass the format
check (`format/pass`) and their mean thinking tokens (`thinking/mean_tokens`, 0 for a completion without
a think block).

TRL calls synchronous rewards from the training loop's thread; the verifier pool needs no signals, so
it works from any thread.
"""

from __future__ import annotations

from collections.abc import Callable

from r1distill.rewards import Accuracy, Rule, rule
from r1distill.rewards.judge import LATE
from r1distill.rewards.text import completion_text
from r1distill.schema import FINISH_LENGTH, FINISH_STOP, canonical_completion, split_reasoning

POLICY_COLUMNS = ("completion_ids", "finish_reason", "completion_tokens")
"""What a reward may know about the completion: TRL's ids and what they imply; never the dataset's."""


class Rollouts:
    """The latest batch's completions with every reward's score and verdict, for samples in metrics.jsonl,
    and the batch's format pass share and thinking length.

    `count_tokens(texts)` counts tokens with the policy's tokenizer; `layout` is the format check's (r1, or
    r1-zero for the R1-Zero prompt)."""

    def __init__(self, count_tokens: Callable[[list[str]], list[int]] | None = None, layout: str = "r1") -> None:
        self.rows: list[dict] = []
        self.count_tokens = count_tokens
        self.format = rule("format", layout=layout)

    def start(self, prompts: list, texts: list[str], finish: list[str]) -> None:
        """A new batch (TRL calls the rewards in order; the first one starts it)."""
        self.rows = [
            {"prompt": completion_text(prompt), "completion": text, "finish_reason": reason, "rewards": {}, "verdicts": {}}
            for prompt, text, reason in zip(prompts, texts, finish)
        ]

    def record(self, name: str, judged: list) -> None:
        for row, judgement in zip(self.rows, judged):
            row["rewards"][name], row["verdicts"][name] = judgement.score, judgement.verdict

    def samples(self, count: int) -> list[dict]:
        return self.rows[:count]

    def shape(self) -> dict[str, float]:
        """The batch's `format/pass` and `thinking/mean_tokens` (the latter only with a token counter)."""
        texts = [row["completion"] for row in self.rows]
        if not texts:
            return {}
        found = {"format/pass": sum(self.format(texts)) / len(texts)}
        if self.count_tokens is not None:
            thinking = [reasoning for reasoning, _ in map(split_reasoning, texts)]
            counts = self.count_tokens([reasoning or "" for reasoning in thinking])
            found["thinking/mean_tokens"] = sum(0 if reasoning is None else count for reasoning, count in zip(thinking, counts)) / len(texts)
        return found


class PolicyReward:
    """One shared rule as a TRL reward function (see the module docstring)."""

    def __init__(self, rule: Rule | Accuracy, stop_ids: set[int], prefilled_think: bool, rollouts: Rollouts, first: bool) -> None:
        self.rule = rule
        self.first = first
        self.stop_ids = stop_ids
        self.prefilled_think = prefilled_think
        self.rollouts = rollouts
        self.__name__ = rule.__name__  # TRL logs a reward under its __name__: rewards/accuracy_reward/mean

    def __call__(self, prompts: list, completions: list, completion_ids: list, log_metric: Callable | None = None, **columns) -> list[float | None]:
        texts = [canonical_completion(completion_text(c), prefilled_think=self.prefilled_think) for c in completions]
        finish = [FINISH_STOP if ids and ids[-1] in self.stop_ids else FINISH_LENGTH for ids in completion_ids]
        data = {name: columns[name] for name in self.rule.columns if name in columns and name not in POLICY_COLUMNS}
        if "problem" in self.rule.columns:  # the judge's: the problem as the policy was asked it (its user turn)
            data["problem"] = [completion_text(prompt) for prompt in prompts]
        judged = self.rule.judge(texts, completion_ids=completion_ids, finish_reason=finish, **data)
        if self.first:
            self.rollouts.start(prompts, texts, finish)
            for name, value in self.rollouts.shape().items() if log_metric is not None else ():
                log_metric(name, value)
        self.rollouts.record(self.rule.name, judged)
        scores = [judgement.score for judgement in judged]
        if log_metric is not None and scores:
            log_metric(f"rewards/{self.__name__}/unscored", sum(score is None for score in scores) / len(scores))
            if self.rule.name == "judge":  # completions the judge did not answer within --judge-deadline (scored 0)
                log_metric(f"rewards/{self.__name__}/late", sum(j.verdict == LATE.verdict for j in judged) / len(judged))
        return scores
