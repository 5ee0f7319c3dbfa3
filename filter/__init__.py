"""Rule rewards, rejection sampling and SFT dataset export (the `r1distill filter` stage)."""
