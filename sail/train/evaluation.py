"""Evaluation on held-out prompts: the oracle's reward of the policy and of the reference, the win
rate, and both sequence KLs, each estimated without bias on draws from its first argument; with the
texts and rewards per prompt, for ``completions.jsonl``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from accelerate.utils import gather_object

from sail.oracles import OracleError, call_user_function, scorer_name


class Evaluation(NamedTuple):
    """One evaluation: the ``eval/*`` metrics, and per held-out prompt (in the order of the prompts)
    a dict with ``prompt``, ``response``, ``reward``, ``reference_response`` and ``reference_reward``."""

    metrics: dict
    samples: list[dict]


@torch.no_grad()
def evaluate(policy, oracle, eval_prompts: list, eval_metrics, accelerator, device) -> Evaluation:
    """Held-out prompts: oracle reward of the policy and the reference, win rate, KL; plus
    ``eval_metrics(prompts, responses)`` of both when given. Each process scores its share of the
    prompts; the per-prompt results are gathered (the metrics in the gathered order, the samples
    back in the prompts' order).

    Common random numbers: policy and reference sample with identically seeded generators, so their
    difference is not blurred by independent sampling noise (equal at step 0)."""
    process, processes = accelerator.process_index, accelerator.num_processes
    mine = eval_prompts[process :: processes]
    per_prompt = []
    if mine:
        prompts = policy.encode_prompts(mine, device)
        responses = policy.sample(prompts, 1, generator=torch.Generator().manual_seed(777 + process))
        with policy.reference():
            ref_responses = policy.sample(prompts, 1, generator=torch.Generator().manual_seed(777 + process))
        r_policy = oracle.scores(prompts, responses)[:, 0].tolist()
        r_ref = oracle.scores(prompts, ref_responses)[:, 0].tolist()
        # unbiased estimates of the sequence KLs: each on prefixes drawn from its first argument
        kls = policy.per_position_kl(prompts, responses, "policy_to_ref").tolist()
        ref_kls = policy.per_position_kl(prompts, ref_responses, "ref_to_policy").tolist()
        texts = [row[0] for row in responses.texts] if responses.texts else [""] * len(mine)
        ref_texts = [row[0] for row in ref_responses.texts] if ref_responses.texts else [""] * len(mine)
        indices = range(process, len(eval_prompts), processes)  # where each of ``mine`` sits in eval_prompts
        per_prompt = list(zip(r_policy, r_ref, kls, ref_kls, mine, texts, ref_texts, indices))
    if processes > 1:
        per_prompt = gather_object(per_prompt)
    columns = list(zip(*per_prompt))
    r_policy, r_ref, kl, ref_kl = (torch.tensor(column, dtype=torch.float64) for column in columns[:4])
    win = ((r_policy > r_ref).double() + 0.5 * (r_policy == r_ref).double()).mean()
    out = {
        "eval/reward_mean": float(r_policy.mean()),
        "eval/reference_reward_mean": float(r_ref.mean()),
        "eval/win_rate_vs_reference": float(win),
        "eval/kl_policy_to_ref": float(kl.mean()),
        "eval/kl_ref_to_policy": float(ref_kl.mean()),
    }
    if eval_metrics is not None:  # e.g. the judge's misalignment rates
        prompts_text, texts, ref_texts = (list(c) for c in columns[4:7])
        for key, value in _metrics(eval_metrics, prompts_text, texts).items():
            out[f"eval/{key}"] = value
        for key, value in _metrics(eval_metrics, prompts_text, ref_texts).items():
            out[f"eval/reference_{key}"] = value
    samples = [
        {"prompt": prompt, "response": text, "reward": reward, "reference_response": ref_text, "reference_reward": ref_reward}
        for reward, ref_reward, _, _, prompt, text, ref_text, _ in sorted(per_prompt, key=lambda row: row[-1])
    ]
    return Evaluation(out, samples)


def _metrics(eval_metrics, prompts: list, texts: list) -> dict:
    """``run.eval_metrics(prompts, texts)``, a mapping of metric name to value; an exception inside it
    or anything else returned is one :class:`~sail.oracles.OracleError` naming the key."""
    returned = call_user_function(eval_metrics, "run.eval_metrics", f"measuring {len(texts)} responses", prompts, texts)
    if not isinstance(returned, dict):
        raise OracleError(f"run.eval_metrics ({scorer_name(eval_metrics)}) returned {type(returned).__name__}, not a mapping of name to number")
    return returned
