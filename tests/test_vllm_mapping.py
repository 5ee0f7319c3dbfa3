"""The vLLM backend's request and response mapping: against vLLM's real `SamplingParams` where vLLM is
installed, and against the parameter names copied from vLLM's source everywhere else.

    PYTHONPATH=.. python -m pytest -q tests/test_vllm_mapping.py
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill.cli import app
from r1distill.backends import Request, Sampling
from r1distill.backends.vllm_offline import sampling_kwargs, to_result

HAS_VLLM = importlib.util.find_spec("vllm") is not None
# The parameters of `SamplingParams.from_optional`, the public constructor, in vllm-project/vllm
# vllm/sampling_params.py at commit 00388f6573cc (the fields the engine sets itself are left out).
VLLM_SAMPLING_PARAMS = frozenset(
    """n presence_penalty frequency_penalty repetition_penalty temperature top_p top_k min_p seed stop
    stop_token_ids bad_words thinking_token_budget include_stop_str_in_output ignore_eos max_tokens
    min_tokens logprobs prompt_logprobs prompt_logprob_token_ids prompt_logprob_start detokenize
    skip_special_tokens spaces_between_special_tokens output_kind stream_interval structured_outputs
    logit_bias allowed_token_ids extra_args skip_clone repetition_detection logprob_token_ids
    routed_experts_prompt_start trace_decode_token_ids""".split()
)
SAMPLING = Sampling(max_tokens=1024, temperature=0.6, top_p=0.95)
EXPECTED = {"n": 1, "max_tokens": 1024, "temperature": 0.6, "top_p": 0.95, "seed": 11, "skip_special_tokens": False}


def _output(text: str, finish: str, tokens: int, prompt_tokens: int):
    # The attributes of vllm.RequestOutput / vllm.CompletionOutput that the backend reads.
    completion = SimpleNamespace(text=text, finish_reason=finish, token_ids=list(range(tokens)))
    return SimpleNamespace(outputs=[completion], prompt_token_ids=list(range(prompt_tokens)))


def test_sampling_params_carry_the_per_request_seed_and_keep_special_tokens():
    kwargs = sampling_kwargs(SAMPLING, seed=11)
    assert kwargs == EXPECTED
    assert set(kwargs) <= VLLM_SAMPLING_PARAMS, f"not parameters of vLLM's SamplingParams: {set(kwargs) - VLLM_SAMPLING_PARAMS}"


@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed: the mapping is checked against the parameter names copied from its source")
def test_sampling_params_build_vllms_real_sampling_params():
    from vllm import SamplingParams

    params = SamplingParams(**sampling_kwargs(SAMPLING, seed=11))
    assert {name: getattr(params, name) for name in EXPECTED} == EXPECTED


def test_outputs_map_to_results():
    request = Request("p:0", [{"role": "user", "content": "q"}])
    stopped = to_result(request, "<|user|>q<|assistant|><think>\n", _output("a\n</think>\nb", "stop", 5, 9))
    assert (stopped.key, stopped.text, stopped.finish_reason, stopped.completion_tokens, stopped.prompt_tokens) == ("p:0", "a\n</think>\nb", "stop", 5, 9)
    assert stopped.prefilled_think
    cut = to_result(request, "plain prompt", _output("abc", "length", 7, 3))
    assert cut.finish_reason == "length" and not cut.prefilled_think


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown when vLLM is absent")
def test_choosing_vllm_without_it_installed_is_a_one_line_error(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q"}])
    result = CliRunner().invoke(app, ["generate", str(source), "-o", str(tmp_path / "out"), "--backend", "vllm"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --backend vllm needs vllm, which is not installed: pip install 'r1distill[gpu]' (NVIDIA GPU)"
    assert not (tmp_path / "out").exists()
