"""generate's requests on a Ray cluster (`generate --executor ray`): a Ray Data pipeline over an actor pool.

The driver (the `r1distill generate` process) keeps everything that makes generation crash-safe: it
plans, reads OUT's state, and alone writes the journal, shards and manifest (run.py, store.py), so
resume, `--shard` and the `--max-tokens` redo are those of a local run. Only the pending requests go
to Ray: `ray.data.from_items(requests).map_batches(Generator, compute=ActorPoolStrategy(size=replicas))`,
where each actor builds the run's backend as a local run does (`run._backend`: a transformers model,
an OpenAI-compatible client, or a vLLM engine on `--tensor-parallel-size` GPUs), and the driver
journals each result as its batch streams back through `iter_batches`.

An actor yields its results in chunks as they finish (Ray Data streams a generator's outputs), so an
openai actor can take a batch of many windows of --concurrency requests, and the driver journals each
chunk while the rest of the batch runs.

Exactly once: an actor that dies is restarted and its batch retried by Ray Data (its actor pool's
defaults, max_restarts=-1 and max_task_retries=-1; the remote arguments that would change them are
deprecated in Ray 2.60, so a batch that kills every actor it lands on is retried until Ctrl-C). The
driver writes a (prompt, sample) key once, dropping any result for a key already written (the chunks
a dead actor had sent before its batch was retried). A driver that dies takes its actors with it;
its journaled rows are recovered by the rerun, which sends only what is missing.

Requests and results cross as JSON text, not Arrow columns: messages and chat-template variables hold
nested, mixed-type values that Arrow would try to give one type per column.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict

import numpy as np
import orjson
import ray
import ray.data

from r1distill.backends import Request, Result
from r1distill.cluster import ray_cluster, remote_cause
from r1distill.errors import StageError, first_line
from r1distill.generate.config import GenerateConfig

CHUNKS_PER_BATCH = 16
"""An openai actor's call: this many windows of --concurrency requests, its results sent back a window at a time."""
CHUNK_SECONDS = 2.0
"""A chunk also goes back at the first result this long after the last chunk, so slow generations reach the journal soon."""


class Generator:
    """One actor's backend, built once and kept for every batch it is given."""

    def __init__(self, cfg: GenerateConfig, api_key: str | None) -> None:
        from r1distill.generate.run import _backend

        self.backend = _backend(cfg, api_key)
        self.chunk = _batch_size(cfg) // (CHUNKS_PER_BATCH if cfg.backend == "openai" else 1)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, list[str]]]:
        """The batch's results, yielded in chunks as they finish, so the driver journals them while the rest run."""
        requests = [Request(**orjson.loads(text)) for text in batch["request"]]
        finished: queue.SimpleQueue = queue.SimpleQueue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                asyncio.run(self.backend.run(requests, finished.put))
            except BaseException as err:  # handed to the actor's thread, which raises it to Ray
                failure.append(err)
            finally:
                finished.put(None)

        worker = threading.Thread(target=work, daemon=True, name="backend")
        worker.start()
        chunk, last = [], time.monotonic()
        while (result := finished.get()) is not None:
            chunk.append(asdict(result))
            if len(chunk) >= self.chunk or time.monotonic() - last >= CHUNK_SECONDS:
                yield _chunk(chunk)
                chunk, last = [], time.monotonic()
        worker.join()
        if failure:
            raise failure[0]
        if chunk:
            yield _chunk(chunk)


def _chunk(results: list[dict]) -> dict[str, list[str]]:
    """A chunk of results as one row (the JSON list of them): a row is what Ray Data sends as a block of its own."""
    return {"results": [orjson.dumps(results).decode()]}


def run_on_ray(cfg: GenerateConfig, api_key: str | None, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
    """Generate `requests` on `cfg.replicas` actors, calling `emit` in this process for every result."""
    with ray_cluster(cfg):
        items = [{"request": orjson.dumps(asdict(request)).decode()} for request in requests]
        resources = _actor_resources(cfg)
        context = ray.data.DataContext.get_current()
        block_size = context.target_max_block_size
        # Ray Data gathers a task's output rows into blocks of up to this many bytes and sends a block when
        # it is full: at one byte every row (a chunk of results) is a block of its own and travels at once.
        # The dataset keeps the context it was made under, so the setting is this pipeline's alone.
        context.target_max_block_size = 1
        try:
            dataset = ray.data.from_items(items).map_batches(
                Generator,
                fn_constructor_kwargs={"cfg": cfg, "api_key": api_key},
                batch_size=_batch_size(cfg),
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=cfg.replicas),
                **resources,
            )
        finally:
            context.target_max_block_size = block_size
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                for text in batch["results"]:
                    for result in orjson.loads(text):
                        emit(Result(**result))
        except ray.exceptions.RayError as err:
            cause = remote_cause(err)
            if cause is not err:
                raise cause from None
            raise StageError(f"Ray: {first_line(err, api_key)}; the finished rows are saved, rerun the same command to resume") from err


def _batch_size(cfg: GenerateConfig) -> int:
    """Requests per actor call: a model's batch, or several windows of a client's requests in flight (each
    call opens its connections gradually, so a call of one window would spend much of it ramping up)."""
    if cfg.backend == "openai":
        return cfg.concurrency * CHUNKS_PER_BATCH
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
