"""The eval stage: pass@k / maj@k on reasoning benchmarks and the test-time scaling curve (see `r1distill.eval.run`)."""

from r1distill.eval.config import EvalConfig

__all__ = ["EvalConfig", "EvalSummary", "evaluate"]


def __getattr__(name: str):
    # The run (backends, the verifier, polars) loads on first use, so the CLI starts fast.
    if name in ("EvalSummary", "evaluate"):
        from r1distill.eval import run

        return getattr(run, name)
    raise AttributeError(name)
