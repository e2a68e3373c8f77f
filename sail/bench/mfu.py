"""Model FLOPs utilisation (MFU) of the LoRA training step.

Model FLOPs of one ``loss_backward`` phase (policy forward, reference forward, backward), counting
only the work the step needs, for S sequences of padded length L = P + T (P prompt, T response
positions), a decoder of ``n_layers`` layers of width d whose linear layers hold N_lin weights, and
an LM head of d × V applied at the R response positions only (the chunked head of
:mod:`sail.policies.logprobs`):

* forward:  F = 2·N_lin·S·L + 2·d·V·R + 4·n_layers·S·L²·d   (linear layers, LM head, QKᵀ and AV);
* backward: the base weights are frozen, so only input gradients: 2·N_lin·S·L + 2·d·V·R for the
  linear layers and the head, 8·n_layers·S·L²·d for attention (two products per forward product);
* reference: one more forward, F;
* the LoRA factors (W_lora = Σ r·(d_in + d_out) over adapted layers): forward, input gradient and
  the factors' own gradient, 6·W_lora·S·L (the reference runs without them).

So FLOPs = 3·(2·N_lin·S·L + 2·d·V·R) + 16·n_layers·S·L²·d + 6·W_lora·S·L. This is below the usual 6·N·tokens of
full fine-tuning (no weight gradients), and it is the honest count for LoRA. Work the
implementation does beyond it is not counted: the LM head's checkpoint recompute in the backward,
the reference logits recomputed inside each chunk for the exact KL (:mod:`sail.policies.logprobs`),
and the one position of logits each HF forward computes (``CausalLMPolicy._response_hidden``).
Nor is the KL's own work under the default ``sequence`` estimator of KL(π_ref‖π_θ): the reference
decode and the forwards on its draws (:func:`sail.loop.sail_loss`), so MFU is then a lower bound.

MFU = FLOPs / seconds / peak. Two peaks: the datasheet's dense peak for the dtype on known GPUs
(:data:`DATASHEET_TFLOPS`), and the matmul throughput measured on this device in the same process
(:func:`measured_matmul_tflops`), which is the only one available on a CPU.
"""

from __future__ import annotations

import time

import torch

DATASHEET_TFLOPS = {
    # dense tensor-core peaks (no sparsity), TFLOP/s: (name fragment, dtype) -> peak
    ("H100 80GB HBM3", "bfloat16"): 989.4, ("H100 80GB HBM3", "float16"): 989.4, ("H100 80GB HBM3", "float32"): 494.7,
    ("H100 PCIe", "bfloat16"): 756.0, ("H100 PCIe", "float16"): 756.0, ("H100 PCIe", "float32"): 378.0,
    ("H200", "bfloat16"): 989.4, ("H200", "float16"): 989.4, ("H200", "float32"): 494.7,
    ("A100", "bfloat16"): 312.0, ("A100", "float16"): 312.0, ("A100", "float32"): 156.0,
}
"""float32 entries are TF32 tensor-core peaks (what ``torch.backends.cuda.matmul.allow_tf32`` uses)."""


def lora_weights(model) -> int:
    """W_lora: Σ r·(d_in + d_out) over the LoRA factors (their parameter count)."""
    return sum(p.numel() for name, p in model.named_parameters() if "lora_A" in name or "lora_B" in name)


def linear_weights(model) -> int:
    """N_lin: weights of the base model's linear layers inside the decoder (LoRA factors, embeddings
    and the LM head excluded)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name and not name.endswith("lm_head"):
            total += module.weight.numel()
    return total


def step_flops(
    n_linear: int, n_layers: int, hidden: int, vocab: int, sequences: int, length: int, response_positions: int, n_lora: int = 0
) -> float:
    """Model FLOPs of policy forward + reference forward + backward (module docstring)."""
    dense = 2.0 * n_linear * sequences * length + 2.0 * hidden * vocab * response_positions
    attention = 4.0 * n_layers * sequences * length**2 * hidden
    return 3.0 * dense + 4.0 * attention + 6.0 * n_lora * sequences * length


def datasheet_tflops(device, dtype: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for (fragment, kind), peak in DATASHEET_TFLOPS.items():
        if fragment in name and kind == dtype:
            return peak
    return None


def measured_matmul_tflops(device, dtype: str, size: int = 0, repeats: int = 5) -> float:
    """Best throughput of a square matmul in ``dtype`` on ``device`` (4096 on a GPU, 1024 on a CPU)."""
    device = torch.device(device)
    size = size or (4096 if device.type == "cuda" else 1024)
    dt = getattr(torch, dtype)
    if device.type == "cpu" and dt != torch.float32:
        dt = torch.float32  # CPU half-precision matmuls are emulated; the CPU peak is float32's
    a = torch.randn(size, size, device=device, dtype=dt)
    b = torch.randn(size, size, device=device, dtype=dt)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first is a warm-up
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12
