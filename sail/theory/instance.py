"""Exact SAIL-RevKL instances: a finite world in which every quantity can be enumerated.

An instance is the JSON object

    {"features": [X][Y][d], "context_probs": [X], "reward": [X][Y], "theta_ref": [d],
     "beta": β > 0, "gamma": γ ≥ 0, "radius": R > 0, "kl": "ref_to_policy" | "policy_to_ref"}

defining ρ (``context_probs``), φ, the true reward r* (labels are Bradley–Terry on r*),
π_ref = π_{θ_ref}, and the ball Θ = {‖θ − θ_ref‖ ≤ R} on which the theory is checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sail.objectives import KL_DIRECTIONS

INSTANCE_KEYS = ("features", "context_probs", "reward", "theta_ref", "beta", "gamma", "radius", "kl")


class InstanceError(ValueError):
    """A malformed instance; the message names the offending field."""

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"instance field {field!r}: {problem}")


@dataclass(frozen=True)
class Instance:
    features: np.ndarray  # [X, Y, d]
    context_probs: np.ndarray  # [X]
    reward: np.ndarray  # [X, Y]
    theta_ref: np.ndarray  # [d]
    beta: float
    gamma: float
    radius: float
    kl: str = "ref_to_policy"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.features.shape)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {
            "features": self.features.tolist(),
            "context_probs": self.context_probs.tolist(),
            "reward": self.reward.tolist(),
            "theta_ref": self.theta_ref.tolist(),
            "beta": self.beta,
            "gamma": self.gamma,
            "radius": self.radius,
            "kl": self.kl,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    def replace(self, **changes) -> "Instance":
        data = {k: getattr(self, k) for k in INSTANCE_KEYS}
        data.update(changes)
        return validate_instance(data)


def _array(data: dict, field: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(data[field], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InstanceError(field, f"must be a rectangular array of numbers ({exc})") from None
    if arr.ndim != ndim:
        raise InstanceError(field, f"must have {ndim} dimensions, got shape {list(arr.shape)}")
    if arr.size == 0:
        raise InstanceError(field, "must not be empty")
    if not np.all(np.isfinite(arr)):
        raise InstanceError(field, "contains non-finite numbers")
    return arr


def _scalar(data: dict, field: str) -> float:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InstanceError(field, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InstanceError(field, "must be finite")
    return value


def validate_instance(data: dict) -> Instance:
    """Check keys, shapes, finiteness and ranges; raise :class:`InstanceError` naming the field."""
    if not isinstance(data, dict):
        raise InstanceError("<root>", "an instance must be a JSON object")
    unknown = sorted(set(data) - set(INSTANCE_KEYS))
    if unknown:
        raise InstanceError(unknown[0], f"unknown key (allowed: {', '.join(INSTANCE_KEYS)})")
    missing = [k for k in INSTANCE_KEYS if k not in data and k != "kl"]
    if missing:
        raise InstanceError(missing[0], "missing")
    features = _array(data, "features", 3)
    n_ctx, n_resp, dim = features.shape
    if n_resp < 2:
        raise InstanceError("features", f"needs at least 2 responses per context, got {n_resp}")
    context_probs = _array(data, "context_probs", 1)
    if context_probs.shape != (n_ctx,):
        raise InstanceError("context_probs", f"must have length X={n_ctx}, got {context_probs.shape[0]}")
    if np.any(context_probs < 0):
        raise InstanceError("context_probs", "must be non-negative")
    if abs(context_probs.sum() - 1.0) > 1e-6:
        raise InstanceError("context_probs", f"must sum to 1, sums to {context_probs.sum():.8g}")
    reward = _array(data, "reward", 2)
    if reward.shape != (n_ctx, n_resp):
        raise InstanceError("reward", f"must have shape [X, Y]=[{n_ctx}, {n_resp}], got {list(reward.shape)}")
    theta_ref = _array(data, "theta_ref", 1)
    if theta_ref.shape != (dim,):
        raise InstanceError("theta_ref", f"must have length d={dim}, got {theta_ref.shape[0]}")
    beta = _scalar(data, "beta")
    if beta <= 0:
        raise InstanceError("beta", f"must be > 0, got {beta}")
    gamma = _scalar(data, "gamma")
    if gamma < 0:
        raise InstanceError("gamma", f"must be >= 0, got {gamma}")
    radius = _scalar(data, "radius")
    if radius <= 0:
        raise InstanceError("radius", f"must be > 0, got {radius}")
    kl = data.get("kl", "ref_to_policy")
    if kl not in KL_DIRECTIONS:
        raise InstanceError("kl", f"must be one of {list(KL_DIRECTIONS)}, got {kl!r}")
    return Instance(features, context_probs / context_probs.sum(), reward, theta_ref, beta, gamma, radius, kl)


def load_instance(path: str | Path) -> Instance:
    """Read and validate an instance JSON file."""
    path = Path(path)
    if not path.is_file():
        raise InstanceError("<file>", f"no such file: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InstanceError("<file>", f"{path} is not valid JSON: {exc}") from None
    return validate_instance(data)


def random_instance(
    seed: int = 0,
    n_contexts: int = 4,
    n_responses: int = 6,
    dim: int = 4,
    *,
    tabular: bool = False,
    beta: float = 1.0,
    gamma: float = 1.0,
    radius: float = 2.0,
    kl: str = "ref_to_policy",
    reward_scale: float = 2.0,
    ref_scale: float = 0.5,
    realisable: bool = False,
) -> Instance:
    """A random instance with ‖φ(x, y)‖ ≤ 1.

    Features are Gaussian rows rescaled to norms uniform in [0.5, 1] (one-hot with ``tabular``,
    where d = X·Y and ``dim`` is ignored). The true reward is Gaussian with standard deviation
    ``reward_scale`` (``realisable``: r* = w*ᵀφ with ‖w*‖ = ``reward_scale``), ρ is Dirichlet(2),
    and θ_ref is Gaussian with norm ``ref_scale``.
    """
    rng = np.random.default_rng(seed)
    if tabular:
        dim = n_contexts * n_responses
        features = np.eye(dim).reshape(n_contexts, n_responses, dim)
    else:
        features = rng.standard_normal((n_contexts, n_responses, dim))
        norms = np.linalg.norm(features, axis=-1, keepdims=True)
        features = features / norms * rng.uniform(0.5, 1.0, size=norms.shape)
    if realisable:
        w_star = rng.standard_normal(dim)
        reward = features @ (reward_scale * w_star / np.linalg.norm(w_star))
    else:
        reward = reward_scale * rng.standard_normal((n_contexts, n_responses))
    context_probs = rng.dirichlet(2.0 * np.ones(n_contexts))
    theta_ref = rng.standard_normal(dim)
    theta_ref *= ref_scale / max(np.linalg.norm(theta_ref), 1e-12)
    return validate_instance(
        {
            "features": features,
            "context_probs": context_probs,
            "reward": reward,
            "theta_ref": theta_ref,
            "beta": beta,
            "gamma": gamma,
            "radius": radius,
            "kl": kl,
        }
    )
