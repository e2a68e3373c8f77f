"""Every response a causal LM can produce within ``max_new_tokens``, and their exact log-probabilities.

With vocabulary 𝒱 (EOS included) and T = ``max_new_tokens``, decoding stops at the first EOS or
after T tokens, so the responses are

    𝒴 = {c EOS : c ∈ 𝒞^k, 0 ≤ k < T} ∪ 𝒞^T,        𝒞 = 𝒱 ∖ {EOS}

(|𝒴| = Σ_{k<T} |𝒞|^k + |𝒞|^T): a response that ends with EOS includes the EOS factor, the empty
response (EOS first) is one of them, and a response cut at T tokens has no stop factor. With
p(·|x, y_<t) the model's next-token softmax over the full vocabulary,

    log π(y|x) = Σ_{t < |y|} log p(y_t | x, y_<t),        Σ_{y ∈ 𝒴} π(y|x) = 1

(the tree of prefixes: at each content prefix of length < T the next-token probabilities sum to 1,
EOS closes a branch). Every prefix that a factor conditions on is a content string of length < T,
so one causal forward pass over the |𝒞|^{T−1} strings x·s, s ∈ 𝒞^{T−1}, gives all of them: the
logits at position |x| − 1 + t of x·s predict token t after the prefix s_<t. :class:`ResponseSet`
holds the index that gathers each response's factors from that [S, T, V] tensor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResponseSet:
    """𝒴 for one vocabulary, EOS and T, with the gather index of its log-probabilities.

    ``responses``: the responses as token-id tuples (by length, then lexicographically);
    ``prefix_strings`` [S, T−1]: the content strings whose forward passes give every prefix;
    ``string_index``, ``position``, ``token``, ``mask`` [N, T]: factor t of response n is
    log p[string_index[n, t], position[n, t], token[n, t]] where mask[n, t] = 1.
    """

    vocab_size: int
    eos_token_id: int
    max_new_tokens: int
    responses: tuple[tuple[int, ...], ...]
    prefix_strings: torch.Tensor
    string_index: torch.Tensor
    position: torch.Tensor
    token: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.responses)

    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def log_probs(self, prefix_log_probs: torch.Tensor) -> torch.Tensor:
        """log π(y|x) for every response, from next-token log-probs [..., S, T, V] → [..., N]."""
        factors = prefix_log_probs[..., self.string_index, self.position, self.token]
        return (factors * self.mask.to(factors.dtype)).sum(-1)

    def padded(self, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [N, T] right-padded with ``pad_token_id``, mask [N, T]): a ResponseBatch's rows."""
        tokens = torch.where(self.mask.bool(), self.token, torch.full_like(self.token, pad_token_id))
        return tokens, self.mask.clone()


def content_tokens(vocab_size: int, eos_token_id: int) -> list[int]:
    return [v for v in range(vocab_size) if v != eos_token_id]


def enumerate_responses(vocab_size: int, eos_token_id: int, max_new_tokens: int) -> ResponseSet:
    """𝒴 (see the module docstring) for a vocabulary of ``vocab_size`` tokens."""
    if not 0 <= eos_token_id < vocab_size:
        raise ValueError(f"eos_token_id must lie in [0, {vocab_size}), got {eos_token_id}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    content = content_tokens(vocab_size, eos_token_id)
    if not content:
        raise ValueError("the vocabulary needs at least one token besides EOS")
    T = max_new_tokens
    responses = [tuple(c) + (eos_token_id,) for k in range(T) for c in itertools.product(content, repeat=k)]
    responses += [tuple(c) for c in itertools.product(content, repeat=T)]
    strings = list(itertools.product(content, repeat=T - 1))
    row_of = {s: i for i, s in enumerate(strings)}
    filler = (content[0],) * (T - 1)
    n = len(responses)
    string_index = torch.zeros(n, T, dtype=torch.long)
    token = torch.zeros(n, T, dtype=torch.long)
    mask = torch.zeros(n, T, dtype=torch.long)
    for i, y in enumerate(responses):
        for t, tok in enumerate(y):
            prefix = tuple(y[:t])
            string_index[i, t] = row_of[prefix + filler[: T - 1 - t]]
            token[i, t] = tok
            mask[i, t] = 1
    position = torch.arange(T).expand(n, T).clone()
    prefix_strings = torch.tensor(strings, dtype=torch.long).reshape(len(strings), T - 1)
    return ResponseSet(vocab_size, eos_token_id, T, tuple(responses), prefix_strings, string_index, position, token, mask)


def prefix_inputs(prompt: torch.Tensor, responses: ResponseSet) -> torch.Tensor:
    """Input ids [S, P + T − 1]: the prompt followed by each prefix string (no BOS, no padding)."""
    strings = responses.prefix_strings
    return torch.cat([prompt.expand(strings.shape[0], -1), strings], dim=1)


def prefix_log_probs_from_logits(logits: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Next-token log-softmax [S, T, V] at the positions that predict response tokens 0 … T−1."""
    return torch.log_softmax(logits[:, prompt_length - 1 :], dim=-1)
