"""Test-time scaling by budget forcing (s1, Muennighoff et al. 2025): accuracy against thinking tokens.

For each budget B, in two generate runs through the public `generate` function (same backends, same
crash-safe store, so a killed run resumes and a larger -n adds only the new samples):

1. Think: the prompt is rendered with the model's chat template (the tokenizer's, as the local
   backends render it) and, unless the template already opened one, a `<think>` block is opened; it
   is sent as raw text (`--template raw`: the completions endpoint for openai) with max_tokens B.
2. Answer: a thinking still open at the end of step 1 (the budget ran out, or the model stopped
   inside it) is closed with "\\n</think>\\n\\nFinal answer:" (FORCED_CUE), and the model continues from
   prompt + thinking + cue for at most --answer-tokens; a thinking that closed but whose answer the
   budget cut off continues from where it stopped. A thinking that closed and finished is kept as is.

The stored completion is canonical (`<think>\\n{thinking}\\n</think>\\n\\nFinal answer:{continuation}`), so the
accuracy check reads its answer region like any other. Its thinking tokens are step 1's completion
tokens when the thinking was cut, else the thinking's own token count.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from r1distill import files
from r1distill.backends import Request, ends_inside_think, render_prompt
from r1distill.errors import UsageError, first_line
from r1distill.eval.benchmarks import read_traces
from r1distill.generate import generate
from r1distill.generate.failures import FailedRows
from r1distill.generate.prompts import RAW_TEMPLATES, build_messages
from r1distill.schema import ANSWER, FINISH_ERROR, FINISH_LENGTH, PROBLEM, PROMPT_ID, THINK_CLOSE, THINK_OPEN

FORCED_CUE = "Final answer:"


def open_thinking(rendered: str) -> str:
    """A rendered prompt that ends inside an opened think block.

    >>> open_thinking("<|im_start|>assistant\\n"), open_thinking("<|im_start|>assistant\\n<think>\\n")
    ('<|im_start|>assistant\\n<think>\\n', '<|im_start|>assistant\\n<think>\\n')
    """
    return rendered if ends_inside_think(rendered) else rendered + THINK_OPEN + "\n"


def forced_prefix(completion: str, finish_reason: str) -> str | None:
    """What step 2 continues from, after the prompt, for a step-1 completion; None when it is kept as is.

    `completion` is as generate stores it (a template's pre-filled `<think>` put back, or not).

    >>> forced_prefix("<think>\\nLet me add 2 and", "length")
    'Let me add 2 and\\n</think>\\n\\nFinal answer:'
    >>> forced_prefix("Two plus two.\\n</think>\\n\\nIt is \\\\boxed{4}.", "stop") is None
    True
    >>> forced_prefix("Two plus two.\\n</think>\\n\\nIt is", "length")
    'Two plus two.\\n</think>\\n\\nIt is'
    """
    thought = completion.removeprefix(THINK_OPEN).removeprefix("\n")
    head, closed, _ = thought.partition(THINK_CLOSE)
    if not closed:
        return f"{head.rstrip()}\n{THINK_CLOSE}\n\n{FORCED_CUE}"
    if finish_reason == FINISH_LENGTH:
        return thought
    return None


def render_thinking_prompts(prompts: pl.DataFrame, tokenizer, cfg) -> pl.DataFrame:
    """The benchmark's prompts as the model sees them, ending inside an opened think block (prompt_id, problem, answer)."""
    raw = cfg.template in RAW_TEMPLATES
    try:
        rendered = [
            open_thinking(render_prompt(tokenizer, Request("", build_messages(problem, cfg.template, cfg.system, cfg.prompt_template), raw,
                                                           template_kwargs=cfg.template_kwargs() or None)))
            for problem in prompts[PROBLEM].to_list()
        ]
    except Exception as err:  # a tokenizer without a chat template, or a template that refuses these messages
        raise UsageError(f"--thinking-budget: cannot render the prompts with the chat template ({first_line(err)}); give --tokenizer or --template r1-zero") from err
    return prompts.select(PROMPT_ID, ANSWER).with_columns(pl.Series(PROBLEM, rendered))


def budget_rows(cfg, model: str, thinking: pl.DataFrame, budget: int, folder: Path, count_tokens) -> tuple[pl.DataFrame, FailedRows]:
    """The samples of one budget (one row per (prompt, sample), completion canonical) and the requests that failed.

    `thinking` is `render_thinking_prompts`' table, already written to folder/prompts-think.parquet;
    `count_tokens(texts)` counts tokens with the model's tokenizer.
    """
    raw = {"template": "raw", "system": None, "prompt_template": None}
    think_out = folder / f"think-{budget}"
    first = generate(cfg.generate_config(model, str(folder / "prompts-think.parquet"), str(think_out), max_tokens=budget, **raw))
    steps = read_traces(think_out, thinking[PROMPT_ID], cfg.num_samples)
    prompt_of = dict(zip(thinking[PROMPT_ID].to_list(), thinking[PROBLEM].to_list()))
    prefixes = [
        None if finish == FINISH_ERROR else forced_prefix(completion, finish)
        for completion, finish in zip(steps["completion"].to_list(), steps["finish_reason"].to_list())
    ]
    continued = steps.select("id", ANSWER).with_columns(pl.Series("prefix", prefixes, pl.String)).filter(pl.col("prefix").is_not_null())
    failures, answers = first.failures, {}
    if continued.height:
        table = continued.select(
            pl.col("id").alias(PROMPT_ID),
            pl.struct("id", "prefix").map_elements(lambda row: prompt_of[row["id"].rsplit(":", 1)[0]] + row["prefix"], return_dtype=pl.String).alias(PROBLEM),
            ANSWER,
        )
        files.write_parquet(folder / f"prompts-answer-{budget}.parquet", table)
        answer_out = folder / f"answer-{budget}"
        second = generate(
            cfg.generate_config(model, str(folder / f"prompts-answer-{budget}.parquet"), str(answer_out), max_tokens=cfg.answer_tokens, num_samples=1, **raw)
        )
        failures += second.failures
        for row in read_traces(answer_out, table[PROMPT_ID], 1).iter_rows(named=True):
            answers[row[PROMPT_ID]] = row
    return _combine(steps, dict(zip(steps["id"].to_list(), prefixes)), answers, budget, count_tokens), failures


def _combine(steps: pl.DataFrame, prefixes: dict, answers: dict, budget: int, count_tokens) -> pl.DataFrame:
    """Step 1 rows with the forced or continued ones replaced by thinking + cue + step 2's continuation."""
    completions, finishes, tokens, thinking, forced = [], [], [], [], []
    for row in steps.iter_rows(named=True):
        prefix, answer = prefixes[row["id"]], answers.get(row["id"])
        thought = row["completion"].removeprefix(THINK_OPEN).removeprefix("\n")
        cut = THINK_CLOSE not in thought
        if prefix is None or answer is None:
            completion, finish, count = THINK_OPEN + "\n" + thought, row["finish_reason"], row["completion_tokens"]
            if prefix is not None:
                # Its step 2 is missing (its journal line was rejected): an error, generated again next run.
                finish = FINISH_ERROR
        else:
            completion = THINK_OPEN + "\n" + prefix + answer["completion"]
            finish = answer["finish_reason"]
            count = None if row["completion_tokens"] is None or answer["completion_tokens"] is None else row["completion_tokens"] + answer["completion_tokens"]
        completions.append(completion)
        finishes.append(finish)
        tokens.append(count)
        forced.append(prefix is not None and cut)
        thinking.append(row["completion_tokens"] if cut else None)
    unknown = [i for i, value in enumerate(thinking) if value is None]
    for i, value in zip(unknown, count_tokens([completions[i].partition(THINK_CLOSE)[0].removeprefix(THINK_OPEN) for i in unknown])):
        thinking[i] = value
    return steps.select("id", PROMPT_ID, "sample", "model", "backend", "error").with_columns(
        pl.Series("completion", completions, pl.String),
        pl.Series("finish_reason", finishes, pl.String),
        pl.Series("completion_tokens", tokens, pl.Int64),
        pl.Series("thinking_tokens", thinking, pl.Int64),
        pl.Series("forced", forced, pl.Boolean),
        pl.lit(budget, pl.Int64).alias("budget"),
    )
