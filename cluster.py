"""Where a stage's work runs: in this process (`--executor local`) or on a Ray cluster (`--executor ray`).

The settings are one dataclass, mixed into generate's `GenerationSettings` (so eval, which generates
through generate, has them too) and into filter's settings. On Ray the command is the driver: it
joins the cluster at `--ray-address`, or starts a local one that it owns and shuts down when it ends
(its processes die with the command, even after kill -9: Ray ties the head's own processes to the
driver, and `processes.marked` the agents it does not), and spreads the work over `--replicas` actors. What the stages do with the actors is theirs
(generate/on_ray.py, filter/on_ray.py); the output is written by the driver alone, as locally.

    r1distill generate prompts.jsonl -o traces --executor ray --replicas 2                      # a local cluster
    r1distill generate prompts.jsonl -o traces --executor ray --ray-address head:6379 --replicas 16  # join one
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from r1distill.errors import StageError, UsageError
from r1distill.processes import marked
from r1distill.redact import redact_text

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_EXTRA = "pip install 'r1distill[ray]'"
LOCAL_CLUSTER = "local"
"""ray.init's address for a new local cluster even where one is running already (a bare ray.init would join that)."""
RETRIES = 3
"""How often Ray retries a batch whose actor died (the actor itself is restarted as often as it dies)."""


@dataclass(kw_only=True)
class ClusterSettings:
    """--executor, --ray-address and --replicas, shared by the stages that can run on Ray."""

    executor: str = "local"
    """local (this process) or ray (a pool of Ray actors, each with its own backend or verifier pool; this process writes the output)."""
    ray_address: str | None = None
    """Ray cluster to join (host:6379, ray://host:10001 or auto) [default: a local cluster started for this command and shut down when it ends] (--executor ray)."""
    replicas: int = 1
    """Ray actors doing the work at once, each its own model copy, client or verifier pool (--executor ray)."""

    def cluster_problems(self) -> list[str]:
        """Every problem with these settings, as lines for the stage's UsageError."""
        problems = []
        if self.executor not in EXECUTORS:
            problems.append(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.replicas < 1:
            problems.append(f"--replicas must be at least 1, got {self.replicas}")
        if self.executor == "local":
            given = [option for option, value in (("--ray-address", self.ray_address), ("--replicas", self.replicas != 1)) if value]
            if given:
                problems.append(f"{' and '.join(given)} only apply to --executor ray")
        elif self.executor == "ray" and importlib.util.find_spec("ray") is None:
            problems.append(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}")
        return problems


@contextmanager
def ray_cluster(settings: ClusterSettings) -> Iterator[None]:
    """Connected to the settings' Ray cluster for the block: the one at --ray-address, or a local one
    started here and shut down after. Where this process is connected already (a notebook, a test),
    that connection is used and left open."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = settings.ray_address or LOCAL_CLUSTER
    with ExitStack() as owned:
        if not settings.ray_address:
            # A cluster this command owns: its processes, the ones Ray does not tie to the driver included, end with it.
            owned.enter_context(marked())
        # Ray's dashboard, its notices and the actors' log forwarding are for interactive use; the stage has
        # its own progress bar and log lines, and Ray's errors still reach it as exceptions.
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        owned.callback(ray.shutdown)
        _quiet_ray_data()
        resources = ray.cluster_resources()
        where = f"joined the cluster at {redact_text(address)}" if settings.ray_address else "started a local cluster"
        log.info("Ray: %s (%d CPUs, %d GPUs)", where, resources.get("CPU", 0), resources.get("GPU", 0))
        yield


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-dataset log lines: the stage's own bar shows the rows."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def remote_cause(err: BaseException) -> BaseException:
    """The UsageError or StageError an actor raised, where Ray wrapped one (RayTaskError), so it is the
    same one line as locally; else `err` itself, with the actor's traceback."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, (UsageError, StageError)) else err
