"""Test-wide settings: the exact worlds are tiny, so torch's intra-op threads only add overhead
(and the suite runs two pytest workers on two cores)."""

import torch

torch.set_num_threads(1)
