"""Test-wide settings.

* The exact worlds are tiny, so torch's intra-op threads only add overhead (and the suite runs two
  pytest workers on two cores).
* Hypothesis runs derandomised: every run (and CI) checks the same examples, so a failure is
  reproducible rather than a flake; change the seed locally with ``--hypothesis-seed``.
"""

import torch
from hypothesis import settings

torch.set_num_threads(1)
settings.register_profile("sail", derandomize=True, deadline=None)
settings.load_profile("sail")
