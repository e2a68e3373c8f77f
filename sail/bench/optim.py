"""`sail bench optim`: the inner update on the LoRA factor set of a Qwen3 adapter.

The factor set is that of a Qwen3-0.6B adapter by default: LoRA r = 32 on all 7 projections
(q, k, v, o, gate, up, down) of 28 layers, i.e. 392 factors and 20.2M parameters, randomly
initialised (A uniform as PEFT's Kaiming init, B and the gradients Gaussian); no model is
downloaded or built, only the factor tensors with the right shapes. Measured in the same run
(best of ``--repeats`` after one warm-up, milliseconds):

* ``adamw``: ``torch.optim.AdamW`` step with its defaults — the baseline of every ratio;
* ``muon``: :class:`sail.optim.Muon` step (batched, Gram-space Newton–Schulz);
* ``torch_muon``: ``torch.optim.Muon`` step (one factor at a time, bf16 iteration);
* ``penalty_<kind>``: :func:`sail.spectral.penalty` value + backward over all modules, for every
  kind of :data:`sail.spectral.PENALTY_KINDS`, from freshly cleared gradients (the gradient
  tensors are allocated inside the timing, as after ``zero_grad()`` in training). These and the
  AdamW step are timed in interleaved rounds (AdamW, then each kind, ``--repeats`` times), so
  that a change of load on a shared machine hits the baseline and the penalty alike;
* ``spectra``: :func:`sail.spectral.lora_spectra` (exact, float64 Gram cores);
* ``qr_spectra``: looped QR reference: svdvals(R_B R_Aᵀ) from QR of B and Aᵀ, per module;
* ``svd``: ``torch.linalg.svdvals(s·B@A)`` per module, timed on ``--svd-layers`` layers and
  extrapolated linearly to all layers (it forms every ΔW).

Ratios ``<x>_over_adamw`` = time(x) / time(AdamW step). Timings are reported, never asserted.
"""

from __future__ import annotations

import math
import time

import torch

from sail.optim import make_optimizer
from sail.spectral import PENALTY_KINDS, LoraFactor, lora_spectra, penalty
from sail.bench.commands import print_result
from sail.theory.report import table

_SHARED = dict(num_key_value_heads=8, head_dim=128)
QWEN3_PRESETS = {
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_hidden_layers=28, **_SHARED),
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_hidden_layers=28, **_SHARED),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_attention_heads=32, num_hidden_layers=36, **_SHARED),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2, head_dim=16),
}
"""Shapes of the Qwen3 checkpoints' configs (the fields a LoRA factor set depends on); ``tiny``
is a 2-layer, width-64 shape for smoke runs."""


def projection_shapes(cfg) -> list[tuple[str, int, int]]:
    """(kind, d_in, d_out) of the 7 linear projections of one Qwen3 decoder layer."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return [
        ("q_proj", h, q),
        ("k_proj", h, kv),
        ("v_proj", h, kv),
        ("o_proj", q, h),
        ("gate_proj", h, inter),
        ("up_proj", h, inter),
        ("down_proj", inter, h),
    ]


def qwen3_config(preset: str = "0.6b"):
    from transformers import Qwen3Config

    return Qwen3Config(**QWEN3_PRESETS[preset])


def lora_factor_set(cfg, rank: int = 32, alpha: float = 64.0, layers: int | None = None, device="cpu", seed: int = 0):
    """Random LoRA factors (as Parameters with random .grad) for every projection of every layer."""
    gen = torch.Generator().manual_seed(seed)
    factors = []
    for layer in range(cfg.num_hidden_layers if layers is None else layers):
        for kind, d_in, d_out in projection_shapes(cfg):
            bound = 1.0 / math.sqrt(d_in)
            A = (torch.rand(rank, d_in, generator=gen) * 2 - 1) * bound
            B = torch.randn(d_out, rank, generator=gen) * 1e-3
            A, B = torch.nn.Parameter(A.to(device)), torch.nn.Parameter(B.to(device))
            name = f"model.layers.{layer}.{'self_attn' if kind in ('q_proj', 'k_proj', 'v_proj', 'o_proj') else 'mlp'}.{kind}"
            factors.append(LoraFactor(name, A, B, alpha / rank, kind))
    return factors


def _named_params(factors):
    out = []
    for f in factors:
        out.append((f.name + ".lora_A.default.weight", f.A))
        out.append((f.name + ".lora_B.default.weight", f.B))
    return out


def _set_grads(params, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.device)


def _best_ms(fns: dict, repeats: int, device, warmup: int = 1) -> dict:
    """{name: best milliseconds} over ``repeats`` rounds after ``warmup`` untimed ones; each round runs
    every fn once, in order (interleaved, so a change of load hits every fn alike)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = {name: math.inf for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def _penalty_step(factors, params, kind):
    def step():
        for p in params:
            p.grad = None
        penalty(factors, kind).backward()

    return step


def _qr_spectra(factors):
    with torch.no_grad():
        return [
            f.scaling * torch.linalg.svdvals(torch.linalg.qr(f.B).R @ torch.linalg.qr(f.A.mT).R.mT) for f in factors
        ]


def _svd_spectra(factors):
    with torch.no_grad():
        return [torch.linalg.svdvals(f.scaling * (f.B @ f.A)) for f in factors]


def run(
    preset="0.6b", rank=32, repeats=5, torch_muon_repeats=1, svd_layers=1, device="cpu", precision="auto", seed=0, layers=None
) -> dict:
    """All timings and ratios; ``layers`` limits the factor set to the first layers (smoke tests)."""
    cfg = qwen3_config(preset)
    factors = lora_factor_set(cfg, rank, layers=layers, device=device, seed=seed)
    named = _named_params(factors)
    params = [p for _, p in named]
    _set_grads(params, seed + 1)

    def timed(fn, repeats: int, warmup: int = 1) -> float:
        return _best_ms({"fn": fn}, repeats, device, warmup)["fn"]

    adamw = torch.optim.AdamW(params)
    steps = {"adamw": adamw.step, **{kind: _penalty_step(factors, params, kind) for kind in PENALTY_KINDS}}
    best = _best_ms(steps, repeats, device)  # each penalty step leaves every .grad set for AdamW's next step
    t_adamw = best["adamw"]
    t_penalty = {kind: best[kind] for kind in PENALTY_KINDS}
    muon = make_optimizer("muon", named, precision=precision)
    t_muon = timed(muon.step, repeats)
    torch_muon = torch.optim.Muon(params)
    t_torch_muon = timed(torch_muon.step, torch_muon_repeats, warmup=0)

    t_spectra = timed(lambda: lora_spectra(factors), repeats)
    t_qr = timed(lambda: _qr_spectra(factors), max(1, repeats // 2))
    per_layer = len(projection_shapes(cfg))
    svd_subset = factors[: per_layer * svd_layers]
    t_svd = timed(lambda: _svd_spectra(svd_subset), 1, warmup=0) * len(factors) / len(svd_subset)
    times = {
        "adamw_ms": t_adamw,
        "muon_ms": t_muon,
        "torch_muon_ms": t_torch_muon,
        **{f"penalty_{kind}_ms": t for kind, t in t_penalty.items()},
        "spectra_ms": t_spectra,
        "qr_spectra_ms": t_qr,
        "svd_ms_extrapolated": t_svd,
    }
    return {
        "model": f"Qwen3-{preset.upper()}",
        "rank": rank,
        "layers": cfg.num_hidden_layers if layers is None else layers,
        "factors": len(params),
        "lora_params": sum(p.numel() for p in params),
        **times,
        "muon_over_adamw": t_muon / t_adamw,
        "torch_muon_over_adamw": t_torch_muon / t_adamw,
        "muon_speedup_vs_torch_muon": t_torch_muon / t_muon,
        **{f"penalty_{kind}_over_adamw": t / t_adamw for kind, t in t_penalty.items()},
        "spectra_over_adamw": t_spectra / t_adamw,
        "qr_spectra_over_adamw": t_qr / t_adamw,
        "svd_over_adamw": t_svd / t_adamw,
        "svd_layers_timed": svd_layers,
        "muon_precision": precision,
        "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _cmd(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(
        args.model, args.rank, args.repeats, args.torch_muon_repeats, args.svd_layers, args.device, args.precision,
        args.seed, args.layers,
    )
    return print_result(out, args.json, _text)


def _text(out: dict) -> str:
    rows = [
        ("AdamW step (torch)", out["adamw_ms"], 1.0),
        ("Muon step (sail, batched Gram-space)", out["muon_ms"], out["muon_over_adamw"]),
        ("Muon step (torch.optim.Muon)", out["torch_muon_ms"], out["torch_muon_over_adamw"]),
        *[
            (f"spectral penalty {kind}, value + gradient", out[f"penalty_{kind}_ms"], out[f"penalty_{kind}_over_adamw"])
            for kind in PENALTY_KINDS
        ],
        ("exact spectra (Gram cores, float64)", out["spectra_ms"], out["spectra_over_adamw"]),
        ("spectra by looped QR", out["qr_spectra_ms"], out["qr_spectra_over_adamw"]),
        ("svdvals(s·B@A), extrapolated", out["svd_ms_extrapolated"], out["svd_over_adamw"]),
    ]
    header = (
        f"{out['model']} LoRA r={out['rank']}, {out['factors']} factors ({out['lora_params'] / 1e6:.1f}M params), "
        f"{out['device']}, {out['threads']} threads, torch {out['torch']}"
    )
    speedup = f"sail Muon is {out['muon_speedup_vs_torch_muon']:.1f}x faster than torch.optim.Muon"
    return "\n".join([header, table(rows, ("computation", "ms", "/ AdamW step")), speedup])


def register(benches) -> None:
    p = benches.add_parser("optim", help="Muon / AdamW steps, spectral penalty and spectra on a Qwen3 LoRA factor set")
    p.add_argument("--model", choices=sorted(QWEN3_PRESETS), default="0.6b", help="Qwen3 shapes (default 0.6b)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--layers", type=int, default=None, help="only the first N layers (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (best is reported); rounds of AdamW and the penalties")
    p.add_argument("--torch-muon-repeats", type=int, default=1, help="repeats for the slow torch.optim.Muon step")
    p.add_argument("--svd-layers", type=int, default=1, help="layers timed for the svdvals reference")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="Muon's Newton–Schulz products")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
