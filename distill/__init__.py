"""Supervised fine-tuning of a student on distilled traces (the `r1distill sft` stage)."""
