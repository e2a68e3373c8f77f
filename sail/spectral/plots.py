"""Plots of logged spectra (PNG): spectra over training per optimiser, and flatness against step.

Both take the rows written by :class:`sail.spectral.logging.SpectralLogger` (each row has a
``label``, e.g. the optimiser, a ``step`` and a module ``kind``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def plot_flatness(
    rows,
    path,
    metric: str = "participation_ratio",
    kind: str = "all",
    title: str | None = None,
    rank: int | None = None,
    linestyles: dict[str, str] | None = None,
) -> Path:
    """One line per label: ``metric`` (mean over the ``kind`` modules) against step.

    ``rank`` draws the flat limit k for the participation ratio; ``linestyles`` maps labels to
    matplotlib line styles (default solid).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in _labels(rows):
        pts = sorted((r["step"], r[metric]) for r in rows if r["label"] == label and r["kind"] == kind and r[metric] is not None)
        if pts:
            style = (linestyles or {}).get(label, "-")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=label)
    if rank is not None and metric == "participation_ratio":
        ax.axhline(rank, color="grey", ls=":", lw=1, label=f"k = {rank} (flat)")
    ax.set_xlabel("step")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title or f"{metric} of ΔW = s·B·A ({kind} modules)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_spectra(rows, path, kind: str = "all", normalised: bool = True, max_curves: int = 6, title: str | None = None) -> Path:
    """One panel per label: the mean sorted spectrum (σ_i/σ₁ by default) at several steps."""
    labels = _labels(rows)
    key = "spectrum_normalised" if normalised else "spectrum"
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(3.6 * max(1, len(labels)), 3.4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes[0], labels):
        mine = sorted((r for r in rows if r["label"] == label and r["kind"] == kind and any(r[key])), key=lambda r: r["step"])
        if len(mine) > max_curves:
            picks = [round(i * (len(mine) - 1) / (max_curves - 1)) for i in range(max_curves)]
            mine = [mine[i] for i in sorted(set(picks))]
        for j, row in enumerate(mine):
            colour = cmap(j / max(1, len(mine) - 1))
            ax.plot(range(1, len(row[key]) + 1), row[key], color=colour, marker=".", ms=3, label=f"step {row['step']}")
        ax.set_title(label)
        ax.set_xlabel("index i")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("σ_i / σ₁" if normalised else "σ_i")
    fig.suptitle(title or f"singular values of ΔW over training ({kind} modules)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
