"""sail: SAIL-RevKL — self-improving online preference alignment with a KL penalty to a reference.

The algorithm is written once (:mod:`sail.objectives`, :mod:`sail.loop`) and trains every policy
class; :mod:`sail.theory` checks its convergence conditions on exact log-linear instances.
"""

__version__ = "0.1.0"
