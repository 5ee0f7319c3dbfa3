"""Secrets never reach a file, an upload or the terminal: credentials planted in a server URL (a password
with an unencoded '/' and '#'), in the environment (the --api-key-env key, HF_TOKEN) and in rl's GRPOConfig
passthrough (hub_token), through generate, eval and a `run` of synth, generate, filter, sft, rl and eval
on the tiny model against the local fake OpenAI server; and the options that would send or run what
they should not are refused.

    PYTHONPATH=.. python -m pytest -q tests/test_secrets.py
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import polars as pl
import yaml
from typer.testing import CliRunner

from conftest import assert_usage_error, run_cli, write_jsonl
from r1distill.cli import app
from r1distill.hub import files_to_push

USER, PASSWORD = "agent", "s3/cr#et"
"""Pasted unencoded, as users do: a URL parser ends the host at the '/' and takes '#et@...' for a fragment."""
API_KEY = "sk-planted-api-key-0123456789"
HF_ENV_TOKEN = "hf_plantedEnvironmentToken0123"
HUB_TOKEN = "hf_plantedRecipeHubToken4567"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), f"{USER}:s3", BASIC, API_KEY, HF_ENV_TOKEN, HUB_TOKEN]
ENV = {"MY_API_KEY": API_KEY, "HF_TOKEN": HF_ENV_TOKEN}
# The pickled TrainingArguments (hub_token and all) that the trainer keeps beside the weights: it may
# stay on disk, and must never be uploaded.
PICKLED_ARGS = "training_args.bin"


def _leaks(data: bytes) -> list[str]:
    return [secret for secret in SECRETS if secret.encode() in data]


def test_no_planted_credential_reaches_a_written_file_an_upload_or_the_terminal(tmp_path, fake_server, tiny_model):
    secret_url = fake_server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    # Two replicas: basic auth from the URL on one, the --api-key-env key on the other.
    servers = ["--backend", "openai", "--base-url", secret_url, "--base-url", fake_server.url, "--api-key-env", "MY_API_KEY", "-m", "t"]
    problems = [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(1, 7)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", problems + [{"problem": "echo [[401echo]]"}])
    benchmark = write_jsonl(tmp_path / "bench.jsonl", problems[:3])
    outputs = [tmp_path / "gen", tmp_path / "eval", tmp_path / "run"]
    results = []

    generated = run_cli("generate", str(prompts), "-o", str(outputs[0]), *servers, "--max-tokens", "16", "--concurrency", "2", env=ENV)
    # The row whose server echoes the Authorization header is refused (exit 1); every other one is generated.
    assert generated.returncode == 1 and "1 requests failed" in generated.stderr, generated.stderr
    assert {r["authorization"] for r in fake_server.preflights} == {f"Basic {BASIC}", f"Bearer {API_KEY}"}
    [error] = pl.read_parquet(outputs[0] / "*.parquet").filter(pl.col("error").is_not_null())["error"].to_list()
    assert error in ("http_401: Incorrect API key provided: Basic ***", "http_401: Incorrect API key provided: Bearer ***"), error
    results.append(generated)

    evaluated = run_cli("eval", str(benchmark), "-o", str(outputs[1]), *servers, "-n", "1", "--max-tokens", "16", env=ENV)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "http://***@" + fake_server.url.removeprefix("http://") in json.loads((outputs[1] / "results.json").read_text())["command"]
    results.append(evaluated)

    rl_recipe = tmp_path / "rl.yaml"
    rl_recipe.write_text(yaml.safe_dump({"hub_token": HUB_TOKEN}))
    served = {"backend": "openai", "base-url": [secret_url, fake_server.url], "api-key-env": "MY_API_KEY", "model": "t", "max-tokens": 16}
    tiny = {"model": str(tiny_model), "max-steps": 1, "batch-size": 2, "grad-accum": 1, "save-steps": 1}
    stages = {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": 4, "seed": 1},
        "generate": {"input": "prompts", **served, "num-samples": 2, "concurrency": 2},
        "filter": {"input": "generate", "check": ["format"]},
        "sft": {"input": "filter", **tiny, "max-length": 128},
        "rl": {"input": "prompts", **tiny, "config": str(rl_recipe), "reward": ["format"], "num-generations": 2, "max-completion-length": 8},
        "eval": {"benchmark": str(benchmark), **{k: v for k, v in served.items() if k != "model"}, "models": ["t"], "n": 1},
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output": str(outputs[2]), "stages": stages}, sort_keys=False))
    ran = run_cli("run", str(recipe), env=ENV)
    assert ran.returncode == 0, ran.stderr
    assert "hub_token" in (outputs[2] / "rl" / "README.md").read_text()  # the setting is recorded, its value hidden
    results.append(ran)

    for result in results:
        assert not _leaks(result.stdout.encode() + result.stderr.encode()), result.args
    written = [path for folder in outputs for path in folder.rglob("*") if path.is_file()]
    assert len(written) > 50 and any(path.name == PICKLED_ARGS for path in written)
    for path in written:
        if path.name != PICKLED_ARGS:
            assert not _leaks(path.read_bytes()), (path, _leaks(path.read_bytes()))

    # What push and push_model would upload: known outputs only, the pickled arguments and a stray file never.
    for folder, kind in ((outputs[0], "dataset"), (outputs[1], "dataset"), (outputs[2] / "filter", "dataset"),
                         (outputs[2] / "sft", "model"), (outputs[2] / "rl", "model")):
        (folder / "notes.txt").write_text(f"my key is {API_KEY}")
        pushed = files_to_push(folder, kind)
        assert pushed and "notes.txt" not in pushed and not any(Path(name).name == PICKLED_ARGS for name in pushed), (folder, pushed)
        assert not any(name.startswith((".journal", "checkpoint-")) for name in pushed), (folder, pushed)
        for name in pushed:
            assert not _leaks((folder / name).read_bytes()), (folder, name)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "generation_config.json"} <= set(files_to_push(outputs[2] / "sft", "model"))
    assert {"README.md", "stats.json"} <= set(files_to_push(outputs[2] / "filter", "dataset"))
    assert "manifest.json" in files_to_push(outputs[0], "dataset") and "results.json" in files_to_push(outputs[1], "dataset")


def test_a_servers_escape_sequences_reach_neither_a_row_nor_the_terminal(tmp_path, fake_server):
    escapes = "\x1b[31mbad request\x1b[0m\x1b]0;owned\x07\r\x1b[2Kall good\x08"
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}, {"problem": "[[ansi]]"}])
    options = ["--backend", "openai", "--base-url", fake_server.url, "-m", "t", "--max-tokens", "8"]
    result = run_cli("generate", str(prompts), "-o", str(tmp_path / "rows"), *options)
    assert result.returncode == 1, result.stderr
    [error] = pl.read_parquet(tmp_path / "rows" / "*.parquet").filter(pl.col("error").is_not_null())["error"].to_list()
    assert error == "http_400: bad requestall good"
    # A server that refuses the preflight: its text is in the one error line, without a single escape.
    fake_server.refusal = escapes
    refused = CliRunner().invoke(app, ["generate", str(prompts), "-o", str(tmp_path / "none"), *options])
    assert_usage_error(refused, "http_400: bad requestall good", tmp_path / "none")
    assert "\x1b" not in refused.stderr and "owned" not in refused.stderr and "\r" not in refused.stderr


def test_api_key_env_sends_only_a_variable_named_like_the_servers_key(tmp_path, fake_server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}])
    runner = CliRunner()
    for name in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HOME"):
        out = tmp_path / name
        result = runner.invoke(app, ["generate", str(prompts), "-o", str(out), "--backend", "openai", "--base-url", fake_server.url, "--api-key-env", name],
                               env={name: "a-credential-of-another-service"})
        assert_usage_error(result, f"--api-key-env {name}", out)
    assert fake_server.preflights == [] and fake_server.requests == []


def test_a_recipe_cannot_turn_trust_remote_code_on_through_the_grpo_passthrough(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?", "answer": "2"}])
    runner = CliRunner()
    for name, setting in (("direct", {"trust_remote_code": True}), ("kwargs", {"model_init_kwargs": {"dtype": "float32", "trust_remote_code": True}}),
                          ("json", {"model_init_kwargs": '{"trust_remote_code": true}'})):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump(setting))
        out = tmp_path / name
        result = runner.invoke(app, ["rl", str(data), "-o", str(out), "--model", str(tiny_model), "--config", str(recipe)])
        assert_usage_error(result, "trust_remote_code would run the model repository's own code", out)


def test_a_key_in_any_variable_ending_in_key_is_scrubbed_from_recorded_text(monkeypatch):
    # --api-key-env accepts DEEPSEEK_KEY, so its value must be scrubbed like OPENAI_API_KEY's would be.
    from r1distill.redact import redact_text

    monkeypatch.setenv("DEEPSEEK_KEY", "dsk-planted-0123456789")
    assert redact_text("server said: bad key dsk-planted-0123456789") == "server said: bad key ***"
