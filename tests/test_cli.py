"""The command line: help texts written once in the settings, version, and option problems in one line."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from conftest import run_cli, write_jsonl
from r1distill import __version__
from r1distill.cli import _field_docs, app
from r1distill.distill.config import SFTConfig
from r1distill.eval.config import EvalConfig
from r1distill.filter.run import FilterConfig
from r1distill.generate.config import GenerateConfig
from r1distill.report import ReportConfig

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


@pytest.mark.parametrize(
    ("command", "config"), [("generate", GenerateConfig), ("filter", FilterConfig), ("sft", SFTConfig), ("eval", EvalConfig), ("report", ReportConfig)]
)
def test_every_setting_is_an_option_whose_help_is_the_fields_doc(command, config):
    docs = _field_docs(config)
    # Click wraps at hyphens too ("Retry-After" may end a line as "Retry-"), so hyphens are compared unspaced.
    help_text = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output.split()).replace("- ", "-")
    for field in dataclasses.fields(config):
        if field.name == "command":
            continue
        assert docs.get(field.name), f"{config.__name__}.{field.name} has no doc"
        assert " ".join(docs[field.name].split()).replace("- ", "-") in help_text, field.name
        # Lists (a default_factory) show their defaults joined; test_fixed_choices_and_list_defaults_are_shown checks those.
        if field.name not in ("input", "output") and field.default is not dataclasses.MISSING and field.default not in (None, False):
            # A switch on by default is an --x/--no-x pair, whose default Click names by the switch.
            shown = field.name if field.default is True else field.default
            assert f"[default: {shown}]" in help_text, field.name
    assert not re.search(r"\s\.(\s|$)", help_text), "a default hidden by markup leaves a stray ' .'"


def test_fixed_choices_and_list_defaults_are_shown():
    help_text = " ".join(runner.invoke(app, ["filter", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "Choices: accuracy, format, language, length, truncated, repetition, code, judge." in help_text
    assert "[default: accuracy, format, language, truncated, repetition]" in help_text
    assert "Choices: math, choice, exact." in help_text and "Choices: en, zh, ja, ko, ru, ar." in help_text
    generate_help = " ".join(runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "Choices: transformers, openai, vllm." in generate_help and "Choices: chat, r1-zero, raw." in generate_help


def test_parser_errors_are_one_line_with_exit_2(tmp_path):
    for args, needle in ((["filter", "x", "-o", "y", "--bogus"], "No such option: --bogus"),
                         (["filter", "x", "-o", "y", "--workers", "many"], "Invalid value for '--workers'")):
        result = run_cli(*args)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and needle in line and line.endswith("filter --help)")
