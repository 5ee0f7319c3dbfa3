"""The body of each stage's section, as HTML, from the records of `inputs`.

Everything read from a file (traces, model and folder names, settings, verdicts) is untrusted text:
it reaches the page only through `esc` (html.escape with quotes), in a table cell, a <pre> or an
attribute, never as markup. Plots are PNG data: URIs from `plots`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from r1distill.backends import is_permanent
from r1distill.report import plots
from r1distill.report.inputs import EvalOutput, Example, FilterOutput, GenerateOutput, Metrics, TrainingRun, rl_examples
from r1distill.report.plots import Line, Panel
from r1distill.schema import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP
from r1distill.training.card import divergence_name

SHOWN_ROWS = 20
"""Longest list of sources, benchmarks or verdicts shown in a table; the rest are counted."""


def esc(value: object) -> str:
    """Any value as HTML text, quotes included, so it is safe in an element and in an attribute.

    >>> esc('"><img src=x onerror=alert(1)>')
    '&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'
    """
    return html.escape(str(value), quote=True)


def number(value: float | int | None, digits: int = 4) -> str:
    """A count with thousands separators, a measurement to `digits` significant digits, "–" when unknown.

    >>> number(12345), number(0.000012345), number(10.7893), number(None)
    ('12,345', '1.234e-05', '10.79', '–')
    """
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}g}"


def share(value: float | None) -> str:
    """A share as a percentage, "–" when unknown.

    >>> share(0.1234), share(None)
    ('12.3%', '–')
    """
    return "–" if value is None else f"{value:.1%}"


def table(header: list[object] | None, rows: Iterable[Iterable[object]], right: int = 0) -> str:
    """A table of escaped cells, its last `right` columns right-aligned (numbers); no header row with None."""
    def row(cells: Iterable[object], tag: str) -> str:
        cells = list(cells)
        aligned = [' class="r"' if i >= len(cells) - right else "" for i in range(len(cells))]
        return "<tr>" + "".join(f"<{tag}{align}>{esc(cell)}</{tag}>" for align, cell in zip(aligned, cells)) + "</tr>"

    body = "".join(row(cells, "td") for cells in rows)
    if not body:
        return '<p class="meta">none</p>'
    head = f"<thead>{row(header, 'th')}</thead>" if header is not None else ""
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _top(counts: dict[str, int], total: int) -> list[tuple[str, str, str]]:
    """(name, count, share) rows of the largest counts, the rest summed on one row."""
    items = sorted(counts.items(), key=lambda item: -item[1])
    rows = [(name, number(count), share(count / total if total else None)) for name, count in items[:SHOWN_ROWS]]
    if len(items) > SHOWN_ROWS:
        rest = sum(count for _, count in items[SHOWN_ROWS:])
        rows.append((f"… {len(items) - SHOWN_ROWS:,} more", number(rest), share(rest / total if total else None)))
    return rows


def examples(shown: list[Example]) -> str:
    """Collapsed blocks, one per example, each text in a <pre>."""
    blocks = []
    for example in shown:
        parts = "".join(f'<div class="label">{esc(label)}</div><pre>{esc(text)}</pre>' for label, text in example.parts)
        blocks.append(f"<details><summary>{esc(example.title)}</summary>{parts}</details>")
    return "".join(blocks) or "<p>none</p>"


def labels(models: list[str]) -> list[str]:
    """Models' names as plot labels: folders and Hub ids by their last part, unless two would then read alike.

    >>> labels(["Qwen/Qwen2.5-Math-1.5B", "runs/student"]), labels(["runs/a/student", "runs/b/student"])
    (['Qwen2.5-Math-1.5B', 'student'], ['runs/a/student', 'runs/b/student'])
    """
    short = [Path(name.rstrip("/")).name or name for name in models]
    return short if len(set(short)) == len(short) else models


def generate(out: GenerateOutput) -> str:
    answered = out.rows - out.finish.get(FINISH_ERROR, 0)
    errors = ", ".join(f"{reason} {count:,}" for reason, count in out.error_reasons.items())
    refused = sum(count for reason, count in out.error_reasons.items() if is_permanent(reason))

    def finished(reason: str) -> tuple[str, str]:
        count = out.finish.get(reason, 0)
        return number(count), share(count / out.rows if out.rows else None)

    summary = [
        ("rows (prompt, sample)", number(out.rows), ""),
        ("prompts", number(out.prompts), ""),
        ("stopped", *finished(FINISH_STOP)),
        ("truncated (finish_reason length)", *finished(FINISH_LENGTH)),
        ("errors" + (f" ({errors})" if errors else ""), *finished(FINISH_ERROR)),
        ("of which refused for good (not retried)", number(refused), share(refused / out.rows if out.rows else None)),
        ("completion tokens", number(out.completion_tokens), f"{out.completion_tokens / answered:,.0f} a row" if out.completion_tokens and answered else ""),
    ]
    settings = [(name, "–" if value is None else value) for name, value in out.settings.items()]
    left_out = f" {out.no_thinking:,} rows without a thinking block are left out of the thinking histogram." if out.no_thinking else ""
    figure = plots.histograms(
        [("thinking", out.thinking, "tokens"), ("response", out.response, "tokens")], f"thinking and response length of {out.name}"
    )
    return (
        f'<div class="columns"><div>{table(["", "rows", "share"], summary, right=2)}</div>'
        f'<div>{table(["setting (manifest)", "value"], settings + [("runs recorded", out.runs)])}</div></div>'
        f"<h3>Lengths</h3><p>Rows that failed are left out. Tokens {esc(out.counted)}.{esc(left_out)}</p>{figure}"
        f"<h3>Sources</h3>{table(['source', 'rows', 'share'], _top(out.sources, out.rows), right=2)}"
        f"<h3>Example traces</h3>{examples(out.examples)}"
    )


def filter_(out: FilterOutput) -> str:
    funnel = [("rows in", out.rows_in, plots.NEUTRAL)]
    if out.generation_errors:
        funnel.append(("failed in generate (not judged)", out.generation_errors, plots.BAD))
    funnel += [(f"dropped: {reason}", count, plots.BAD) for reason, count in out.dropped.items()]
    funnel += [("kept (reasoning)", out.kept, plots.GOOD), ("added (non-reasoning)", out.added, plots.ADDED)]
    chart = plots.bars([label for label, _, _ in funnel], [count for _, count, _ in funnel], [color for _, _, color in funnel],
                       "rows through the filter", f"filter funnel of {out.name}", horizontal=True, xlabel="rows")
    rates = plots.bars(list(out.pass_rates), list(out.pass_rates.values()), [plots.PALETTE[0]] * len(out.pass_rates),
                       "prompts per pass rate (correct / samples)", f"pass-rate histogram of {out.name}", horizontal=False, xlabel="pass rate")
    verdicts = [
        (check, verdict, number(count), share(count / sum(counts.values()) if counts else None))
        for check, counts in out.verdicts.items() for verdict, count in counts.items()
    ]
    contaminated = (
        table(["benchmark", "prompts dropped", "share of prompts"], _top(out.contaminated, out.prompts_in), right=2)
        if out.contaminated else "<p>No prompt shares a word n-gram with a --decontaminate benchmark (or none was given).</p>"
    )
    hints = "".join(f"<li>{esc(hint)}</li>" for hint in out.hints)
    decided = sum(out.decided_by.values())
    judged = (
        "<h3>Judge check decided by</h3>"
        + table(["", "rows", "share"], [(who, number(count), share(count / decided if decided else None)) for who, count in out.decided_by.items()], right=2)
        if out.decided_by else ""
    )
    return (
        f'<div class="columns"><div>{table(["", "rows", "share of rows in"], [(label, number(count), share(count / out.rows_in if out.rows_in else None)) for label, count, _ in funnel], right=2)}'
        f"<p>{out.prompts_in:,} prompts in, {out.prompts_kept:,} with a kept row.</p></div><div>{chart}</div></div>"
        + (f'<div class="hints"><b>Hints</b><ul>{hints}</ul></div>' if hints else "")
        + f"<h3>Pass rates</h3>{rates}"
        f"<h3>Verdicts per check</h3>{table(['check', 'verdict', 'rows', 'share'], verdicts, right=2)}{judged}"
        f"<h3>Decontamination</h3>{contaminated}"
        f"<h3>Kept rows per source</h3>{table(['source', 'rows', 'share'], _top(out.by_source, out.kept), right=2)}"
    )


def _series(run: TrainingRun, key: str) -> tuple[list[float], list[float]]:
    logged = [(point["step"], point[key]) for point in run.points if key in point and "step" in point]
    return [step for step, _ in logged], [value for _, value in logged]


def _line(run: TrainingRun, key: str, label: str, color: int = 0, style: str = "-") -> Line:
    return Line(label, *_series(run, key), color=color, style=style)


def _held_out(run: TrainingRun) -> list[Panel]:
    """The held-out pass@1 and format curves of --eval-every, where the run scored them."""
    if not any("eval_pass@1" in point for point in run.points):
        return []
    return [Panel("held-out pass@1 (--eval-prompts, greedy)", "step", "share",
                  [_line(run, "eval_pass@1", "pass@1"), _line(run, "eval_format", "format passed", 1, "--")], percent=True)]


def _training_summary(run: TrainingRun, rows: list[tuple[str, object]]) -> str:
    settings = run.settings
    finished = run.finished
    status = f"finished {str(finished.get('at', ''))[:16].replace('T', ' ')} UTC after {finished.get('steps', '?')} steps" if finished else "not finished (running, or stopped before saving)"
    shown = [("model", settings.get("model")), ("data", settings.get("input")), ("template", run.template), ("status", status), *rows]
    scored = [point for point in run.points if isinstance(point.get("eval_pass@1"), (int, float))]
    if scored:
        last = scored[-1]
        stderr = f" ± {share(last['eval_pass@1_stderr'])}" if isinstance(last.get("eval_pass@1_stderr"), (int, float)) else ""
        shown.append(("held-out pass@1", f"{share(last['eval_pass@1'])}{stderr} on {last.get('eval_prompts', 0):.0f} prompts at step {last.get('step', 0):.0f}"))
    unreadable = f"<p>Left out {run.unreadable:,} line(s) of metrics.jsonl that are not JSON (a kill can cut the last one short).</p>" if run.unreadable else ""
    return table(None, [(name, "–" if value is None else value) for name, value in shown]) + unreadable


def sft(run: TrainingRun) -> str:
    settings = run.settings
    batch = f"{settings.get('batch_size')} x {settings.get('grad_accum')} accumulation"
    summary = _training_summary(run, [
        ("final train loss", number((run.finished or {}).get("train_loss"))), ("final eval loss", number((run.finished or {}).get("eval_loss"))),
        ("learning rate", f"{settings.get('lr')} ({settings.get('lr_scheduler')})"), ("batch per device", batch),
        ("max length", settings.get("max_length")), ("packing", settings.get("packing")), ("LoRA rank", settings.get("lora_r")),
    ])
    figure = plots.line_panels([
        Panel("loss", "step", "loss", [_line(run, "loss", "train"), _line(run, "eval_loss", "eval", 1, "--")]),
        Panel("learning rate", "step", "learning rate", [_line(run, "learning_rate", "learning rate")]),
        Panel("gradient norm", "step", "norm", [_line(run, "grad_norm", "gradient norm")]),
        Panel("throughput", "step", "tokens / s", [_line(run, "tokens_per_second", "tokens / s")]),
        *_held_out(run),
    ], f"sft curves of {run.name}")
    return f"{summary}<h3>Curves</h3>{figure}"


def _completion_panels(run: TrainingRun) -> list[Panel]:
    """The lengths of the completions a policy or a student sampled, against their limit, and the share cut at it."""
    limit = run.settings.get("max_completion_length")
    return [
        Panel("completion length", "step", "tokens", [_line(run, "completions/mean_length", "mean"), _line(run, "completions/max_length", "max", 1),
                                                      _line(run, "completions/min_length", "min", 2)],
              limit=float(limit) if isinstance(limit, (int, float)) else None),
        Panel("clipped completions (hit the length limit)", "step", "share", [_line(run, "completions/clipped_ratio", "clipped")], percent=True),
    ]


def distill(run: TrainingRun) -> str:
    """On-policy distillation: the divergence to the teacher on the student's own completions, falling, and what the student wrote."""
    settings = run.settings
    beta = settings.get("beta")
    summary = _training_summary(run, [
        ("teacher", settings.get("teacher")),
        ("loss", divergence_name(float(beta)) if isinstance(beta, (int, float)) else None),
        ("tokenizers", "the teacher's own (GOLD, ULD loss)" if settings.get("cross_tokenizer") else "shared"),
        ("temperature", settings.get("temperature")), ("max completion length", settings.get("max_completion_length")),
        ("final divergence", number((run.finished or {}).get("loss"))),
    ])
    figure = plots.line_panels([
        Panel("divergence to the teacher", "step", "loss", [_line(run, "loss", "divergence")]),
        Panel("student entropy", "step", "nats", [_line(run, "entropy", "entropy")]),
        *_completion_panels(run),
        Panel("learning rate", "step", "learning rate", [_line(run, "learning_rate", "learning rate")]),
        *_held_out(run),
    ], f"distill curves of {run.name}")
    return f"{summary}<h3>Curves</h3>{figure}"


def rl(run: TrainingRun) -> str:
    settings = run.settings
    rewards = [key for point in run.points for key in point if key.startswith("rewards/") and key.endswith("/mean")]
    rewards = list(dict.fromkeys(rewards))
    summary = _training_summary(run, [
        ("rewards", ", ".join(map(str, settings.get("rewards") or [])) + (f" + reward model {settings['reward_model']}" if settings.get("reward_model") else "")),
        ("completions per prompt", settings.get("num_generations")), ("max completion length", settings.get("max_completion_length")),
        ("loss", settings.get("loss_type")), ("KL beta", settings.get("beta")), ("final reward", number((run.finished or {}).get("reward"))),
    ])
    figure = plots.line_panels([
        Panel("reward", "step", "mean reward", [_line(run, "reward", "total")]
              + [_line(run, key, key.removeprefix("rewards/").removesuffix("/mean"), i + 1, "--") for i, key in enumerate(rewards)]),
        *_completion_panels(run),
        Panel("KL to the reference", "step", "KL", [_line(run, "kl", "KL")]),
        Panel("clip ratios", "step", "share", [_line(run, "clip_ratio/region_mean", "region"), _line(run, "clip_ratio/low_mean", "low", 1, "--"),
                                               _line(run, "clip_ratio/high_mean", "high", 2, "--")], percent=True),
        Panel("learning rate", "step", "learning rate", [_line(run, "learning_rate", "learning rate")]),
        *_thinking_panels([run]),
        *_held_out(run),
    ], f"rl curves of {run.name}", columns=4)
    samples = ""
    if run.first_samples is not None:
        samples += f"<h4>first logged step ({run.first_samples[0]:,})</h4>{examples(rl_examples(run.first_samples[1]))}"
    if run.last_samples is not None and run.last_samples[0] != run.first_samples[0]:
        samples += f"<h4>last logged step ({run.last_samples[0]:,})</h4>{examples(rl_examples(run.last_samples[1]))}"
    return f"{summary}<h3>Curves</h3>{figure}<h3>Sample completions</h3>{samples or '<p>none logged (--log-samples 0)</p>'}"


def _thinking_panels(runs: list[TrainingRun]) -> list[Panel]:
    """R1-Zero's two curves of GRPO runs: the share of completions passing the format check, and their thinking length."""
    return [
        Panel("GRPO: format pass (format check)", "step", "share", [_line(run, "format/pass", run.name, i) for i, run in enumerate(runs)], percent=True),
        Panel("GRPO: thinking length", "step", "mean thinking tokens", [_line(run, "thinking/mean_tokens", run.name, i) for i, run in enumerate(runs)]),
    ]


def _metric_rows(results: list[Metrics]) -> list[list[str]]:
    ks = list(dict.fromkeys(k for metrics in results for k in metrics.pass_at))
    rows = [
        ["problems", *(number(m.problems) for m in results)],
        ["samples", *(number(m.samples) for m in results)],
        ["pass@1", *(share(m.pass1) + (f" ± {m.pass1_stderr:.1%}" if m.pass1_stderr is not None else "") for m in results)],
    ]
    rows += [[f"pass@{k}", *(share(m.pass_at.get(k)) for m in results)] for k in ks if k != "1"]
    rows += [[f"maj@{k}", *(share(m.maj_at.get(k)) for m in results)] for k in ks if k != "1"]
    rows += [
        ["truncated", *(share(m.truncated) for m in results)],
        ["no answer", *(share(m.no_answer) for m in results)],
        ["generation errors", *(number(m.generation_errors) for m in results)],
        ["of which refused for good", *(number(m.generation_refused) for m in results)],
        ["mean thinking tokens", *(number(m.thinking, 5) for m in results)],
        ["mean response tokens", *(number(m.response, 5) for m in results)],
        ["mean completion tokens", *(number(m.completion, 5) for m in results)],
    ]
    if any(m.judge for m in results):
        rows += [[label, *(share((m.judge or {}).get(key)) for m in results)] for label, key in _JUDGE_SHARES]
        rows += [[f"decided by {who}", *(number((m.judge or {}).get(f"{who}_decided")) for m in results)] for who in ("rule", "judge", "neither")]
    return rows


_JUDGE_SHARES = (("correct by the rules", "rule_correct"), ("correct with the judge", "judge_correct"),
                 ("correct by both", "both_correct"), ("correct by either", "any_correct"))


def _disagreements(out: EvalOutput) -> str:
    """The samples where the rules and the judge both decided and disagree, per model."""
    body = ""
    for entry in out.models:
        judged = entry.metrics.judge or {}
        count = judged.get("disagreements")
        if not isinstance(count, int) or count < 1:
            continue
        shown = [s for s in judged.get("disagreeing_samples") or [] if isinstance(s, dict)]
        keys = ("prompt_id", "sample", "answer", "stated_answer", "rule", "judge")
        rows = [[str(s.get(key))[:200] for key in keys] for s in shown]  # a gold or stated answer may be long
        body += (f"<h3>Rules and judge disagree: {esc(entry.model)} ({number(count)} samples"
                 f"{f', the first {len(rows)} shown' if len(rows) < count else ''})</h3>"
                 + table(["problem", "sample", "gold", "stated answer", "rules", "judge"], rows))
    return body


def eval_(out: EvalOutput) -> str:
    names = [entry.model for entry in out.models]
    settings = " · ".join(f"{name} {value}" for name, value in out.settings.items())
    body = f"<p>Benchmark {esc(out.benchmark)} · {esc(settings)}</p>"
    body += table(["", *names], _metric_rows([entry.metrics for entry in out.models]), right=len(names))
    ks = list(dict.fromkeys(k for entry in out.models for k in entry.metrics.pass_at))
    top = ks[-1] if ks else "1"
    series = [("pass@1", [entry.metrics.pass1 for entry in out.models])]
    if top != "1":
        series += [(f"pass@{top}", [entry.metrics.pass_at.get(top) for entry in out.models]),
                   (f"maj@{top}", [entry.metrics.maj_at.get(top) for entry in out.models])]
    body += plots.grouped_bars(labels(names), series, "accuracy per model", f"accuracy per model in {out.name}")
    columns = list(dict.fromkeys(column for entry in out.models for column in entry.groups))
    for column in columns:
        values = list(dict.fromkeys(value for entry in out.models for value in entry.groups.get(column, {})))
        rows = []
        for value in values:
            found = [entry.groups.get(column, {}).get(value) for entry in out.models]
            rows.append([value, *("–" if m is None else f"{share(m.pass1)} of {number(m.samples)}" for m in found)])
        body += f"<h3>pass@1 per {esc(column)}</h3>" + table([column, *names], rows, right=len(names))
    body += _disagreements(out)
    if any(entry.forced or entry.cut for entry in out.models):
        body += _scaling(out)
    return body


def _plus_minus(value: float | None, error: float | None, percent: bool) -> str:
    """A measurement with its standard error, "–" when unknown.

    >>> _plus_minus(0.359, 0.042, True), _plus_minus(41.25, 3.5, False), _plus_minus(0.2, None, True), _plus_minus(None, None, False)
    ('35.9% ± 4.2%', '41.25 ± 3.5', '20.0%', '–')
    """
    shown = share(value) if percent else number(value, 4)
    if value is None or error is None:
        return shown
    return f"{shown} ± {share(error) if percent else number(error, 2)}"


def overview(evals: list[EvalOutput], runs: list[TrainingRun]) -> str:
    """The first screen: did training help? Per evaluated model its accuracy, its share of completions in
    R1's format and its mean thinking tokens, each with its standard error, the change from the first
    model (the base, as a pipeline lists it), then accuracy by thinking budget and the GRPO curves."""
    rows, forcing = [], []
    for out in evals:
        base = out.models[0].metrics.pass1 if out.models else None
        for i, (entry, label) in enumerate(zip(out.models, labels([entry.model for entry in out.models]))):
            m = entry.metrics
            change = "–" if i == 0 or base is None or m.pass1 is None else f"{(m.pass1 - base) * 100:+.1f} pts"
            rows.append([label, out.benchmark, number(m.samples), _plus_minus(m.pass1, m.pass1_stderr, True), change,
                         _plus_minus(m.format_pass, m.format_pass_stderr, True), _plus_minus(m.thinking, m.thinking_stderr, False)])
            known = [p for p in entry.forced if p.limit is not None and p.pass1 is not None]
            forcing.append(Line(label if len(evals) == 1 else f"{label} ({out.benchmark})", [p.limit for p in known], [p.pass1 for p in known],
                                color=len(forcing), marker="o"))
    panels = [Panel("accuracy by thinking budget (budget forcing)", "thinking budget (tokens)", "pass@1", forcing, percent=True)] if any(
        line.x for line in forcing) else []
    panels += _thinking_panels(runs) if runs else []
    figure = plots.line_panels(panels, "accuracy by thinking budget, GRPO format pass and thinking length", columns=3) if panels else ""
    head = ["model", "benchmark", "samples", "pass@1 ± s.e.", "vs first", "format pass ± s.e.", "mean thinking tokens ± s.e."]
    return (
        "<p>pass@1 and the format pass share (one &lt;think&gt; block, then an answer: the format check) are "
        "averaged over problems, their standard errors over problems too; thinking tokens over samples. "
        "The first model of each eval is the one the others are compared with.</p>"
        + table(head, rows, right=5) + figure
    )


def _scaling(out: EvalOutput) -> str:
    forcing, cutting, rows = [], [], []
    for i, (entry, label) in enumerate(zip(out.models, labels([entry.model for entry in out.models]))):
        known = sorted((p for p in entry.forced if p.thinking is not None and p.pass1 is not None), key=lambda p: p.thinking)
        forcing.append(Line(label, [p.thinking for p in known], [p.pass1 for p in known], color=i, marker="o"))
        if entry.natural and entry.natural.thinking is not None and entry.natural.pass1 is not None:
            forcing.append(Line(f"{label} uncapped", [entry.natural.thinking], [entry.natural.pass1], color=i, style="", marker="*"))
        cut = [p for p in entry.cut if p.pass1 is not None]
        cutting.append(Line(label, [p.limit for p in cut], [p.pass1 for p in cut], color=i, marker="o"))
        rows += [[entry.model, f"budget {p.limit}", number(p.thinking, 5), share(p.pass1), share(p.share)] for p in entry.forced]
        if entry.natural:
            rows.append([entry.model, "uncapped", number(entry.natural.thinking, 5), share(entry.natural.pass1), "–"])
        rows += [[entry.model, f"cut at {p.limit} tokens", "–", share(p.pass1), share(p.share)] for p in entry.cut]
    figure = plots.line_panels([
        Panel("budget forcing: pass@1 against thinking", "mean thinking tokens", "pass@1", forcing, percent=True),
        Panel("uncapped samples cut at max tokens", "max tokens", "pass@1", cutting, percent=True),
    ], f"test-time scaling in {out.name}")
    return (
        "<h3>Test-time scaling</h3><p>Budget forcing (--thinking-budget): the thinking is cut at each budget and an answer is "
        "forced; the star is the uncapped run. Right: the uncapped samples scored as if generation had stopped at each budget.</p>"
        + figure + "<details><summary>the points</summary>"
        + table(["model", "run", "mean thinking tokens", "pass@1", "forced / cut"], rows, right=3) + "</details>"
    )
