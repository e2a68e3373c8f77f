"""r × r Gram cores of LoRA factors: exact spectra and trace moments without forming ΔW.

For ΔW = s·B·A (B: d_out × r, A: r × d_in) let G_A = A Aᵀ and G_B = Bᵀ B (both r × r, PSD).
Then ΔW ΔWᵀ = s² B G_A Bᵀ, whose nonzero eigenvalues are those of P = G_A G_B, so

    Σσ² = s²·tr(G_A G_B),    Σσ⁴ = s⁴·tr((G_A G_B)²),

and the exact σ are the singular values of the r × r core K = C_B C_Aᵀ for any roots with
C_BᵀC_B = G_B and C_AᵀC_A = G_A (K Kᵀ = C_B G_A C_Bᵀ is similar to G_A G_B; here C = Lᵀ from a
Cholesky factor, or Λ^{1/2} Vᵀ from an eigendecomposition where G is singular). Costs:
2r²(d_in + d_out) flops for the Grams, O(r³) for the core; never d_out × d_in.

Batching: factors are grouped by r and every core computation runs once per group. The Gram
products run per factor on CPU (no copies into stacks) and as one ``bmm`` per shape on other
devices (``batching``). On CPU the Cholesky factors run on one thread (:func:`one_thread`) and
the batched SVD is cut across the torch threads (:func:`split_map`); the backward pass writes all
Gram gradients of one side into one buffer from :func:`sail.spectral.memory.fresh_buffer`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from sail.spectral.factors import LoraFactor, group_indices
from sail.spectral.memory import fresh_buffer

BATCHING = ("auto", "loop", "stack")


def _resolve(batching: str, device: torch.device) -> str:
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if batching == "auto":
        return "loop" if device.type == "cpu" else "stack"
    return batching


def _cast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        return x.to(dtype)
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@contextmanager
def one_thread(device: torch.device):
    """Run the enclosed CPU ops on one intra-op thread (torch's thread count is restored after).

    For the batched r × r decompositions: torch loops over the batch calling LAPACK once per
    matrix, and with more threads each 32 × 32 call only adds threading overhead (a batched SVD of
    196 cores: 17.1 ms on 2 threads, 15.6 ms on 1, on a 2-core x86 VM; 43 ms on 2 threads while
    other jobs ran on it). ``torch.set_num_threads`` sets the calling thread's OpenMP and MKL
    thread counts and the count that threads started meanwhile take; running threads keep theirs.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_POOL: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_POOL.clear)  # a forked child has none of the parent's threads


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, each set to one intra-op thread."""
    if workers not in _POOL:
        _POOL[workers] = ThreadPoolExecutor(workers, thread_name_prefix="sail-spectral", initializer=torch.set_num_threads, initargs=(1,))
    return _POOL[workers]


def split_map(fn, n: int, device: torch.device) -> list:
    """``fn(lo, hi)`` (a list for items lo … hi − 1) over ``range(n)``, concatenated: on CPU cut
    into one contiguous chunk per torch thread, each run on its own Python thread with one
    intra-op thread (torch releases the GIL inside each op, and the caller's grad mode is kept);
    elsewhere ``fn(0, n)``.

    For batches of small LAPACK calls, which torch makes one matrix after another on one thread:
    a batched SVD of 196 r × r cores (r = 32) took 14.6 ms whole and 7.4 ms cut in two on a 2-core
    x86 VM, in isolation. Right after a two-thread op the gain shrinks, since libgomp's idle thread
    spins on the other core before it sleeps (docs/inner_update.md); the r × d Gram products gained
    nothing this way inside a penalty step.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or n < 2:
        return fn(0, n)
    parts = min(threads, n)
    bounds = [n * i // parts for i in range(parts + 1)]
    grad_mode = torch.is_grad_enabled()  # thread-local: a worker starts with gradients on

    def run(lo, hi):
        with torch.set_grad_enabled(grad_mode):
            return fn(lo, hi)

    futures = [_pool(parts - 1).submit(run, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    with one_thread(device):
        out = fn(bounds[0], bounds[1])
    for future in futures:
        out += future.result()
    return out


class _Grams(torch.autograd.Function):
    """Stacked Gram matrices of a list of factors, as one autograd node.

    ``left``: G_i = X_i X_iᵀ, backward dX_i = (g_i + g_iᵀ) X_i; otherwise G_i = X_iᵀ X_i,
    backward dX_i = X_i (g_i + g_iᵀ). One product per factor each way, where autograd's
    ``X @ X.mT`` would take two products and a sum in the backward pass.
    """

    @staticmethod
    def forward(ctx, left: bool, *xs):
        ctx.left = left
        ctx.save_for_backward(*xs)
        return torch.stack([x @ x.mT if left else x.mT @ x for x in xs])

    @staticmethod
    def backward(ctx, g):
        xs = ctx.saved_tensors
        sym = g + g.mT
        needed = [x for x, need in zip(xs, ctx.needs_input_grad[1:]) if need]
        flat = None  # every gradient a view of one buffer of warm memory (sail.spectral.memory)
        if needed and not torch.is_grad_enabled() and len({(x.dtype, x.device) for x in needed}) == 1:
            flat = fresh_buffer(sum(x.numel() for x in needed), needed[0].dtype, needed[0].device)
        grads, offset = [], 0
        for x, gi, need in zip(xs, sym.unbind(0), ctx.needs_input_grad[1:]):
            if not need:
                grads.append(None)
                continue
            out = None if flat is None else flat[offset : offset + x.numel()].view(x.shape)
            offset += x.numel()
            grads.append(torch.matmul(gi, x, out=out) if ctx.left else torch.matmul(x, gi, out=out))
        return (None, *grads)


def factor_grams(
    factors: list[LoraFactor], dtype: torch.dtype | None = None, batching: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_A, G_B), each [n, r, r], for factors that share r (differentiable).

    ``dtype`` None computes in the factors' dtype (half precisions upcast to float32).
    """
    if not factors:
        raise ValueError("no factors")
    if len({f.rank for f in factors}) != 1:
        raise ValueError("factor_grams needs factors of one rank r; group them with group_indices first")
    mode = _resolve(batching, factors[0].A.device)
    if mode == "loop":
        As = [_cast(f.A, dtype) for f in factors]
        Bs = [_cast(f.B, dtype) for f in factors]
        return _Grams.apply(True, *As), _Grams.apply(False, *Bs)

    def stacked(tensors, left: bool) -> torch.Tensor:
        parts, order = [], []
        for idx in group_indices(tuple(t.shape) for t in tensors).values():
            X = torch.stack([_cast(tensors[i], dtype) for i in idx])
            parts.append(torch.bmm(X, X.mT) if left else torch.bmm(X.mT, X))
            order.extend(idx)
        out = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    return stacked([f.A for f in factors], True), stacked([f.B for f in factors], False)


def trace_product(G_A: torch.Tensor, G_B: torch.Tensor) -> torch.Tensor:
    """tr(G_A G_B) = Σ_ij (G_A)_ij (G_B)_ij (symmetric G's) = Σσ² of B·A; batched, differentiable."""
    return (G_A * G_B).sum((-2, -1))


def trace_moments(G_A: torch.Tensor, G_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tr P, tr P²) with P = G_A G_B, i.e. (Σσ², Σσ⁴) of B·A (without s); batched, differentiable.

    tr P as :func:`trace_product`, and tr(P²) = Σ_ij P_ij P_ji.
    """
    t2 = trace_product(G_A, G_B)
    P = G_A @ G_B
    t4 = (P * P.mT).sum((-2, -1))
    return t2, t4


def _psd_root(G: torch.Tensor) -> torch.Tensor:
    """C with CᵀC = G, for a batch of symmetric PSD G: Lᵀ from the Cholesky factor G = L Lᵀ where
    that succeeds (G positive definite in working precision), else Λ^{1/2} Vᵀ from G = V Λ Vᵀ.

    Both are backward stable (CᵀC = G + δG, ‖δG‖ = O(u‖G‖)); a Cholesky factor costs r³/3 flops and
    no iteration, so only the singular members of the batch (B = 0, rank-deficient factors, r > d)
    pay for an eigendecomposition.
    """
    L, info = torch.linalg.cholesky_ex(G)
    C = L.mT
    failed = info != 0
    if bool(failed.any()):
        evals, evecs = torch.linalg.eigh(G[failed])
        C = C.clone()
        C[failed] = evals.clamp(min=0).sqrt()[..., :, None] * evecs.mT
    return C


def _core(G_A: torch.Tensor, G_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K, C_B, C_A): roots C_BᵀC_B = G_B, C_AᵀC_A = G_A and K = C_B C_Aᵀ, whose singular values are
    the σ of B·A: K Kᵀ = C_B G_A C_Bᵀ and KᵀK = C_A G_B C_Aᵀ are similar to G_A G_B and G_B G_A."""
    C_B, C_A = _psd_root(G_B), _psd_root(G_A)
    return C_B @ C_A.mT, C_B, C_A


class _GramEigenvalues(torch.autograd.Function):
    """λ = eig(G_A G_B) ascending, via the r × r core K = C_B C_Aᵀ, with a backward that only uses gλ.

    Forward: K = W Σ W'ᵀ (one SVD), λ = σ². Then M = K Kᵀ = C_B G_A C_Bᵀ = W Λ Wᵀ and
    M' = KᵀK = C_A G_B C_Aᵀ = W' Λ W'ᵀ. Backward, for a symmetric function F = Σ f(λ_i)
    (gλ_i = f'(λ_i)):

        ∂F/∂G_A = C_Bᵀ W diag(gλ) Wᵀ C_B,    ∂F/∂G_B = C_Aᵀ W' diag(gλ) W'ᵀ C_A

    (= G_B f'(G_A G_B) and G_A f'(G_B G_A) for polynomial f; each holds for any root C with
    CᵀC = G, since M depends on G_A only through C_B G_A C_Bᵀ with C_B fixed). No 1/(λ_i − λ_j)
    appears, so repeated and zero singular values give finite gradients. For a non-symmetric use
    of λ (one chosen λ_i inside a repeated cluster) the result is a valid but arbitrary subgradient.
    """

    @staticmethod
    def forward(ctx, G_A, G_B):
        with one_thread(G_A.device):
            K, C_B, C_A = _core(G_A, G_B)
        W, sigma, W2h = (torch.cat(parts) for parts in zip(*split_map(lambda lo, hi: [torch.linalg.svd(K[lo:hi])], len(K), K.device)))
        ctx.save_for_backward(C_B, W, C_A, W2h.mT)
        return (sigma * sigma).flip(-1)

    @staticmethod
    def backward(ctx, g):
        C_B, W, C_A, W2 = ctx.saved_tensors
        g = g.flip(-1)  # the singular values come descending
        grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            CW = C_B.mT @ W
            grad_A = (CW * g[..., None, :]) @ CW.mT
        if ctx.needs_input_grad[1]:
            CW2 = C_A.mT @ W2
            grad_B = (CW2 * g[..., None, :]) @ CW2.mT
        return grad_A, grad_B


def gram_eigenvalues(G_A: torch.Tensor, G_B: torch.Tensor) -> torch.Tensor:
    """The r eigenvalues of G_A G_B (= σ² of B·A, padded with zeros), ascending, ≥ 0.

    Batched over leading dimensions; differentiable (see :class:`_GramEigenvalues`). Without a
    gradient to track only the singular values of K are computed.
    """
    if torch.is_grad_enabled() and (G_A.requires_grad or G_B.requires_grad):
        return _GramEigenvalues.apply(G_A, G_B)
    with one_thread(G_A.device):
        K = _core(G_A, G_B)[0]
    sigma = torch.cat(split_map(lambda lo, hi: [torch.linalg.svdvals(K[lo:hi])], len(K), K.device))
    return (sigma * sigma).flip(-1)


def spectra_from_grams(G_A: torch.Tensor, G_B: torch.Tensor, scaling: torch.Tensor, k: int) -> torch.Tensor:
    """σ₁ ≥ … ≥ σ_k of s·B·A from the Gram cores (no gradient): s·√eig, top k, descending."""
    with torch.no_grad():
        lam = gram_eigenvalues(G_A, G_B).flip(-1)[..., :k]
        return scaling[..., None].to(lam.dtype) * lam.sqrt()
