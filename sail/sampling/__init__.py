"""Response samplers for causal-LM policies, chosen by ``sampling.engine``.

* ``hf`` (default): ``model.generate`` on the adapted model (:mod:`sail.sampling.hf_generate`).
* ``fast``: a cached copy of the model with the adapter merged into its weights, decoded with a
  static KV cache by a lean loop (:mod:`sail.sampling.fast`).

Both sample from π_θ (same distribution, different random streams); other engines plug in through
:class:`~sail.sampling.base.Sampler` and :func:`register_sampler`.
"""

from sail.sampling.base import SAMPLERS, Sampler, make_sampler, register_sampler
from sail.sampling.config import SAMPLING_ENGINES, SamplingConfig

__all__ = ["SAMPLERS", "SAMPLING_ENGINES", "Sampler", "SamplingConfig", "make_sampler", "register_sampler"]
