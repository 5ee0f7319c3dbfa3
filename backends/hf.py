"""The transformers backend: batched sampling on the CPU or one GPU, the embedded default's home.

Requests are sorted by prompt length so a batch pads little, and generated in batches of `batch_size`
(the samples of one prompt are ordinary rows of a batch). A prompt longer than the model's context is
never sent: its rows are `prompt_too_long` errors at once, and no row is generated past the context.
A batch that fails (out of memory, say) becomes error rows that the next run retries, instead of
ending the run. Batches run in the calling thread, so Ctrl-C stops one mid-batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence

from r1distill import models
from r1distill.backends import Request, Result, Sampling, ends_inside_think, prompt_too_long, render_prompt
from r1distill.errors import UsageError, first_line
from r1distill.schema import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP

log = logging.getLogger(__name__)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, sampling: Sampling, batch_size: int = 8, device: str | None = None, seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.torch = torch
        self.sampling = sampling
        self.batch_size = batch_size
        self.seed = seed
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = check_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, dtype_name(self.device))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        # Sampling draws its token in NucleusSampler and hands generate a one-hot choice, decoded greedily.
        self.sampler = [] if sampling.temperature <= 0 else [NucleusSampler(sampling.temperature, sampling.top_p)]
        self.stop_ids = _stop_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        self.context = context_length(self.model.config, self.tokenizer)
        self.model_name = model
        log.info("loaded %s on %s", model, self.device)

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        rendered = [(request, render_prompt(self.tokenizer, request)) for request in requests]
        lengths = [len(ids) for ids in self.tokenizer([text for _, text in rendered], add_special_tokens=False)["input_ids"]]
        fits = []
        for i, (request, _) in enumerate(rendered):
            if lengths[i] >= self.context:  # not even one output token would fit
                emit(prompt_too_long(request, lengths[i], self.context))
            else:
                fits.append(i)
        # A batch shares one cap (max_new_tokens), so requests of different caps go in batches of their own.
        caps = [request.cap(self.sampling) for request, _ in rendered]
        for cap in sorted({caps[i] for i in fits}):
            order = sorted((i for i in fits if caps[i] == cap), key=lambda i: -lengths[i])
            for start in range(0, len(order), self.batch_size):
                batch = [rendered[i] for i in order[start : start + self.batch_size]]
                # In this thread, not a worker thread: a Ctrl-C lands inside the batch instead of after it.
                for result in self._generate_batch(batch, budget=min(cap, self.context - lengths[order[start]])):
                    emit(result)
                await asyncio.sleep(0)

    def _generate_batch(self, batch: list[tuple[Request, str]], budget: int) -> list[Result]:
        """One batch; `budget` (new tokens) keeps its longest prompt plus output within the context."""
        try:
            return self._generate(batch, budget)
        except Exception as err:  # one bad batch (OOM, a too-long prompt) must not end a long run
            log.warning("batch of %d failed: %s", len(batch), err)
            return [Result(key=request.key, finish_reason=FINISH_ERROR, error=f"{type(err).__name__}: {err}"[:500]) for request, _ in batch]

    def _generate(self, batch: list[tuple[Request, str]], budget: int) -> list[Result]:
        torch = self.torch
        texts = [text for _, text in batch]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        # Seeded per batch from its first key, so a rerun of the same batch samples the same tokens.
        torch.manual_seed(int(hashlib.sha256(f"{self.seed}:{batch[0][0].key}".encode()).hexdigest()[:8], 16))
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                max_new_tokens=budget,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=self.sampler,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.stop_ids),
            )
        prompt_width = encoded["input_ids"].shape[1]
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, (request, text) in enumerate(batch):
            generated = output[row, prompt_width:].tolist()
            stop_at = next((i for i, token in enumerate(generated) if token in self.stop_ids), None)
            tokens = generated if stop_at is None else generated[:stop_at]
            finished = stop_at is not None or len(tokens) < budget
            results.append(
                Result(
                    key=request.key,
                    text=self.tokenizer.decode(tokens, skip_special_tokens=False),
                    finish_reason=FINISH_STOP if finished else FINISH_LENGTH,
                    prefilled_think=ends_inside_think(text),
                    completion_tokens=len(tokens),
                    prompt_tokens=int(prompt_tokens[row]),
                )
            )
        return results

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
        log.info("released %s", self.model_name)


class NucleusSampler:
    """Temperature and top-p sampling, as transformers' warpers and multinomial draw it, without sorting the vocabulary.

    transformers sorts the whole vocabulary for top-p and draws from all of it, every step: on a CPU
    that is more than half of a decode step of SmolLM2 at batch 64 (benchmarks/hf_sampling.py). The
    nucleus almost always lies among the most likely `k` tokens, so only those are ranked; a row whose
    top `k` hold less than `top_p` of the mass is ranked in full, so the distribution is the same
    exactly: a token is kept while the mass ranked before it is below `top_p`, the rule of
    transformers' TopPLogitsWarper. It runs as the last logits processor, after generate's own (the
    minimum length, a suppressed token), and returns scores that are -inf except at the drawn token,
    which generate's greedy step then picks.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> scores = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 9.0]])
    >>> sampler = NucleusSampler(temperature=1.0, top_p=0.5, k=2)
    >>> sampler(None, scores).argmax(dim=-1).tolist()  # each row's nucleus is its one top token
    [0, 3]
    """

    def __init__(self, temperature: float, top_p: float, k: int = 256) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.k = k

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float() / self.temperature
        if self.top_p >= 1:  # no nucleus: nothing to rank
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1)
        else:
            probs, ids = self._ranked(logits, min(self.k, logits.shape[-1]))
            token = ids.gather(1, torch.multinomial(probs * self._kept(probs), 1))
            short = (probs.sum(dim=-1) < self.top_p).nonzero().squeeze(1)
            if len(short):  # the nucleus reaches past the top k: rank these rows' whole vocabulary
                full_probs, full_ids = self._ranked(logits[short], logits.shape[-1])
                token[short] = full_ids.gather(1, torch.multinomial(full_probs * self._kept(full_probs), 1))
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)

    def _ranked(self, logits, k: int):
        """The `k` most likely tokens per row, most likely first, with their probabilities over the whole vocabulary."""
        import torch

        top, ids = torch.topk(logits, k, dim=-1)
        return torch.exp(top - torch.logsumexp(logits, dim=-1, keepdim=True)), ids

    def _kept(self, probs):
        return (probs.cumsum(dim=-1) - probs) < self.top_p


def dtype_name(device: str) -> str:
    """The weights' dtype on `device`: bfloat16 on a GPU, float32 elsewhere (eval records it).

    >>> dtype_name("cuda:0"), dtype_name("cpu")
    ('bfloat16', 'float32')
    """
    return "bfloat16" if device.startswith("cuda") else "float32"


def _stop_ids(*candidates: int | list[int] | None) -> set[int]:
    ids: set[int] = set()
    for candidate in candidates:
        if isinstance(candidate, int):
            ids.add(candidate)
        elif candidate:
            ids.update(candidate)
    return ids


def check_model(model: str) -> str:
    """The folder or Hub id `from_pretrained` loads for `model`, checked by reading its config: a typo
    is a one-line UsageError before any output is written, not a traceback from deep in transformers."""
    from transformers import AutoConfig

    path = models.resolve(model)
    try:
        AutoConfig.from_pretrained(path)
    except Exception as err:
        raise UsageError(
            f"--model {model}: cannot load it ({first_line(err)}); give 'smollm2-135m', a local model folder or a Hub id"
        ) from err
    return path


def context_length(config, tokenizer) -> int:
    """Tokens of prompt plus output the model can attend to: its position limit, or the tokenizer's if smaller."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    # Tokenizers without a limit report a huge sentinel (1e30).
    return min((int(limit) for limit in limits if limit and limit < 10**9), default=10**9)
