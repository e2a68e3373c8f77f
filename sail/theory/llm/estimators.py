"""The training step as an estimator of ∇J_γ: its exact expectation, by enumerating its draws.

The step (:func:`sail.loop.sail_loss`) has the ascent direction ĝ = ∇[mean surrogate − γ·mean KL
term]. Its expectation has two parts:

* the pairs (y₁, y₂) ~ π_θ ⊗ π_θ with a label: the surrogate h + sg(h − b)(log π_θ(y₁) + log π_θ(y₂))
  is linear in the label, so the soft Bradley–Terry label p = σ(r₁ − r₂) gives the label
  expectation, and a baseline b independent of the pair does not change it (b = 0 here):

      E[∇surrogate] = Σ_x ρ(x) Σ_{y₁, y₂} π_θ(y₁) π_θ(y₂) ∇surrogate(x, y₁, y₂)   (weights held fixed);

* the KL term on the responses that :func:`sail.loop.kl_draw_source` names, q = π_ref or π_θ:

      E[∇KL term] = Σ_x ρ(x) Σ_y q(y|x) ∇term(x, y)                              (q held fixed),

  with ``term`` from :func:`sail.loop.kl_loss_term`, evaluated on every response as a singleton.

So E[ĝ] = E[∇surrogate] − γ E[∇KL term], to compare with the exact ∇J_γ of
:class:`~sail.theory.llm.problem.TransformerProblem`: ``relative_bias`` = ‖E[ĝ] − ∇J_γ‖/‖∇J_γ‖
(an exact number, ``se`` = 0). :func:`sampled_step_gradients` draws real steps instead, for the
Monte-Carlo check of the default estimator.
"""

from __future__ import annotations

import numpy as np
import torch

from sail.loop import SailConfig, kl_draw_source, kl_loss_term, sail_loss
from sail.objectives import KL_DIRECTIONS, KL_ESTIMATORS, sail_surrogate
from sail.oracles import bradley_terry_labels
from sail.policies.causal_lm import CausalLMPolicy, PromptBatch, ResponseBatch
from sail.sampling import SamplingConfig
from sail.theory.llm.problem import TransformerProblem

DEFAULT_ESTIMATOR = "sequence"


def make_policy(problem: TransformerProblem) -> CausalLMPolicy:
    """The trainer's policy class on the checker's model, sampling π_θ exactly (temperature 1)."""
    param, inst = problem.param, problem.instance
    sampling = SamplingConfig(max_new_tokens=inst.max_new_tokens, temperature=1.0, top_p=1.0)
    return CausalLMPolicy(param.model, inst.eos_token_id, inst.eos_token_id, sampling=sampling, reference=param.reference)


def prompt_batch(problem: TransformerProblem, indices=None) -> PromptBatch:
    """The prompts (rows ``indices``, default all) as a batch; prompts of one length need no padding."""
    prompts = problem.param.prompts
    rows = [prompts[i] for i in (range(len(prompts)) if indices is None else indices)]
    if len({r.numel() for r in rows}) != 1:
        raise ValueError("the estimator checks need prompts of one length")
    ids = torch.stack(rows)
    return PromptBatch(ids, torch.ones_like(ids))


def every_response(problem: TransformerProblem, n_prompts: int) -> ResponseBatch:
    """Every listed response for each of ``n_prompts`` prompts: tokens [X, N, T]."""
    tokens, mask = problem.instance.responses.padded(problem.instance.eos_token_id)
    return ResponseBatch(tokens.expand(n_prompts, -1, -1).contiguous(), mask.expand(n_prompts, -1, -1).contiguous())


def singletons(prompts: PromptBatch, responses: ResponseBatch) -> tuple[PromptBatch, ResponseBatch]:
    """Each (prompt, response) as its own row: prompts [X·N], responses [X·N, 1, T]."""
    n, width = responses.n, responses.tokens.shape[-1]
    rows = PromptBatch(prompts.input_ids.repeat_interleave(n, 0), prompts.attention_mask.repeat_interleave(n, 0))
    return rows, ResponseBatch(responses.tokens.reshape(-1, 1, width), responses.mask.reshape(-1, 1, width))


def _flat_grad(scalar: torch.Tensor, params) -> torch.Tensor:
    grads = torch.autograd.grad(scalar, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().double() for g, p in zip(grads, params)])


def expected_surrogate_gradient(problem: TransformerProblem, policy: CausalLMPolicy, theta) -> torch.Tensor:
    """E over pairs ~ π_θ ⊗ π_θ and labels of ∇surrogate (baseline 0), by enumeration."""
    prompts = prompt_batch(problem)
    responses = every_response(problem, len(prompts))
    logp, ref_logp, _ = policy.score_pairs(prompts, responses)
    ref_logp = ref_logp.detach()
    p_soft = problem.p_star.to(logp.dtype)
    first, second = logp[:, :, None].expand(p_soft.shape), logp[:, None, :].expand(p_soft.shape)
    ref_first, ref_second = ref_logp[:, :, None].expand(p_soft.shape), ref_logp[:, None, :].expand(p_soft.shape)
    surrogate = sail_surrogate(first, second, ref_first, ref_second, p_soft, problem.beta, None, score_term=True)
    probs = problem.log_probs(theta).exp()
    weights = (problem.context_probs[:, None, None] * probs[:, :, None] * probs[:, None, :]).to(surrogate.dtype)
    return _flat_grad((weights * surrogate).sum(), policy.trainable_parameters())


def expected_kl_term_gradient(problem: TransformerProblem, policy: CausalLMPolicy, theta, cfg: SailConfig) -> torch.Tensor:
    """Σ_x ρ(x) Σ_y q(y|x) ∇term(x, y), q = the KL's draw source (π_ref or π_θ), by enumeration."""
    prompts = prompt_batch(problem)
    rows, singles = singletons(prompts, every_response(problem, len(prompts)))
    term = kl_loss_term(policy, rows, singles, cfg).term.reshape(len(prompts), -1)
    source = problem.ref_log_probs if kl_draw_source(cfg) == "reference" else problem.log_probs(theta)
    weights = (problem.context_probs[:, None] * source.exp()).to(term.dtype)
    return _flat_grad((weights * term).sum(), policy.trainable_parameters())


def estimator_table(problem: TransformerProblem, theta, estimators=KL_ESTIMATORS, directions=KL_DIRECTIONS) -> list[dict]:
    """``relative_bias`` of the step's expected gradient for every (estimator, direction) at θ."""
    problem.param.write(theta)
    policy = make_policy(problem)
    surrogate = expected_surrogate_gradient(problem, policy, theta)
    rows = []
    for direction in directions:
        truth = torch.as_tensor(problem.gradient(theta, kl_direction=direction))
        for name in estimators:
            cfg = SailConfig(beta=problem.beta, gamma=problem.gamma, kl_direction=direction, kl_estimator=name, baseline="none")
            expected = surrogate - problem.gamma * expected_kl_term_gradient(problem, policy, theta, cfg)
            bias = float(torch.linalg.norm(expected - truth) / torch.linalg.norm(truth))
            rows.append(
                {"name": name, "kl_direction": direction, "relative_bias": bias, "se": 0.0, "default": name == DEFAULT_ESTIMATOR}
            )
    problem.param.write(problem.theta_ref)
    return rows


def response_index(problem: TransformerProblem, responses: ResponseBatch) -> torch.Tensor:
    """The index in the enumeration of every sampled response: [B, n]."""
    lookup = {y: i for i, y in enumerate(problem.instance.responses.responses)}
    b, n, width = responses.tokens.shape
    flat_tokens, flat_mask = responses.tokens.reshape(-1, width), responses.mask.reshape(-1, width).bool()
    return torch.tensor([lookup[tuple(t[m].tolist())] for t, m in zip(flat_tokens, flat_mask)]).reshape(b, n)


def sampled_step_gradients(
    problem: TransformerProblem, theta, cfg: SailConfig, draws: int, batch_size: int, seed: int = 0
) -> np.ndarray:
    """Ascent directions −∇loss of ``draws`` real sampled steps at θ: prompts x ~ ρ, a pair each from
    π_θ, Bradley–Terry labels drawn from r*, :func:`sail.loop.sail_loss` (its own KL draws): [draws, P]."""
    problem.param.write(theta)
    policy = make_policy(problem)
    params = policy.trainable_parameters()
    generator = torch.Generator().manual_seed(seed)
    rho = torch.as_tensor(problem.instance.context_probs)
    rewards = torch.as_tensor(problem.instance.rewards)
    out = []
    for _ in range(draws):
        rows = torch.multinomial(rho, batch_size, replacement=True, generator=generator)
        prompts = prompt_batch(problem, rows.tolist())
        responses = policy.sample(prompts, 2, generator=generator)
        r = rewards[rows[:, None], response_index(problem, responses)]
        p_win = bradley_terry_labels(r[:, 0], r[:, 1], "sample", generator)
        loss, _ = sail_loss(policy, prompts, responses, p_win, cfg, generator=generator, kl_generator=generator)
        out.append(-_flat_grad(loss, params).numpy())
    problem.param.write(problem.theta_ref)
    return np.stack(out)
