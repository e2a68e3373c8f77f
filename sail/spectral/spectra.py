"""``lora_spectra(model)``: the exact singular values of every LoRA update ΔW = s·B·A.

σ² are the eigenvalues of the r × r Gram core (:mod:`sail.spectral.gram`), computed in float64
by default: forming G_A = AAᵀ squares the condition number, so in float32 a zero singular value
would come out near √ε₃₂·σ₁ ≈ 3e-4·σ₁, while in float64 the error is about 1e-8·σ₁, below the
float32 rounding of ``torch.linalg.svdvals(s·B@A)`` itself. ``dtype=torch.float32`` is faster
and exact for the large singular values. ΔW is never formed.
"""

from __future__ import annotations

import torch

from sail.spectral.factors import LoraFactor, group_indices, lora_factors
from sail.spectral.gram import factor_grams, spectra_from_grams


def _out_dtype(factor: LoraFactor) -> torch.dtype:
    return torch.promote_types(factor.A.dtype, torch.float32)


@torch.no_grad()
def lora_spectra(
    model, adapter: str | None = None, dtype: torch.dtype = torch.float64, batching: str = "auto"
) -> dict[str, torch.Tensor]:
    """{module name: σ₁ ≥ … ≥ σ_k of s·B·A}, k = min(r, d_in, d_out).

    ``model`` is a module with PEFT LoRA layers or a list of :class:`LoraFactor`; the tensors
    are returned in the factors' dtype (at least float32), on their device.
    """
    factors = lora_factors(model, adapter)
    out: dict[str, torch.Tensor] = {}
    for idx in group_indices((f.rank, f.A.device) for f in factors).values():
        group = [factors[i] for i in idx]
        G_A, G_B = factor_grams(group, dtype=dtype, batching=batching)
        scaling = torch.tensor([f.scaling for f in group], dtype=G_A.dtype, device=G_A.device)
        sigma = spectra_from_grams(G_A, G_B, scaling, group[0].rank)
        for f, s in zip(group, sigma.unbind(0)):
            out[f.name] = s[: f.max_rank].to(_out_dtype(f))
    return {f.name: out[f.name] for f in factors}


def reference_spectra(model, adapter: str | None = None) -> dict[str, torch.Tensor]:
    """The slow reference: ``torch.linalg.svdvals(s·B@A)`` per module (forms ΔW; tests only)."""
    with torch.no_grad():
        return {
            f.name: torch.linalg.svdvals(f.scaling * (f.B @ f.A))[: f.max_rank] for f in lora_factors(model, adapter)
        }
