"""`sail bench sample`: the fast sampler against plain ``generate`` on a LoRA-adapted Qwen3.

The model is a randomly initialised ``Qwen3ForCausalLM`` with the shapes of a Qwen3 checkpoint
(``--model``; the vocabulary is Qwen3's 151,936 tokens unless ``--vocab`` says otherwise) and a LoRA
adapter (rank ``--rank`` on all 7 projections, B perturbed away from 0 so the adapter matters).
Every engine decodes the same ``--batch`` left-padded prompts for exactly ``--new-tokens`` tokens
(EOS disabled, so lengths are equal) by sampling at temperature 1. Measured in the same run, the
engines taking turns within each repeat (so a passing load on a shared machine hits all alike), best
of ``--repeats`` after one warm-up each:

* ``plain``: ``model.generate`` on the PEFT model (adapter applied on the fly, dynamic cache) — the
  baseline of every ratio;
* ``static``: the same ``generate`` with ``cache_implementation="static"`` (on a GPU, transformers
  compiles the forward of a static-cache ``generate`` by itself);
* ``static_compiled`` (``--compiled-baseline``): the strongest HF baseline, the *base* model
  (adapter disabled) with a static cache and ``torch.compile`` (transformers' ``CompileConfig``;
  mode ``reduce-overhead`` on a GPU, ``default`` elsewhere, where transformers has to be told to
  compile); compile time is in its warm-up;
* ``fast``: :class:`sail.sampling.fast.FastSampler` (merged weights + static cache + lean loop),
  timed *including* the weight refresh that follows every optimiser step in training.

tokens/s = batch × new tokens / seconds. Ratios: ``speedup`` = fast / plain, ``static_speedup`` =
static / plain, ``speedup_vs_static_compiled`` = fast / static_compiled. Timings are reported,
never asserted.
"""

from __future__ import annotations

import time

import torch

from sail.bench.optim import QWEN3_PRESETS
from sail.sampling import SamplingConfig
from sail.sampling.fast import FastSampler
from sail.sampling.hf_generate import HFGenerateSampler
from sail.bench.commands import print_result
from sail.theory.report import table

QWEN3_VOCAB = 151936


def build_adapted_qwen3(preset: str, vocab: int, rank: int, device, dtype, seed: int = 0):
    """A random-init Qwen3 of ``preset`` shapes with a LoRA adapter whose B is perturbed (std 1e-2)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sail.models.lora import LoraAdapterConfig, attach_lora

    config = Qwen3Config(vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=4096, **QWEN3_PRESETS[preset])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(device=device, dtype=dtype).eval()
    model = attach_lora(model, LoraAdapterConfig(rank=rank, alpha=2.0 * rank), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_((1e-2 * torch.randn(p.shape, generator=gen)).to(p))
    return model


def random_prompts(batch: int, length: int, vocab: int, device, seed: int = 0):
    """Left-padded prompts of lengths spread over [length/2, length] (ids avoid 0, the pad id)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=gen)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length)[None] >= (length - lengths)[:, None]).long()
    return (ids * mask).to(device), mask.to(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _best_seconds(fn, repeats: int, device) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _interleaved_best_seconds(fns, repeats: int, device) -> list[float]:
    """Best time of each function over ``repeats`` rounds, the functions taking turns in each round."""
    for fn in fns:  # warm-up
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def run(
    preset="tiny", vocab=QWEN3_VOCAB, rank=32, batch=16, prompt_len=32, new_tokens=32, repeats=3, device="cpu", dtype="float32",
    seed=0, compile=False, compiled_baseline=False,
) -> dict:
    torch_dtype = getattr(torch, dtype)
    model = build_adapted_qwen3(preset, vocab, rank, device, torch_dtype, seed)
    ids, mask = random_prompts(batch, prompt_len, vocab, device, seed)
    sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, stop_at_eos=False)
    fast_sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, stop_at_eos=False, engine="fast", compile=compile)
    gen = torch.Generator().manual_seed(seed)
    plain, fast = HFGenerateSampler(), FastSampler()

    def plain_call():
        out = plain.generate(model, ids, mask, 1, sampling, None, 0, gen)
        assert out.shape == (batch, new_tokens)

    def static_call():
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=0, cache_implementation="static",
            )
        assert out.shape[1] - ids.shape[1] == new_tokens

    from transformers import CompileConfig

    on_gpu = torch.device(device).type == "cuda"
    compile_config = CompileConfig(mode="reduce-overhead" if on_gpu else "default")
    if not on_gpu:
        compile_config._compile_all_devices = True  # transformers' documented switch for compiling off-GPU

    def static_compiled_call():
        with torch.no_grad(), model.disable_adapter():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=0, cache_implementation="static", compile_config=compile_config,
            )
        assert out.shape[1] - ids.shape[1] == new_tokens

    def fast_call():
        if fast._merged is not None:  # the refresh that follows every optimiser step in training
            fast._merged.refresh()
        out = fast.generate(model, ids, mask, 1, fast_sampling, None, 0, gen)
        assert out.shape == (batch, new_tokens)

    calls = [plain_call, static_call, fast_call] + ([static_compiled_call] if compiled_baseline else [])
    t_plain, t_static, t_fast, *t_compiled = _interleaved_best_seconds(calls, repeats, device)
    t_refresh = _best_seconds(fast._merged.refresh, repeats, device)
    tokens = batch * new_tokens
    return {
        "model": f"Qwen3-{preset} shapes, random init",
        "vocab": vocab,
        "rank": rank,
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "dtype": dtype,
        "plain_tokens_per_s": tokens / t_plain,
        "static_tokens_per_s": tokens / t_static,
        "fast_tokens_per_s": tokens / t_fast,
        "speedup": t_plain / t_fast,
        "static_speedup": t_plain / t_static,
        "fast_refresh_ms": t_refresh * 1e3,
        "fast_compiled": compile,
        **({"static_compiled_tokens_per_s": tokens / t_compiled[0], "speedup_vs_static_compiled": t_compiled[0] / t_fast} if t_compiled else {}),
        "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }


def _cmd(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(
        args.model, args.vocab, args.rank, args.batch, args.prompt_len, args.new_tokens, args.repeats, args.device, args.dtype,
        args.seed, args.compile, args.compiled_baseline,
    )
    return print_result(out, args.json, _text)


def _text(out: dict) -> str:
    header = (
        f"{out['model']}, vocab {out['vocab']}, LoRA r={out['rank']}, batch {out['batch']}, {out['new_tokens']} new tokens, "
        f"{out['dtype']}, {out['device']}, {out['threads']} threads, torch {out['torch']}"
    )
    rows = [
        ("generate, LoRA on the fly (plain)", out["plain_tokens_per_s"], 1.0),
        ("generate, static cache", out["static_tokens_per_s"], out["static_speedup"]),
        ("sail fast (merged + static, incl. refresh)", out["fast_tokens_per_s"], out["speedup"]),
    ]
    if "static_compiled_tokens_per_s" in out:
        rows.insert(2, ("generate, base model, static cache, compiled", out["static_compiled_tokens_per_s"],
                        out["static_compiled_tokens_per_s"] / out["plain_tokens_per_s"]))
    refresh = f"weight refresh after an update: {out['fast_refresh_ms']:.2f} ms"
    return "\n".join([header, table(rows, ("sampler", "tokens/s", "/ plain")), refresh])


def register(benches) -> None:
    p = benches.add_parser("sample", help="fast sampler (merged LoRA + static KV cache) vs plain generate")
    p.add_argument("--model", choices=sorted(QWEN3_PRESETS), default="tiny", help="Qwen3 shapes (default tiny)")
    p.add_argument("--vocab", type=int, default=QWEN3_VOCAB)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path (CUDA graphs on a GPU); compile time is in the warm-up")
    p.add_argument("--compiled-baseline", action="store_true",
                   help="also time the base model (adapter off) with a static cache and torch.compile: the strongest HF baseline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
