"""Recipes: packaged YAML configs of ``sail train`` that live beside the experiment they run.

A recipe is a complete starting config: ``sail train`` without ``--config`` uses the default recipe,
``sail train --config <name>`` any recipe by name, and ``--set`` overrides apply on top. The core
names no recipe itself: packages declare theirs as entry points of the group ``sail.recipes``
(name → ``module:PATH``, a :class:`pathlib.Path` to the YAML); ``sail``'s EM realignment is
``em-realign`` (``sail/em/recipes/realign.yaml``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from sail.config import ConfigError, load_yaml

ENTRY_POINT_GROUP = "sail.recipes"


def recipe_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def recipe_path(name: str) -> Path:
    """The YAML file of the recipe called ``name``."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise ConfigError("--config", f"no such file or recipe: {name!r} (recipes: {', '.join(recipe_names()) or 'none'})")
    return Path(found[0].load())


def recipe(name: str) -> dict:
    """The recipe's config as a mapping (to merge under a file and overrides)."""
    return load_yaml(recipe_path(name))
