"""The eval stage: pass@k, maj@k and test-time scaling curves of models on reasoning benchmarks (see `r1distill.eval.run`)."""
