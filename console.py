"""What a person watching a run sees: log lines, live progress bars and summary tables, all on stderr.

stdout stays free for data a script may pipe.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from r1distill.redact import redact_text, strip_controls


def stderr_console() -> Console:
    return Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    handler = RichHandler(console=stderr_console(), show_path=False, rich_tracebacks=False)
    handler.addFilter(redact_record)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def redact_record(record: logging.LogRecord) -> bool:
    """Every log line, r1distill's and its libraries', as redact.py makes text safe: a message may quote
    a URL with a password, a server's error or a model's output."""
    record.msg, record.args = strip_controls(redact_text(record.getMessage())), None
    return True


class RowProgress:
    """A progress bar over rows with an ETA and, for generation, tokens per second and failures.

    Updates are throttled to ten a second so a fast server is never slowed down by the display.
    """

    def __init__(self, description: str, total: int, done: int = 0, generation: bool = True) -> None:
        generation_columns = [TextColumn("{task.fields[rate]:>7.0f} tok/s"), TextColumn("{task.fields[failed]} failed")] if generation else []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            *generation_columns,
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr_console(),
        )
        self.task = self.progress.add_task(description, total=total, completed=done, rate=0.0, failed=0)
        self.rows = done
        self.tokens = 0
        self.failed = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def __enter__(self) -> RowProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._show()
        self.progress.stop()

    def advance(self, tokens: int = 0, failed: bool = False, rows: int = 1) -> None:
        self.rows += rows
        self.tokens += tokens
        self.failed += failed
        if time.monotonic() - self._shown >= 0.1:
            self._show()

    def _show(self) -> None:
        self._shown = time.monotonic()
        rate = self.tokens / max(self._shown - self.started, 1e-9)
        self.progress.update(self.task, completed=self.rows, rate=rate, failed=self.failed)


def summary_table(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    stderr_console().print(table)


def metric_text(metrics: dict, key: str, digits: int = 3) -> str:
    """A logged training metric for a summary table, or "-" where the run did not log it.

    >>> metric_text({"loss": 0.12345}, "loss"), metric_text({}, "loss")
    ('0.123', '-')
    """
    value = metrics.get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def metric_change(first: dict, last: dict, key: str, digits: int = 3) -> str:
    """A metric at the first and the last logged step, as the training stages' summaries show it."""
    return f"{metric_text(first, key, digits)} → {metric_text(last, key, digits)}"
