"""Settings of `r1distill eval`, written once: each field's doc is its --help text, its check is in `check`.

The generation settings are generate's own (`GenerationSettings`; eval hands them to `generate` as they
are), with eval's defaults for the number of samples and tokens (4 and 32k, as the R1 papers evaluate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import files
from r1distill.errors import UsageError, missing_training
from r1distill.suites import BENCHMARKS
from r1distill.generate.config import GenerateConfig, GenerationSettings
from r1distill.outputs import RESULTS
from r1distill.rewards import ACCURACY_MODES, CodeSettings
from r1distill.rewards.judge import CACHE_FILE, JudgeSettings


@dataclass(kw_only=True)
class EvalConfig(GenerationSettings, CodeSettings, JudgeSettings):
    """Settings of one `r1distill eval` run (with generate's `GenerationSettings`, the code check's `CodeSettings` and the judge's `JudgeSettings`)."""

    benchmark: str | None = None
    """Benchmark: a short name (math500, aime24, aime25, amc23, gsm8k, gpqa-diamond), a local file or folder, or a Hub dataset id with problem and answer columns."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder (samples.parquet, results.json, the generations); rerunning the same command resumes into it."""
    completions: str | None = None
    """Score completions made elsewhere instead of generating: a generate output, or any table with problem, answer and completion columns."""
    models: list[str] = field(default_factory=lambda: ["smollm2-135m"], metadata={"flags": ("--model", "-m")})
    """Model to evaluate: 'smollm2-135m' (embedded), a Hub id or local folder, or the name a server serves; repeat it to compare models side by side."""
    num_samples: int = field(default=4, metadata={"flags": ("--num-samples", "-n")})
    """Samples per problem: pass@1 is averaged over them, pass@k and maj@k use them (the R1 papers use 4 to 64)."""
    like: str | None = None
    """Read BENCHMARK as the short-named benchmark LIKE is read (its columns, gold extraction and --accuracy), e.g. a local copy of GSM8K with --like gsm8k."""
    split: str | None = None
    """Split of a Hub dataset or save_to_disk folder [default: the short name's, else test]."""
    problem_column: str | None = None
    """Column with the problem text [default: the short name's, else problem]."""
    answer_column: str | None = None
    """Column with the gold answer [default: the short name's, else answer]."""
    id_column: str | None = None
    """Column with a unique problem id [default: the short name's, else id if present, else a hash of the problem]."""
    limit: int | None = None
    """Evaluate only the first N problems."""
    accuracy: str | None = None
    """Answer check: math (Math-Verify), choice (multiple-choice letters), exact (string) or code (the response's program run against --tests-column) [default: the short name's, else math], or judge: that check, and the --judge-model for what it cannot decide (rule, judge, both and any correct reported)."""
    group_by: list[str] = field(default_factory=list)
    """Column to break every metric down by (level, subject, source); repeat it."""
    timeout: float = 5.0
    """Seconds Math-Verify may spend on one answer; then the sample's verdict is 'timeout' (reported apart)."""
    workers: int | None = None
    """Math-Verify worker processes [default: the usable cores]."""
    thinking_budget: str | None = None
    """Test-time scaling: increasing thinking budgets in tokens, e.g. 256,512,1024; each is run with budget forcing (thinking cut there, then the answer)."""
    answer_tokens: int = 256
    """Most tokens of the answer generated after a thinking cut by budget forcing."""
    compare: list[str] = field(default_factory=list)
    """An earlier eval's results.json (or its folder) to show side by side; settings that differ are named; repeat it."""
    max_tokens: int = 32768
    """Most tokens per completion; rerunning with a larger value redoes only the truncated rows."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in results.json."""

    def rule_mode(self) -> str | None:
        """The rules' accuracy mode asked for (None: the benchmark's); --accuracy judge adds the judge to the benchmark's."""
        return None if self.accuracy == "judge" else self.accuracy

    def budgets(self) -> list[int]:
        """The thinking budgets, checked: increasing positive integers ([] without --thinking-budget)."""
        if self.thinking_budget is None:
            return []
        try:
            budgets = [int(part) for part in self.thinking_budget.split(",")]
        except ValueError:
            budgets = []
        if not budgets or any(b < 1 for b in budgets) or any(a >= b for a, b in zip(budgets, budgets[1:])):
            raise UsageError(f"--thinking-budget must be increasing positive integers like 256,512,1024, got {self.thinking_budget!r}")
        return budgets

    def generate_config(self, model: str, input: str, output: str, **changes) -> GenerateConfig:
        """The settings of the generate run for `model`: this run's generation settings, then `changes`."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(GenerateConfig) if f.name in GENERATE_SETTINGS}
        return GenerateConfig(input=input, output=output, model=model, id_column="prompt_id", **(shared | changes))

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings."""
        problems = self.code_problems()
        if (self.benchmark is None) == (self.completions is None):
            problems.append("give a BENCHMARK to generate and score, or --completions TABLE to score, not both" if self.benchmark else "give a BENCHMARK (e.g. math500) or --completions TABLE")
        if self.benchmark is not None and self.benchmark not in BENCHMARKS and "/" not in self.benchmark and not Path(self.benchmark).exists():
            problems.append(f"unknown benchmark {self.benchmark!r}: not a short name ({', '.join(BENCHMARKS)}), a file or folder, or a Hub id like 'org/name'")
        if self.like is not None and self.like not in BENCHMARKS:
            problems.append(f"--like must be one of {', '.join(BENCHMARKS)}, got {self.like!r}")
        if self.accuracy is not None and self.accuracy not in (*EVAL_CHECKS, "judge"):
            problems.append(f"--accuracy must be one of {', '.join(EVAL_CHECKS)} or judge, got {self.accuracy!r}")
        problems += self.judge_problems(self.accuracy == "judge")
        try:
            self.budgets()
        except UsageError as err:
            problems.append(str(err))
        for name, value in (("--num-samples", self.num_samples), ("--limit", self.limit), ("--answer-tokens", self.answer_tokens), ("--workers", self.workers)):
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1, got {value}")
        if self.timeout <= 0:
            problems.append(f"--timeout must be > 0, got {self.timeout}")
        if not self.models:
            problems.append("give at least one --model")
        if len(set(self.models)) < len(self.models):
            problems.append("each --model may be given once")
        missing = missing_training("--tokenizer", ("transformers",)) if self.tokenizer is not None else None
        if missing:
            problems.append(missing)
        if self.completions is None and self.thinking_budget and self.backend == "openai" and not self.tokenizer:
            problems.append("--thinking-budget with --backend openai needs --tokenizer (the served model's, to render prompts for the completions endpoint)")
        if self.completions is None:
            try:
                self.generate_config(self.models[0] if self.models else "", "unused", self.output).check()
            except UsageError as err:
                problems.append(str(err))
            problems += self._context_problems()
        elif self.executor != "local":
            problems.append(f"--executor {self.executor} runs the generation; with --completions nothing is generated (scoring runs here)")
        out = Path(self.output)
        if placed := files.output_problem(out):
            problems.append(placed)
        elif out.exists() and not out.is_dir():
            problems.append(f"-o {self.output}: exists and is not a folder")
        elif out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in (RESULTS, GENERATIONS, CACHE_FILE)):
            problems.append(f"-o {self.output}: holds something other than an eval; choose a new folder")
        if problems:
            # generate's check already named the first model's --max-tokens problem, if any.
            raise UsageError("; ".join(dict.fromkeys(problems)))

    def _context_problems(self) -> list[str]:
        """Every model's problem with the longest generation this eval asks for: --max-tokens, or the
        largest thinking budget plus the answer after it (budget forcing continues the same sequence)."""
        try:
            budgets = self.budgets()
        except UsageError:
            return []  # reported above
        forced = budgets[-1] + self.answer_tokens if budgets else 0
        option = f"--thinking-budget {budgets[-1]} plus --answer-tokens {self.answer_tokens} =" if forced > self.max_tokens else "--max-tokens"
        tokens = max(forced, self.max_tokens)
        return [problem for model in self.models if (problem := self.context_problem(model, tokens, option))]


EVAL_CHECKS = (*ACCURACY_MODES, "code")
"""The answer checks of --accuracy: the accuracy reward's modes, and the code reward."""
# The generate settings an eval passes on unchanged (model, input, output and ids are eval's own).
GENERATE_SETTINGS = tuple(f.name for f in dataclasses.fields(GenerationSettings)) + ("num_samples", "max_tokens", "command")
GENERATIONS = "generations"
