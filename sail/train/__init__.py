"""`sail train`: SAIL-RevKL on causal-LM policies with LoRA, through the one loop of :mod:`sail.loop`."""
