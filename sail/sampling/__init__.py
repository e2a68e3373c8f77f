"""Response samplers for causal-LM policies, chosen by ``sampling.engine``.

* ``hf`` (default): ``model.generate`` on the adapted model (:mod:`sail.sampling.hf_generate`).
* ``fast``: a cached copy of the model with the adapter merged into its weights, decoded with a
  static KV cache by a lean loop (:mod:`sail.sampling.fast`).

Both sample from π_θ (same distribution, different random streams); other engines plug in through
:class:`~sail.sampling.base.Sampler` and :func:`~sail.sampling.registry.register_sampler`, after which ``sampling.engine``
accepts their name.
"""

from sail.sampling.base import Sampler
from sail.sampling.config import SamplingConfig
from sail.sampling.fast import FastSampler
from sail.sampling.hf_generate import HFGenerateSampler
from sail.sampling.registry import SAMPLERS, make_sampler, register_sampler

register_sampler("hf", HFGenerateSampler)
register_sampler("fast", FastSampler)

__all__ = ["SAMPLERS", "FastSampler", "HFGenerateSampler", "Sampler", "SamplingConfig", "make_sampler", "register_sampler"]
