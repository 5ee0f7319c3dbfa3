"""What the training stages (`sft`, `distill`, `rl`) share, written once: YAML recipes, the run record in OUT with
resume, the student's loading, end-of-turn stop token, LoRA and merging, metrics.jsonl and the progress
bar, and the model card. It imports no stage."""
