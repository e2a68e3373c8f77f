"""The registry of embedded models: policies the project builds itself, named ``sail:<name>``.

An embedded model is a way to build (and cache) a model directory, plus the prompts a run uses when
its config names none. The core owns this registry and imports no experiment: packages add their
models with :func:`register_embedded_model`, or declare them as entry points of the group
``sail.embedded_models`` (name → ``module:object``), which are loaded the first time their name is
looked up. ``sail``'s own (``sail:em-misaligned``, ``sail:em-tiny-organism``, ``sail:tiny-task``) are
declared that way in ``pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

PREFIX = "sail:"
ENTRY_POINT_GROUP = "sail.embedded_models"


@dataclass(frozen=True)
class EmbeddedModel:
    build: Callable[[], str]
    """Returns the model directory (building and caching it on first use)."""
    train_prompts: Callable[[int], list]
    """seed → training prompts."""
    eval_prompts: Callable[[int, int], list]
    """(n, seed) → held-out prompts."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {}
"""Name (``sail:…``) → model, for those registered or loaded so far."""


def register_embedded_model(name: str, model: EmbeddedModel) -> None:
    """Make ``model.name_or_path: name`` build ``model`` (``name`` starts with ``sail:``)."""
    if not name.startswith(PREFIX):
        raise ValueError(f"an embedded model's name starts with {PREFIX!r}, got {name!r}")
    EMBEDDED_MODELS[name] = model


def _declared() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def embedded_names() -> list[str]:
    """Every embedded model's name: registered or declared."""
    return sorted(set(EMBEDDED_MODELS) | set(_declared()))


def embedded_model(name: str) -> EmbeddedModel | None:
    """The embedded model called ``name`` (loading its entry point on first use), or None."""
    if name not in EMBEDDED_MODELS:
        declared = _declared().get(name)
        if declared is None:
            return None
        register_embedded_model(name, declared.load())
    return EMBEDDED_MODELS[name]
