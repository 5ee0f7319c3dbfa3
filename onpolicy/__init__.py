"""On-policy distillation: the student writes, the teacher scores every token (the `r1distill distill` stage)."""
