"""Batched quintic Newton–Schulz orthogonalisation, in the data space or in the Gram space.

For a wide matrix U (m × n, m ≤ n) Muon replaces U by NS_K(U), K iterations of

    X₀ = U / max(‖U‖_F, ε),    A_k = X_k X_kᵀ,    X_{k+1} = a X_k + (b A_k + c A_k²) X_k,

with (a, b, c) = (3.4445, −4.7750, 2.0315) and K = 5 (the coefficients of ``torch.optim.Muon``).
Each step maps every singular value σ of X_k to p(σ) = aσ + bσ³ + cσ⁵ and keeps the singular
vectors, so NS_K(U) ≈ U_svd·S'·V_svdᵀ with S' roughly in [0.7, 1.2]. A tall matrix is handled as
the transpose of a wide one: NS_K(U) = NS_K(Uᵀ)ᵀ.

**Gram-space iteration (exact).** Every iterate is X_k = Q_k X₀ for an m × m matrix Q_k: with
G = X₀X₀ᵀ, A_k = Q_k G Q_kᵀ and

    Q₀ = I,    Q_{k+1} = (a I + b A_k + c A_k²) Q_k,

so NS_K(U) = (Q_K / max(‖U‖_F, ε)) U. This is an algebraic identity, not an approximation. It
costs one Gram product U Uᵀ and one final product F U (2 × 2m²n flops) plus K small m × m steps,
instead of 2K products of size m²n: for a LoRA factor (m = r ≪ n) that is five times fewer flops.
Since ‖U‖²_F = tr(U Uᵀ), the normalisation also comes from the Gram matrix for free.

For near-square matrices the m³ core dominates, so :func:`orthogonalize` uses the plain data-space
iteration there (``gram_ratio``). Every function is batched over leading dimensions.

Precision: ``"fp32"`` runs the m × n products in float32, ``"bf16"`` in bfloat16 (what torch's
Muon does for the whole iteration); the m × m Gram-space core always runs in float32.
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""(a, b, c) of the quintic p(σ) = aσ + bσ³ + cσ⁵ (torch.optim.Muon's defaults)."""
NS_STEPS = 5
NS_EPS = 1e-7
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_GRAM_RATIO = 4.0
"""Use the Gram-space iteration when long side / short side ≥ this ratio."""


def work_dtype(precision: str, device: torch.device | str | None = None) -> torch.dtype:
    """The dtype of the m × n products: ``auto`` is bfloat16 on CUDA and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _check_coefficients(coefficients, steps: int) -> tuple[float, float, float]:
    if len(coefficients) != 3:
        raise ValueError(f"ns_coefficients must be three numbers (a, b, c), got {coefficients!r}")
    if not 0 <= steps < 100:
        raise ValueError(f"ns_steps must be in [0, 100), got {steps}")
    return tuple(float(x) for x in coefficients)  # type: ignore[return-value]


def _quintic(A: torch.Tensor, a: float, b: float, c: float) -> torch.Tensor:
    """a I + b A + c A² for a batch of square matrices A."""
    poly = torch.baddbmm(A, A, A, beta=b, alpha=c) if A.ndim == 3 else torch.addmm(A, A, A, beta=b, alpha=c)
    poly.diagonal(dim1=-2, dim2=-1).add_(a)
    return poly


def gram_core(G: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = NS_STEPS) -> torch.Tensor:
    """Q_K of the Gram-space iteration for a normalised Gram matrix G = X₀X₀ᵀ (batched, [..., m, m]).

    Q₀ = I, A_k = Q_k G Q_kᵀ, Q_{k+1} = (aI + bA_k + cA_k²) Q_k; then NS_K(X₀) = Q_K X₀.
    """
    a, b, c = _check_coefficients(coefficients, steps)
    batch_shape = G.shape[:-2]
    m = G.shape[-1]
    G3 = G.reshape(-1, m, m)
    Q = torch.eye(m, dtype=G.dtype, device=G.device).expand_as(G3).clone()
    for k in range(steps):
        A = G3 if k == 0 else torch.bmm(torch.bmm(Q, G3), Q.mT)
        poly = _quintic(A, a, b, c)
        Q = poly if k == 0 else torch.bmm(poly, Q)
    return Q.reshape(*batch_shape, m, m)


def left_factor(gram: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = NS_STEPS, eps: float = NS_EPS):
    """F with NS_K(U) = F U, from the *unnormalised* Gram matrix U Uᵀ of a wide U (batched).

    ‖U‖²_F = tr(U Uᵀ); with s = max(‖U‖_F, ε), G = U Uᵀ / s² and F = Q_K(G) / s. Runs in float32
    (or float64 when ``gram`` is float64).
    """
    gram = gram.float() if gram.dtype not in (torch.float32, torch.float64) else gram
    norm = gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=0).sqrt().clamp(min=eps)
    inv = (1.0 / norm)[..., None, None]
    return gram_core(gram * inv * inv, coefficients, steps) * inv


def newton_schulz_direct(X: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = NS_STEPS, eps: float = NS_EPS):
    """The data-space iteration on a batch of wide matrices X [..., m, n] (m ≤ n), in X's dtype."""
    a, b, c = _check_coefficients(coefficients, steps)
    batch_shape = X.shape[:-2]
    m, n = X.shape[-2:]
    X = X.reshape(-1, m, n)
    wide = X.to(torch.promote_types(X.dtype, torch.float32))
    norm = torch.linalg.vector_norm(wide, dim=(-2, -1)).clamp(min=eps)
    X = (wide / norm[:, None, None]).to(X.dtype)
    for _ in range(steps):
        A = torch.bmm(X, X.mT)
        poly = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, poly, X, beta=a)
    return X.reshape(*batch_shape, m, n)


def use_gram(shape, gram_ratio: float = DEFAULT_GRAM_RATIO) -> bool:
    """Whether the Gram-space iteration is the cheaper one for a matrix of this shape."""
    rows, cols = shape[-2:]
    return max(rows, cols) >= gram_ratio * min(rows, cols)


def orthogonalize(
    U: torch.Tensor,
    coefficients=NS_COEFFICIENTS,
    steps: int = NS_STEPS,
    eps: float = NS_EPS,
    precision: str = "fp32",
    gram_ratio: float = DEFAULT_GRAM_RATIO,
) -> torch.Tensor:
    """NS_K(U) for a batch of matrices U [..., rows, cols] (tall ones via the transpose).

    Returns a tensor in the precision's dtype (float32 or bfloat16). ``gram_ratio = inf`` forces
    the data-space iteration, ``gram_ratio = 1`` the Gram-space one.
    """
    if U.ndim < 2:
        raise ValueError(f"orthogonalize needs matrices, got shape {tuple(U.shape)}")
    dtype = work_dtype(precision, U.device)
    tall = U.shape[-2] > U.shape[-1]
    Uw = (U.mT if tall else U).to(dtype)
    if use_gram(U.shape, gram_ratio):
        batch_shape, (m, n) = Uw.shape[:-2], Uw.shape[-2:]
        U3 = Uw.reshape(-1, m, n)
        F = left_factor(torch.bmm(U3, U3.mT), coefficients, steps, eps)
        out = torch.bmm(F.to(dtype), U3).reshape(*batch_shape, m, n)
    else:
        out = newton_schulz_direct(Uw, coefficients, steps, eps)
    return out.mT if tall else out
