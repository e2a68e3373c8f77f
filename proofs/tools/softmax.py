"""A differential algebra for functions of a softmax policy over K responses.

Logit coordinates. One context, K responses, logits u ∈ R^K, π = softmax(u). For log-linear
policies u = Φθ with Φ the K×d feature matrix, so ∇_θ = Φᵀ∇_u and ∇²_θ = Φᵀ∇²_uΦ: a statement
about ∇_u and ∇²_u (for every K) is the statement about θ for every feature map, and the
population objective is the ρ-weighted sum over contexts of such one-context terms.

Symbols (independent generators of a polynomial ring over Q; relations between them enter only
through the derivation rules and the simplex constraint):

    p_i = π_θ(i),  lp_i = log π_θ(i),  q_i = π_ref(i),  lq_i = log π_ref(i),
    u_i, v_i (logits of π_θ and π_ref),  A, A_ref (their log-partitions log Σ_j e^{u_j}),
    l{n}_ij = ℓ_ij⁽ⁿ⁾(Δ_ij), the n-th derivative of an arbitrary smooth pair function ℓ_ij,
    Δ_ij = lp_i − lp_j − lq_i + lq_j (the implicit reward difference),
    plus named scalar parameters (γ, …) that do not depend on u.

The total derivative D_k = ∂/∂u_k acts by the chain rule, seeded with

    D_k p_i = p_i(δ_ik − p_k),   D_k lp_i = δ_ik − p_k,   D_k u_i = δ_ik,   D_k A = p_k,
    D_k (q, lq, v, A_ref, parameters) = 0,   D_k ℓ⁽ⁿ⁾_ij = ℓ⁽ⁿ⁺¹⁾_ij · D_k Δ_ij,

the first two being lemma ``softmax_derivatives`` (proved there from the exponential
definition), the last the one-variable chain rule. Because every ℓ_ij is an arbitrary function,
an identity proved here holds for every pair loss, the SAIL term being one instance.

Canonical form. On the simplex Σp = Σq = 1. Substituting p_K = 1 − Σ_{i<K} p_i (same for q)
gives a polynomial in coordinates that range over an open set, so two expressions agree on the
whole domain iff their canonical polynomials are identical. A non-zero canonical form is turned
into a counterexample by :meth:`SoftmaxAlgebra.check_zero`, which evaluates the difference
exactly at a consistent point (π = softmax(u) rational, lp = log p, …) and certifies its sign.
"""

from __future__ import annotations

import sympy as sp
from sympy.polys.rings import ring

from proofs.tools.exact import certified_sign
from proofs.tools.lemma import Verdict, all_of

__all__ = ["SoftmaxAlgebra", "SoftmaxBlocks", "SympyView", "kron", "lambdify_logits"]


def kron(a: int, b: int) -> int:
    """Kronecker δ_ab."""
    return 1 if a == b else 0


class SoftmaxBlocks:
    """Building blocks shared by the ring algebra and its plain-sympy view (needs attributes
    K, p, q, lp, lq, zero)."""

    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.K) for j in range(self.K)]

    def implicit_reward(self, i: int, j: int):
        """Δ_ij = log π(i)/π_ref(i) − log π(j)/π_ref(j)."""
        return self.lp[i] - self.lp[j] - self.lq[i] + self.lq[j]

    def score(self, i: int) -> list:
        """s_i = ∇_u log π(i) = e_i − π."""
        return [kron(i, a) - self.p[a] for a in range(self.K)]

    def fisher(self) -> list[list]:
        """F = Cov_π(e_y) = diag(π) − ππᵀ, the Fisher information in logit coordinates."""
        K = self.K
        return [[kron(a, b) * self.p[a] - self.p[a] * self.p[b] for b in range(K)] for a in range(K)]

    def expectation_pairs(self, term):
        """Σ_ij π_i π_j term(i, j): the expectation over a pair (y₁, y₂) ~ π ⊗ π."""
        return sum((self.p[i] * self.p[j] * term(i, j) for i, j in self.pairs()), self.zero)


class SympyView(SoftmaxBlocks):
    """The same symbols as plain, unexpanded sympy expressions: claims built on a view stay
    factored, which keeps ``lambdify`` fast (see :func:`lambdify_logits`)."""

    def __init__(self, S: "SoftmaxAlgebra"):
        conv = lambda gens: [g.as_expr() for g in gens]  # noqa: E731
        self.K = S.K
        self.p, self.q, self.lp, self.lq, self.u, self.v = map(conv, (S.p, S.q, S.lp, S.lq, S.u, S.v))
        self.A, self.A_ref = S.A.as_expr(), S.A_ref.as_expr()
        self.ell = [{k: g.as_expr() for k, g in table.items()} for table in S.ell]
        self.params = {k: g.as_expr() for k, g in S.params.items()}
        self.zero = sp.Integer(0)


class SoftmaxAlgebra(SoftmaxBlocks):
    """The symbols of one context with K responses as generators of a polynomial ring over Q,
    the total derivatives D_k and canonical forms (see the module docstring)."""

    def __init__(self, K: int, max_derivative: int = 3, params: tuple[str, ...] = ()):
        if K < 2:
            raise ValueError("a softmax needs K >= 2 responses")
        self.K = K
        self.max_derivative = max_derivative
        r = range(1, K + 1)
        names = [f"{base}{i}" for base in ("p", "q", "lp", "lq", "u", "v") for i in r] + ["A", "A_ref"]
        names += [f"l{n}_{i}{j}" for n in range(max_derivative + 1) for i in r for j in r]
        names += list(params)
        self.ring, *gens = ring(" ".join(names), sp.QQ)
        it = iter(gens)
        take = lambda n: [next(it) for _ in range(n)]  # noqa: E731
        self.p, self.q, self.lp, self.lq, self.u, self.v = (take(K) for _ in range(6))
        self.A, self.A_ref = take(2)
        self.ell = [{(i, j): g for (i, j), g in zip(self.pairs(), take(K * K))} for _ in range(max_derivative + 1)]
        self.params = dict(zip(params, take(len(params))))
        self.zero = self.ring.zero
        self._gen_index = {g: n for n, g in enumerate(gens)}
        self._rules = [self._rules_for(k) for k in range(K)]

    # --- differentiation ------------------------------------------------------------------
    def _rules_for(self, k: int) -> dict:
        rules = {}
        for i in range(self.K):
            rules[self.p[i]] = self.p[i] * (kron(i, k) - self.p[k])
            rules[self.lp[i]] = self.ring(kron(i, k)) - self.p[k]
            rules[self.u[i]] = self.ring(kron(i, k))
        rules[self.A] = self.p[k]
        for n in range(self.max_derivative):
            for (i, j), g in self.ell[n].items():
                d_delta = rules[self.lp[i]] - rules[self.lp[j]]  # D_k Δ_ij (log π_ref is constant)
                rules[g] = self.ell[n + 1][i, j] * d_delta
        return {g: v for g, v in rules.items() if v != 0}

    def d(self, f, k: int):
        """Total derivative ∂f/∂u_k by the chain rule (see the module docstring)."""
        f = self.ring(f)
        present = set()
        for monom in f.itermonoms():
            present.update(n for n, e in enumerate(monom) if e)
        gens = self.ring.gens
        top = {self._gen_index[g] for g in self.ell[self.max_derivative].values()}
        out = self.ring.zero
        for n in present:
            if n in top:
                raise ValueError(f"{gens[n]} is the highest tracked derivative; raise max_derivative")
            rate = self._rules[k].get(gens[n])
            if rate is not None:
                out += f.diff(gens[n]) * rate
        return out

    def grad(self, f) -> list:
        return [self.d(f, k) for k in range(self.K)]

    def hessian(self, f) -> list[list]:
        g = self.grad(f)
        return [[self.d(g[a], b) for b in range(self.K)] for a in range(self.K)]

    # --- canonical forms and counterexamples ----------------------------------------------
    def canonical(self, f):
        K = self.K
        f = self.ring(f)
        f = f.compose(self.p[K - 1], 1 - sum(self.p[: K - 1], self.ring.zero))
        return f.compose(self.q[K - 1], 1 - sum(self.q[: K - 1], self.ring.zero))

    def to_expr(self, f) -> sp.Expr:
        return self.ring(f).as_expr()

    def symbol(self, gen) -> sp.Symbol:
        return gen.as_expr()

    def view(self) -> SympyView:
        return SympyView(self)

    def point(self, seed: int = 0) -> dict:
        """A consistent exact point (sympy symbol → exact value): π = softmax(u) and
        π_ref = softmax(v) with rational probabilities, lp = log p, A = log Σe^u, and small
        rational pair-function values."""
        K = self.K
        w = [sp.Integer(1 + i + (3 * i + seed) % 5) for i in range(K)]
        wr = [sp.Integer(1 + (2 * i + 2 * seed + 1) % 3) for i in range(K)]
        sw, swr = sum(w), sum(wr)
        s = self.symbol
        pt = {s(self.A): sp.log(sw), s(self.A_ref): sp.log(swr)}
        for i in range(K):
            pt[s(self.p[i])], pt[s(self.q[i])] = w[i] / sw, wr[i] / swr
            pt[s(self.lp[i])], pt[s(self.lq[i])] = sp.log(w[i] / sw), sp.log(wr[i] / swr)
            pt[s(self.u[i])], pt[s(self.v[i])] = sp.log(w[i]), sp.log(wr[i])
        for n, table in enumerate(self.ell):
            for (i, j), g in table.items():
                pt[s(g)] = sp.Rational(-(1 + (5 * i + 3 * j + 2 * n + seed) % 7), 4)
        for m, g in enumerate(self.params.values()):
            pt[s(g)] = sp.Rational(3 + m + seed, 2)
        return pt

    def check_zero(self, f, label: str) -> Verdict:
        """Holds iff the canonical form of ``f`` is 0; otherwise report a certified
        counterexample (a consistent point where ``f`` is provably non-zero)."""
        if self.canonical(f) == 0:
            return Verdict(True, f"{label}: canonical form 0 (K={self.K})")
        expr = self.to_expr(f)
        for seed in range(4):
            value = expr.xreplace(self.point(seed))
            if certified_sign(value) != 0:
                detail = f"{label}: counterexample at K={self.K} (point {seed}): value ≈ {float(value):.6g} ≠ 0"
                return Verdict(False, detail)
        return Verdict(False, f"{label}: canonical form non-zero at K={self.K} (no certified witness)")

    def check_vector_zero(self, entries: list, label: str) -> Verdict:
        """:meth:`check_zero` of every entry (labelled ``label[a]``), up to the first failure."""
        checks = (self.check_zero(entry, f"{label}[{a + 1}]") for a, entry in enumerate(entries))
        return all_of(checks, f"{label}: all {len(entries)} entries identical (K={self.K})")

    def check_matrix_zero(self, rows: list[list], label: str) -> Verdict:
        """:meth:`check_zero` of every entry (labelled ``label[a,b]``), up to the first failure."""
        checks = (self.check_zero(entry, f"{label}[{a + 1},{b + 1}]") for a, row in enumerate(rows) for b, entry in enumerate(row))
        return all_of(checks, f"{label}: all {len(rows)}×{len(rows[0])} entries identical (K={self.K})")


def lambdify_logits(S: SoftmaxAlgebra, claim, params: tuple[str, ...] = ()):
    """Numpy function f(p, q, lp, lq, ell, *params) of a claim, with p, q, lp, lq arrays of
    length K and ell an array [3, K, K] of (ℓ, ℓ', ℓ'') at every pair.

    ``claim`` is either a callable that builds the claim from a set of symbols — it is applied
    to :meth:`SoftmaxAlgebra.view`, so the *same* construction that was proved is lambdified in
    factored form — or ring elements (a scalar, a list or a list of lists), lambdified expanded.
    """
    import numpy as np

    K = S.K
    sym = S.symbol
    ell_args = [[[sym(S.ell[n][i, j]) for j in range(K)] for i in range(K)] for n in range(3)]
    args = [
        [sym(g) for g in S.p],
        [sym(g) for g in S.q],
        [sym(g) for g in S.lp],
        [sym(g) for g in S.lq],
        ell_args,
        *[sym(S.params[name]) for name in params],
    ]
    exprs = claim(S.view()) if callable(claim) else claim
    as_expr = lambda e: e if isinstance(e, sp.Basic) else S.to_expr(e)  # noqa: E731
    if isinstance(exprs, list) and exprs and isinstance(exprs[0], list):
        body = sp.Matrix([[as_expr(e) for e in row] for row in exprs])
    elif isinstance(exprs, list):
        body = sp.Matrix([as_expr(e) for e in exprs])
    else:
        body = as_expr(exprs)
    fn = sp.lambdify(args, body, modules="numpy")

    def call(p, q, lp, lq, ell, *values):
        out = np.asarray(fn(p, q, lp, lq, ell, *values), dtype=np.float64)
        return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out

    return call
