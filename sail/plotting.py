"""What every plot of the package shares: saving a figure as a PNG and finishing its axes.

Plots are built as ``matplotlib.figure.Figure`` objects (no pyplot state), returned to the caller
(a test reads the data drawn back from them) and saved with :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path) -> Path:
    """``fig`` with a tight layout as a 120-dpi PNG at ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def finish_axes(ax, xlabel: str, ylabel: str, title: str, *, title_size=None, grid: str = "both", legend_size=8) -> None:
    """Axis labels, the title (at ``title_size``, or the axes' default), a light grid on the
    ``grid`` ticks and the legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    ax.grid(True, which=grid, alpha=0.3)
    ax.legend(fontsize=legend_size)
