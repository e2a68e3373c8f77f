"""`sail bench logprob`: peak memory and time of the loss's log-prob computation on a large vocabulary.

One ``score_pairs`` call (policy log-probs, reference log-probs, exact per-position KL) plus its
backward, on a random-init Qwen3 of ``--model`` shapes with Qwen3's 151,936-token vocabulary and a
LoRA adapter, for ``--batch`` prompts × 2 responses of ``--response-len`` tokens. Two versions,
each in its own process so that peaks do not mix:

* ``before``: all response logits from the HF forward (``logits_to_keep = T + 1``), float32
  log-softmax per position — what the policy did before :mod:`sail.policies.logprobs`;
* ``after``: final hidden states, LM head in checkpointed chunks (the policy now).

Peak memory is the increase over the state just before the call: ``torch.cuda.max_memory_allocated``
on a GPU, the peak resident set size on the CPU. ``memory_ratio`` = before / after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from sail.io import dumps_strict, loads_strict


def _plain_score_pairs(policy, prompts, responses, direction):
    import torch
    import torch.nn.functional as F

    from sail.objectives import kl_exact

    logits, tokens, mask = policy._response_logits(prompts, responses)
    with torch.no_grad(), policy.model.disable_adapter():
        ref_logits, _, _ = policy._response_logits(prompts, responses)
    lp, ref_lp, kl = [], [], []
    for t in range(logits.shape[1]):
        lsm = F.log_softmax(logits[:, t].float(), dim=-1)
        ref_lsm = F.log_softmax(ref_logits[:, t].float(), dim=-1)
        lp.append(lsm.gather(-1, tokens[:, t : t + 1]).squeeze(-1))
        ref_lp.append(ref_lsm.gather(-1, tokens[:, t : t + 1]).squeeze(-1))
        kl.append(kl_exact(lsm, ref_lsm, direction))
    stack = lambda xs: (torch.stack(xs, 1) * mask).sum(-1)  # noqa: E731
    return stack(lp), stack(ref_lp), stack(kl)


def measure(opts: dict) -> dict:
    import resource

    import torch

    from sail.bench.sample import build_adapted_qwen3, random_prompts
    from sail.policies.causal_lm import CausalLMPolicy, ResponseBatch

    device = torch.device(opts["device"])
    dtype = getattr(torch, opts["dtype"])
    model = build_adapted_qwen3(opts["model"], opts["vocab"], 16, device, dtype)
    policy = CausalLMPolicy(model, None, 0)
    ids, mask = random_prompts(opts["batch"], 32, opts["vocab"], device)
    from sail.policies.causal_lm import PromptBatch

    prompts = PromptBatch(ids, mask)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, opts["vocab"], (opts["batch"], 2, opts["response_len"]), generator=gen).to(device)
    responses = ResponseBatch(tokens, torch.ones_like(tokens))

    def step():
        if opts["version"] == "before":
            lp, _, kl = _plain_score_pairs(policy, prompts, responses, "policy_to_ref")
        else:
            lp, _, kl = policy.score_pairs(prompts, responses, "policy_to_ref")
            kl = kl * 2  # score_pairs averages the KL over the 2 responses
        (lp.sum() + kl.sum()).backward()

    for p in policy.trainable_parameters():
        p.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_mem = torch.cuda.memory_allocated()
    else:
        start_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start_mem
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start_mem
    return {"seconds": time.perf_counter() - start, "peak_mb": peak / 2**20}


def run(model="tiny", vocab=151936, batch=8, response_len=64, device=None, dtype="float32") -> dict:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for version in ("before", "after"):
        opts = dict(model=model, vocab=vocab, batch=batch, response_len=response_len, device=device, dtype=dtype, version=version)
        proc = subprocess.run([sys.executable, "-m", "sail.bench.logprob", json.dumps(opts)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sail bench logprob ({version}) failed:\n{proc.stderr[-3000:]}")
        out[version] = loads_strict(proc.stdout.strip().splitlines()[-1])
    full_logits_mb = 2 * batch * response_len * vocab * 4 / 2**20
    return {
        "model": f"Qwen3-{model} shapes, random init",
        "vocab": vocab,
        "sequences": 2 * batch,
        "response_len": response_len,
        "dtype": dtype,
        "fp32_logits_of_all_positions_mb": full_logits_mb,
        "before_peak_mb": out["before"]["peak_mb"],
        "after_peak_mb": out["after"]["peak_mb"],
        "memory_ratio": out["before"]["peak_mb"] / max(out["after"]["peak_mb"], 1e-9),
        "before_seconds": out["before"]["seconds"],
        "after_seconds": out["after"]["seconds"],
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }


def _cmd(args) -> int:
    from sail.bench.commands import print_result

    return print_result(run(args.model, args.vocab, args.batch, args.response_len, args.device, args.dtype), args.json, _text)


def _text(out: dict) -> str:
    from sail.theory.report import table

    rows = [("all logits (before)", out["before_peak_mb"], out["before_seconds"]), ("chunked (after)", out["after_peak_mb"], out["after_seconds"])]
    return "\n".join([
        f"{out['model']}, vocab {out['vocab']}, {out['sequences']} sequences × {out['response_len']} response tokens, {out['device']}",
        table(rows, ("log-probs + KL, forward + backward", "peak MB", "seconds")),
        f"memory before / after: {out['memory_ratio']:.1f}x (float32 logits of all positions: {out['fp32_logits_of_all_positions_mb']:.0f} MB)",
    ])


def register(benches) -> None:
    import torch

    from sail.bench.optim import QWEN3_PRESETS

    p = benches.add_parser("logprob", help="peak memory of log-probs + KL on a 152k vocabulary: all logits vs chunked")
    p.add_argument("--model", choices=sorted(QWEN3_PRESETS), default="tiny")
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--batch", type=int, default=8, help="prompts (2 responses each)")
    p.add_argument("--response-len", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    print(dumps_strict(measure(json.loads(sys.argv[1]))))
