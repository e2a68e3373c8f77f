"""``--plot DIR``: λ_max against γ (``curvature.png``) and the optimality gap of exact projected
ascent against the step, with the rate line gap₀(1 − μ̂/L̂)^k (``rate.png``). Both are drawn from
the report alone (the lists ``curvature``, ``curvature_at_ref`` and ``gap_trajectory``);
``*_figure(report)`` builds the figure, ``plot_*(report, path)`` saves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sail.plotting import finish_axes, save_figure
from sail.theory.plots import FIGSIZE, is_finite_number


def draw_curvature(report: dict, ax) -> None:
    """max over the sampled ball points of λ_max(∇²J_γ) against γ (line 0), and λ_max at θ₀ alone
    (line 1), on symlog axes so that γ = 0 and eigenvalues of both signs fit."""
    gammas = np.array([row["gamma"] for row in report["curvature"]])
    eigs = np.array([row["max_hessian_eig"] for row in report["curvature"]])
    at_ref = np.array([row["max_hessian_eig"] for row in report.get("curvature_at_ref", [])])
    ax.plot(gammas, eigs, "o-", ms=4, label="max λ_max(∇²J_γ) over sampled ball points")
    if at_ref.size:
        ax.plot(gammas, at_ref, "s--", ms=3, label="λ_max(∇²J_γ) at θ₀")
    ax.axhline(0.0, color="k", lw=0.8)
    gamma_c = report["gamma_c_hat"]
    if is_finite_number(gamma_c):
        ax.axvline(gamma_c, color="C2", ls=":", label=f"γ_c = {gamma_c:.3g}")
    verdict = "γ_c = ∞ (indefinite for every γ)" if report["gamma_c_infinite"] else f"γ_c = {gamma_c:.3g}"
    values = np.concatenate([eigs, at_ref])
    nonzero = np.abs(values[values != 0])
    y_thresh = max(1e-4, float(nonzero.min())) if nonzero.size else 1e-4
    x_thresh = min([g for g in gammas if g > 0] or [1.0])
    ax.set_xscale("symlog", linthresh=x_thresh)
    ax.set_yscale("symlog", linthresh=y_thresh)
    ax.set_xlim(0.0, gammas.max() * 2 if gammas.max() > 0 else 1.0)
    ax.set_ylim(min(values.min(), 0.0) * 3 - y_thresh, max(values.max(), 0.0) * 3 + y_thresh)
    title = f"{report['parametrisation']}, R = {report['radius']:g}: {verdict}"
    finish_axes(ax, "γ", "largest Hessian eigenvalue", title, title_size=10)


def draw_rate(report: dict, ax) -> None:
    """J_γ* − J_γ(θ_k) on a log scale (line 0, its positive entries), with the line gap₀(1 − μ̂/L̂)^k
    (line 1, when 0 < μ̂ < L̂)."""
    gaps = np.asarray(report["gap_trajectory"], dtype=float)
    k = np.arange(gaps.size)
    positive = gaps > 0
    ax.semilogy(k[positive], gaps[positive], "o-", ms=2.5, lw=1.2, label="exact projected ascent, η = 1/L̂")
    mu, lipschitz = report["pl_mu_hat"], report["smoothness_hat"]
    if is_finite_number(mu) and 0 < mu < lipschitz:
        ax.semilogy(k, gaps[0] * (1 - mu / lipschitz) ** k, "--", lw=1.5, label=f"rate line (1 − μ̂/L̂)^k, μ̂ = {mu:.3g}, L̂ = {lipschitz:.3g}")
    slope, bound = report["rate_slope"], report["rate_slope_bound"]
    fitted = f"{slope:.4g}" if is_finite_number(slope) else "n/a"
    bounded = f"{bound:.4g}" if is_finite_number(bound) else "n/a (μ̂ ≤ 0)"
    if positive.any():
        ax.set_ylim(bottom=gaps[positive].min() / 3)
    title = f"{report['parametrisation']}: slope of log gap {fitted} vs log(1 − μ̂/L̂) = {bounded}"
    finish_axes(ax, "step k", "J_γ* − J_γ(θ_k)", title, title_size=10)


def report_figure(draw, report: dict) -> Figure:
    """A one-panel figure that ``draw`` (:func:`draw_curvature` or :func:`draw_rate`) fills from the report."""
    fig = Figure(figsize=FIGSIZE)
    draw(report, fig.add_subplot())
    return fig


def plot_curvature(report: dict, path: Path) -> Path:
    return save_figure(report_figure(draw_curvature, report), path)


def plot_rate(report: dict, path: Path) -> Path:
    return save_figure(report_figure(draw_rate, report), path)
