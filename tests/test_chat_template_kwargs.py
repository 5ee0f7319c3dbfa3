"""`--chat-template-kwargs`: a hybrid teacher (Qwen3-style template with `enable_thinking`) writes the
non-reasoning half of an R1 mix. The variables reach a local model's template and a server's request,
change the rows' request key (one OUT holds one value), and bad pairs are one line."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import _tiny_llama, assert_usage_error, write_jsonl
from r1distill.cli import app
from r1distill.errors import UsageError
from r1distill.generate import GenerateConfig, generate
from r1distill.schema import KIND_NON_REASONING

# Opens <think> for the model unless the caller says enable_thinking=false, as Qwen3's template does.
HYBRID = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is not defined or enable_thinking %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def hybrid_model(smollm2_tokenizer_dir, tmp_path_factory):
    return _tiny_llama(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-hybrid"), chat_template=HYBRID)


def _prompts(tmp_path):
    return write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)} for i in range(2)])


def _local(tmp_path, model, name, **settings) -> pl.DataFrame:
    out = tmp_path / name
    generate(GenerateConfig(input=str(_prompts(tmp_path)), output=str(out), model=str(model), max_tokens=4, batch_size=2, **settings))
    return pl.read_parquet(out / "*.parquet")


def test_a_local_template_gets_the_variables(tmp_path, hybrid_model):
    thinking = _local(tmp_path, hybrid_model, "thinking")
    assert all(completion.startswith("<think>\n") for completion in thinking["completion"]), "the template opened the think block"
    answering = _local(tmp_path, hybrid_model, "answering", chat_template_kwargs=["enable_thinking=false"])
    assert not any(completion.startswith("<think>") for completion in answering["completion"]), "enable_thinking=false reached the template"
    assert set(thinking["request_key"]).isdisjoint(answering["request_key"])


def test_a_server_gets_them_as_chat_template_kwargs_and_the_folder_keeps_one_value(tmp_path, fake_server):
    def run(*options):
        return generate(GenerateConfig(input=str(_prompts(tmp_path)), output=str(tmp_path / "out"), model="teacher", backend="openai",
                                       base_urls=[fake_server.url], retry_delay=0.01, chat_template_kwargs=list(options)))

    run("enable_thinking=false", "reasoning_effort=low")
    assert [r["body"]["chat_template_kwargs"] for r in fake_server.requests] == [{"enable_thinking": False, "reasoning_effort": "low"}] * 2
    with pytest.raises(UsageError, match="chat_template_kwargs"):
        run("enable_thinking=true")


def test_without_the_option_nothing_is_sent(tmp_path, fake_server):
    generate(GenerateConfig(input=str(_prompts(tmp_path)), output=str(tmp_path / "out"), model="teacher", backend="openai",
                            base_urls=[fake_server.url], retry_delay=0.01))
    assert all("chat_template_kwargs" not in r["body"] for r in fake_server.requests)


@pytest.mark.parametrize(("options", "message"), [
    (["--chat-template-kwargs", "enable thinking"], "--chat-template-kwargs 'enable thinking': write KEY=VALUE"),
    (["--chat-template-kwargs", "enable_thinking=false", "--template", "r1-zero"], "--chat-template-kwargs applies to the chat template"),
])
def test_bad_variables_are_one_line(tmp_path, options, message):
    out = tmp_path / "out"
    # The openai backend (no server is asked: the options are checked first) needs no training extra.
    result = CliRunner().invoke(app, ["generate", str(_prompts(tmp_path)), "-o", str(out), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", *options])
    assert_usage_error(result, message, out)


def test_a_generate_output_mixes_in_as_non_reasoning_with_its_finished_rows_only(tmp_path, fake_server):
    # The R1 stage-3 mix: the same teacher's answers without thinking, mixed in by filter.
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"id": "c0", "problem": "Say hi."}, {"id": "c1", "problem": "[[length]] Say bye."},
                                                {"id": "c2", "problem": "[[400]] Refused."}])
    generate(GenerateConfig(input=str(chat), output=str(tmp_path / "chat"), model="teacher", backend="openai", base_urls=[fake_server.url],
                            retry_delay=0.01, max_retries=0, max_failed=1.0, chat_template_kwargs=["enable_thinking=false"]))
    traces = tmp_path / "traces"
    generate(GenerateConfig(input=str(_prompts(tmp_path)), output=str(traces), model="teacher", backend="openai", base_urls=[fake_server.url], retry_delay=0.01))
    out = tmp_path / "sft"
    result = CliRunner().invoke(app, ["filter", str(traces), "-o", str(out), "--workers", "1", "--check", "format",
                                      "--non-reasoning", str(tmp_path / "chat")])
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out / "data" / "*.parquet")
    mixed = rows.filter(pl.col("kind") == KIND_NON_REASONING)
    assert mixed.height == 1 and mixed["messages"][0][0]["content"] == "Say hi."
