"""The sft stage on CPU with a 2-layer random Llama and the real SmolLM2 tokenizer: template probe,
assistant-only labels with packing on and off, CLI end to end on a filter output, overfitting, resume,
LoRA, recipes and every bad input.

    PYTHONPATH=.. python -m pytest -q tests/test_sft.py
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, run_cli, write_jsonl

# The stage's own module imports transformers: without the training extra the whole file skips.
pytest.importorskip("trl", reason="needs the training extra: pip install -e '.[train]'")
from r1distill.cli import app
from r1distill.distill.config import SFTConfig, read_recipe
from r1distill.distill.run import build_trainer, plan_run, sft
from r1distill.training.template import R1DISTILL_TEMPLATE, choose_template
from r1distill.errors import UsageError
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.schema import SFT_SCHEMA, r1_layout

REPO = Path(__file__).resolve().parents[1]
REASONING = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": r1_layout("Two plus two is four.", "The answer is \\boxed{4}.")}]
CHAT = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]
# A chat that opens with a system turn and has two assistant turns: both are trained, nothing else.
MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "First?"},
    {"role": "assistant", "content": "One."},
    {"role": "user", "content": "Second, with thought?"},
    {"role": "assistant", "content": r1_layout("The second is two.", "Two.")},
]


# SmolLM2's template (with its default system prompt) plus {% generation %} markers on the assistant turns.
KEEPS_THINKING = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _sft_table(folder: Path, conversations: list[list[dict]]) -> Path:
    """A folder laid out as `r1distill filter` writes it (data/train-*.parquet, SFT_SCHEMA)."""
    rows = [
        {"id": str(i), "prompt_id": str(i), "messages": c, "kind": "reasoning", "source": "t", "problem": c[0]["content"], "answer": None, "pass_rate": None}
        for i, c in enumerate(conversations)
    ]
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT_SCHEMA), folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.fixture
def filtered(tmp_path) -> Path:
    """A real `r1distill filter` output: reasoning traces plus non-reasoning chats with an empty think block."""
    answer = "The answer is \\boxed{4}."
    traces = [
        {"id": f"p{i}:0", "prompt_id": f"p{i}", "sample": 0, "problem": f"What is {i} plus {i}?", "answer": str(2 * i),
         "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "completion": f"<think>\n{i} plus {i} is {2 * i}.\n</think>\n\n{answer}",
         "reasoning": f"{i} plus {i} is {2 * i}.", "response": answer, "finish_reason": "stop", "completion_tokens": 20, "model": "teacher"}
        for i in range(12)
    ]
    source = tmp_path / "traces"
    source.mkdir()
    pl.DataFrame(traces).write_parquet(source / "traces-0.parquet")
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"Greet me {i}"}, {"role": "assistant", "content": f"Hi {i}!"}]} for i in range(6)])
    out = tmp_path / "sft-data"
    filter_traces(FilterConfig(str(source), str(out), checks=["format"], dedup="none", non_reasoning=str(chat), no_think="empty"))
    return out


def _segments(batch) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of every sample in a collated batch: split at position resets when packed."""
    ids, labels = batch["input_ids"], batch["labels"]
    if "position_ids" in batch and "attention_mask" not in batch:
        positions = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        return [(ids[0, a:b].tolist(), labels[0, a:b].tolist()) for a, b in zip(starts, starts[1:])]
    keep = batch["attention_mask"].bool()
    return [(ids[i][keep[i]].tolist(), labels[i][keep[i]].tolist()) for i in range(len(ids))]


@pytest.mark.parametrize("packing", [True, False])
def test_labels_train_every_assistant_token_and_no_prompt_token(tmp_path, tiny_model, packing):
    data = _sft_table(tmp_path / "data", [REASONING, CHAT, MULTI_TURN] * 2)
    cfg = SFTConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), max_length=128, packing=packing, batch_size=6, grad_accum=1)
    plan = plan_run(cfg)
    batch = next(iter(build_trainer(plan).get_train_dataloader()))
    assert ("position_ids" in batch) == packing  # packed rows are flattened padding-free
    tokenizer = plan.tokenizer
    seen = []
    for ids, labels in _segments(batch):
        trained = [t for t, label in zip(ids, labels) if label != -100]
        assert trained == [label for label in labels if label != -100]  # labels are the tokens themselves, unshifted
        untrained = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
        conversation = next(c for c in (REASONING, CHAT, MULTI_TURN) if c[1]["content"] in tokenizer.decode(ids))
        answers = [m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant"]
        # Thinking and the end-of-turn token are trained; every system, user and header token is not.
        assert tokenizer.decode(trained) == "".join(answers)
        assert all(m["content"] in untrained for m in conversation if m["role"] != "assistant")
        assert not any(answer[:12] in untrained for answer in answers)
        seen.append(conversation)
    assert len(seen) == 6


def test_packed_samples_do_not_attend_to_each_other(tmp_path, tiny_model):
    import torch

    data = _sft_table(tmp_path / "data", [REASONING, CHAT, MULTI_TURN])
    plan = plan_run(SFTConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), max_length=256, batch_size=1, grad_accum=1))
    trainer = build_trainer(plan)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] == sum(len(ids) for ids, _ in _segments(batch)) and len(_segments(batch)) == 3
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([ids])).logits[0] for ids, _ in _segments(batch)])
    # With the default (sdpa) attention the block mask comes from the position resets: same logits as one by one.
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)


def test_template_probe(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import deepseek_r1_distill_training_chat_template
    import trl

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    conversations, kinds = [REASONING, CHAT], ["reasoning", "non_reasoning"]
    # SmolLM2's own template keeps the thinking but marks no assistant span for the loss.
    chosen = choose_template(tokenizer, "auto", conversations, kinds)
    assert chosen.name == "r1distill" and "{% generation %}" in chosen.reason
    # The R1-Distill template drops everything up to </think> from assistant turns.
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "deepseek_r1_distill.jinja").read_text()
    chosen = choose_template(tokenizer, "auto", conversations, kinds)
    assert chosen.name == "r1distill" and "strips <think>" in chosen.reason
    with pytest.raises(UsageError, match="--template model: the student's template strips <think>"):
        choose_template(tokenizer, "model", conversations, kinds)
    # Its training variant keeps the thinking, but its turns end in a token this tokenizer does not have.
    tokenizer.chat_template = deepseek_r1_distill_training_chat_template
    chosen = choose_template(tokenizer, "auto", conversations, kinds)
    assert chosen.name == "r1distill" and "end-of-turn token" in chosen.reason
    # A template that pre-fills <think> at inference but trains the whole turn trains tokens it never writes.
    tokenizer.chat_template = KEEPS_THINKING.replace("{{ '<|im_start|>assistant\\n' }}{% endif %}", "{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}")
    chosen = choose_template(tokenizer, "auto", conversations, kinds)
    assert chosen.name == "r1distill" and "parity" in chosen.reason and "in the reasoning rows the loss covers '<think>\\n'" in chosen.reason
    # A template that keeps the thinking, marks the turns and prompts where training starts is the student's own.
    tokenizer.chat_template = KEEPS_THINKING
    assert choose_template(tokenizer, "auto", conversations, kinds).name == "model"
    assert choose_template(tokenizer, "r1distill", conversations, kinds).text == R1DISTILL_TEMPLATE


def test_cli_trains_a_filter_output_and_saves_a_loadable_student(filtered, tiny_model, tmp_path):
    out = tmp_path / "student"
    result = run_cli("sft", str(filtered), "-o", str(out), "--model", str(tiny_model), "--max-steps", "3", "--batch-size", "2",
                     "--grad-accum", "1", "--logging-steps", "1", "--max-length", "128", "--eval-fraction", "0.2", "--eval-steps", "3")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    # 12 traces kept by filter and 6 chats with an empty think block, 4 of the 18 held out for eval.
    assert "18 rows in, 0 dropped as longer than --max-length 128" in said and "4 held out for eval" in said
    assert "train/serve parity" in said and "reasoning and non-reasoning rows checked" in said
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json", "README.md", "metrics.jsonl"):
        assert (out / name).exists(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    assert any("eval_loss" in m for m in metrics) and any("tokens_per_second" in m for m in metrics)
    assert all({"learning_rate", "grad_norm"} <= m.keys() for m in metrics if "loss" in m)
    card = (out / "README.md").read_text()
    assert "enable_thinking" in card and " ".join(["r1distill", "sft", str(filtered)]) in card and "trl " in card
    # Plain HF layout: `r1distill generate --model OUT` loads it.
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is 1 plus 1?"}])
    result = run_cli("generate", str(prompts), "-o", str(tmp_path / "gen"), "--model", str(out), "--max-tokens", "4", "--temperature", "0")
    assert result.returncode == 0, result.stderr


def test_overfits_a_repeated_sample_and_the_student_stops(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "student"
    summary = sft(SFTConfig(str(_sft_table(tmp_path / "data", [REASONING] * 8)), str(out), model=str(tiny_model), max_length=128,
                            max_steps=60, lr=1e-2, lr_scheduler="constant", warmup_ratio=0, batch_size=1, grad_accum=1, logging_steps=10))
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < losses[0] / 20, losses
    assert summary.steps == 60
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    assert "Two plus two is four." in tokenizer.apply_chat_template(REASONING, tokenize=False)  # the saved template keeps the reasoning
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in model.generation_config.eos_token_id
    prompt = tokenizer.apply_chat_template(REASONING[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=64, do_sample=False)[0, prompt["input_ids"].shape[1]:].tolist()
    assert generated[-1] == end and len(generated) < 64
    assert tokenizer.decode(generated) == REASONING[1]["content"] + "<|im_end|>"


def test_a_killed_run_resumes_from_its_last_checkpoint_and_continues_the_step_count(tmp_path, tiny_model):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = _sft_table(tmp_path / "data", [REASONING, CHAT] * 4)
    out = tmp_path / "out"
    options = ["--model", str(tiny_model), "--max-length", "128", "--batch-size", "1", "--grad-accum", "1", "--logging-steps", "1", "--save-steps", "2"]
    run = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "sft", str(data), "-o", str(out), "--max-steps", "100000", *options],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint-4" / "trainer_state.json").exists():
            assert run.poll() is None, run.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint-4 in time"
            time.sleep(0.2)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    # A checkpoint the kill interrupted (its trainer state is written last) is skipped.
    (out / "checkpoint-999999").mkdir()
    cfg = SFTConfig(str(data), str(out), model=str(tiny_model), max_length=128, batch_size=1, grad_accum=1, logging_steps=1, save_steps=2)
    with pytest.raises(UsageError, match="pass --resume"):
        plan_run(cfg)
    with pytest.raises(UsageError, match="holds a different run \\(lr"):
        plan_run(SFTConfig(**{**cfg.__dict__, "lr": 1e-3, "resume": True}))
    plan = plan_run(SFTConfig(**{**cfg.__dict__, "resume": True, "max_steps": 10**9}))
    last = int(plan.checkpoint.rsplit("-", 1)[-1])
    assert last >= 4 and last % 2 == 0
    summary = sft(SFTConfig(**{**cfg.__dict__, "resume": True, "max_steps": last + 2}))
    assert summary.steps == last + 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    # Each step logged once: the steps the killed run did after its checkpoint were done again, not twice.
    assert steps == list(range(1, last + 3))


def test_lora_trains_only_the_adapters(tmp_path, tiny_model):
    import torch
    from safetensors.torch import load_file

    data = _sft_table(tmp_path / "data", [REASONING, CHAT] * 2)
    cfg = SFTConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), max_length=128, max_steps=2, lr=1e-2, warmup_ratio=0, batch_size=2, grad_accum=1,
                    lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    trainer.train()
    for name, p in trainer.model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == ("lora_B" in name or "lora_A" in name), name
    from r1distill.distill.run import save

    save(trainer, plan)
    out = tmp_path / "out"
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    assert all("lora_" in key for key in load_file(out / "adapter_model.safetensors"))
    assert (out / "generation_config.json").exists() and (out / "chat_template.jinja").exists()


def test_merge_lora_saves_full_weights(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    data = _sft_table(tmp_path / "data", [REASONING, CHAT])
    sft(SFTConfig(str(data), str(tmp_path / "out"), model=str(tiny_model), max_length=128, max_steps=1, batch_size=2, grad_accum=1, lora_r=4, merge_lora=True))
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert not any("lora" in name for name, _ in AutoModelForCausalLM.from_pretrained(out).named_parameters())


def _bad_inputs(tmp_path: Path, tiny_model: Path) -> list[tuple[list[str], str]]:
    no_messages = write_jsonl(tmp_path / "no-messages.jsonl", [{"question": "q", "text": "a"}])
    no_assistant = write_jsonl(tmp_path / "no-assistant.jsonl", [{"messages": CHAT}, {"messages": CHAT[:1]}])
    odd_role = write_jsonl(tmp_path / "odd-role.jsonl", [{"messages": [{"role": "wizard", "content": "hi"}, CHAT[1]]}])
    good = write_jsonl(tmp_path / "good.jsonl", [{"messages": REASONING}])
    other_run = tmp_path / "other-run"
    other_run.mkdir()
    (other_run / "run.json").write_text(json.dumps({"settings": {"model": "someone-else/model"}}))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_lenght: 1024\n")
    model = ["--model", str(tiny_model), "--max-length", "1024"]  # the tiny model has 2,048 positions
    return [
        ([str(no_messages), *model], "no 'messages' column"),
        ([str(no_assistant), *model], "row 1 of 'messages' has no assistant turn"),
        ([str(odd_role), *model], "unknown role 'wizard'"),
        ([str(good), *model, "--max-length", "16"], "no training row is left"),
        ([str(good), "--model", str(tmp_path / "no-such-model")], "no such model folder"),
        ([str(good), *model, "--lora-r", "4", "--lora-target-modules", "qkv_proj"], "no such linear module"),
        ([str(good), *model, "--resume"], "holds no run to resume"),
        ([str(good), *model, "--output", str(other_run)], "holds a different run (model"),
        ([str(good), *model, "--output", str(stranger)], "holds no r1distill sft run"),
        ([str(good), *model, "--config", str(recipe)], "unknown setting(s) max_lenght"),
        ([str(good), *model, "--push-to-hub", "not a repo!"], "--push-to-hub 'not a repo!' is not a valid repository id"),
    ]


def test_a_tokenizer_without_chatml_tokens_gets_them_and_the_embeddings_grow(tmp_path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for c in (REASONING, CHAT) for m in c for w in (m["role"] + " " + m["content"]).split()} | {"[UNK]", "\n"})
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="[UNK]")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data = _sft_table(tmp_path / "data", [REASONING, CHAT])
    plan = plan_run(SFTConfig(str(data), str(tmp_path / "out"), model=str(tmp_path / "model"), max_length=128, max_steps=1, batch_size=2, grad_accum=1))
    assert plan.template.name == "r1distill" and plan.added_tokens == ["<|im_start|>", "<|im_end|>"]
    trainer = build_trainer(plan)
    assert trainer.model.get_input_embeddings().num_embeddings == len(words) + 2
    end = plan.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end == len(words) + 1 and end in trainer.model.generation_config.eos_token_id


def test_every_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_model):
    runner = CliRunner()
    for args, message in _bad_inputs(tmp_path, tiny_model):
        out = tmp_path / "out"
        if "--output" not in args:
            args = [*args, "-o", str(out)]
        # Log lines (the template chosen, say) may come first; the error itself is one line.
        assert_usage_error(runner.invoke(app, ["sft", *args]), message, out)


def test_recipe_settings_apply_and_command_line_options_win(tmp_path, tiny_model):
    recipe = tmp_path / "recipe.yaml"
    # YAML reads 4e-5 as text: it is accepted as the float it means.
    recipe.write_text("lr: 4e-5\nmax_length: 8\nepochs: 0\nlora_target_modules: q_proj\n")
    assert read_recipe(recipe) == {"lr": 4e-5, "max_length": 8, "epochs": 0.0, "lora_target_modules": ["q_proj"]}
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": REASONING}])
    result = CliRunner().invoke(app, ["sft", str(data), "-o", str(tmp_path / "out"), "--config", str(recipe), "--max-length", "64"])
    assert result.exit_code == 2
    assert "--epochs" in result.stderr and "--lora-target-modules needs --lora-r" in result.stderr  # from the recipe
    assert "--max-length" not in result.stderr  # overridden on the command line
    recipe.write_text("batch_size: many\n")
    assert "batch_size must be int" in CliRunner().invoke(app, ["sft", str(data), "-o", str(tmp_path / "out"), "--config", str(recipe)]).stderr


def test_shipped_recipes_and_accelerate_configs_are_valid(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    recipes = sorted((REPO / "recipes" / "sft").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"qwen2.5-1.5b", "qwen2.5-math-7b"}
    for path in recipes:
        settings = read_recipe(path)
        SFTConfig(input="data", output=str(tmp_path / path.stem), **settings).check()
        assert settings["max_length"] >= 16384 and settings["gradient_checkpointing"]
    launchers = {p.stem: ClusterConfig.from_yaml_file(p) for p in (REPO / "recipes" / "accelerate").glob("*.yaml")}
    assert set(launchers) == {"ddp", "zero2", "zero3", "fsdp"}
    assert launchers["zero3"].deepspeed_config["zero_stage"] == 3 and launchers["zero2"].deepspeed_config["zero_stage"] == 2
    assert launchers["fsdp"].distributed_type == "FSDP" and launchers["ddp"].distributed_type == "MULTI_GPU"


def test_gradient_checkpointing_reaches_the_trainer_under_the_installed_transformers_name(tmp_path):
    """transformers 5.23 renamed the field (the old name warns, and older releases know only it): the setting
    must switch checkpointing on under whichever name this transformers has, with no deprecation warning."""
    import warnings

    from transformers import TrainingArguments

    from r1distill.training.recipe import trainer_arguments

    for wanted in (True, False):
        cfg = SFTConfig(input="data", output=str(tmp_path / "out"), gradient_checkpointing=wanted)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            args = TrainingArguments(**trainer_arguments(cfg))
        assert getattr(args, "activation_checkpointing", args.gradient_checkpointing) is wanted
