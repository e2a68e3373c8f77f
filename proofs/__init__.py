"""Symbolic derivations behind SAIL-RevKL's convergence guarantee (docs/theory.md).

One module per lemma; each exports ``LEMMA`` (:class:`proofs.tools.lemma.Lemma`) with a symbolic
``prove()``, a ``negative_control()`` that must be rejected and a ``cross_check()`` against the
numeric code in :mod:`sail`. ``sail proofs`` (:mod:`proofs.runner`) runs them all; the list of
lemmas lives in :mod:`proofs.registry`.
"""

from proofs.registry import LEMMA_NAMES, all_lemmas, load_lemma

__all__ = ["LEMMA_NAMES", "all_lemmas", "load_lemma"]
