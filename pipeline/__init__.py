"""`r1distill run`: a recipe of stages run in order into one RUN_DIR, skipping, resuming or redoing each."""

from r1distill.pipeline.run import RunConfig, RunSummary, run_pipeline

__all__ = ["RunConfig", "RunSummary", "run_pipeline"]
