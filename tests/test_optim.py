"""sail.optim: exactness against torch.optim.Muon and Lion's formula, routing, convergence."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sail.models.lora import LORA_TARGETS_ALL_LINEAR
from sail.optim import Lion, Muon, OptimizerConfig, adjusted_lr, make_optimizer, orthogonalize, route_parameters
from sail.optim.newton_schulz import NS_COEFFICIENTS, gram_core, left_factor, newton_schulz_direct
from sail.spectral import PENALTY_KINDS, LoraFactor, penalty

PROJECTIONS = list(LORA_TARGETS_ALL_LINEAR)


# --- references -------------------------------------------------------------------------------
def ns_exact(U: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The quintic Newton–Schulz iteration in float64, straight from its definition."""
    a, b, c = NS_COEFFICIENTS
    X = U.double()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def muon_exact(params, grads_per_step, lr, wd, momentum=0.95, nesterov=True, adjust=None):
    """Muon's update rule in float64, one tensor at a time (the test's own reference)."""
    params = [p.double().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            g = g.double()
            bufs[i] = momentum * bufs[i] + (1 - momentum) * g
            u = (1 - momentum) * g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = (1 - lr * wd) * params[i] - adjusted_lr(lr, adjust, params[i].shape) * ns_exact(u)
    return params


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return ((x.double() - y.double()).norm() / y.double().norm()).item()


SHAPES = [(4, 64), (4, 64), (64, 4), (64, 4), (48, 4), (8, 8), (6, 10), (5, 40)]


# --- Newton–Schulz ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 64), (64, 4), (16, 16), (7, 9), (3, 200)])
def test_gram_space_iteration_is_the_data_space_iteration(shape):
    U = torch.randn(3, *shape, dtype=torch.float64)
    Uw = U.mT if shape[0] > shape[1] else U
    via_gram = left_factor(Uw @ Uw.mT) @ Uw
    direct = newton_schulz_direct(Uw)
    assert (via_gram - direct).abs().max().item() < 1e-12
    assert torch.allclose(direct[1], ns_exact(Uw[1]).to(direct.dtype), atol=1e-12)


def test_gram_core_is_a_polynomial_in_G():
    """Q_K commutes with G (it is a polynomial in G), and Q₀ = I for zero steps."""
    X = torch.randn(5, 30, dtype=torch.float64)
    X = X / X.norm()
    G = X @ X.T
    Q = gram_core(G)
    assert torch.allclose(Q @ G, G @ Q, atol=1e-12)
    assert torch.equal(gram_core(G, steps=0), torch.eye(5, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 48),
    log_scale=st.floats(-4, 4),
    seed=st.integers(0, 2**16),
    gram_ratio=st.sampled_from([1.0, 4.0, math.inf]),
)
def test_orthogonalize_fp32_equals_exact(m, n, log_scale, seed, gram_ratio):
    U = torch.randn(m, n, generator=torch.Generator().manual_seed(seed)) * 10.0**log_scale
    out = orthogonalize(U, precision="fp32", gram_ratio=gram_ratio)
    assert out.shape == U.shape and out.dtype == torch.float32
    assert (out.double() - ns_exact(U)).abs().max().item() < 2e-4


@pytest.mark.parametrize("shape", [(4, 64), (64, 4), (32, 1024), (16, 16), (12, 30)])
def test_orthogonalize_sits_within_torch_bf16_rounding(shape):
    """torch's bf16 iteration is ~1e-2 from exact; ours (fp32) is ~1e-6 from exact."""
    U = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    exact = ns_exact(U)
    p = torch.nn.Parameter(torch.zeros(shape))
    p.grad = U.clone()
    torch.optim.Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0).step()  # p = −s·NS(U)
    theirs = -p.detach() / adjusted_lr(1.0, None, shape)
    ours = orthogonalize(U, precision="fp32")
    ours_bf16 = orthogonalize(U, precision="bf16")
    torch_error = rel(theirs, exact)
    assert 1e-4 < torch_error < 0.05
    assert rel(ours, exact) < 1e-4
    assert rel(ours, theirs) <= torch_error + 1e-4
    assert rel(ours_bf16, exact) < torch_error + 0.01


def test_zero_gradient_gives_zero_update():
    assert torch.equal(orthogonalize(torch.zeros(3, 4, 50)), torch.zeros(3, 4, 50))
    p = torch.nn.Parameter(torch.ones(4, 50))
    p.grad = torch.zeros(4, 50)
    Muon([p], lr=0.1, weight_decay=0.0).step()
    assert torch.equal(p.detach(), torch.ones(4, 50))


# --- Muon against torch.optim.Muon --------------------------------------------------------------
@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batching", ["loop", "stack"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_takes_torch_muon_steps(adjust, precision, batching, nesterov):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) for s in SHAPES]
    steps = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(5)]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    theirs = [torch.nn.Parameter(p.clone()) for p in start]
    kw = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust, nesterov=nesterov)
    opt = make_optimizer("muon", ours, precision=precision, batching=batching, **kw)
    ref = torch.optim.Muon(theirs, **kw)
    for grads in steps:
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    exact = muon_exact(start, steps, 0.02, 0.1, nesterov=nesterov, adjust=adjust)
    for p0, p, q, e in zip(start, ours, theirs, exact):
        torch_error = rel(q.detach() - p0, e - p0.double())
        assert torch_error < 0.05
        assert rel(p.detach() - p0, q.detach() - p0) <= torch_error + (1e-3 if precision == "fp32" else 0.02)
        assert rel(p.detach() - p0, e - p0.double()) < (1e-4 if precision == "fp32" else 0.02)


def test_muon_defaults_are_torch_defaults():
    p = [torch.nn.Parameter(torch.randn(4, 32))]
    ours, theirs = make_optimizer("muon", p), torch.optim.Muon(p)
    for key in ("lr", "weight_decay", "momentum", "nesterov", "eps", "ns_steps", "adjust_lr_fn"):
        assert ours.defaults[key] == theirs.defaults[key], key
    assert tuple(ours.defaults["ns_coefficients"]) == tuple(theirs.defaults["ns_coefficients"])


def test_muon_rejects_non_matrices_and_bad_options():
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.randn(3))])
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.randn(3, 3))], adjust_lr_fn="bogus")
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.randn(3, 3))], precision="fp8")


def test_muon_state_dict_round_trip():
    gen = torch.Generator().manual_seed(3)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES[:4]]
    grads = [[torch.randn(p.shape, generator=gen) for p in a] for _ in range(4)]
    opt = make_optimizer("muon", a, lr=0.01)
    for g in grads[:2]:
        for p, gi in zip(a, g):
            p.grad = gi.clone()
        opt.step()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = make_optimizer("muon", b, lr=0.01)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint round trip would
    for g in grads[2:]:
        for p, q, gi in zip(a, b, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        opt.step()
        opt_b.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_muon_adamw_groups_are_torch_adamw():
    gen = torch.Generator().manual_seed(4)
    start = [torch.randn(5, generator=gen), torch.randn(3, 4, generator=gen)]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    theirs = [torch.nn.Parameter(p.clone()) for p in start]
    opt = Muon([{"params": ours, "use_muon": False, "lr": 3e-3, "weight_decay": 0.05}])
    ref = torch.optim.AdamW(theirs, lr=3e-3, weight_decay=0.05)
    for _ in range(3):
        for p, q in zip(ours, theirs):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs):
        assert torch.allclose(p, q, atol=1e-7)


# --- Lion -------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-5, 1e-1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.999),
    wd=st.floats(0.0, 1.0),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lion_matches_its_formula(lr, beta1, beta2, wd, foreach, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (7,), (2, 2, 2)]
    theta = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    params = [torch.nn.Parameter(t.clone()) for t in theta]
    opt = Lion(params, lr=lr, betas=(beta1, beta2), weight_decay=wd, foreach=foreach)
    m = [torch.zeros_like(t) for t in theta]
    for _ in range(4):
        grads = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            c = beta1 * m[i] + (1 - beta1) * g
            theta[i] = theta[i] - lr * (torch.sign(c) + wd * theta[i])
            m[i] = beta2 * m[i] + (1 - beta2) * g
    for p, t in zip(params, theta):
        assert torch.allclose(p.detach(), t, rtol=1e-12, atol=1e-12)


# --- Adam (coupled L2) -------------------------------------------------------------------------
def _adam_reference_step(theta, grad, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """One step of Adam from zero moments, written out, with the coupled L2 term g + λθ."""
    g = grad + wd * theta
    m = (1 - betas[0]) * g
    v = (1 - betas[1]) * g * g
    m_hat, v_hat = m / (1 - betas[0]), v / (1 - betas[1])
    return theta - lr * m_hat / (v_hat.sqrt() + eps)


@pytest.mark.parametrize("wd", [0.0, 1e-2, 0.3])
def test_adam_is_torch_adam_on_the_gradient_plus_coupled_l2(wd):
    """One step of ``adam`` = torch.optim.Adam without decay fed g + λθ by hand = the written-out step;
    for λ > 0 it differs from AdamW's step at the same λ (coupled vs decoupled)."""
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(6, 5, dtype=torch.float64, generator=gen) * 3
    grad = torch.randn(6, 5, dtype=torch.float64, generator=gen) * 1e-2  # small, so λθ matters
    ours, by_hand, decoupled = (torch.nn.Parameter(theta.clone()) for _ in range(3))
    opt = make_optimizer("adam", [ours], lr=0.1, weight_decay=wd)
    ref = torch.optim.Adam([by_hand], lr=0.1, weight_decay=0.0)
    adamw = make_optimizer("adamw", [decoupled], lr=0.1, weight_decay=wd)
    ours.grad, decoupled.grad = grad.clone(), grad.clone()
    by_hand.grad = grad + wd * theta
    for o in (opt, ref, adamw):
        o.step()
    assert torch.allclose(ours.detach(), by_hand.detach(), rtol=1e-14, atol=1e-14)
    assert torch.allclose(ours.detach(), _adam_reference_step(theta, grad, 0.1, wd), rtol=1e-12, atol=1e-12)
    gap = (ours - decoupled).abs().max().item()
    assert (gap > 1e-3) if wd > 0 else (gap < 1e-14)


def test_adam_defaults_and_options():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    adam, adamw = make_optimizer("adam", [p]), make_optimizer("adamw", [p])
    assert isinstance(adam, torch.optim.Adam) and not adam.defaults["decoupled_weight_decay"]
    for key in ("lr", "weight_decay", "betas", "eps"):
        assert adam.defaults[key] == adamw.defaults[key], key
    assert adam.defaults["weight_decay"] == 1e-2 and adam.defaults["lr"] == 1e-3
    assert make_optimizer("adam", [p], weight_decay=0.0, amsgrad=True).defaults["amsgrad"]
    with pytest.raises(TypeError):
        make_optimizer("adam", [p], decoupled_weight_decay=True)
    assert OptimizerConfig("adam", weight_decay=0.05).build([p]).defaults["weight_decay"] == 0.05
    from sail.config import FieldError

    with pytest.raises(FieldError, match="decoupled_weight_decay"):
        OptimizerConfig("adam", options={"decoupled_weight_decay": True})


# --- routing and the factory --------------------------------------------------------------------
@pytest.fixture(scope="module")
def peft_model():
    import peft

    from sail.models.tiny import tiny_qwen3

    base = tiny_qwen3(0, vocab_size=64, hidden_size=32, layers=2, heads=4, kv_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS, lora_bias=True)  # a 1-D B bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lora_bias on a layer without bias: merging impossible"
        return peft.get_peft_model(base, lora)


def _group_names(opt, use_muon):
    return [n for g in opt.param_groups if g.get("use_muon") == use_muon for n in g["param_names"]]


def test_peft_routing_both_and_B(peft_model):
    opt = make_optimizer("muon", peft_model, lr=0.02, adamw_lr=3e-4)
    muon, adamw = _group_names(opt, True), _group_names(opt, False)
    assert len(muon) == 2 * 7 * 2 and all(".lora_A." in n or ".lora_B." in n for n in muon)
    assert adamw and all(n.endswith("lora_B.default.bias") for n in adamw)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 3e-4]
    opt_b = make_optimizer("muon", peft_model, muon_on="B")
    assert all(".lora_B." in n for n in _group_names(opt_b, True))
    assert sum(".lora_A." in n for n in _group_names(opt_b, False)) == 7 * 2


def test_plain_routing_and_errors():
    named = [("w", torch.nn.Parameter(torch.randn(3, 4))), ("b", torch.nn.Parameter(torch.randn(3)))]
    muon, other = route_parameters(named)
    assert [n for n, _ in muon] == ["w"] and [n for n, _ in other] == ["b"]
    with pytest.raises(ValueError):
        route_parameters(named, muon_on="B")
    with pytest.raises(ValueError):
        make_optimizer("adagrad", named)
    with pytest.raises(TypeError):
        make_optimizer("adamw", named, muon_on="B")


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "lion", "muon"])
def test_every_trainable_parameter_changes(peft_model, name):
    model = peft_model
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = OptimizerConfig(name, lr=1e-2, weight_decay=0.0).build(model)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # B = 0 at step 1 gives A a zero gradient; A moves from step 2
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    changed = {n: not torch.equal(p, state[n]) for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])
    assert all(changed.values()), [n for n, c in changed.items() if not c]


# --- closed-form convergence ------------------------------------------------------------------
LS_HPARAMS = {
    "adamw": dict(lr=0.05, weight_decay=0.0),
    "sgd": dict(lr=0.2, momentum=0.9),
    "lion": dict(lr=0.005),
    "muon": dict(lr=0.05, weight_decay=0.0),
}


def _cosine(opt, steps):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))


@pytest.mark.parametrize("weight", [0.0, 0.01])
@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "muon"])
def test_least_squares_lora_converges(name, weight):
    """min ½‖B A − W*‖² (+ λ·penalty) over LoRA factors; W* has a flat rank-r spectrum, so the
    penalty vanishes at the optimum and both problems have optimal value 0."""
    gen = torch.Generator().manual_seed(0)
    d_out, d_in, r = 12, 16, 4
    U, _ = torch.linalg.qr(torch.randn(d_out, r, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(d_in, r, generator=gen))
    target = U @ V.T
    A = torch.nn.Parameter((torch.rand(r, d_in, generator=gen) * 2 - 1) / math.sqrt(d_in))
    B = torch.nn.Parameter(torch.zeros(d_out, r))
    opt = make_optimizer(name, [("m.lora_A.w", A), ("m.lora_B.w", B)], **LS_HPARAMS[name])
    steps = 500
    sched = _cosine(opt, steps)
    factor = [LoraFactor("m", A, B)]
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((B @ A - target) ** 2).sum()
        if weight:
            loss = loss + weight * penalty(factor)
        loss.backward()
        opt.step()
        sched.step()
    final = 0.5 * ((B @ A - target) ** 2).sum().item()
    assert final < 1e-3 * 0.5 * target.pow(2).sum().item()


@pytest.fixture(scope="module")
def loglinear_problem():
    """A log-linear SAIL-RevKL instance with θ = θ_ref + vec(W), W ∈ R^{2×3}, and its optima.

    The penalised objective is J_γ(W) − λ·penalty(ΔW = W) (a LoRA factor with A = I); its
    maximiser W*_λ is found by Newton's method (the problem is strongly concave near it).
    """
    from sail.policies.loglinear import LogLinearPolicy
    from sail.theory.instance import random_instance

    inst = random_instance(3, n_contexts=3, n_responses=8, dim=6, beta=1.0, gamma=1.0)
    policy = LogLinearPolicy(inst.features, inst.theta_ref)
    reward = torch.as_tensor(inst.reward)
    rho = torch.as_tensor(inst.context_probs)
    eye = torch.eye(3, dtype=torch.float64)

    def objective(W, weight):
        theta = policy.theta_ref + W.reshape(-1)
        value = policy.population(reward, rho, inst.beta, inst.gamma, inst.kl, theta=theta, order=0).value
        if weight:
            value = value - weight * penalty([LoraFactor("w", eye, W)])
        return value

    optima = {}
    for weight in (0.0, 0.01):
        w = torch.zeros(6, dtype=torch.float64)
        for _ in range(30):
            f = lambda v: -objective(v.reshape(2, 3), weight)  # noqa: E731
            grad = torch.autograd.functional.jacobian(f, w)
            hess = torch.autograd.functional.hessian(f, w)
            step = torch.linalg.solve(hess, grad)
            w = w - step
            if step.norm() < 1e-13:
                break
        assert torch.linalg.eigvalsh(hess)[0] > 0  # a strict local maximum of the objective
        optima[weight] = w.reshape(2, 3)
    return objective, optima


LOGLINEAR_HPARAMS = {
    "adamw": dict(lr=0.05, weight_decay=0.0),
    "sgd": dict(lr=1.0, momentum=0.9),
    "lion": dict(lr=0.01),
    "muon": dict(lr=0.05, weight_decay=0.0),
}


@pytest.mark.parametrize("weight", [0.0, 0.01])
@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "muon"])
def test_loglinear_sail_revkl_converges(loglinear_problem, name, weight):
    objective, optima = loglinear_problem
    W = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    opt = make_optimizer(name, [W], **LOGLINEAR_HPARAMS[name])
    steps = 400
    sched = _cosine(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        (-objective(W, weight)).backward()
        opt.step()
        sched.step()
    target = optima[weight]
    assert (W.detach() - target).norm().item() < 1e-3 * (1 + target.norm().item())
    with torch.no_grad():
        assert objective(target, weight).item() - objective(W, weight).item() < 1e-6


# --- the benchmark (a smoke run: timings are reported, never asserted) ------------------------------
def test_bench_optim_smoke():
    from sail.bench.optim import run
    from sail.cli import build_parser

    args = build_parser().parse_args(["bench", "optim", "--json", "--layers", "1"])
    assert args.json and args.layers == 1 and args.model == "0.6b"
    out = run("tiny", layers=1, repeats=1, rank=8)
    penalties = [f"penalty_{kind}" for kind in PENALTY_KINDS]
    assert penalties == ["penalty_pr", "penalty_renyi", "penalty_entropy", "penalty_fro_nuclear"]
    for name in ("muon", "torch_muon", *penalties, "spectra", "qr_spectra"):  # each ratio is of the two recorded timings
        assert out[f"{name}_over_adamw"] == pytest.approx(out[f"{name}_ms"] / out["adamw_ms"], rel=1e-12)
    assert out["svd_over_adamw"] == pytest.approx(out["svd_ms_extrapolated"] / out["adamw_ms"], rel=1e-12)
    assert out["muon_speedup_vs_torch_muon"] == pytest.approx(out["torch_muon_ms"] / out["muon_ms"], rel=1e-12)
    # the tiny shape (width 64, MLP 128, 4 heads and 2 key-value heads of 16): r·(d_in + d_out) per projection
    d_in_out = {"q": 64 + 64, "k": 64 + 32, "v": 64 + 32, "o": 64 + 64, "gate": 64 + 128, "up": 64 + 128, "down": 128 + 64}
    assert out["factors"] == 2 * 7 and out["lora_params"] == 8 * sum(d_in_out.values())
    assert out["threads"] == torch.get_num_threads()
