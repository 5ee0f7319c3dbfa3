"""Budget forcing (s1, Muennighoff et al. 2025) for `generate --thinking-budget N`, and for eval's test-time
scaling curve, which calls it once per budget.

A row is made in two requests, each a plain generate run of its own (same backends, same crash-safe
store and manifest) in OUT/.budget/, so a run stopped between them resumes at the second:

1. Think: the prompt is rendered with the model's chat template (the tokenizer's, as the local
   backends render it) and, unless the template already opened one, a `<think>` block is opened; it
   is sent as raw text (the completions endpoint for openai) with max_tokens N.
2. Answer: a thinking still open at the end of step 1 (the budget ran out, or the model stopped
   inside it) is closed with "\\n</think>\\n\\nFinal answer:" (FORCED_CUE), and the model continues from
   prompt + thinking + cue for at most --max-tokens; a thinking that closed but whose answer the
   budget cut off continues from where it stopped. A thinking that closed and finished is kept as is.

The row OUT stores is canonical (`<think>\\n{thinking}\\n</think>\\n\\nFinal answer:{continuation}`), with
the problem, answer and messages of the prompt table, so filter, sft and eval read it like any other
trace; `forced` says whether the thinking was cut at the budget.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import polars as pl

from r1distill import files, models
from r1distill.backends import Request, ends_inside_think, render_prompt
from r1distill.errors import UsageError, first_line
from r1distill.generate.config import GenerateConfig
from r1distill.generate.manifest import write_manifest
from r1distill.prompts import RAW_TEMPLATES, build_messages
from r1distill.generate.run import GenerateSummary, SharedBackend, _my_prompts, _pending, _plan, _summarize, _table_builder, generate
from r1distill.generate.store import TraceStore, has_superseded_rows, now_us, read_rows, read_state
from r1distill.schema import ANSWER, FINISH_ERROR, FINISH_LENGTH, PROBLEM, PROMPT_ID, THINK_CLOSE, THINK_OPEN, split_reasoning

FORCED_CUE = "Final answer:"
STEPS = ".budget"
"""OUT's folder holding the two requests' own generate outputs (think/, answer/)."""
STEP_COLUMNS = ["id", PROMPT_ID, "sample", ANSWER, "completion", "finish_reason", "completion_tokens", "prompt_tokens", "error", "created_at"]


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


def load_tokenizer(name: str | None):
    """The tokenizer `name` (a Hub id or folder), None for None; a load failure names --tokenizer."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as err:
        raise UsageError(f"--tokenizer {name}: cannot load it ({first_line(err)}); give a Hub id or a local folder") from err


def render_thinking_prompts(prompts: pl.DataFrame, tokenizer, cfg) -> pl.DataFrame:
    """The prompts as the model sees them, ending inside an opened think block (prompt_id, problem, answer).

    `cfg` holds the prompt settings (template, system, prompt_template, chat_template_kwargs)."""
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


def step_folder(out: str | Path, step: str) -> Path:
    """Where step `step` (think or answer) of a budget-forced OUT keeps its own generate output."""
    return Path(out) / STEPS / step


def generate_forced(cfg: GenerateConfig, started: datetime, shared: SharedBackend | None = None) -> GenerateSummary:
    """`generate` with cfg.thinking_budget set (see the module docstring); settings already checked."""
    prompts = _my_prompts(cfg)
    plan = _plan(prompts, cfg)
    out = Path(cfg.output)
    todo, redo = _pending(plan, read_state(out), cfg.max_tokens, cfg.retry_failed)
    mine = prompts.filter(pl.col(PROMPT_ID).is_in(sorted({p.prompt_id for p in todo})))
    tokenizer = load_tokenizer(cfg.tokenizer or (None if cfg.template in RAW_TEMPLATES or cfg.backend == "openai" else models.resolve(cfg.model)))
    # Rendered before anything is written: a template that cannot render them stops the run here.
    rendered = render_thinking_prompts(mine, tokenizer, cfg)
    rows, by_id = [], {planned.request.key: planned for planned in todo}
    if todo:
        steps = _run_steps(cfg, rendered, shared)
        rows = [row | {"id": key} for key, row in steps.items() if key in by_id]
    index, count = cfg.shard_parts()
    with TraceStore(out, f"{index:05d}-of-{count:05d}", _table_builder(prompts), cfg.rows_per_shard, cfg.seconds_per_shard) as store:
        write_manifest(cfg, started, prompts.height)
        for row in rows:
            planned = by_id[row["id"]]
            reasoning, response = split_reasoning(row["completion"])
            store.append(row | {
                PROMPT_ID: planned.prompt_id, "sample": planned.sample, PROBLEM: planned.problem, ANSWER: planned.answer,
                "prompt": planned.request.messages, "reasoning": reasoning, "response": response, "model": cfg.model,
                "backend": cfg.backend, "max_tokens": cfg.max_tokens, "request_key": planned.request_key, "created_at": now_us(),
            })
        store.flush()
        if redo or has_superseded_rows(out):
            store.compact()
        summary = _summarize(out, [p.request.key for p in plan], len(rows), store.rejected, started)
        write_manifest(cfg, started, prompts.height, summary)
    return summary


def _step_config(cfg: GenerateConfig, source: Path, step: str, **changes) -> GenerateConfig:
    """A step's generate run: the rendered text sent as it is, into OUT/.budget/<step>."""
    return replace(
        cfg, input=str(source), output=str(step_folder(cfg.output, step)), template="raw", system=None, prompt_template=None,
        chat_template_kwargs=[], thinking_budget=None, problem_column=PROBLEM, answer_column=ANSWER, id_column=PROMPT_ID, split="train", **changes,
    )


def _run_steps(cfg: GenerateConfig, rendered: pl.DataFrame, shared: SharedBackend | None) -> dict[str, dict]:
    """Both requests of each (prompt, sample) of `rendered`, combined: trace id -> the row's generated columns."""
    with tempfile.TemporaryDirectory(prefix="r1distill-budget-") as temp:
        think_input = Path(temp) / "think.parquet"
        files.write_parquet(think_input, rendered)
        generate(_step_config(cfg, think_input, "think", max_tokens=cfg.thinking_budget), shared)
        thoughts = _step_rows(step_folder(cfg.output, "think"), rendered[PROMPT_ID], cfg.num_samples)
        prompt_of = dict(zip(rendered[PROMPT_ID].to_list(), rendered[PROBLEM].to_list()))
        prefixes = {
            row["id"]: None if row["finish_reason"] == FINISH_ERROR else forced_prefix(row["completion"], row["finish_reason"])
            for row in thoughts.iter_rows(named=True)
        }
        continued = thoughts.filter(pl.col("id").is_in([key for key, prefix in prefixes.items() if prefix is not None]))
        answers = {}
        if continued.height:
            table = pl.DataFrame({
                PROMPT_ID: continued["id"],
                PROBLEM: [prompt_of[row[PROMPT_ID]] + prefixes[row["id"]] for row in continued.iter_rows(named=True)],
                ANSWER: continued[ANSWER],
            }, schema={PROMPT_ID: pl.String, PROBLEM: pl.String, ANSWER: pl.String})
            answer_input = Path(temp) / "answer.parquet"
            files.write_parquet(answer_input, table)
            generate(_step_config(cfg, answer_input, "answer", num_samples=1), shared)
            for row in _step_rows(step_folder(cfg.output, "answer"), table[PROMPT_ID], 1).iter_rows(named=True):
                answers[row[PROMPT_ID]] = row
    return {row["id"]: combined for row in thoughts.iter_rows(named=True) if (combined := _combine(row, prefixes[row["id"]], answers)) is not None}


def _step_rows(folder: Path, prompt_ids: pl.Series, samples: int) -> pl.DataFrame:
    """The newest row of each (prompt, sample) a step wrote for these prompts."""
    rows = read_rows(folder, STEP_COLUMNS)
    if rows is None:
        return pl.DataFrame(schema=dict.fromkeys(STEP_COLUMNS, pl.String))
    rows = rows.filter(pl.col(PROMPT_ID).is_in(prompt_ids.implode()) & (pl.col("sample") < samples))
    return rows.sort("created_at").unique("id", keep="last").sort(PROMPT_ID, "sample")


def _combine(thought: dict, prefix: str | None, answers: dict) -> dict | None:
    """A row's generated columns from its step-1 row and its step-2 row; None when step 2 left none (generated next run)."""
    text = thought["completion"].removeprefix(THINK_OPEN).removeprefix("\n")
    kept = {"prompt_tokens": thought["prompt_tokens"], "forced": False}
    if prefix is None:
        return kept | {"completion": THINK_OPEN + "\n" + text, "finish_reason": thought["finish_reason"],
                       "completion_tokens": thought["completion_tokens"], "error": thought["error"]}
    answer = answers.get(thought["id"])
    if answer is None:
        return None
    tokens = None if thought["completion_tokens"] is None or answer["completion_tokens"] is None else thought["completion_tokens"] + answer["completion_tokens"]
    return kept | {
        "completion": THINK_OPEN + "\n" + prefix + answer["completion"], "finish_reason": answer["finish_reason"], "completion_tokens": tokens,
        "error": answer["error"], "forced": THINK_CLOSE not in text,
    }


def thinking_tokens(out: str | Path) -> dict[str, int | None]:
    """Per trace id of a budget-forced OUT, the tokens step 1 generated: the thinking of a forced row, exactly."""
    rows = read_rows(step_folder(out, "think"), ["id", "completion_tokens", "created_at"])
    if rows is None:
        return {}
    newest = rows.sort("created_at").unique("id", keep="last")
    return dict(zip(newest["id"].to_list(), newest["completion_tokens"].to_list()))
