"""``--save DIR``: what an independent tool needs to recompute J_γ at θ₀, at the probe point and at θ*.

    DIR/model/                      the base network (save_pretrained, float64); for ``lora`` and
                                    ``head`` it is the reference
    DIR/adapter_{ref,probe,star}/   PEFT adapters (float64) at θ₀, the probe point, θ*   (LoRA)
    DIR/head_{ref,probe,star}.safetensors   one tensor ``delta`` [V, d], added to the head's weight
    DIR/instance.json               prompts, ρ, responses and rewards per prompt, EOS, T, β, γ, KL
                                    direction, R, parametrisation

For ``lora_nonzero_init`` the reference is the base network with ``adapter_ref``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sail.io import write_json_atomically
from sail.theory.llm.parametrisation import DTYPE, Parametrisation


def save_point(param: Parametrisation, theta: np.ndarray, directory: Path, name: str) -> Path:
    """Write θ as ``adapter_<name>/`` (LoRA) or ``head_<name>.safetensors`` (head)."""
    values = param.unflatten(torch.as_tensor(theta, dtype=DTYPE))
    if param.kind == "head":
        path = directory / f"head_{name}.safetensors"
        (delta,) = values.values()
        save_file({"delta": delta.detach().contiguous().clone()}, str(path))
        return path
    path = directory / f"adapter_{name}"
    param.write(theta)
    try:
        param.model.save_pretrained(str(path))
    finally:
        param.write(param.theta0)
    return path


def save_run(param: Parametrisation, points: dict[str, np.ndarray], directory: Path) -> list[Path]:
    """The model, one file or folder per point (``ref``, ``probe``, ``star``), and instance.json."""
    from transformers.utils import logging as hf_logging

    directory.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    param.base.save_pretrained(str(directory / "model"))
    written = [directory / "model"]
    written += [save_point(param, theta, directory, name) for name, theta in points.items()]
    path = directory / "instance.json"
    write_json_atomically(path, param.instance.to_json(), indent=1, end="")
    return written + [path]
