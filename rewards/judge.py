r"""An LLM judge for the answers rules cannot decide, as R1's 600k reasoning set was checked.

R1 kept samples by rules where rules work and by a model that compares the prediction with the ground
truth where they do not (free-form or oddly formatted answers). `JudgedAccuracy` is that: the routed
accuracy rule first, then, for the rows it could not decide (`UNDECIDED`: gold unparseable, no answer,
timeout, a dead verifier, or a mode column naming an answer kind with no rule), a model asked through
the shared `backends` (a server, or a local model with transformers). `--judge-when always` asks the
judge about every row with a gold answer and a response, so eval can set rule and judge side by side.

The judge sees the problem, the gold answer and the final answer the response states (else the last
`TAIL_CHARS` of the response), never the thinking, in `JUDGE_PROMPT`, which asks for a last line
`VERDICT: CORRECT` or `VERDICT: INCORRECT`. A reply off that format is `judge_unparseable` (no score),
never a guess. Verdicts are appended to a cache file (one JSON line per prompt, keyed by judge model
and the prompt's sha256) as they come, so a rerun, or a rerun after a crash, asks nothing twice.
A request that still fails after the backend's retries (429, 5xx, timeouts) is `judge_error` and is
not cached: the stage says so and a rerun asks again.

Verdicts of the judge: judge_correct (1.0), judge_incorrect (0.0), judge_unparseable and judge_error
(None: cannot verify), judge_late (0.0: not answered within rl's per-step deadline, so a slow judge
never stalls a step); rows not sent keep the rule's verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from r1distill import files
from r1distill.backends import Request, Result, Sampling, failure_reason, make_backend
from r1distill.errors import UsageError
from r1distill.redact import redact_text, scrub, strip_controls
from r1distill.rewards.accuracy import ACCURACY_MODES, Accuracy
from r1distill.rewards.text import Judgement, aligned_rows, answer_region, extract_final_answer
from r1distill.schema import FINISH_ERROR, split_reasoning

JUDGE_BACKENDS = ("openai", "transformers")
JUDGE_WHEN = ("unverifiable", "always")
UNDECIDED = frozenset({"no_answer", "gold_unparseable", "timeout", "error", "no_rule"})
"""Rule verdicts the judge is asked about by default ("no_rule": a mode column names no accuracy mode)."""
CACHE_FILE = "judge_cache.jsonl"
TAIL_CHARS = 2_000
"""Characters at the end of a response the judge sees when it states no explicit final answer."""
REPLY_CHARS = 300
"""Characters at the end of a judge's reply that its verdict is read from (and that the cache keeps)."""
JUDGE_PROMPT = """You are grading the final answer of a solution against the reference answer of a problem.
Decide whether the final answer is equivalent to the reference answer: the same value, the same choice or
the same meaning, in any form (1/2 and 0.5 are the same; a different result is not). Judge only the final
answer; do not solve the problem again.

## Problem
{problem}

## Reference answer
{gold}

## Final answer
{answer}

Explain in at most three sentences, then end with a last line that is exactly
VERDICT: CORRECT
or
VERDICT: INCORRECT"""
# Only ever fullmatched against one stripped line of at most REPLY_CHARS: linear and bounded.
_VERDICT = re.compile(r"VERDICT\s?:\s?(CORRECT|INCORRECT)", re.IGNORECASE)
_VERDICTS = {"CORRECT": Judgement(1.0, "judge_correct"), "INCORRECT": Judgement(0.0, "judge_incorrect")}
UNPARSEABLE = Judgement(None, "judge_unparseable")
JUDGE_ERROR = Judgement(None, "judge_error")
LATE = Judgement(0.0, "judge_late")
"""A row the judge did not answer within the deadline (rl): no reward rather than a stalled step."""
NO_RULE = Judgement(None, "no_rule")


@dataclass(kw_only=True)
class JudgeSettings:
    """The LLM judge behind `--check judge` (filter), `--accuracy judge` (eval) and `--reward judge` (rl)."""

    judge_model: str | None = None
    """Judge model: the name the judge server serves, or a local folder or Hub id with the transformers judge backend; the judge check needs it."""
    judge_backend: str = "openai"
    """How the judge is reached: openai (a server speaking the OpenAI API) or transformers (a local model)."""
    judge_base_urls: list[str] = field(default_factory=list, metadata={"flags": ("--judge-base-url",)})
    """OpenAI-compatible base URL of the judge, ending in /v1; repeat it to spread the load."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the judge server's API key (named like one, ending in _KEY or _TOKEN); never printed or written."""
    judge_concurrency: int = 16
    """Judge requests in flight at once (openai)."""
    judge_when: str = "unverifiable"
    """unverifiable: ask the judge only about rows the rules cannot decide (gold unparseable, no answer, timeout, no rule for the answer kind); always: about every row."""
    judge_max_tokens: int = 1024
    """Most tokens of a judge's reply (its explanation and verdict line)."""
    judge_max_retries: int = 8
    """Retries per judge request on 429/5xx/timeouts/dropped connections before its row is judge_error (openai)."""
    judge_retry_delay: float = 1.0
    """First judge retry waits up to this many seconds, doubling each time (full jitter); a Retry-After header wins."""

    def judge_problems(self, used: bool, servers_only: bool = False) -> list[str]:
        """Every problem with these settings; `used`: whether the judge check is on at all."""
        from r1distill.redact import api_key_env_problem

        if not used:
            given = self.judge_model is not None or self.judge_base_urls
            return ["--judge-model and --judge-base-url need the judge check (--check judge, --accuracy judge or --reward judge)"] if given else []
        problems = []
        backends = ("openai",) if servers_only else JUDGE_BACKENDS
        if self.judge_backend not in backends:
            problems.append(f"--judge-backend must be {' or '.join(backends)}, got {self.judge_backend!r}")
        if not self.judge_model:
            problems.append("the judge check needs --judge-model (the model a --judge-base-url serves, or a local one)")
        if self.judge_when not in JUDGE_WHEN:
            problems.append(f"--judge-when must be one of {', '.join(JUDGE_WHEN)}, got {self.judge_when!r}")
        if self.judge_concurrency < 1 or self.judge_max_tokens < 1 or self.judge_max_retries < 0 or not self.judge_retry_delay >= 0:
            problems.append("--judge-concurrency and --judge-max-tokens must be at least 1, --judge-max-retries and --judge-retry-delay at least 0")
        if self.judge_backend == "openai":
            if not self.judge_base_urls:
                problems.append("--judge-backend openai needs --judge-base-url (for example http://localhost:8000/v1)")
            bad = [url for url in self.judge_base_urls if not url.startswith(("http://", "https://"))]
            if bad:
                problems.append(f"--judge-base-url must start with http:// or https://, got {redact_text(bad[0])!r}")
            if problem := api_key_env_problem(self.judge_api_key_env):
                problems.append(problem.replace("--api-key-env", "--judge-api-key-env").replace("--base-url", "--judge-base-url"))
        elif self.judge_base_urls:
            problems.append(f"--judge-base-url only applies to --judge-backend openai, not {self.judge_backend}")
        return problems


def judge_prompt(problem: str, gold: str, answer: str) -> str:
    """The judge's whole prompt for one row (see `JUDGE_PROMPT`)."""
    return JUDGE_PROMPT.format(problem=problem.strip(), gold=gold.strip(), answer=answer.strip() or "(none)")


def parse_verdict(reply: str) -> Judgement:
    """The verdict on the last line of a judge's reply (its thinking left out); `judge_unparseable` if off format.

    >>> parse_verdict("The values agree.\\nVERDICT: CORRECT"), parse_verdict("**VERDICT: incorrect**")
    (Judgement(score=1.0, verdict='judge_correct'), Judgement(score=0.0, verdict='judge_incorrect'))
    >>> parse_verdict("<think>\\nVERDICT: CORRECT\\n</think>\\nProbably right."), parse_verdict("VERDICT: CORRECT or INCORRECT")
    (Judgement(score=None, verdict='judge_unparseable'), Judgement(score=None, verdict='judge_unparseable'))
    """
    response = split_reasoning(reply)[1] or ""
    lines = response[-REPLY_CHARS:].strip().splitlines()
    match = _VERDICT.fullmatch(lines[-1].strip().strip("*`. ")) if lines else None
    return _VERDICTS[match.group(1).upper()] if match else UNPARSEABLE


def shown_answer(region: str) -> str:
    """What the judge sees of a response: its explicit final answer, else its last TAIL_CHARS."""
    return extract_final_answer(region) or region[-TAIL_CHARS:]


class Judge:
    """Asks the judge model about prompts, caching verdicts in `cache` (None: no cache); see the module docstring."""

    def __init__(self, settings: JudgeSettings, cache: Path | None, deadline: float | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self.deadline = deadline
        """Seconds one `verdicts` call may take (rl's per-step bound); the rows not answered by then are judge_late."""
        self.failures: Counter[str] = Counter()
        """Judge requests that failed after their retries, per reason."""
        self.asked = 0
        """Prompts sent to the judge model (cache hits are not)."""
        self.late = 0
        """Prompts not answered within the deadline (they score 0)."""
        self._api_key = os.environ.get(settings.judge_api_key_env) if settings.judge_backend == "openai" else None
        self._known = _read_cache(cache, settings.judge_model) if cache else {}
        self._backend = None
        self._late: set[str] = set()

    def verdicts(self, prompts: list[str]) -> list[Judgement]:
        """One verdict per prompt, from the cache where it has one."""
        keys = [hashlib.sha256(prompt.encode()).hexdigest() for prompt in prompts]
        todo = {key: prompt for key, prompt in zip(keys, prompts) if key not in self._known}
        if todo:
            self._ask(todo)
        late, self._late = self._late, set()
        return [self._known.get(key, LATE if key in late else JUDGE_ERROR) for key in keys]

    def _ask(self, todo: dict[str, str]) -> None:
        backend = self.open()
        self.asked += len(todo)
        requests = [Request(key, [{"role": "user", "content": prompt}], seed=0) for key, prompt in todo.items()]
        answered: set[str] = set()
        with self._cache_file() as cache:

            def emit(result: Result) -> None:
                answered.add(result.key)
                if result.finish_reason == FINISH_ERROR:
                    self.failures[failure_reason(result.error)] += 1
                    return  # not cached: a rerun asks again
                text = strip_controls(scrub(result.text, [self._api_key] if self._api_key else []))
                self._known[result.key] = parse_verdict(text)  # the whole reply: its end alone may be inside the thinking
                reply = text[-REPLY_CHARS:]
                if cache is not None:  # at once, so a crash loses only the verdicts in flight
                    entry = {"model": self.settings.judge_model, "prompt_sha256": result.key, "verdict": self._known[result.key].verdict, "reply": reply}
                    cache.write(orjson.dumps(entry) + b"\n")

            run = backend.run(requests, emit)
            try:
                asyncio.run(asyncio.wait_for(run, self.deadline) if self.deadline else run)
            except asyncio.TimeoutError:
                self._late = set(todo) - answered
                self.late += len(self._late)

    def _cache_file(self):
        """The cache opened to append, unbuffered (a context manager; None without a cache)."""
        if self.cache is None:
            return contextlib.nullcontext()
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        return files.open_append(self.cache, buffering=0)

    def open(self):
        """The backend, built and checked (one preflight request) at the first prompt the cache lacks."""
        if self._backend is None:
            s = self.settings
            sampling = Sampling(s.judge_max_tokens, 0.0, 1.0)
            if s.judge_backend == "openai":
                backend = make_backend("openai", s.judge_model, sampling, base_urls=s.judge_base_urls, api_key=self._api_key,
                                       concurrency=s.judge_concurrency, max_retries=s.judge_max_retries, retry_delay=s.judge_retry_delay,
                                       prefilled_think=False)
                try:
                    backend.preflight()
                except UsageError as err:  # it names generate's options: say the judge's
                    raise UsageError("judge: " + str(err).replace("--base-url", "--judge-base-url").replace("--api-key-env", "--judge-api-key-env")) from None
            else:
                from r1distill.backends.hf import check_model

                check_model(s.judge_model)
                backend = make_backend("transformers", s.judge_model, sampling)
            self._backend = backend
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def _read_cache(path: Path, model: str | None) -> dict[str, Judgement]:
    """The cached verdicts of `model`; a line a crash cut short, or another model's, is skipped."""
    known: dict[str, Judgement] = {}
    if not path.is_file():
        return known
    by_name = {j.verdict: j for j in (*_VERDICTS.values(), UNPARSEABLE)}
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
            if entry["model"] == model and entry["verdict"] in by_name:
                known[str(entry["prompt_sha256"])] = by_name[entry["verdict"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return known


@dataclass(frozen=True)
class Decided:
    """One row's verdicts: the rule's, the judge's (None when it was not asked), and the one that counts."""

    rule: Judgement
    judge: Judgement | None

    @property
    def final(self) -> Judgement:
        return self.judge if self.judge is not None else self.rule


class JudgedAccuracy:
    """The accuracy rule with the judge for what it cannot decide; a reward like `Accuracy` (judge, call, close)."""

    def __init__(self, accuracy: Accuracy, judge: Judge) -> None:
        self.accuracy = accuracy
        self.llm = judge
        self.name = "judge"
        self.columns = (*accuracy.columns, "problem")
        """The dataset columns this reward reads; every other keyword is ignored."""
        self.__name__ = "judge_reward"  # TRL logs a reward function under its __name__

    def decide(self, completions: list, **columns: Any) -> list[Decided]:
        """The rule's and the judge's verdict of every row."""
        mode_column = self.accuracy.mode_column
        modes = columns.get(mode_column) if mode_column else None
        rows = list(aligned_rows(completions, problem=columns.get("problem"), answer=columns.get("answer"),
                                 finish_reason=columns.get("finish_reason"), mode=modes))
        ruled = [i for i, row in enumerate(rows) if row[4] is None or row[4] in ACCURACY_MODES]
        rules = [NO_RULE] * len(rows)
        if ruled:
            picked = {name: [columns[name][i] for i in ruled] for name in self.accuracy.columns if columns.get(name) is not None}
            for i, judgement in zip(ruled, self.accuracy.judge([completions[i] for i in ruled], **picked)):
                rules[i] = judgement
        always = self.llm.settings.judge_when == "always"
        asked, prompts = [], []
        for i, ((text, problem, gold, reason, _), rule) in enumerate(zip(rows, rules)):
            region = answer_region(text, reason)
            if reason == FINISH_ERROR or gold is None or not str(gold).strip() or not region.strip() or not (always or rule.verdict in UNDECIDED):
                continue  # nothing for a judge to compare, or the rule has decided
            asked.append(i)
            prompts.append(judge_prompt(str(problem or ""), str(gold), shown_answer(region)))
        judged: list[Judgement | None] = [None] * len(rows)
        for i, judgement in zip(asked, self.llm.verdicts(prompts) if prompts else []):
            judged[i] = judgement
        return [Decided(rule, judgement) for rule, judgement in zip(rules, judged)]

    def judge(self, completions: list, **columns: Any) -> list[Judgement]:
        """One Judgement per completion: the judge's where it was asked, else the rule's."""
        return [decided.final for decided in self.decide(completions, **columns)]

    def __call__(self, completions: list, **columns: Any) -> list[float | None]:
        return [judgement.score for judgement in self.judge(completions, **columns)]

    @property
    def timeouts(self) -> int:
        return self.accuracy.timeouts

    def failure_problem(self) -> str | None:
        """A line naming the judge requests that failed (a rerun asks them again, the rest come from the cache), or None."""
        failed = sum(self.llm.failures.values())
        if not failed:
            return None
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.llm.failures.most_common(3))
        return f"{failed} judge requests failed after their retries ({reasons}); rerun the same command: verdicts already made are cached"

    def close(self) -> None:
        self.accuracy.close()
        self.llm.close()

    def __enter__(self) -> JudgedAccuracy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
