"""r1distill: DeepSeek-R1 style reasoning distillation, from teacher traces to a fine-tuned student.

Stages (each a library function over tables, each a `r1distill` command):
generate (teacher traces) -> filter (rule rewards, rejection sampling, mixing) -> sft -> rl.
The tables that flow between them are defined once, in `r1distill.schema`.
"""

__version__ = "0.1.0"
