"""Failed rows in generate, eval and run: rows the server refuses for good, up to --max-failed of them, no
longer block a stage or the stages after it; beyond that share the stage fails in one line; a transient
failure leaves the stage unfinished until a rerun retries it. Every count reaches the summary,
pipeline.json and the report. All through real commands against the local fake server.

    PYTHONPATH=.. python -m pytest -q tests/test_failed_rows.py
"""

from __future__ import annotations

import json

import yaml

from conftest import run_cli, write_jsonl


def _served(url: str) -> list[str]:
    return ["--backend", "openai", "--base-url", url, "-m", "t", "--max-tokens", "16", "--retry-delay", "0.01"]


def test_generate_accepts_refused_rows_up_to_max_failed_and_fails_in_one_line_beyond(tmp_path, fake_server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"Q{i}"} for i in range(19)] + [{"problem": "refused [[400]]"}])
    within = run_cli("generate", str(prompts), "-o", str(tmp_path / "a"), *_served(fake_server.url), "--max-failed", "0.05")
    assert within.returncode == 0, within.stderr
    assert "1 (1 refused for good)" in within.stderr  # the summary's failed row
    [run] = json.loads((tmp_path / "a" / "manifest.json").read_text())["runs"]
    assert (run["counts"]["failed"], run["counts"]["permanent"]) == (1, 1)

    beyond = run_cli("generate", str(prompts), "-o", str(tmp_path / "b"), *_served(fake_server.url))  # the default, 0.1%
    assert beyond.returncode == 1, beyond.stderr
    [line] = [line for line in beyond.stderr.splitlines() if "requests failed" in line]
    assert line.startswith("1 requests failed for good, 5.0% of the 20 rows, more than --max-failed 0.001 accepts: 1 http_400")
    assert "Traceback" not in beyond.stderr

    bad = run_cli("generate", str(prompts), "-o", str(tmp_path / "c"), *_served(fake_server.url), "--max-failed", "2")
    assert bad.returncode == 2 and "--max-failed is a share of the rows, from 0 to 1, got 2" in bad.stderr
    assert not (tmp_path / "c").exists()


def test_a_refused_row_no_longer_blocks_the_pipeline_and_a_transient_one_does_until_retried(tmp_path, fake_server):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(18)] + [{"problem": "refused [[400]]"}, {"problem": "busy [[500x1]]"}],
    )
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"problem": f"What is {i} * 2?", "answer": str(2 * i)} for i in range(9)] + [{"problem": "declined [[400]]", "answer": "1"}])
    served = {"backend": "openai", "base-url": fake_server.url, "model": "t", "max-tokens": 16, "retry-delay": 0.01}
    stages = {
        "generate": {"input": str(prompts), "max-retries": 0, "max-failed": 0.1, **served},
        "filter": {"input": "generate", "check": ["format"]},
        "eval": {"benchmark": str(bench), "num-samples": 1, "max-failed": 0.1, "workers": 1, **served},
        "report": {"inputs": ["generate", "eval"]},
    }
    run_dir = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output": str(run_dir), "stages": stages}, sort_keys=False))

    # The 500 is not retried within the run (--max-retries 0): the stage stays unfinished, nothing after it runs.
    first = run_cli("run", str(recipe))
    assert first.returncode == 1, first.stderr
    [line] = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert "stage 'generate' (generate)" in line and "http_500" in line and "rerun to resume" in line
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["generate"]["finished"] is None and "filter" not in state
    assert state["generate"]["failed"] == {"rows": 20, "failed": 2, "refused_for_good": 1}

    # The rerun retries the 500, which now succeeds; the refused row stays refused, within --max-failed.
    second = run_cli("run", str(recipe))
    assert second.returncode == 0, second.stderr
    sent = {key: sum(n for text, n in fake_server.attempts.items() if key in text) for key in ("refused [[400]]", "busy [[500x1]]")}
    assert sent == {"refused [[400]]": 1, "busy [[500x1]]": 2}, "the refusal is not sent again, the 500 is"
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert all(entry["finished"] for entry in state.values()), state
    assert state["generate"]["failed"] == {"rows": 20, "failed": 1, "refused_for_good": 1}
    assert state["eval"]["failed"] == {"rows": 10, "failed": 1, "refused_for_good": 1}
    assert json.loads((run_dir / "filter" / "stats.json").read_text())["generation_errors"] == 1
    [model] = json.loads((run_dir / "eval" / "results.json").read_text())["models"]
    assert (model["metrics"]["generation_errors"], model["metrics"]["generation_refused"]) == (1, 1)
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("refused for good") == 2  # the generate section and the eval table
