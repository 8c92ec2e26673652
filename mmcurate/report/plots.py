"""The report's plots, drawn with matplotlib (the Agg backend: no display) and saved as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"kept": "#2e7d32", "dropped": "#ef6c00", "quarantined": "#c62828"}


def _png(fig: plt.Figure) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=96)
    plt.close(fig)
    return out.getvalue()


def counts_chart(rows: Sequence[Mapping[str, int | str]]) -> bytes:
    """Kept / dropped / quarantined per kind, stacked bars."""
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.5 * len(rows)))
    kinds = [str(r["kind"]) for r in rows]
    left = [0.0] * len(rows)
    for status in ("kept", "dropped", "quarantined"):
        values = [float(r[status]) for r in rows]
        ax.barh(kinds, values, left=left, color=COLOURS[status], label=status)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("records")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _png(fig)


def reasons_chart(reasons: Sequence[tuple[str, int, str]]) -> bytes:
    """Records per reason (label, count, fate), most first."""
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(reasons)))
    labels = [r[0] for r in reasons][::-1]
    ax.barh(labels, [r[1] for r in reasons][::-1], color=[COLOURS[r[2]] for r in reasons][::-1])
    ax.set_xlabel("records")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def histogram(values: Sequence[float], title: str, lines: Mapping[str, float] | None = None, bins: int = 30) -> bytes:
    """A score's histogram with the thresholds drawn in (label -> value)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.hist(values, bins=bins, color="#5c6bc0")
    for label, value in (lines or {}).items():
        ax.axvline(value, color="#c62828", linestyle="--", linewidth=1.2)
        ax.annotate(label, (value, ax.get_ylim()[1] * 0.9), fontsize=7, color="#c62828", rotation=90, ha="right")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


def overlaid(series: Mapping[str, Sequence[float]], title: str, bins: int = 30) -> bytes:
    """Two or more runs' distributions of one score on one axis (the comparison)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    everything = [v for vs in series.values() for v in vs]
    lo, hi = (min(everything), max(everything)) if everything else (0.0, 1.0)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)] if hi > lo else bins
    for name, values in series.items():
        ax.hist(values, bins=edges, alpha=0.5, label=name)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _png(fig)
