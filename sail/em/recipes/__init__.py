"""The EM experiment's recipes for ``sail train`` (:mod:`sail.train.recipes`)."""

from pathlib import Path

REALIGN = Path(__file__).with_name("realign.yaml")
"""Realign the emergent-misaligned organism with SAIL-RevKL (the default run of ``sail train``)."""
