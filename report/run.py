"""r1distill report: one self-contained HTML page over the outputs of any pipeline stages.

    r1distill report runs/traces runs/sft runs/student runs/zero runs/eval -o report.html

Each folder is recognised by the files its stage writes, checked before anything is written, and
gets its own section, in pipeline order (see `inputs` and `sections`). The page carries everything
it shows (CSS inline, plots as PNG data: URIs, no script) and a Content-Security-Policy that forbids
any fetch or script, so it opens offline and a trace can neither inject markup nor call out. It is
written as every file is (`r1distill.files`): under a random temporary name, then renamed, so a reader
never sees half a page and a link planted beside it is never followed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from r1distill import __version__, files
from r1distill.report import inputs, sections
from r1distill.report.config import ReportConfig
from r1distill.report.sections import esc, table

log = logging.getLogger(__name__)


def report(cfg: ReportConfig) -> Path:
    """Write the report (see the module docstring) and return its path; the CLI and the Python API both call this."""
    found = cfg.found()
    made = datetime.now(timezone.utc)
    read = []
    for stage, folder in found:
        log.info("reading the %s output %s", stage, folder)
        read.append(_read(stage, folder, cfg.examples))
    bodies = [_section(stage, record) for (stage, _), record in zip(found, read)]
    evals = [record for (stage, _), record in zip(found, read) if stage == "eval"]
    runs = [record for (stage, _), record in zip(found, read) if stage == "rl"]
    page = _page(found, bodies, made, sections.overview(evals, runs) if evals or runs else None)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(out, page)
    log.info("report of %d outputs: %s (%.0f KB)", len(found), out, out.stat().st_size / 1024)
    return out


def _read(stage: str, folder: Path, examples: int):
    if stage == "generate":
        return inputs.read_generate(folder, examples)
    if stage == "filter":
        return inputs.read_filter(folder)
    if stage == "eval":
        return inputs.read_eval(folder)
    return inputs.read_training(folder, stage)


def _section(stage: str, record) -> str:
    if stage == "generate":
        return sections.generate(record)
    if stage == "filter":
        return sections.filter_(record)
    if stage == "eval":
        return sections.eval_(record)
    return {"sft": sections.sft, "distill": sections.distill, "rl": sections.rl}[stage](record)


# No fetch and no script, whatever the page holds: images only from data: URIs, styles only inline.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;background:#f5f6f8;margin:0}
header,main{max-width:1180px;margin:0 auto;padding:0 24px}
header{padding-top:22px}
h1{font-size:24px;margin:0}
h2{font-size:19px;margin:0}
h3{font-size:15px;margin:22px 0 8px}
h4{font-size:13px;margin:14px 0 6px}
section{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:18px 22px;margin:18px 0}
.stage{display:inline-block;font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;color:#fff;border-radius:4px;padding:1px 7px;margin-right:8px;vertical-align:middle}
.generate{background:#2f6db5}.filter{background:#d9782d}.sft{background:#3a9a5b}.distill{background:#1f9e9e}.rl{background:#8e5bb5}.eval{background:#c0392b}
.meta{color:#656d76;font-size:12px;word-break:break-all;margin:2px 0 10px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eaedf0;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f5f8;font-weight:600}
.r{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.columns{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.columns>div{flex:1 1 360px;min-width:0}
details{border:1px solid #dfe3e8;border-radius:6px;margin:6px 0;padding:4px 10px;background:#fafbfc}
summary{cursor:pointer;font-weight:600;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-height:360px;overflow:auto;background:#f3f5f8;padding:8px;border-radius:4px;font-size:12px;margin:2px 0 8px}
.label{font-size:11px;color:#656d76;text-transform:uppercase;margin-top:6px}
.hints{background:#fff8e6;border:1px solid #f0d890;border-radius:6px;padding:6px 12px;margin:10px 0}
nav ol{margin:6px 0;padding-left:22px}
"""


def _page(found: list[tuple[str, Path]], bodies: list[str], made: datetime, overview: str | None) -> str:
    given = [(stage, folder.resolve().name, folder) for stage, folder in found]
    contents = "".join(
        f'<li><a href="#s{i}"><span class="stage {stage}">{stage}</span>{esc(name)}</a></li>' for i, (stage, name, _) in enumerate(given, 1)
    )
    first = f'<section id="summary"><h2>Did it learn to think?</h2>{overview}</section>' if overview else ""
    parts = "".join(
        f'<section id="s{i}"><h2><span class="stage {stage}">{stage}</span>{esc(name)}</h2><p class="meta">{esc(folder)}</p>{body}</section>'
        for i, ((stage, name, folder), body) in enumerate(zip(given, bodies), 1)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>r1distill report</title><style>{_CSS}</style></head><body>"
        f'<header><h1>r1distill report</h1><p class="meta">made {made:%Y-%m-%d %H:%M} UTC by r1distill {esc(__version__)}</p>{first}'
        + table(["stage", "folder", "path"], [(stage, name, folder.resolve()) for stage, name, folder in given])
        + f"<nav><b>Contents</b><ol>{contents}</ol></nav></header><main>{parts}</main></body></html>\n"
    )


def print_summary(path: Path) -> None:
    log.info("report → %s", path)
