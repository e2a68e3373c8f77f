"""`sail bench exact`: the exact population J_γ, ∇J_γ and ∇²J_γ against autograd baselines.

Default size X = 10 contexts, Y = 1000 responses, d = 32 (10⁷ ordered pairs). Baselines measured
in the same run:

* ``naive_per_pair``: for each pair, autograd of π₁π₂ℓ (value, gradient and Hessian via
  ``torch.autograd.functional.hessian``); timed on a random subset of pairs and extrapolated
  linearly to all X·Y² pairs (running all 10⁷ would take hours);
* ``autograd_vectorised_grad``: one reverse-mode pass through the enumerated objective (gradient
  only; its Hessian would need d such passes over 10⁷-entry tensors).
"""

from __future__ import annotations

import time

# torch and the library are imported inside the functions, so that registering the subcommand
# (every `sail` invocation) stays cheap.


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def naive_pair_seconds(policy, reward, rho, beta, gamma, direction, theta, n_pairs, seed=0) -> float:
    """Seconds per pair for value + gradient + Hessian of ρ_x π₁π₂ℓ by autograd, one pair at a time."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    X, Y, _ = policy.features.shape
    xs = torch.randint(X, (n_pairs,), generator=gen)
    ys = torch.randint(Y, (n_pairs, 2), generator=gen)
    from sail.objectives import pair_term

    def pair_value(th, x, y1, y2):
        logp = torch.log_softmax(policy.features[x] @ th, -1)
        u = policy.features[x] @ (th - policy.theta_ref)
        p = torch.sigmoid(reward[x, y1] - reward[x, y2])
        return rho[x] * torch.exp(logp[y1] + logp[y2]) * pair_term(u[y1] - u[y2], p, beta)

    start = time.perf_counter()
    for x, (y1, y2) in zip(xs.tolist(), ys.tolist()):
        torch.autograd.functional.hessian(lambda th: pair_value(th, x, y1, y2), theta)
    return (time.perf_counter() - start) / n_pairs


def run(contexts=10, responses=1000, dim=32, naive_pairs=300, seed=0) -> dict:
    import torch

    from sail.policies.loglinear import DTYPE, LogLinearPolicy
    from sail.theory.instance import random_instance

    inst = random_instance(seed, contexts, responses, dim, beta=1.0, gamma=1.0, radius=1.0)
    policy = LogLinearPolicy(inst.features, inst.theta_ref)
    reward = torch.as_tensor(inst.reward, dtype=DTYPE)
    rho = torch.as_tensor(inst.context_probs, dtype=DTYPE)
    theta = policy.theta_ref + 0.1 * torch.randn(dim, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
    args = (reward, rho, inst.beta, inst.gamma, inst.kl)
    t_value = _timed(lambda: policy.population(*args, theta=theta, order=0))
    t_grad = _timed(lambda: policy.population(*args, theta=theta, order=1))
    t_hess = _timed(lambda: policy.population(*args, theta=theta, order=2))

    def autograd_grad():
        th = theta.clone().requires_grad_(True)
        policy.population(*args, theta=th, order=0).value.backward()

    t_autograd = _timed(autograd_grad, repeats=2)
    per_pair = naive_pair_seconds(policy, reward, rho, inst.beta, inst.gamma, inst.kl, theta, naive_pairs, seed)
    n_pairs = contexts * responses**2
    naive_total = per_pair * n_pairs
    return {
        "size": {"contexts": contexts, "responses": responses, "dim": dim, "pairs": n_pairs},
        "analytic_value_s": t_value,
        "analytic_grad_s": t_grad,
        "analytic_hessian_s": t_hess,
        "autograd_vectorised_grad_s": t_autograd,
        "naive_per_pair_s_extrapolated": naive_total,
        "naive_pairs_timed": naive_pairs,
        "hessian_speedup_vs_naive": naive_total / t_hess,
        "grad_speedup_vs_autograd": t_autograd / t_grad,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _cmd(args) -> int:
    from sail.bench.commands import print_result

    return print_result(run(args.contexts, args.responses, args.dim, args.naive_pairs, args.seed), args.json, _text)


def _text(out: dict) -> str:
    from sail.theory.report import table

    rows = [
        ("value (analytic)", out["analytic_value_s"], ""),
        ("value + gradient (analytic)", out["analytic_grad_s"], ""),
        ("value + gradient + Hessian (analytic)", out["analytic_hessian_s"], ""),
        ("gradient, vectorised autograd", out["autograd_vectorised_grad_s"], f"{out['grad_speedup_vs_autograd']:.3g}"),
        ("Hessian, naive per-pair autograd (extrapolated)", out["naive_per_pair_s_extrapolated"], f"{out['hessian_speedup_vs_naive']:.3g}"),
    ]
    s = out["size"]
    header = f"X={s['contexts']} Y={s['responses']} d={s['dim']} ({s['pairs']:,} pairs), torch {out['torch']}, {out['threads']} threads"
    return "\n".join([header, table(rows, ("computation", "seconds", "baseline / analytic"))])


def register(benches) -> None:
    p = benches.add_parser("exact", help="exact J_γ / gradient / Hessian vs autograd baselines")
    p.add_argument("--contexts", type=int, default=10)
    p.add_argument("--responses", type=int, default=1000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--naive-pairs", type=int, default=300, help="pairs timed for the per-pair baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
