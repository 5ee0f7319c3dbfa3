"""report: one page over real outputs of every stage, untrusted text escaped, nothing fetched, a
headless browser's screenshot, and bad input.

generate, filter and eval run for real (the tiny model on the CPU; the fake OpenAI server as a teacher
whose traces stop, get cut and fail, and as two served models); sft and rl outputs are written as
their callbacks write them, with the fields of a real TRL 1.16 run (tests/test_sft.py and
tests/test_rl.py assert those fields on real runs), since a real run costs 10-20 s each.

    PYTHONPATH=.. python -m pytest -q tests/test_report.py
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import run_cli, write_jsonl
from fake_openai import FakeOpenAI
from r1distill import __version__
from r1distill.cli import app
from r1distill.distill.config import SFTConfig
from r1distill.eval import EvalConfig, evaluate
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.generate import GenerateConfig, generate
from r1distill.onpolicy.config import DistillConfig
from r1distill.report import ReportConfig, inputs, report
from r1distill.rl.config import RLConfig

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
EVIL_MODEL = 'trained <b>"x"</b>'
PNG = '<img src="data:image/png;base64,'
STARTED = "2026-01-02T03:04:05+00:00"


def _teacher(root: Path, server: FakeOpenAI) -> Path:
    """Traces of a served teacher: thinking that echoes the problem (markup included), rows cut at the
    token limit, rows the server refused, two sources; no local tokenizer, so lengths are estimates."""
    problems = write_jsonl(root / "problems.jsonl", [
        {"id": "script", "problem": f"{SCRIPT} What is 40 + 2?", "answer": "42", "source": "arith"},
        {"id": "img", "problem": f"{IMG} What is 6 * 7?", "answer": "42", "source": "arith"},
        {"id": "plain", "problem": "What is fifty take away eight in whole numbers?", "answer": "42", "source": "words"},
        {"id": "cut", "problem": "What is 84 / 2? [[length]]", "answer": "42", "source": "words"},
        {"id": "refused", "problem": "What is 21 * 2? [[400]]", "answer": "42", "source": "words"},
    ])
    out = root / 'teacher <b>"t"'
    generate(GenerateConfig(input=str(problems), output=str(out), model="deepseek-ai/DeepSeek-R1", backend="openai",
                            base_urls=[server.url], num_samples=2, max_retries=0))
    return out


def _student(root: Path, model: Path) -> Path:
    """Traces of the tiny model on the CPU, as the quickstart makes them (its tokenizer is local), and one
    row redone but not compacted yet: a newer version of it in a shard of its own."""
    problems = write_jsonl(root / "student-problems.jsonl", [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)])
    out = root / "student"
    generate(GenerateConfig(input=str(problems), output=str(out), model=str(model), num_samples=2, max_tokens=16))
    redone = pl.read_parquet(out / "traces-*.parquet").head(1)
    redone.with_columns(pl.lit("stop").alias("finish_reason"), pl.col("created_at") + timedelta(seconds=1)).write_parquet(out / "traces-redo.parquet")
    return out


def _filtered(root: Path, traces: Path) -> Path:
    """filter over the teacher: one prompt contaminated, the refused rows counted apart, chats mixed in."""
    benchmark = write_jsonl(root / "benchmark.jsonl", [{"problem": "fifty take away eight in whole numbers", "answer": "42"}])
    chats = write_jsonl(root / "chats.jsonl", [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello!"}]}
                                               for i in range(4)])
    out = root / "sft-data"
    filter_traces(FilterConfig(str(traces), str(out), checks=["accuracy", "format", "truncated"], decontaminate=[str(benchmark)], ngram=4,
                               non_reasoning=str(chats), non_reasoning_count=2, workers=1))
    return out


def _write_run(out: Path, settings: dict, template: str, finished: dict | None, lines: list[dict], cut_last: bool = False) -> Path:
    """run.json and metrics.jsonl as training/output.py and training/callbacks.py write them."""
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"settings": settings, "started": STARTED, "template": template, "finished": finished}, indent=2))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (out / "metrics.jsonl").write_text(text + ('{"step": 4, "epoch": 1.0, "loss"' if cut_last else ""))
    return out


def _sft(root: Path) -> Path:
    settings = dataclasses.asdict(SFTConfig("runs/sft-data", "runs/student", max_steps=3, eval_fraction=0.2, eval_steps=1, logging_steps=1))
    lines = []
    for step in (1, 2, 3):
        lines.append({"step": step, "epoch": step / 2, "loss": 2.0 / step, "grad_norm": 1.5, "learning_rate": 5e-5 * (1 - step / 4),
                      "entropy": 1.2, "mean_token_accuracy": 0.3, "num_tokens": 243.0 * step, **({"tokens_per_second": 95.0} if step > 1 else {})})
        lines.append({"step": step, "epoch": step / 2, "eval_loss": 2.2 / step, "eval_runtime": 0.5, "eval_samples_per_second": 1.9,
                      "eval_steps_per_second": 1.9, "eval_entropy": 1.2, "eval_mean_token_accuracy": 0.3, "eval_num_tokens": 243.0 * step})
    lines.append({"step": 3, "epoch": 1.5, "train_runtime": 7.7, "train_samples_per_second": 0.39, "train_steps_per_second": 0.39,
                  "total_flos": 78644160.0, "train_loss": 1.2})
    finished = {"at": "2026-01-02T03:05:00+00:00", "steps": 3, "train_loss": 1.2, "eval_loss": 0.73}
    return _write_run(root / "student-sft", settings, "r1distill", finished, lines)


def _distill(root: Path) -> Path:
    """An on-policy distillation run, finished, with the fields TRL's DistillationTrainer logs (tests/test_onpolicy.py)."""
    settings = dataclasses.asdict(DistillConfig("runs/prompts.jsonl", "runs/od", teacher="runs/teacher <b>", beta=0.0, max_completion_length=16))
    lines = [{"step": step, "epoch": step / 4, "loss": 0.9 / step, "grad_norm": 2.0, "learning_rate": 1e-05, "num_tokens": 300.0 * step, "entropy": 2.5 - 0.1 * step,
              "completions/mean_length": 12.0, "completions/min_length": 9.0, "completions/max_length": 16.0, "completions/clipped_ratio": 0.25,
              "completions/mean_terminated_length": 11.0, **({"tokens_per_second": 50.0} if step > 1 else {})} for step in (1, 2, 3, 4)]
    finished = {"at": "2026-01-02T03:06:00+00:00", "steps": 4, "loss": 0.225}
    return _write_run(root / "student-od", settings, "r1distill", finished, lines)


def _rl(root: Path) -> Path:
    """A GRPO run killed after step 3 (no finished record, a last line cut short), with sample completions."""
    settings = dataclasses.asdict(RLConfig("runs/prompts.jsonl", "runs/zero", num_generations=4, batch_size=4, max_completion_length=12))
    lines = []
    for step in (1, 2, 3):
        samples = [{"prompt": f"What is 2 + 2? {SCRIPT}", "completion": f"<think>\nstep {step} {IMG}\n</think>\n\n\\boxed{{4}}", "finish_reason": "stop",
                    "rewards": {"accuracy": 1.0, "format": 1.0}, "verdicts": {"accuracy": "correct", "format": "ok"}}]
        lines.append({
            "step": step, "epoch": step / 3, "loss": 0.01, "grad_norm": 0.5, "learning_rate": 1e-06, "num_tokens": 272.0 * step,
            "completions/mean_length": 10.0 + step, "completions/min_length": 8.0, "completions/max_length": 12.0, "completions/clipped_ratio": 0.5 / step,
            "completions/mean_terminated_length": 9.0, "completions/min_terminated_length": 8.0, "completions/max_terminated_length": 11.0,
            "rewards/accuracy_reward/mean": 0.25 * step, "rewards/accuracy_reward/std": 0.4, "rewards/format_reward/mean": 0.5,
            "rewards/format_reward/std": 0.5, "reward": 0.25 * step + 0.5, "reward_std": 0.6, "frac_reward_zero_std": 0.0,
            "rewards/accuracy_reward/unscored": 0.0, "rewards/format_reward/unscored": 0.0, "kl": 0.001 * step, "entropy": 10.7,
            "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.01, "clip_ratio/region_mean": 0.01, "clip_ratio/low_min": 0.0,
            "clip_ratio/high_max": 0.02, "step_time": 6.1, "format/pass": 0.25 * step, "thinking/mean_tokens": 4.0 + step, **({"tokens_per_second": 40.0} if step > 1 else {}), "samples": samples,
        })
    return _write_run(root / "zero", settings, "model", None, lines, cut_last=True)


def _evaluated(root: Path, server: FakeOpenAI, tokenizer: Path) -> Path:
    """Two served models side by side, with budget forcing and a group column."""
    bench = write_jsonl(root / "bench.jsonl", [{"problem": f"What is {i} + 40?", "answer": str(40 + i), "level": i % 2} for i in range(3)])
    out = root / "eval"
    evaluate(EvalConfig(benchmark=str(bench), output=str(out), models=["base", EVIL_MODEL], backend="openai", base_urls=[server.url], num_samples=2,
                        max_tokens=64, thinking_budget="8,16", tokenizer=str(tokenizer), group_by=["level"], workers=1))
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_model, smollm2_tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    server = FakeOpenAI().start()
    try:
        teacher = _teacher(root, server)
        found = {"teacher": teacher, "student": _student(root, tiny_model), "filter": _filtered(root, teacher), "sft": _sft(root),
                 "distill": _distill(root), "rl": _rl(root),
                 "eval": _evaluated(root, server, smollm2_tokenizer_dir)}
    finally:
        server.stop()
    return found


@pytest.fixture(scope="module")
def page(outputs, tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """The report of every output, written by the command; given out of pipeline order (two generate outputs keep theirs)."""
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    order = ("eval", "rl", "distill", "filter", "sft", "student", "teacher")
    result = run_cli("report", *(str(outputs[name]) for name in order), "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out, out.read_text(encoding="utf-8"), result


def _sections(text: str) -> dict[str, str]:
    """Each section's HTML by its heading: 'stage: folder name' as shown (escaped)."""
    found = {}
    for part in text.split("<section ")[1:]:
        heading = re.search(r'<h2><span class="stage (\w+)">\w+</span>(.*?)</h2>', part)
        if heading:  # the summary above the stages has none
            found[f"{heading[1]}: {heading[2]}"] = part
    return found


def test_every_stage_has_its_section_plots_and_numbers_in_pipeline_order(page, outputs):
    out, text, result = page
    assert result.stdout.strip() == str(out)
    assert not list(out.parent.glob(".*.tmp"))
    sections = _sections(text)
    assert list(sections) == [
        "generate: student", "generate: teacher &lt;b&gt;&quot;t&quot;", "filter: sft-data", "sft: student-sft", "distill: student-od", "rl: zero",
        "eval: eval",
    ]
    plots = {name: part.count(PNG) for name, part in sections.items()}
    assert list(plots.values()) == [1, 1, 2, 1, 1, 1, 2], plots
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")
    assert f"r1distill {__version__}" in text and text.count('<li><a href="#s') == 7

    student, teacher, filtered, sft, distill, rl, evaluated = sections.values()
    # generate: the finish reasons and their shares, the failure reason, both sources, how tokens were counted.
    for expected in ('<td>truncated (finish_reason length)</td><td class="r">2</td><td class="r">20.0%</td>', "errors (http_400 2)",
                     '<td>arith</td><td class="r">4</td>', '<td>words</td><td class="r">6</td>', "estimated on every row", "deepseek-ai/DeepSeek-R1"):
        assert expected in teacher, expected
    assert "counted with the model&#x27;s tokenizer" in student and "<details>" in student
    assert '<td>rows (prompt, sample)</td><td class="r">6</td>' in student and '<td>stopped</td><td class="r">1</td>' in student
    # filter: the funnel, with the contaminated prompt and the chats mixed in, and the verdicts per check.
    for expected in ('<td>rows in</td><td class="r">10</td>', '<td>failed in generate (not judged)</td><td class="r">2</td>',
                     '<td>dropped: contaminated</td><td class="r">2</td>', '<td>added (non-reasoning)</td><td class="r">2</td>',
                     '<td>benchmark</td><td class="r">1</td>', '<td>truncated</td><td>truncated</td>'):
        assert expected in filtered, expected
    assert "final eval loss</td><td>0.73" in sft and "finished 2026-01-02 03:05 UTC after 3 steps" in sft
    # distill: told from sft by its teacher, the divergence named by its beta, the final divergence.
    for expected in ("<td>teacher</td><td>runs/teacher &lt;b&gt;</td>", "<td>loss</td><td>forward KL</td>", "<td>tokenizers</td><td>shared</td>",
                     "final divergence</td><td>0.225", "after 4 steps", 'alt="distill curves of student-od"'):
        assert expected in distill, expected
    # rl: a killed run, its cut last line, its samples at the first and the last logged step.
    assert "not finished" in rl and "Left out 1 line(s) of metrics.jsonl" in rl
    assert "first logged step (1)" in rl and "last logged step (3)" in rl and rl.count("<details>") == 2
    # eval: the models side by side, pass@k and maj@k, the group breakdown, the scaling curve.
    assert '<th></th><th class="r">base</th><th class="r">trained &lt;b&gt;&quot;x&quot;&lt;/b&gt;</th>' in evaluated
    for expected in ("<td>pass@2</td>", "<td>maj@2</td>", "pass@1 per level", "Test-time scaling", "budget 8", "cut at 16 tokens"):
        assert expected in evaluated, expected


def test_the_first_screen_answers_whether_training_helped(page, outputs):
    _, text, _ = page
    summary = text[text.index('<section id="summary">'):text.index("</section>")]
    assert text.index('<section id="summary">') < text.index('<section id="s1">')
    results = json.loads((outputs["eval"] / "results.json").read_text())
    base, trained = (entry["metrics"] for entry in results["models"])
    # One row per model: pass@1, format pass and thinking tokens, each with its standard error, and the change from the base.
    for m in (base, trained):
        assert m["format_pass"] is not None and m["mean_thinking_tokens_stderr"] is not None
        row = (f'<td class="r">{m["pass@1"]:.1%} ± {m["pass@1_stderr"]:.1%}</td>', f'<td class="r">{m["format_pass"]:.1%} ± {m["format_pass_stderr"]:.1%}</td>',
               f'<td class="r">{m["mean_thinking_tokens"]:,.4g} ± {m["mean_thinking_tokens_stderr"]:,.2g}</td>')
        assert all(cell in summary for cell in row), row
    assert f'<td class="r">{(trained["pass@1"] - base["pass@1"]) * 100:+.1f} pts</td>' in summary
    # Then the curves: accuracy by thinking budget, and the GRPO run's format pass and thinking length.
    assert summary.count(PNG) == 1 and 'alt="accuracy by thinking budget, GRPO format pass and thinking length"' in summary


class _Tags(HTMLParser):
    """Every tag of a page with its attributes, as a browser's parser reads them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_text_from_files_is_escaped_everywhere(page):
    _, text, _ = page
    for markup in (SCRIPT, IMG, EVIL_MODEL, '<b>"t"'):
        assert markup not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    # The only tags and attributes are the page's own: no trace, name or setting became markup.
    tags = _Tags(text).tags
    assert {tag for tag, _ in tags} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4", "p", "table", "thead", "tbody", "tr", "th", "td",
        "nav", "b", "ol", "ul", "li", "a", "span", "main", "section", "div", "img", "details", "summary", "pre",
    }
    assert {name for _, attrs in tags for name in attrs} <= {"lang", "charset", "http-equiv", "content", "name", "class", "id", "href", "src", "alt"}


def test_the_page_fetches_nothing(page):
    _, text, _ = page
    tags = _Tags(text).tags
    assert not {tag for tag, _ in tags} & {"script", "link", "iframe", "object", "embed", "base", "form", "video", "audio", "source"}
    sources = [attrs["src"] for tag, attrs in tags if "src" in attrs]
    assert len(sources) == 10 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert all(attrs["href"].startswith("#s") for _, attrs in tags if "href" in attrs)
    [style] = re.findall(r"<style>(.*?)</style>", text, re.S)
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    # And should anything slip through, the browser is told to fetch and run nothing.
    assert ("meta", {"http-equiv": "Content-Security-Policy", "content": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"}) in tags


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make report-check installs it)")
def test_a_headless_browser_renders_the_page(page, tmp_path):
    from PIL import Image

    out, _, _ = page
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1280,4000", out.as_uri()],
        capture_output=True, timeout=120,
    )
    assert shot.exists()
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert (pixels.min(axis=1) < 235).mean() > 0.05  # not a blank page
    assert len(np.unique(pixels, axis=0)) > 200  # text, tables and plots, not a flat fill
    # The embedded plots were drawn: the blue of their bars and lines (#2f6db5), allowed by the page's policy.
    assert (np.abs(pixels.astype(int) - (47, 109, 181)).sum(axis=1) < 30).sum() > 2000


def test_sections_appear_only_for_what_is_given(outputs, tmp_path):
    text = report(ReportConfig([str(outputs["eval"]), f"{outputs['eval']}/"], str(tmp_path / "eval.html"))).read_text()
    # The eval's section, and the summary above it.
    assert text.count("<section ") == 2 and 'class="stage eval"' in text and '<section id="summary">' in text
    for stage in ("generate", "filter", "sft", "distill", "rl"):
        assert f'class="stage {stage}"' not in text


def test_missing_or_unknown_folders_are_one_line_exit_2_and_nothing_is_written(outputs, tmp_path):
    unknown = tmp_path / "notes"
    unknown.mkdir()
    (unknown / "notes.txt").write_text("hi")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(outputs["eval"]), str(tmp_path / "missing"), str(unknown), "-o", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "missing: no such folder" in result.output and "notes: not an output of generate, filter, sft, distill, rl or eval" in result.output
    assert not out.exists() and not list(tmp_path.glob(".report*"))
    result = CliRunner().invoke(app, ["report", str(outputs["eval"]), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_a_failed_write_keeps_the_old_report(outputs, tmp_path, monkeypatch):
    from r1distill import files

    out = tmp_path / "report.html"
    out.write_text("old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError):
        report(ReportConfig([str(outputs["sft"])], str(out)))
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.train
def test_help_is_the_settings_docs_and_the_file_names_are_trainings():
    from r1distill.training.callbacks import METRICS_FILE
    from r1distill.training.output import RUN_FILE

    said = " ".join(CliRunner().invoke(app, ["report", "--help"]).output.split())
    assert "INPUTS" in said and "-o, --output" in said and "--examples" in said
    assert "Output folders of generate, filter, sft, distill, rl or eval" in said and "[default: report.html]" in said
    assert (inputs.RUN_FILE, inputs.METRICS_FILE) == (RUN_FILE, METRICS_FILE)
