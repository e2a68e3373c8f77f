"""``sail plot RUN [RUN ...] [--output FILE]``: the held-out evaluations of runs against the step.

One panel per ``eval/*`` metric of the runs' ``metrics.jsonl``: the held-out reward, the win rate
against the reference, the KL in both directions, then every other one in the order the file
logs them (``run.eval_metrics``, e.g. the EM judge's misalignment rates). Each run is one line,
labelled by its directory's name; a metric's reference twin (``eval/reference_<name>``, the
reference's value of ``eval/<name>``) is drawn dashed in the same panel and colour instead of a
panel of its own. A panel exists only for metrics some run logged, and a run without a metric has
no line in its panel.

:func:`plot_runs` builds a ``matplotlib.figure.Figure`` (no pyplot state) and returns it, so the data
drawn can be read back (``ax.lines[i].get_xydata()``).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sail.data import DataError
from sail.data import _records as read_jsonl
from sail.io import restore_non_finite
from sail.plotting import save_figure

FIRST = ("eval/reward_mean", "eval/win_rate_vs_reference", "eval/kl_ref_to_policy", "eval/kl_policy_to_ref")
"""The panels that come first, in this order (when logged)."""

TITLES = {
    "eval/reward_mean": "held-out reward",
    "eval/win_rate_vs_reference": "win rate vs the reference",
    "eval/kl_ref_to_policy": "KL(π_ref‖π_θ), held-out",
    "eval/kl_policy_to_ref": "KL(π_θ‖π_ref), held-out",
}

COLUMNS = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3}
"""Panels per row for a number of panels (4 beyond)."""

REFERENCE_TWINS = {"eval/reward_mean": "eval/reference_reward_mean"}
"""Reference twins whose name does not follow ``eval/reference_<name>``."""


class PlotError(ValueError):
    """A run directory that cannot be plotted; the message is one line that names it."""


def read_evaluations(run_dir: str | Path) -> list[dict]:
    """The evaluation rows (those with an ``eval/*`` key) of ``run_dir/metrics.jsonl``, by step."""
    path = Path(run_dir) / "metrics.jsonl"
    if not Path(run_dir).is_dir():
        raise PlotError(f"{run_dir}: no such directory")
    if not path.is_file():
        raise PlotError(f"{run_dir}: no metrics.jsonl (not a sail run directory)")
    try:
        rows = [restore_non_finite(row) for _, row in read_jsonl(path) if "step" in row and any(key.startswith("eval/") for key in row)]
    except DataError as exc:  # a line that is not a JSON object, named by file:line
        raise PlotError(str(exc)) from None
    if not rows:
        raise PlotError(f"{run_dir}: metrics.jsonl holds no evaluation yet")
    return sorted(rows, key=lambda row: row["step"])


def _twin(key: str) -> str:
    return REFERENCE_TWINS.get(key, "eval/reference_" + key.removeprefix("eval/"))


def panel_keys(evaluations: list[list[dict]]) -> list[str]:
    """The metrics that get a panel: every ``eval/*`` key of any run, reference twins left out,
    :data:`FIRST` first, then the others in the order the files log them."""
    seen = dict.fromkeys(key for rows in evaluations for row in rows for key in row if key.startswith("eval/"))
    twins = {_twin(key) for key in seen}
    keys = [key for key in seen if key not in twins]
    return [key for key in FIRST if key in keys] + [key for key in keys if key not in FIRST]


def _points(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(row["step"], float(row[key])) for row in rows if isinstance(row.get(key), (int, float)) and not isinstance(row[key], bool)]


def _labels(run_dirs: list) -> list[str]:
    """Each run's directory name; the path as given where two names coincide."""
    names = [Path(run).resolve().name for run in run_dirs]
    return [name if names.count(name) == 1 else str(run) for name, run in zip(names, run_dirs)]


def plot_runs(run_dirs: list, path: str | Path | None = None) -> Figure:
    """The evaluation curves of ``run_dirs`` (module docstring), saved as a PNG at ``path`` when given."""
    evaluations = [read_evaluations(run) for run in run_dirs]
    keys = panel_keys(evaluations)
    columns = COLUMNS.get(len(keys), 4)
    rows_of_panels = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.1 * rows_of_panels))
    colours = [f"C{i % 10}" for i in range(len(run_dirs))]
    handles: dict[str, object] = {}
    for index, key in enumerate(keys):
        ax = fig.add_subplot(rows_of_panels, columns, index + 1)
        for label, rows, colour in zip(_labels(run_dirs), evaluations, colours):
            points = _points(rows, key)
            if points:
                (line,) = ax.plot(*zip(*points), marker="o", ms=3, color=colour, label=label)
                handles.setdefault(label, line)
            reference = _points(rows, _twin(key))
            if reference:
                (line,) = ax.plot(*zip(*reference), ls="--", lw=1, color=colour, alpha=0.7, label=f"{label}: reference")
                handles.setdefault(f"{label}: reference", line)
        ax.set_title(TITLES.get(key, key.removeprefix("eval/").replace("_", " ")), fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(list(handles.values()), list(handles), fontsize=7)
    if path is not None:
        save_figure(fig, path)
    return fig


def default_output(run_dirs: list) -> Path:
    """``RUN/metrics.png`` for one run, ``metrics.png`` in the current directory for several."""
    return Path(run_dirs[0]) / "metrics.png" if len(run_dirs) == 1 else Path("metrics.png")
