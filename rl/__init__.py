"""GRPO on rule rewards shared with `r1distill.filter` (the `r1distill rl` stage)."""
