"""The eval stage: pass@k, maj@k and test-time scaling curves of models on reasoning benchmarks (see `r1distill.eval.run`)."""

from r1distill.eval.config import EvalConfig
from r1distill.eval.run import EvalSummary, evaluate

__all__ = ["EvalConfig", "EvalSummary", "evaluate"]
