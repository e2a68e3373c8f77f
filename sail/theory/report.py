"""Plain-text tables and strict JSON for checker reports."""

from __future__ import annotations

import numpy as np

from sail.io import dumps_strict


def dumps(report: dict) -> str:
    """The report as strict JSON (:func:`sail.io.strict_json`: NaN and ±∞ → null plus a flag)."""
    return dumps_strict(report, indent=2)


def fmt(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.6g}"
    return str(x)


def table(rows: list[tuple], header: tuple) -> str:
    cells = [tuple(fmt(c) for c in header)] + [tuple(fmt(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pl_table(report: dict) -> str:
    th, ex = report["theory"], report["theory"]["explicit"]
    rows = [
        ("J_γ* (max on ball, multi-start)", report["max_objective"], "", "", ""),
        ("PL constant μ", report["pl_mu_hat"], th["mu"], ex["mu"], report["checks"]["mu_hat_ge_theory_mu"]),
        ("  (½‖G‖² form)", report["pl_mu_hat_gradient_mapping"], "", "", ""),
        ("smoothness L", report["smoothness_hat"], th["L"], ex["L"], report["checks"]["smoothness_within_theory_L"]),
        ("max λ_max(∇²J_γ)", report["max_hessian_eig"], -th["mu"], -ex["mu"], report["max_hessian_eig"] <= -th["mu"] + 1e-12),
        ("λ_F = min λ_min(∇²KL)", "", th["lambda_F"], ex["lambda_F"], ""),
        ("M = max λ_max(∇²J)", "", th["M"], ex["M"], ""),
        ("γ_c = M/λ_F", "", th["gamma_c"], ex["gamma_c"], ""),
        ("rate slope of log gap", report["rate_slope"], report["rate_slope_bound"], "", report["checks"]["rate_within_bound"]),
    ]
    return table(rows, ("quantity", "empirical", "template (ball)", "explicit bound", "holds"))


def gamma_table(report: dict) -> str:
    rows = [
        ("γ_c", report["gamma_c_empirical"], report["gamma_c_theory"], report["gamma_c_explicit"]),
        ("max λ_max(∇²J) at γ=0", report["max_hessian_eig_vanilla"], report["theory"]["M"], report["theory"]["explicit"]["M"]),
    ]
    head = table(rows, ("quantity", "empirical", "template (ball)", "explicit bound"))
    curve = report["curve"]
    body = table(
        list(zip(curve["gamma"], curve["max_hessian_eig"], curve["template_bound"])),
        ("γ", "max λ_max(∇²J_γ)", "template M − γλ_F"),
    )
    return f"{head}\n\ninstance γ = {fmt(report['gamma'])}: concave on the ball: {fmt(report['concave_at_instance_gamma'])}\n\n{body}"


def sample_table(report: dict) -> str:
    batches = [",".join(map(str, b)) if b else "" for b in report["best_batch_size"]]
    rows = list(zip(report["eps_fractions"], report["epsilons"], report["samples"], batches))
    body = table(rows, ("ε / gap₀", "ε", "labelled pairs (geo. mean)", "best batch"))
    ci = report["slope_ci95"]
    slope = fmt(report["slope"]) if report["slope"] is not None else "undefined (no seed reached every ε)"
    ci_text = f"  95% CI [{fmt(ci[0])}, {fmt(ci[1])}] over {report['seeds_used']} seeds" if ci else ""
    lines = [body, "", f"log-log slope of samples vs 1/ε: {slope}{ci_text}"]
    if report["models"]:
        model_rows = []
        for key, m in report["models"].items():
            rci = m["residual_slope_ci95"]
            model_rows.append(
                (m["model"], m["rms_log_residual"], m["residual_slope"], f"[{fmt(rci[0])}, {fmt(rci[1])}]" if rci else "")
            )
        lines += ["", table(model_rows, ("model", "rms residual of log n", "residual slope", "95% CI"))]
        lines.append(f"best fit: {report['models'][report['best_model']]['model']}")
    return "\n".join(lines)


def eval_table(report: dict) -> str:
    rows = [("J_γ(θ)", report["objective"]), ("J(θ) (SAIL)", report["sail"]), ("E_x KL", report["kl"])]
    grad = ", ".join(f"{g:.6g}" for g in report["gradient"])
    eig = ", ".join(f"{e:.6g}" for e in report["hessian_eigenvalues"])
    return f"{table(rows, ('quantity', 'value'))}\n\n∇J_γ(θ) = [{grad}]\neig ∇²J_γ(θ) = [{eig}]"
