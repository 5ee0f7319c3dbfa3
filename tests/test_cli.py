"""The command line: help texts, version, and option problems reported together in one line."""

from __future__ import annotations

from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill import __version__
from r1distill.cli import app

runner = CliRunner()


def test_help_explains_every_generate_option():
    result = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--backend", "--num-samples", "--max-tokens", "--temperature", "--top-p", "--seed", "--template", "--system",
                   "--prompt-template", "--base-url", "--api-key-env", "--concurrency", "--shard", "--problem-column",
                   "--answer-column", "--id-column", "--tensor-parallel-size", "--data-parallel-size"):
        assert option in result.output, option


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_every_option_problem_is_reported_at_once(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q"}])
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(source), "-o", str(out), "--backend", "openai", "--top-p", "0", "--shard", "3/2", "-n", "0"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    for needle in ("--num-samples", "--top-p", "--shard", "--base-url"):
        assert needle in line
    assert not out.exists()
