"""The list of lemma modules and their loader.

Kept out of ``proofs/__init__.py`` on purpose: an editable install made before ``__init__.py``
existed resolves ``proofs`` as a namespace package, whose submodules still import normally.
"""

from __future__ import annotations

import importlib

LEMMA_NAMES = (
    "softmax_derivatives",
    "implicit_reward",
    "pair_derivative",
    "sail_gradient",
    "surrogate_unbiased",
    "self_label_term",
    "loglinear_hessian",
    "vanilla_sail_nonconcave",
    "fisher_identity",
    "policy_to_ref_nonconvex",
    "elementary_bounds",
    "pl_template",
    "strong_concavity_pl",
    "linear_rate",
    "stochastic_rate",
    "kl_optimal_policy",
    "regularisation_bias",
)
"""Every lemma module, in the order of docs/theory.md."""


def load_lemma(name: str):
    """The ``LEMMA`` object of module ``proofs.<name>``; KeyError for an unknown name."""
    if name not in LEMMA_NAMES:
        raise KeyError(name)
    return importlib.import_module(f"proofs.{name}").LEMMA


def all_lemmas() -> list:
    return [load_lemma(name) for name in LEMMA_NAMES]
