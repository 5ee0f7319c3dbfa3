"""filter's scoring on a Ray cluster (`filter --executor ray`): pass 1's verdicts computed by actors.

Each of `--replicas` actors holds the rules of every enabled check, with its own Math-Verify worker
pool (`--workers` processes on its node). The driver still reads the input batch by batch, exactly as
locally (the same rows, ids and order), sends each batch to a free actor and takes the verdicts back
in input order, so the scored table, the funnel and the dataset are those of `--executor local`. At
most two batches per actor are in flight: memory stays at a few batches however large the input.

A plain `ray.util.ActorPool`, not Ray Data: the batches come from filter's own streaming reader (which
fills in the columns a foreign table lacks, numbering rows across files) and must come back in order.
An actor that dies is restarted and its batch retried (`cluster.RETRIES`); a batch is judged by pure
functions of its rows, so a retried one gives the same verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack

import polars as pl
import ray
from ray.util import ActorPool

from r1distill.cluster import RETRIES, ray_cluster, remote_cause
from r1distill.filter.run import FilterConfig, _judge

IN_FLIGHT_PER_ACTOR = 2
"""Batches handed to each actor at once: one judged while the next travels."""


class Scorer:
    """One actor's rules (and verifier workers, started on its first math row), kept for every batch."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg
        self.rules = {check: cfg.rule(check) for check in cfg.checks}
        self.stack = ExitStack()
        for reward in self.rules.values():
            self.stack.enter_context(reward)

    def judge(self, rows: pl.DataFrame) -> pl.DataFrame:
        return _judge(rows, self.rules, self.cfg)


def judge_on_ray(batches: Iterable[pl.DataFrame], cfg: FilterConfig) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(rows, their verdicts) for every batch, in input order, judged by `cfg.replicas` actors."""
    with ray_cluster(cfg):
        # One CPU per verifier worker where their number is given: the actor's share of its node.
        actor = ray.remote(Scorer).options(num_cpus=cfg.workers or 1, max_restarts=-1, max_task_retries=RETRIES)
        actors = [actor.remote(cfg) for _ in range(cfg.replicas)]
        pool = ActorPool(actors)
        waiting: list[pl.DataFrame] = []
        try:
            for rows in batches:
                if len(waiting) == IN_FLIGHT_PER_ACTOR * cfg.replicas:
                    yield waiting.pop(0), pool.get_next()
                pool.submit(lambda scorer, batch: scorer.judge.remote(batch), rows)
                waiting.append(rows)
            while waiting:
                yield waiting.pop(0), pool.get_next()
        except ray.exceptions.RayTaskError as err:
            # An actor's UsageError (a routing column naming an unknown mode) is the same one line as locally.
            cause = remote_cause(err)
            if cause is err:
                raise
            raise cause from None
        finally:
            for handle in actors:
                ray.kill(handle)
