"""A server whose chat template opens <think> itself (`vllm serve` of an R1-Distill model without a
reasoning parser) still yields canonical completions: the tag is put back, so filter's format check
passes and sft reads the thinking as thinking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from conftest import run_cli, write_jsonl
from fake_openai import FakeOpenAI
from r1distill.distill.data import load_conversations
from r1distill.generate import GenerateConfig, generate
from r1distill.schema import KIND_REASONING

PROBLEMS = ["What is 6*7?", "[[cutthink]] What is 5*8?"]


@pytest.fixture
def prefilling_server(request):
    server = FakeOpenAI(prefills_think=True, tokenize=getattr(request, "param", True)).start()
    yield server
    server.stop()


def _generate(tmp_path: Path, server: FakeOpenAI, model: str = "teacher", **settings) -> pl.DataFrame:
    tmp_path.mkdir(exist_ok=True)
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": p, "answer": "42"} for i, p in enumerate(PROBLEMS)])
    generate(GenerateConfig(input=str(source), output=str(tmp_path / "out"), model=model, backend="openai", base_urls=[server.url], retry_delay=0.01, **settings))
    return pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")


def test_learned_from_tokenize_every_completion_opens_its_think_block_and_passes_format(tmp_path, prefilling_server):
    traces = _generate(tmp_path, prefilling_server)
    finished, cut = traces.rows(named=True)
    assert finished["completion"].startswith("<think>\n") and finished["response"] == "The answer is \\boxed{42}."
    # Cut before </think>: only the template tells that this is thinking.
    assert cut["finish_reason"] == "length" and cut["completion"].startswith("<think>\n") and cut["reasoning"].startswith("Thinking about")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["runs"][-1]["prefilled_think"] is True

    result = run_cli("filter", str(tmp_path / "out"), "-o", str(tmp_path / "sft"), "--workers", "1", "--check", "format")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "sft" / "stats.json").read_text())
    assert stats["kept"]["reasoning"] == 1, stats
    conversations, kinds = load_conversations(str(tmp_path / "sft"))
    assert kinds == [KIND_REASONING] and conversations[0][-1]["content"].startswith("<think>\n")


@pytest.mark.parametrize("prefilling_server", [False], indirect=True)
def test_without_tokenize_a_closed_reply_is_recognised_and_the_option_says_the_rest(tmp_path, prefilling_server):
    finished, cut = _generate(tmp_path / "auto", prefilling_server).rows(named=True)
    assert finished["completion"].startswith("<think>\n")
    assert not cut["completion"].startswith("<think>"), "a cut reply cannot be told from its text"

    finished, cut = _generate(tmp_path / "yes", prefilling_server, prefilled_think="yes").rows(named=True)
    assert finished["completion"].startswith("<think>\n") and cut["completion"].startswith("<think>\n")

    finished, _ = _generate(tmp_path / "no", prefilling_server, prefilled_think="no").rows(named=True)
    assert not finished["completion"].startswith("<think>"), "--prefilled-think no stores the replies as they are"


def test_a_template_that_does_not_prefill_leaves_replies_alone(tmp_path, fake_server):
    finished, cut = _generate(tmp_path, fake_server).rows(named=True)
    assert finished["completion"].count("<think>") == 1 and cut["completion"].count("<think>") == 1


@pytest.mark.parametrize("prefilling_server", [False], indirect=True)
def test_a_local_model_folder_tells_through_its_own_tokenizer(tmp_path, prefilling_server, smollm2_tokenizer_dir):
    folder = tmp_path / "model"
    shutil.copytree(smollm2_tokenizer_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n<think>\n"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    _, cut = _generate(tmp_path, prefilling_server, model=str(folder)).rows(named=True)
    assert cut["completion"].startswith("<think>\n")


def test_the_option_is_checked(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "x"}])
    result = run_cli("generate", str(source), "-o", str(tmp_path / "out"), "--prefilled-think", "maybe")
    assert result.returncode == 2 and "--prefilled-think must be one of auto, yes, no" in result.stderr
    result = run_cli("generate", str(source), "-o", str(tmp_path / "out"), "--prefilled-think", "yes")
    assert result.returncode == 2 and "--prefilled-think only applies to --backend openai" in result.stderr
    assert not (tmp_path / "out").exists()
