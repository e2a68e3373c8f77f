"""Shared machinery of the lemma modules, public for a user's own lemmas (docs/proofs_api.md):

* :mod:`proofs.tools.lemma` — the :class:`Lemma` record, :class:`Verdict` and :func:`all_of`;
* :mod:`proofs.tools.identity` — identities of closed forms with exponentials and logarithms;
* :mod:`proofs.tools.exact` — interval-certified signs and polynomial positivity;
* :mod:`proofs.tools.softmax` — the softmax differential algebra in logit coordinates;
* :mod:`proofs.tools.objectives` — SAIL-RevKL of one context written in that algebra;
* :mod:`proofs.tools.numeric` — the numeric side of the cross-checks (needs :mod:`sail`).
"""
