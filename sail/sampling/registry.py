"""The samplers by name: ``sampling.engine`` accepts every name registered here.

:mod:`sail.sampling` registers ``hf`` and ``fast`` when it is imported; other engines (e.g. vLLM)
plug in with :func:`register_sampler`. A factory returns an object with the
:class:`~sail.sampling.base.Sampler` interface.
"""

from __future__ import annotations

from typing import Callable

SAMPLERS: dict[str, Callable[[], object]] = {}
"""Engine name → factory of a :class:`~sail.sampling.base.Sampler`."""


def register_sampler(name: str, factory: Callable[[], object]) -> None:
    """Make ``sampling.engine: name`` build ``factory()``."""
    SAMPLERS[name] = factory


def make_sampler(engine: str):
    """A new sampler of the registered ``engine``."""
    if engine not in SAMPLERS:
        raise ValueError(f"unknown sampling engine {engine!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[engine]()
