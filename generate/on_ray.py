"""generate's requests on a Ray cluster (`generate --executor ray`): a Ray Data pipeline over an actor pool.

The driver (the `r1distill generate` process) keeps everything that makes generation crash-safe: it
plans, reads OUT's state, and alone writes the journal, shards and manifest (run.py, store.py), so
resume, `--shard` and the `--max-tokens` redo are those of a local run. Only the pending requests go
to Ray: `ray.data.from_items(requests).map_batches(Generator, compute=ActorPoolStrategy(size=replicas))`,
where each actor builds the run's backend as a local run does (`run._backend`: a transformers model,
an OpenAI-compatible client, or a vLLM engine on `--tensor-parallel-size` GPUs), and the driver
journals each result as its batch streams back through `iter_batches`.

Exactly once: an actor that dies is restarted and its batch retried by Ray Data (its actor pool's
defaults, max_restarts=-1 and max_task_retries=-1; the remote arguments that would change them are
deprecated in Ray 2.60, so a batch that kills every actor it lands on is retried until Ctrl-C); a batch's results travel only when the whole batch is done, and the driver writes
a (prompt, sample) key once, dropping any result for a key already written (a retried batch that had
finished after all). A driver that dies takes its actors with it; its journaled rows are recovered by
the rerun, which sends only what is missing.

Requests and results cross as JSON text, not Arrow columns: messages and chat-template variables hold
nested, mixed-type values that Arrow would try to give one type per column.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import orjson
import ray
import ray.data

from r1distill.backends import Request, Result
from r1distill.cluster import ray_cluster, remote_cause
from r1distill.errors import StageError, first_line
from r1distill.generate.config import GenerateConfig


class Generator:
    """One actor's backend, built once and kept for every batch it is given."""

    def __init__(self, cfg: GenerateConfig, api_key: str | None) -> None:
        from r1distill.generate.run import _backend

        self.backend = _backend(cfg, api_key)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        requests = [Request(**orjson.loads(text)) for text in batch["request"]]
        results: list[Result] = []
        asyncio.run(self.backend.run(requests, results.append))
        return {"result": [orjson.dumps(asdict(result)).decode() for result in results]}


def run_on_ray(cfg: GenerateConfig, api_key: str | None, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
    """Generate `requests` on `cfg.replicas` actors, calling `emit` in this process for every result."""
    with ray_cluster(cfg):
        items = [{"request": orjson.dumps(asdict(request)).decode()} for request in requests]
        resources = _actor_resources(cfg)
        dataset = ray.data.from_items(items).map_batches(
            Generator,
            fn_constructor_kwargs={"cfg": cfg, "api_key": api_key},
            batch_size=_batch_size(cfg),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.replicas),
            **resources,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                for text in batch["result"]:
                    emit(Result(**orjson.loads(text)))
        except ray.exceptions.RayError as err:
            cause = remote_cause(err)
            if cause is not err:
                raise cause from None
            raise StageError(f"Ray: {first_line(err, api_key)}; the finished rows are saved, rerun the same command to resume") from err


def _batch_size(cfg: GenerateConfig) -> int:
    """Requests per actor call: a model's batch, or a client's window of requests in flight."""
    if cfg.backend == "openai":
        return cfg.concurrency
    if cfg.backend == "vllm":
        return max(cfg.batch_size, 256)  # as run._backend schedules a local vLLM engine
    return cfg.batch_size


def _actor_resources(cfg: GenerateConfig) -> dict[str, float]:
    """What one actor reserves: a CPU, and the GPUs its backend uses."""
    if cfg.backend == "vllm":
        return {"num_cpus": 1, "num_gpus": cfg.tensor_parallel_size}
    if cfg.backend == "transformers":
        wants_gpu = cfg.device.startswith("cuda") if cfg.device else ray.cluster_resources().get("GPU", 0) > 0
        return {"num_cpus": 1, "num_gpus": 1 if wants_gpu else 0}
    return {"num_cpus": 1}
