"""Test-wide settings.

* The exact worlds are tiny, so torch's intra-op threads only add overhead (and the suite runs two
  pytest workers on two cores).
* Hypothesis runs derandomised: every run (and CI) checks the same examples, so a failure is
  reproducible rather than a flake; change the seed locally with ``--hypothesis-seed``.
* ``base_dir`` and ``prompt_files``: a tiny Qwen3 built by the addition task in seconds, and its
  prompt, held-out and pair files, shared by the trainer's tests (:mod:`tiny_runs` has the overrides).
"""

import json

import pytest
import torch
from hypothesis import settings

from sail.tasks import default as task

torch.set_num_threads(1)
settings.register_profile("sail", derandomize=True, deadline=None)
settings.load_profile("sail")


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    task.build_base_model(out, seed=0, steps=40, n_eval=0)
    return out


@pytest.fixture(scope="session")
def prompt_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    task.write_prompts_jsonl(d / "train.jsonl", task.sample_prompts(64, seed=1))
    task.write_prompts_jsonl(d / "eval.jsonl", task.sample_prompts(8, seed=2))
    pairs = []
    for p in task.sample_prompts(16, seed=3):
        pairs.append({"prompt": p, "chosen": task.correct(p), "rejected": "0"})
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return d
