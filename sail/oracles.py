"""Preference oracles: label a pair (y₁, y₂) with p_win = P(y₁ ≻ y₂ | x) used by the loss.

Every oracle returns a float tensor in [0, 1] with one entry per pair. A sampled Bradley–Terry
label is 0 or 1; a tie of a deterministic oracle is 1/2 (the pair then contributes the
symmetric term ½log σ(βΔ) + ½log σ(−βΔ)); ``soft`` returns p* itself, which keeps the estimator
unbiased (ℓ is linear in p) with less variance.
"""

from __future__ import annotations

import importlib
import math

import torch

from sail.config import FieldError

LABEL_MODES = ("sample", "soft", "argmax")


def check_label_mode(mode: str) -> str:
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return mode


def bradley_terry_labels(
    reward_1: torch.Tensor,
    reward_2: torch.Tensor,
    mode: str = "sample",
    generator: torch.Generator | None = None,
    tie_tolerance: float = 0.0,
) -> torch.Tensor:
    """p_win from rewards r₁, r₂ under Bradley–Terry p* = σ(r₁ − r₂).

    ``sample``: Bernoulli(p*); ``soft``: p*; ``argmax``: 1 if r₁ > r₂, 0 if r₁ < r₂, ½ on ties.
    Differences within ``tie_tolerance``·(1 + max(|r₁|, |r₂|)) count as exact ties (a model
    scoring the same text twice in one batch can differ in the last bits).
    """
    diff = (reward_1 - reward_2).to(torch.float64)
    if tie_tolerance > 0:
        scale = 1.0 + torch.maximum(reward_1.abs(), reward_2.abs()).to(torch.float64)
        diff = torch.where(diff.abs() <= tie_tolerance * scale, torch.zeros_like(diff), diff)
    p_star = torch.sigmoid(diff)
    if mode == "soft":
        return p_star
    if mode == "sample":
        return torch.bernoulli(p_star, generator=generator)
    if check_label_mode(mode) == "argmax":
        return 0.5 * (torch.sign(diff) + 1.0)


class TabularRewardOracle:
    """Bradley–Terry oracle of a known reward table r*[X, Y] (exact log-linear worlds)."""

    def __init__(self, reward, mode: str = "sample"):
        self.reward = torch.as_tensor(reward, dtype=torch.float64)
        self.mode = check_label_mode(mode)

    def rewards(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return self.reward[prompts[:, None], responses]

    def label(
        self, prompts: torch.Tensor, responses: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """p_win for pairs ``responses[:, 0]`` vs ``responses[:, 1]``."""
        r = self.rewards(prompts, responses)
        return bradley_terry_labels(r[:, 0], r[:, 1], self.mode, generator)


def load_callable(path: str, key: str = "callable"):
    """Import ``package.module:function`` (or ``package.module.function``); a failure is a
    :class:`~sail.config.FieldError` whose message starts with ``key``, the config key that named it
    (``oracle.path``, ``run.eval_metrics``)."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise FieldError(key, f"must look like 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FieldError(key, f"cannot import module {module_name!r} of {path!r}: {exc}") from None
    except Exception as exc:  # the module itself fails to import: its own error, one line
        raise FieldError(key, f"importing module {module_name!r} of {path!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise FieldError(key, f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise FieldError(key, f"{path!r} is not callable")
    return fn


class OracleError(ValueError):
    """A scorer that failed or returned something other than one finite number per response; the
    message names the config key and the scorer."""


def scorer_name(scorer) -> str:
    """How errors name a scorer: ``module:function``, a reward model's path, or its type."""
    path = getattr(getattr(scorer, "model", None), "name_or_path", None)
    if path:
        return str(path)
    module, name = getattr(scorer, "__module__", None), getattr(scorer, "__qualname__", None)
    return f"{module}:{name}" if module and name else type(scorer).__name__


def call_user_function(fn, key: str, doing: str, *args):
    """``fn(*args)`` for a function the config key ``key`` names; an exception inside it becomes an
    :class:`OracleError` "``key`` (module:function) failed while ``doing``: …", the exception kept as
    its ``__cause__``."""
    try:
        return fn(*args)
    except OracleError:
        raise
    except Exception as exc:
        raise OracleError(f"{key} ({scorer_name(fn)}) failed while {doing}: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def checked_scores(scorer, prompts: list, responses: list, key: str) -> list[float]:
    """``scorer(prompts, responses)`` as one finite float per response; anything else, or an
    exception inside the scorer (:func:`call_user_function`), raises :class:`OracleError` naming ``key``."""
    what = f"{key} ({scorer_name(scorer)})"
    returned = call_user_function(scorer, key, f"scoring {len(responses)} responses", prompts, responses)
    try:
        if isinstance(returned, (str, bytes, dict)):
            raise TypeError
        values = list(returned)
    except TypeError:  # not a sequence (a 0-d tensor, a number, None, …)
        raise OracleError(f"{what} returned {type(returned).__name__} {returned!r:.80}, not one number per response") from None
    if len(values) != len(responses):
        raise OracleError(f"{what} returned {len(values)} scores for {len(responses)} responses")
    scores = []
    for i, value in enumerate(values):
        try:
            if isinstance(value, (str, bytes, bool)):
                raise TypeError
            score = float(value)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several numbers
            raise OracleError(f"{what} returned {type(value).__name__} {value!r:.80} as score {i}, not a number") from None
        if not math.isfinite(score):
            raise OracleError(f"{what} returned the non-finite score {score} (score {i})")
        scores.append(score)
    return scores


class ScoreOracle:
    """Bradley–Terry labels from any scorer ``(prompts, responses) -> scores`` on texts.

    The scorer gets the prompts as given (strings or message lists) and one response text per
    prompt, and returns one float per pair; the oracle scores both responses of each pair and
    labels with :func:`bradley_terry_labels` (``argmax`` gives ½ on ties, up to ``tie_tolerance``).
    """

    def __init__(self, scorer, mode: str = "sample", tie_tolerance: float = 1e-6, key: str = "oracle.path"):
        """``key``: the config key that named the scorer, for errors (:func:`checked_scores`)."""
        self.scorer = scorer
        self.mode = check_label_mode(mode)
        self.tie_tolerance = tie_tolerance
        self.key = key

    def scores(self, prompts, responses) -> torch.Tensor:
        """Scores [B, n] of every response (``responses.texts`` must be set)."""
        if responses.texts is None or prompts.texts is None:
            raise ValueError("ScoreOracle needs prompt and response texts (a policy with a tokenizer)")
        n = len(responses.texts[0])
        flat_prompts = [p for p in prompts.texts for _ in range(n)]
        flat_texts = [t for row in responses.texts for t in row]
        values = torch.tensor(checked_scores(self.scorer, flat_prompts, flat_texts, self.key), dtype=torch.float64)
        return values.reshape(len(prompts.texts), n)

    def label(self, prompts, responses, generator: torch.Generator | None = None) -> torch.Tensor:
        r = self.scores(prompts, responses)
        return bradley_terry_labels(r[:, 0], r[:, 1], self.mode, generator, self.tie_tolerance)


class RewardModelScorer:
    """Scores from a reward model: ``AutoModelForSequenceClassification`` with its own tokenizer.

    The conversation (prompt messages + the response as the assistant turn) is rendered with the
    reward model's chat template when it has one, else prompt and response are joined by a
    newline; the score is the single logit (or the last one for multi-label heads).
    """

    def __init__(
        self,
        path: str,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        trust_remote_code: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code, dtype=dtype, use_safetensors=True
        ).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.max_length = max_length

    chat_template_kwargs: dict | None = None
    """Extra variables for the reward model's chat template (``data.chat_template_kwargs``, set by the
    trainer)."""

    def render(self, prompt, response: str) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if getattr(self.tokenizer, "chat_template", None):
            conversation = messages + [{"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, **(self.chat_template_kwargs or {}))
        return "\n".join(m["content"] for m in messages) + "\n" + response

    @torch.no_grad()
    def __call__(self, prompts, responses) -> list[float]:
        texts = [self.render(p, r) for p, r in zip(prompts, responses)]
        out = []
        self.tokenizer.padding_side = "right"
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            ).to(self.device)
            logits = self.model(**enc).logits.float()
            out.extend(logits[:, -1].tolist())
        return out
