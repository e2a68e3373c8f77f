"""Exact SAIL-RevKL instances: a finite world in which every quantity can be enumerated.

An instance file is the JSON object of :class:`InstanceConfig` (docs/checkers.md),

    {"features": [X][Y][d], "context_probs": [X], "reward": [X][Y], "theta_ref": [d],
     "beta": β > 0, "gamma": γ ≥ 0, "radius": R > 0, "kl": "ref_to_policy" | "policy_to_ref"}

read by the project's one typed loader, :func:`sail.config.build`: an unknown key, a value of the
wrong type or a bad shape or range fails with :class:`sail.config.ConfigError` naming the key. It
defines ρ (``context_probs``), φ, the true reward r* (labels are Bradley–Terry on r*),
π_ref = π_{θ_ref}, and the ball Θ = {‖θ − θ_ref‖ ≤ R} on which the theory is checked.
:class:`Instance` holds the same world as float64 arrays.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from sail.config import ConfigError, FieldError, build
from sail.io import write_json_atomically

KLDirection = Literal["ref_to_policy", "policy_to_ref"]

MAX_MAGNITUDE = 1e6
"""The largest magnitude of any number of an instance: the checkers square β, the features and the
radius and exponentiate logits, which overflows float64 long before its own limit."""


@dataclass(frozen=True)
class InstanceConfig:
    """An instance file: X contexts, Y ≥ 2 responses per context, d features."""

    features: list[list[list[float]]]
    """φ(x, y) for every context x and response y: [X][Y][d]."""
    context_probs: list[float]
    """ρ(x): [X], non-negative and summing to 1."""
    reward: list[list[float]]
    """The true reward r*(x, y): [X][Y]; labels are Bradley–Terry on r*."""
    theta_ref: list[float]
    """θ_ref: [d]; π_ref = π_{θ_ref}, and the ball Θ is centred here."""
    beta: float
    """β > 0, the scale of the implicit reward β·(log π_θ − log π_ref)."""
    gamma: float
    """γ ≥ 0, the weight of the KL term."""
    radius: float
    """R > 0, the radius of the ball Θ = {‖θ − θ_ref‖ ≤ R}."""
    kl: KLDirection = "ref_to_policy"
    """The KL direction: ``ref_to_policy`` is KL(π_ref‖π_θ), ``policy_to_ref`` is KL(π_θ‖π_ref)."""

    def __post_init__(self):
        n_ctx, n_resp, dim = _array(self, "features", 3).shape
        if n_resp < 2:
            raise FieldError("features", f"needs at least 2 responses per context, got {n_resp}")
        _check_probabilities(_array(self, "context_probs", 1), n_ctx)
        _check_shape(_array(self, "reward", 2), "reward", (n_ctx, n_resp), "[X, Y]")
        _check_shape(_array(self, "theta_ref", 1), "theta_ref", (dim,), "[d]")
        require(self, "beta", lambda v: v > 0, "a finite number > 0")
        require(self, "gamma", lambda v: v >= 0, "a finite number >= 0")
        require(self, "radius", lambda v: v > 0, "a finite number > 0")
        require_moderate(self, "beta", "gamma", "radius")


def _array(cfg: InstanceConfig, name: str, ndim: int) -> np.ndarray:
    """Field ``name`` as a finite, non-empty float64 array of ``ndim`` dimensions."""
    try:
        arr = np.asarray(getattr(cfg, name), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FieldError(name, f"must be a rectangular array of numbers ({exc})") from None
    if arr.ndim != ndim:
        raise FieldError(name, f"must have {ndim} dimensions, got shape {list(arr.shape)}")
    if arr.size == 0:
        raise FieldError(name, "must not be empty")
    if not np.all(np.isfinite(arr)):
        raise FieldError(name, "contains non-finite numbers")
    if np.abs(arr).max() > MAX_MAGNITUDE:
        raise FieldError(name, f"has the value {arr.flat[np.abs(arr).argmax()]:g}; numbers must lie in [-{MAX_MAGNITUDE:g}, {MAX_MAGNITUDE:g}]")
    return arr


def _check_shape(arr: np.ndarray, name: str, shape: tuple[int, ...], symbols: str) -> None:
    if arr.shape != shape:
        raise FieldError(name, f"must have shape {symbols} = {list(shape)}, got {list(arr.shape)}")


def _check_probabilities(context_probs: np.ndarray, n_ctx: int) -> None:
    _check_shape(context_probs, "context_probs", (n_ctx,), "[X]")
    if np.any(context_probs < 0):
        raise FieldError("context_probs", "must be non-negative")
    if abs(context_probs.sum() - 1.0) > 1e-6:
        raise FieldError("context_probs", f"must sum to 1, sums to {context_probs.sum():.8g}")


def require(cfg, name: str, holds: Callable[[float], bool], bound: str) -> None:
    """Raise :class:`FieldError` on ``name`` unless that number field of the config ``cfg`` is
    finite and ``holds``; ``bound`` says what it must be (``"a finite number > 0"``)."""
    value = getattr(cfg, name)
    if not math.isfinite(value) or not holds(value):
        raise FieldError(name, f"must be {bound}, got {value!r}")


def require_moderate(cfg, *names: str) -> None:
    """Raise :class:`FieldError` on the first of the number fields ``names`` of ``cfg`` beyond
    :data:`MAX_MAGNITUDE`."""
    for name in names:
        require(cfg, name, lambda v: abs(v) <= MAX_MAGNITUDE, f"at most {MAX_MAGNITUDE:g} in magnitude")


@dataclass(frozen=True)
class Instance:
    """The world of a checked :class:`InstanceConfig` as float64 arrays (ρ renormalised to sum 1)."""

    features: np.ndarray  # [X, Y, d]
    context_probs: np.ndarray  # [X]
    reward: np.ndarray  # [X, Y]
    theta_ref: np.ndarray  # [d]
    beta: float
    gamma: float
    radius: float
    kl: KLDirection = "ref_to_policy"

    @classmethod
    def from_config(cls, cfg: InstanceConfig) -> "Instance":
        rho = np.asarray(cfg.context_probs, dtype=np.float64)
        return cls(
            features=np.asarray(cfg.features, dtype=np.float64),
            context_probs=rho / rho.sum(),
            reward=np.asarray(cfg.reward, dtype=np.float64),
            theta_ref=np.asarray(cfg.theta_ref, dtype=np.float64),
            beta=cfg.beta,
            gamma=cfg.gamma,
            radius=cfg.radius,
            kl=cfg.kl,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.features.shape)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        """The instance file's JSON object."""
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in dataclasses.asdict(self).items()}

    def save(self, path: str | Path) -> None:
        write_json_atomically(path, self.to_dict(), indent=1, end="")

    def replace(self, **changes) -> "Instance":
        """This instance with some keys of its file changed to the JSON values ``changes`` (e.g.
        ``radius=2.0``), checked again: a bad value raises :class:`ConfigError`."""
        return instance_from_dict({**self.to_dict(), **changes})


def instance_from_dict(data: dict) -> Instance:
    """An instance from its JSON object, through :func:`sail.config.build` (:class:`ConfigError` names the key)."""
    return Instance.from_config(build(InstanceConfig, data))


def load_instance(path: str | Path, overrides: dict | None = None) -> Instance:
    """Read an instance file; ``overrides`` (e.g. ``{"gamma": 8.0}``) replace keys of the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--instance", f"no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("--instance", f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("--instance", f"{path} is not valid JSON: {exc}") from None
    if overrides and isinstance(data, dict):
        data = {**data, **overrides}
    return instance_from_dict(data)


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
    arrays = {"features": features, "context_probs": context_probs, "reward": reward, "theta_ref": theta_ref}
    scalars = {"beta": beta, "gamma": gamma, "radius": radius, "kl": kl}
    return instance_from_dict({**{k: v.tolist() for k, v in arrays.items()}, **scalars})
