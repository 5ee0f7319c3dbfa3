"""The generate stage: teacher traces for a prompt table (see `r1distill.generate.run`)."""

from r1distill.generate.config import GenerateConfig
from r1distill.generate.run import GenerateSummary, generate

__all__ = ["GenerateConfig", "GenerateSummary", "generate"]
