"""sail: SAIL-RevKL — self-improving online preference alignment with a KL penalty to a reference.

The algorithm is written once (:mod:`sail.objectives`, :mod:`sail.loop`) and trains every policy
class; :mod:`sail.theory` checks its convergence conditions on exact log-linear instances and tiny
transformers. The layers, the path of one step and where to add an optimiser, estimator, sampler,
oracle or embedded model: docs/architecture.md.
"""

__version__ = "0.1.0"
