"""Spectra of LoRA updates ΔW = s·B·A without forming ΔW, flatness metrics and penalties.

* :func:`lora_spectra` — exact singular values per module from r × r Gram cores
  (:mod:`sail.spectral.spectra`, :mod:`sail.spectral.gram`);
* :func:`flatness` — participation ratio, normalised entropy, stable rank, condition number
  (:mod:`sail.spectral.metrics`);
* :func:`penalty` — differentiable flatness penalty, default k/PR − 1 from traces; also Rényi,
  Shannon entropy and the Frobenius-to-nuclear ratio (:mod:`sail.spectral.penalty`);
* :class:`SpectralLogger` — per-module-type spectra every N steps, as JSONL
  (:mod:`sail.spectral.logging`); plots in :mod:`sail.spectral.plots`.
"""

from sail.spectral.config import SpectralConfig
from sail.spectral.factors import LoraFactor, lora_factors
from sail.spectral.gram import gram_eigenvalues, trace_moments
from sail.spectral.logging import SpectralLogger, read_jsonl
from sail.spectral.metrics import flatness
from sail.spectral.penalty import PENALTY_KINDS, module_penalties, penalty
from sail.spectral.spectra import lora_spectra

__all__ = [
    "PENALTY_KINDS",
    "LoraFactor",
    "SpectralConfig",
    "SpectralLogger",
    "flatness",
    "gram_eigenvalues",
    "lora_factors",
    "lora_spectra",
    "module_penalties",
    "penalty",
    "read_jsonl",
    "trace_moments",
]
