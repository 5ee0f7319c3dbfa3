"""The report's figures: matplotlib's Agg renderer to PNG, embedded as data: URIs so the page carries them.

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global backend is switched for a
program that imports r1distill, and no figure is registered anywhere, so each is freed once its PNG is
made (matplotlib's advice for servers). Labels that come from files (model and reward names) have
their `$` escaped, so a name can neither break a plot nor render as mathtext.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

PALETTE = ("#2f6db5", "#d9782d", "#3a9a5b", "#c0392b", "#8e5bb5", "#7f7f7f", "#b8a033", "#2aa5b8")
"""Line colours by index: one model or reward keeps its colour across panels."""
GOOD, BAD, NEUTRAL, ADDED = "#3a9a5b", "#c0392b", "#7f7f7f", "#2f6db5"

_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "legend.fontsize": 8, "legend.frameon": False, "savefig.dpi": 100,
}


def literal(text: str) -> str:
    r"""`text` as matplotlib draws it verbatim: an unescaped `$` would start mathtext.

    >>> print(literal("model $v2$"))
    model \$v2\$
    """
    return text.replace("$", r"\$")


@contextmanager
def _figure(panels: int, columns: int, height: float = 3.0) -> Iterator[tuple[Figure, list]]:
    rows = -(-panels // columns)
    with matplotlib.rc_context(_STYLE):
        # Up to a page's width: three panels a row share it rather than shrink their text.
        figure = Figure(figsize=(min(5.5 * min(columns, panels), 11.5), height * rows), layout="constrained")
        axes = figure.subplots(rows, min(columns, panels), squeeze=False).ravel().tolist()
        for extra in axes[panels:]:
            extra.set_visible(False)
        yield figure, axes[:panels]


def _img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}">'


def _empty(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=NEUTRAL)


@dataclass
class Line:
    """One series of a panel."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: int = 0
    """Index into PALETTE."""
    style: str = "-"
    """Matplotlib line style; "" draws markers only."""
    marker: str = ""


@dataclass
class Panel:
    """One axes of a line figure; a panel without points says so instead of drawing empty axes."""

    title: str
    xlabel: str
    ylabel: str
    lines: list[Line]
    percent: bool = False
    """The y values are shares, shown as percentages."""
    limit: float | None = None
    """A horizontal reference line (the completion length limit)."""


def line_panels(panels: list[Panel], alt: str, columns: int = 2) -> str:
    with _figure(len(panels), columns) as (figure, axes):
        for ax, panel in zip(axes, panels):
            ax.set_title(panel.title)
            drawn = [line for line in panel.lines if len(line.x)]
            if not drawn:
                _empty(ax, "not logged")
                continue
            for line in drawn:
                marker = line.marker or ("o" if len(line.x) < 12 else "")
                ax.plot(line.x, line.y, linestyle=line.style or "none", marker=marker, markersize=4,
                        color=PALETTE[line.color % len(PALETTE)], label=literal(line.label))
            if panel.limit is not None:
                ax.axhline(panel.limit, color=NEUTRAL, linestyle=":", linewidth=1, label=f"limit {panel.limit:g}")
            if panel.percent:
                # From 0, up to 100% at most: a share of 0.1% is not drawn as flat as one of 0%.
                top = max((value for line in drawn for value in line.y), default=0.0)
                ax.set_ylim(0, min(1.05, max(0.05, top * 1.15)))
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            if all(float(x).is_integer() for line in drawn for x in line.x):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(panel.xlabel)
            ax.set_ylabel(panel.ylabel)
            if len(drawn) > 1 or panel.limit is not None:
                ax.legend()
    return _img(figure, alt)


def histograms(panels: list[tuple[str, np.ndarray, str]], alt: str) -> str:
    """One histogram per (title, values, x label)."""
    with _figure(len(panels), len(panels)) as (figure, axes):
        for ax, (title, values, xlabel) in zip(axes, panels):
            ax.set_title(title)
            if not len(values):
                _empty(ax, "no rows")
                continue
            low, high = float(np.min(values)), float(np.max(values))
            # Whole token counts over a short range: one bar per count rather than bars that straddle them.
            if high - low < 40 and bool(np.all(values == np.round(values))):
                ax.hist(values, bins=np.arange(low, high + 2) - 0.5, rwidth=0.9, color=PALETTE[0], alpha=0.85)
            else:
                ax.hist(values, bins=min(40, len(np.unique(values))), color=PALETTE[0], alpha=0.85)
            ax.axvline(float(np.mean(values)), color=PALETTE[1], linestyle="--", linewidth=1, label=f"mean {np.mean(values):,.0f}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("rows")
            ax.legend()
    return _img(figure, alt)


def bars(labels: list[str], values: list[float], colors: list[str], title: str, alt: str, *, horizontal: bool, xlabel: str = "") -> str:
    """A bar per label, its value written at its end."""
    height = max(2.2, 0.32 * len(labels) + 1) if horizontal else 3.0
    with _figure(1, 1, height) as (figure, [ax]):
        ax.set_title(title)
        if horizontal:
            drawn = ax.barh([literal(label) for label in labels], values, color=colors)
            ax.invert_yaxis()  # the first label on top, as a funnel reads
            ax.set_xlabel(xlabel)
        else:
            drawn = ax.bar([literal(label) for label in labels], values, color=colors)
            ax.set_xlabel(xlabel)
            ax.tick_params(axis="x", labelrotation=45 if len(labels) > 6 else 0)
        ax.bar_label(drawn, labels=[f"{value:,.0f}" for value in values], padding=2, fontsize=8)
        if horizontal:
            ax.margins(x=0.12)
        else:
            ax.margins(y=0.15)
    return _img(figure, alt)


def grouped_bars(groups: list[str], series: list[tuple[str, list[float | None]]], title: str, alt: str) -> str:
    """Bars of shares side by side: one group per model, one bar per series (pass@1, pass@k, maj@k)."""
    width = 0.8 / max(1, len(series))
    with _figure(1, 1) as (figure, [ax]):
        ax.set_title(title)
        positions = np.arange(len(groups))
        for i, (label, values) in enumerate(series):
            heights = [np.nan if value is None else value for value in values]
            drawn = ax.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width, label=literal(label), color=PALETTE[i % len(PALETTE)])
            ax.bar_label(drawn, labels=["-" if value is None else f"{value:.0%}" for value in values], padding=2, fontsize=7)
        ax.set_xticks(positions, [literal(group) for group in groups])
        ax.set_ylim(0, 1.1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(ncols=min(4, len(series)))
    return _img(figure, alt)
