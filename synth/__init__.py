"""Synthetic verifiable tasks for quick R1-Zero experiments (the `r1distill synth` command)."""
