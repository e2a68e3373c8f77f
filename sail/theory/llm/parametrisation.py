"""The trainable parameters θ of the tiny Qwen3, as one flat float64 vector, and log π_θ over 𝒴.

Three parametrisations of the same base network:

* ``lora``: a PEFT LoRA adapter (ΔW = s·B·A on all 7 linear projections), standard
  initialisation B = 0, so π_θ₀ is the base model and the reference is the adapter disabled;
* ``lora_nonzero_init``: the same adapter with B ≠ 0 at θ₀; the reference is the policy at θ₀
  (a frozen copy of the starting adapter, :mod:`sail.models.frozen_start`);
* ``head``: a dense delta Δ on the output head (:mod:`sail.models.head`), Δ = 0 at θ₀; the
  reference is the base model (the delta disabled).

In all three π_ref = π_θ₀. :meth:`Parametrisation.log_probs` evaluates log π_θ(y|x) for every prompt
and every response by ``torch.func.functional_call`` with θ substituted for the trainable tensors,
so that ``torch.func`` gives exact gradients and Hessians in θ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from sail.models.frozen_start import frozen_start_reference
from sail.models.head import attach_delta_head
from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3
from sail.theory.llm.enumeration import prefix_inputs, prefix_log_probs_from_logits
from sail.theory.llm.config import CheckerModelConfig
from sail.theory.llm.instance import LLMInstance

DTYPE = torch.float64


class Float64RMSNorm(torch.nn.Module):
    """y = w ⊙ x / √(mean(x²) + ε) in the input's precision (at least float32).

    Stock ``Qwen3RMSNorm`` computes in float32 whatever the input dtype, which would leave a
    float64 network accurate to ~1e-7 only; the checker swaps its class for this one (same weight
    and ε, so the same function up to round-off)."""

    weight: torch.nn.Parameter
    variance_epsilon: float

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.to(torch.promote_types(hidden_states.dtype, torch.float32))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(hidden_states.dtype)


def float64_norms(model) -> int:
    """Swap every RMS norm of ``model`` for :class:`Float64RMSNorm`; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            module.__class__ = type("Float64" + type(module).__name__, (Float64RMSNorm, type(module)), {})
            count += 1
    return count


def base_model(spec: CheckerModelConfig):
    """The tiny float64 Qwen3 with a real EOS token (the last id), SDPA attention (float64 throughout,
    unlike the eager path's float32 softmax), float64 norms."""
    model = tiny_qwen3(
        spec.seed,
        dtype=DTYPE,
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        layers=spec.layers,
        heads=spec.heads,
        kv_heads=spec.kv_heads,
        initializer_range=spec.init_std,
        eos_token_id=spec.eos_token_id,
        pad_token_id=spec.eos_token_id,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    model.generation_config.eos_token_id = spec.eos_token_id
    model.generation_config.pad_token_id = spec.eos_token_id
    float64_norms(model)
    return model


@dataclass
class Parametrisation:
    """θ ↦ log π_θ(y|x) on the instance's prompts and responses, for one set of trainable tensors.

    ``model`` holds the trainable tensors (named ``names``, shapes ``shapes``); ``base`` is an
    untouched copy of the base network (what ``DIR/model/`` saves); ``reference`` is a context
    factory under which ``model`` computes π_ref; ``theta0`` is θ₀ (the ball's centre).
    """

    kind: str
    model: torch.nn.Module
    base: torch.nn.Module
    names: list[str]
    shapes: list[torch.Size]
    theta0: torch.Tensor
    reference: Callable[[], ContextManager]
    prompts: list[torch.Tensor]
    instance: LLMInstance

    @property
    def dim(self) -> int:
        return int(self.theta0.numel())

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = int(np.prod(shape))
            out[name] = theta[start : start + size].view(shape)
            start += size
        return out

    def trainable(self) -> list[torch.nn.Parameter]:
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def write(self, theta) -> None:
        """Copy θ into the model's trainable tensors."""
        values = self.unflatten(torch.as_tensor(theta, dtype=DTYPE))
        for p, name in zip(self.trainable(), self.names):
            p.copy_(values[name])

    def read(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.trainable()]).to(DTYPE)

    def prefix_log_probs(self, theta: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs [S, T, V] after every prefix of ``prompt`` (see enumeration)."""
        ids = prefix_inputs(prompt, self.instance.responses)
        with sdpa_kernel(SDPBackend.MATH):  # twice differentiable (the fused CPU kernel is not)
            logits = functional_call(self.model, self.unflatten(theta), args=(), kwargs={"input_ids": ids}).logits
        return prefix_log_probs_from_logits(logits, prompt.numel())

    def log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """log π_θ(y|x) [X, N] for every prompt x and every listed response y."""
        responses = self.instance.responses
        return torch.stack([responses.log_probs(self.prefix_log_probs(theta, x)) for x in self.prompts])

    @torch.no_grad()
    def final_hidden_states(self) -> torch.Tensor:
        """The decoder's final (normed) hidden states at every position that predicts a response
        token, over all prompts: [X·S·T, d]. Frozen in the ``head`` parametrisation."""
        decoder = self.model.get_decoder()
        rows = []
        for x in self.prompts:
            ids = prefix_inputs(x, self.instance.responses)
            rows.append(decoder(input_ids=ids).last_hidden_state[:, x.numel() - 1 :].reshape(-1, self.base.config.hidden_size))
        return torch.cat(rows)

    def identifiable_basis(self) -> np.ndarray:
        """Orthonormal basis [P, k] of the directions in which J_γ is not constant.

        ``head``: J_γ depends on Δ only through the centred logits (I − 11ᵀ/V)Δh_t at the enumerated
        hidden states h_t, so Δ ↦ Δ + 1uᵀ (every softmax unchanged) and Δ ↦ Δ + v wᵀ with
        w ⊥ span{h_t} are null, and U = (centred ℝ^V) ⊗ span{h_t}, of dimension (V − 1)·rank{h_t}
        (row-major coordinates of Δ [V, d]). LoRA: no linear null direction in general (the rescaling
        symmetry (cB, A/c) is not a linear subspace), U = all of θ-space."""
        if self.kind != "head":
            return np.eye(self.dim)
        vocab = self.instance.model.vocab_size
        centred = orthonormal_range(np.eye(vocab) - 1.0 / vocab)
        return np.kron(centred, orthonormal_range(self.final_hidden_states().numpy()))

    def lora_a_mask(self) -> np.ndarray:
        """Boolean mask over θ of the LoRA A-factor entries (all False for the head)."""
        return np.concatenate([np.full(int(np.prod(s)), "lora_A" in n) for n, s in zip(self.names, self.shapes)])


def orthonormal_range(rows: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis [d, k] of the span of the rows of ``rows`` [m, d]."""
    _, sing, vt = np.linalg.svd(rows, full_matrices=False)
    if sing.size == 0 or sing[0] == 0:
        return np.zeros((rows.shape[1], 0))
    return vt[: int(np.sum(sing > rtol * sing[0]))].T


def _trainable(model) -> tuple[list[str], list[torch.Size], torch.Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta0 = torch.cat([p.detach().flatten() for _, p in named]).to(DTYPE)
    return [n for n, _ in named], [p.shape for _, p in named], theta0


def build_parametrisation(instance: LLMInstance) -> Parametrisation:
    """The model and trainable tensors of ``instance.parametrisation`` (deterministic in the seed)."""
    spec = instance.model
    model = base_model(spec)
    base = copy.deepcopy(model)
    kind = instance.parametrisation
    if kind == "head":
        head = attach_delta_head(model)
        reference = head.disabled
    else:
        model = attach_lora(model, LoraAdapterConfig(rank=spec.lora_rank, alpha=spec.lora_alpha), seed=spec.seed).to(DTYPE)
        if kind == "lora_nonzero_init":
            generator = torch.Generator().manual_seed(spec.seed + 1)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.copy_(spec.lora_b_init_std * torch.randn(p.shape, generator=generator, dtype=DTYPE))
            reference = frozen_start_reference(model)
        else:
            reference = model.disable_adapter
    model.eval()
    names, shapes, theta0 = _trainable(model)
    prompts = [torch.tensor(p, dtype=torch.long) for p in instance.prompts]
    return Parametrisation(kind, model, base, names, shapes, theta0, reference, prompts, instance)
