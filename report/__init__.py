"""The report: one HTML file that shows what a pipeline's outputs hold (see `r1distill.report.run`).

Each stage already writes its numbers (manifest, stats.json, metrics.jsonl, results.json); this
package reads them, with the traces themselves, into one self-contained page to read or share
offline, so judging a run needs neither TensorBoard nor W&B nor a notebook.
"""

from r1distill.report.config import ReportConfig

__all__ = ["ReportConfig", "report"]


def __getattr__(name: str):
    # The page builder (matplotlib) loads on first use, so the CLI starts fast.
    if name == "report":
        from r1distill.report.run import report

        return report
    raise AttributeError(name)
