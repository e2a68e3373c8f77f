"""Shared machinery of the lemma modules: verdicts, the softmax differential algebra, exact sign
certification and the numeric helpers of the cross-checks."""
