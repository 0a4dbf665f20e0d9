"""Figures of the entry distribution before and after balancing (matplotlib, no pyplot).

The figures are `matplotlib.figure.Figure` objects built without pyplot, so no GUI backend
is ever selected: `save_png` renders them with the Agg canvas, and a notebook displays them
inline. Only the matched entries (count > 0) are drawn: an entry of count 0 adds nothing to
a cumulative sum and has no place on a log scale.

After balancing with threshold ``t`` an entry's expected count is ``min(count, t)`` (MetaCLIP,
"Demystifying CLIP Data", the cumulative-count figure; reference
``metaclip1/indexing/plot_entry_count.py``): each curve is drawn for ``t = infinity`` (no
balancing) and for each ``t`` of a run. (A text kept through one entry also counts for its
other entries, so the real counts after balancing are a little higher; the paper draws
``min(count, t)`` too.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

FIGSIZE = (8.0, 4.5)  # inches; at DPI 100, an 800 x 450 PNG
DPI = 100
NO_BALANCING = "t=∞ (no balancing)"  # the label of the t = infinity curve


@dataclass(frozen=True)
class Curve:
    """One line of a figure: the counts clipped at `t` (None: not clipped) and its label."""

    t: float | None
    label: str


def matched_counts(counts: np.ndarray) -> np.ndarray:
    """The counts of the matched entries (count > 0), ascending, as float64."""
    values = np.asarray(counts)
    return np.sort(values[values > 0]).astype(np.float64)


def _clipped(ascending: np.ndarray, t: float | None) -> np.ndarray:
    return ascending if t is None else np.minimum(ascending, t)


def cumulative_figure(counts: np.ndarray, curves: Sequence[Curve], title: str) -> Figure:
    """The paper's figure: the cumulative sum of the entry counts sorted ascending, one line
    per curve (``min(count, t)`` for a curve's ``t``)."""
    ascending = matched_counts(counts)
    rank = np.arange(1, len(ascending) + 1)
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots()
    for curve in curves:
        axes.plot(rank, np.cumsum(_clipped(ascending, curve.t)), label=curve.label)
    axes.set_xlabel(
        f"matched metadata entries sorted by count ({len(ascending):,} of {len(counts):,})"
    )
    axes.set_ylabel("cumulative entry count")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    return figure


def rank_count_figure(counts: np.ndarray, curves: Sequence[Curve], title: str) -> Figure:
    """Count against rank (largest first), log-log, one line per curve."""
    descending = matched_counts(counts)[::-1]
    rank = np.arange(1, len(descending) + 1)
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots()
    for curve in curves:
        axes.plot(rank, _clipped(descending, curve.t), label=curve.label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("rank of the entry (largest count first)")
    axes.set_ylabel("texts matching the entry")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="lower left")
    return figure


def figure_text(figure: Figure) -> str:
    """The figure's title and legend labels, one per line (what a reader sees as text)."""
    lines = []
    for axes in figure.axes:
        lines.append(axes.get_title())
        legend = axes.get_legend()
        if legend is not None:
            lines.extend(text.get_text() for text in legend.get_texts())
    return "\n".join(lines)


def save_png(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Renders `figure` to a PNG (Agg) whose ``Description`` text chunk holds `figure_text`,
    so a test or a script can read the figures' numbers back without looking at pixels."""
    figure.savefig(path, format="png", metadata={"Description": figure_text(figure)})
