"""How the branch and bound's box count grows with the dimension k and the radius R.

For random instances (``sail.theory.instance.random_instance``: 3 contexts, 4 responses, d
features, β = 1, ``ref_to_policy``) and each (d, R), the tree is refined until concavity holds at
γ = 1.5 × the instance's sampled γ_c (a lower estimate of the true one), or a time limit. Writes
``growth.json`` beside this file and prints a Markdown table (docs/checkers.md quotes it).

    python experiments/certify/growth.py [--time-limit 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sail.io import write_json_atomically
from sail.theory.certify.certificate import certified_problem, coordinates, cover_radius, witness_radius
from sail.theory.certify.search import BranchAndBound
from sail.theory.gamma_scan import bisect_gamma
from sail.theory.instance import random_instance
from sail.theory.problem import ExactProblem
from sail.theory.search import hessian_samples


def boxes_to_certify(dim: int, radius: float, time_limit: float, seed: int = 0) -> dict:
    instance = random_instance(seed, n_contexts=3, n_responses=4, dim=dim, radius=radius, gamma=1.0)
    problem = ExactProblem(instance)
    sampled = bisect_gamma(hessian_samples(problem, problem.sample_ball(1000, np.random.default_rng(seed))))
    basis, eps = coordinates(instance)
    bb = BranchAndBound(certified_problem(instance, basis), cover_radius(radius, eps), witness_radius(radius, eps))
    gamma = 1.5 * sampled
    start = time.perf_counter()
    out = bb.refine(1.0, -gamma, 0.0, start + time_limit, 5_000_000)
    return {"d": dim, "R": radius, "gamma": gamma, "status": out.status, "boxes": out.boxes, "leaves": len(out.bounds),
            "seconds": round(time.perf_counter() - start, 2), "max_bound": out.upper_bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    rows = [boxes_to_certify(d, r, args.time_limit) for d in (2, 3, 4) for r in (0.5, 1.0, 1.5)]
    write_json_atomically(Path(__file__).with_name("growth.json"), rows, indent=1)
    print("| d | R | γ | status | boxes | s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['d']} | {r['R']} | {r['gamma']:.3g} | {r['status']} | {r['boxes']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
