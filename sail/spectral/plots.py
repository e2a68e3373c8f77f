"""Plots of logged spectra (PNG): spectra over training per optimiser, and flatness against step.

Both take the rows written by :class:`sail.spectral.logging.SpectralLogger` (each row has a
``label``, e.g. the optimiser, a ``step`` and a module ``kind``). ``*_figure(rows, …)`` builds the
figure; ``plot_*(rows, path, …)`` saves it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from sail.plotting import finish_axes, save_figure

METRIC_LABELS = {
    "participation_ratio": "participation ratio (Σσ²)²/Σσ⁴",
    "normalised_entropy": "normalised spectral entropy",
    "stable_rank": "stable rank Σσ²/σ₁²",
    "condition_number": "condition number σ₁/σ_k",
}


def _labels(rows) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row["label"] not in seen:
            seen.append(row["label"])
    return seen


def flatness_series(rows, label: str, metric: str, kind: str) -> list[tuple[int, float]]:
    """(step, ``metric``) of label ``label``'s ``kind`` rows, by step (rows without the metric left out)."""
    return sorted((r["step"], r[metric]) for r in rows if r["label"] == label and r["kind"] == kind and r[metric] is not None)


def flatness_figure(
    rows,
    metric: str = "participation_ratio",
    kind: str = "all",
    title: str | None = None,
    rank: int | None = None,
    linestyles: dict[str, str] | None = None,
) -> Figure:
    """One line per label, in order of first appearance: ``metric`` (mean over the ``kind``
    modules) against step (:func:`flatness_series`).

    ``rank`` draws the flat limit k for the participation ratio (a horizontal line after the labels'
    lines); ``linestyles`` maps labels to matplotlib line styles (default solid).
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label in _labels(rows):
        pts = flatness_series(rows, label, metric, kind)
        if pts:
            style = (linestyles or {}).get(label, "-")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=label)
    if rank is not None and metric == "participation_ratio":
        ax.axhline(rank, color="grey", ls=":", lw=1, label=f"k = {rank} (flat)")
    title = title or f"{metric} of ΔW = s·B·A ({kind} modules)"
    finish_axes(ax, "step", METRIC_LABELS.get(metric, metric), title, grid="major")
    return fig


def spectra_shown(rows, label: str, kind: str, key: str, max_curves: int) -> list[dict]:
    """Label ``label``'s ``kind`` rows with a spectrum, by step, thinned to at most ``max_curves``
    evenly spaced steps (the first and the last kept)."""
    mine = sorted((r for r in rows if r["label"] == label and r["kind"] == kind and any(r[key])), key=lambda r: r["step"])
    if len(mine) > max_curves:
        picks = [round(i * (len(mine) - 1) / (max_curves - 1)) for i in range(max_curves)]
        mine = [mine[i] for i in sorted(set(picks))]
    return mine


def spectra_figure(rows, kind: str = "all", normalised: bool = True, max_curves: int = 6, title: str | None = None) -> Figure:
    """One panel per label: the mean sorted spectrum (σ_i/σ₁ by default) against i = 1, 2, … at
    the steps :func:`spectra_shown` picks, one line per step, coloured early (dark) to late."""
    labels = _labels(rows)
    key = "spectrum_normalised" if normalised else "spectrum"
    fig = Figure(figsize=(3.6 * max(1, len(labels)), 3.4))
    axes = fig.subplots(1, max(1, len(labels)), sharey=True, squeeze=False)
    cmap = matplotlib.colormaps["viridis"]
    for ax, label in zip(axes[0], labels):
        mine = spectra_shown(rows, label, kind, key, max_curves)
        for j, row in enumerate(mine):
            colour = cmap(j / max(1, len(mine) - 1))
            ax.plot(range(1, len(row[key]) + 1), row[key], color=colour, marker=".", ms=3, label=f"step {row['step']}")
        ax.set_title(label)
        ax.set_xlabel("index i")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("σ_i / σ₁" if normalised else "σ_i")
    fig.suptitle(title or f"singular values of ΔW over training ({kind} modules)")
    return fig


def plot_flatness(rows, path, metric: str = "participation_ratio", kind: str = "all", title: str | None = None,
                  rank: int | None = None, linestyles: dict[str, str] | None = None) -> Path:
    """:func:`flatness_figure` saved as a PNG at ``path``."""
    return save_figure(flatness_figure(rows, metric, kind, title, rank, linestyles), path)


def plot_spectra(rows, path, kind: str = "all", normalised: bool = True, max_curves: int = 6, title: str | None = None) -> Path:
    """:func:`spectra_figure` saved as a PNG at ``path``."""
    return save_figure(spectra_figure(rows, kind, normalised, max_curves, title), path)
