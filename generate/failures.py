"""When the failed rows of a generate (or eval) run leave it unfinished, and the one line that says why.

A row fails for good when the server refuses the request as it is (a 4xx other than 408, 409, 425
and 429, or `prompt_too_long`): a retry sends the same request and gets the same answer. One such row
in a million-prompt pipeline (one over-long prompt) must not block every later stage on every rerun,
so up to `--max-failed` of the rows may fail for good: they stay in OUT as error rows (retried only
with --retry-failed), later stages leave them out, and the summary, the manifest, pipeline.json and
the report count them. More than that says something is wrong with the input or the server, and the
run fails. Any other failure (a 5xx, a timeout, a 429) may succeed on the next attempt: the run is not
finished until a rerun has retried it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from r1distill.backends import failure_hint


@dataclass(frozen=True)
class FailedRows:
    """The rows of a run that failed after their retries, out of the rows it is responsible for."""

    rows: int
    failed: int
    permanent: int
    """Of the failed rows, those refused for good (a 4xx refusal, prompt_too_long)."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Failed rows per reason code (http_400, timeout, ...), most common first."""

    def __add__(self, other: FailedRows) -> FailedRows:
        reasons = Counter(self.reasons) + Counter(other.reasons)
        return FailedRows(self.rows + other.rows, self.failed + other.failed, self.permanent + other.permanent, dict(reasons.most_common()))

    def problem(self, max_failed: float) -> str | None:
        """Why these failures leave the run unfinished, in one line; None when they do not.

        The share comes first: a stage's error line is cut at 300 characters (errors.first_line).

        >>> refused = FailedRows(rows=2000, failed=3, permanent=3, reasons={"http_400": 3})
        >>> refused.problem(0.002) is None
        True
        >>> print(refused.problem(0.001))
        3 requests failed for good, 0.1% of the 2,000 rows, more than --max-failed 0.001 accepts: 3 http_400. Fix the cause, then rerun with --retry-failed, or raise --max-failed to go on without them.
        """
        if self.failed > self.permanent:
            return failure_report(self)
        if self.permanent <= max_failed * self.rows * (1 + 1e-9):
            return None
        return (
            f"{self.permanent:,} requests failed for good, {self.permanent / self.rows:.1%} of the {self.rows:,} rows, more than --max-failed "
            f"{max_failed:g} accepts: {_reasons(self)}. Fix the cause, then rerun with --retry-failed, or raise --max-failed to go on without them."
        )


def failure_report(failures: FailedRows) -> str:
    """One line on failed rows of which some may succeed when retried: the most common reasons, what to
    check for each, and how to retry.

    >>> print(failure_report(FailedRows(rows=4, failed=3, permanent=2, reasons={"http_401": 2, "timeout": 1})))
    3 requests failed: 2 http_401 (check the API key in the variable that --api-key-env names), 1 timeout (the server is slow: raise --request-timeout or lower --concurrency). Rerun the same command to retry them; the 2 permanent failures (4xx, prompt_too_long) only with --retry-failed.
    """
    retry = "Rerun the same command to retry them"
    if failures.permanent:
        retry += f"; the {failures.permanent:,} permanent failures (4xx, prompt_too_long) only with --retry-failed"
    return f"{failures.failed:,} requests failed: {_reasons(failures)}. {retry}."


def _reasons(failures: FailedRows, top: int = 3) -> str:
    """The most common reasons with what to check for each: `2 http_401 (check the API key ...), 1 other`."""
    parts = []
    for reason, count in list(failures.reasons.items())[:top]:
        hint = failure_hint(reason)
        parts.append(f"{count:,} {reason}" + (f" ({hint})" if hint else ""))
    if len(failures.reasons) > top:
        parts.append(f"{sum(list(failures.reasons.values())[top:]):,} other")
    return ", ".join(parts)
