"""The data of a run, read and checked before any model loads: the training prompts, the held-out
prompts and the offline pairs, from the ``data`` section's sources or from datasets passed to
:class:`~sail.train.trainer.Trainer` (``Trainer(cfg, prompts=ds)``; each of ``prompts``, ``pairs``
and ``eval_prompts`` takes a ``datasets.Dataset``, a ``DatasetDict`` read at ``data.split``, or a list
of dicts, in place of the config key of that name).

Training prompts: ``data.prompts`` (or ``data.hf_dataset``), else the embedded model's, else the
prompts of the pairs (each once). Held-out prompts, in this order: ``data.eval_prompts`` (at
``data.eval_split`` if set); ``data.eval_split`` of the training prompts' source; ``data.eval_fraction`` of the training prompts,
held out from training; the embedded model's own held-out prompts (when its training prompts are
used); else the first ``data.n_eval`` training prompts. One line on stderr says which, and one per
length cap how many prompts or responses it cut or dropped.
"""

from __future__ import annotations

import json
import sys
from typing import NamedTuple

import torch

from sail.config import ConfigError
from sail.data import (
    DataError,
    PairColumns,
    PreferencePair,
    cut_prompt_left,
    cut_response,
    open_source,
    pairs_from,
    prompt_token_ids,
    prompts_from,
)
from sail.models.embedded import PREFIX, embedded_model
from sail.train.config import TrainConfig
from sail.train.errors import TrainingError
from sail.train.policy import resolve_model_path


class RunData(NamedTuple):
    prompts: list
    """Training prompts (strings or message lists)."""
    eval_prompts: list
    """Held-out prompts, at most ``data.n_eval``."""
    pairs: list[PreferencePair]
    """Offline pairs for the dataset routes (empty without ``data.pairs``)."""


def _key(prompt) -> tuple[str, str]:
    return ("text", prompt) if isinstance(prompt, str) else ("messages", json.dumps(prompt, sort_keys=True))


def prompts_of_pairs(pairs: list[PreferencePair]) -> list:
    """The pairs' prompts, each once, in order of first appearance."""
    seen = {}
    for pair in pairs:
        seen.setdefault(_key(pair.prompt), pair.prompt)
    return list(seen.values())


def _pair_columns(cfg: TrainConfig) -> PairColumns:
    d = cfg.data
    return PairColumns(d.pair_format, d.prompt_column or "prompt", d.chosen_column, d.rejected_column, d.pku_preference)


class _Source(NamedTuple):
    """One configured source and how to read a split of it."""

    value: object
    """A path or hub id, or a dataset passed in; None or empty: not given."""
    key: str
    """The config key that names it."""

    def given(self) -> bool:
        return self.value is not None and self.value != ""

    def rows(self, cfg: TrainConfig, held_out: bool = False):
        """The training split (the first ``data.limit`` rows), or with ``held_out`` the ``data.eval_split``."""
        d = cfg.data
        if held_out and d.eval_split:
            return open_source(self.value, self.key, d.eval_split, d.subset, 0, "data.eval_split", needs_split=True)
        return open_source(self.value, self.key, d.split, d.subset, 0 if held_out else d.limit)


def _prompt_source(cfg: TrainConfig, prompts) -> tuple[_Source, str, str]:
    """(the training prompts' source, the prompt column, the key that names the column)."""
    d = cfg.data
    if prompts is not None or d.prompts or not d.hf_dataset:
        return _Source(prompts if prompts is not None else d.prompts, "data.prompts"), d.prompt_column, "data.prompt_column"
    if d.prompt_column:
        return _Source(d.hf_dataset, "data.hf_dataset"), d.prompt_column, "data.prompt_column"
    return _Source(d.hf_dataset, "data.hf_dataset"), d.hf_column, "data.hf_column"


def load_run_data(cfg: TrainConfig, prompts=None, pairs=None, eval_prompts=None, log: bool = True) -> RunData:
    """Every prompt and pair of the run, checked: a bad file, column or format raises
    :class:`~sail.data.DataError` (or :class:`~sail.config.ConfigError`) naming it. ``prompts``,
    ``pairs``, ``eval_prompts``: datasets in place of the config keys of those names. ``log``: print
    where the prompts come from and what the length caps did, on stderr."""
    d = cfg.data
    pair_source = _Source(pairs if pairs is not None else d.pairs, "data.pairs")
    train_pairs = pairs_from(pair_source.rows(cfg), _pair_columns(cfg)) if pair_source.given() else []
    if (cfg.routes.dataset_self > 0 or cfg.routes.offline_dpo > 0) and not train_pairs:
        raise ConfigError("data.pairs", "needed by routes dataset_self/offline_dpo (a file, directory or hub dataset of preference pairs)")

    embedded = embedded_model(cfg.model.name_or_path)
    if embedded is None and cfg.model.name_or_path.startswith(PREFIX):
        resolve_model_path(cfg.model.name_or_path)  # names the unknown embedded model
    source, column, column_key = _prompt_source(cfg, prompts)
    if source.given():
        origin, train = source.key, prompts_from(source.rows(cfg), column, column_key)
    elif embedded is not None:
        origin, train = "embedded", embedded.train_prompts(cfg.run.seed)
    elif train_pairs:
        origin, train = "data.pairs", prompts_of_pairs(train_pairs)
    else:
        raise TrainingError(f"data.prompts (or data.hf_dataset) is needed to train {cfg.model.name_or_path!r}; the prompts of data.pairs serve too")

    eval_source = _Source(eval_prompts if eval_prompts is not None else d.eval_prompts, "data.eval_prompts")
    if eval_source.given():
        rows = eval_source.rows(cfg, held_out=True)
        held_out, how = prompts_from(rows, d.prompt_column), f"data.eval_prompts ({rows.name})"
    elif d.eval_split:
        if origin == "embedded":
            raise ConfigError("data.eval_split", "needs data.prompts, data.hf_dataset, data.pairs or data.eval_prompts to take the split from")
        if origin == "data.pairs":
            held_out = prompts_of_pairs(pairs_from(pair_source.rows(cfg, held_out=True), _pair_columns(cfg)))
        else:
            held_out = prompts_from(source.rows(cfg, held_out=True), column, column_key)
        how = f"the split {d.eval_split!r} of {origin}"
    elif d.eval_fraction:
        train, held_out, train_pairs = _hold_out(train, d.eval_fraction, cfg.run.seed, train_pairs, origin == "data.pairs")
        how = f"{len(held_out)} training prompts held out (data.eval_fraction={d.eval_fraction}, run.seed={cfg.run.seed})"
    elif origin == "embedded":
        held_out, how = embedded.eval_prompts(d.n_eval, cfg.run.seed), f"the embedded model's ({cfg.model.name_or_path})"
    else:
        held_out = train
        how = "the first training prompts, not held out (set data.eval_prompts, data.eval_split or data.eval_fraction)"
    held_out = held_out[: d.n_eval]
    if log:
        print(f"data: {len(train)} training prompts ({origin}); {len(held_out)} held-out prompts: {how}", file=sys.stderr)
    if d.max_prompt_length or d.max_response_length:
        train, held_out, train_pairs = _cap_lengths(cfg, train, held_out, train_pairs, log)
    return RunData(train, held_out, train_pairs)


def _hold_out(train: list, fraction: float, seed: int, pairs: list[PreferencePair], from_pairs: bool):
    """(training prompts, held-out prompts, pairs): round(fraction·N) prompts drawn with ``seed``
    leave training; ``from_pairs`` (the prompts are the pairs'): so do the pairs of those prompts."""
    count = max(1, round(fraction * len(train)))
    if count >= len(train):
        raise DataError(f"data.eval_fraction={fraction} holds out all {len(train)} training prompts")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    held_out = [train[i] for i in order[:count]]
    if from_pairs:
        held_keys = {_key(p) for p in held_out}
        pairs = [p for p in pairs if _key(p.prompt) not in held_keys]
    return [p for i, p in enumerate(train) if i not in held], held_out, pairs


def load_tokenizer(cfg: TrainConfig):
    """The policy's tokenizer alone (the length caps count tokens before the model loads)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.model.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"model.name_or_path {path!r}: its tokenizer could not be loaded: {exc}") from None


def _cap_lengths(cfg: TrainConfig, train: list, held_out: list, pairs: list[PreferencePair], log: bool):
    """The prompt sets and pairs with ``data.max_prompt_length`` and ``data.max_response_length`` applied."""
    d = cfg.data
    tokenizer = load_tokenizer(cfg)
    if d.max_prompt_length:
        capped = {}  # prompt key → (the capped prompt or None to drop it, whether it was too long)

        def cap(prompt):
            key = _key(prompt)
            if key not in capped:
                if len(prompt_token_ids(tokenizer, prompt, d.chat_template_kwargs)) <= d.max_prompt_length:
                    capped[key] = (prompt, False)
                elif d.truncate == "drop":
                    capped[key] = (None, True)
                else:
                    capped[key] = (cut_prompt_left(tokenizer, prompt, d.max_prompt_length, d.chat_template_kwargs), True)
            return capped[key]

        def long_count(prompts: list) -> int:
            return sum(cap(p)[1] for p in prompts)

        counts = (f"{long_count(train)} of {len(train)} training prompts, {long_count(held_out)} of {len(held_out)} held-out prompts "
                  f"and {long_count([p.prompt for p in pairs])} of {len(pairs)} pairs")
        train, held_out = ([cap(p)[0] for p in prompts if cap(p)[0] is not None] for prompts in (train, held_out))
        pairs = [PreferencePair(cap(p.prompt)[0], p.chosen, p.rejected) for p in pairs if cap(p.prompt)[0] is not None]
        if log:
            what = "dropped" if d.truncate == "drop" else "cut from the left (dropped where the chat template alone is longer)"
            print(f"data: {counts} longer than {d.max_prompt_length} tokens: {what}", file=sys.stderr)
        if not train:
            raise DataError(f"data.max_prompt_length={d.max_prompt_length}: no training prompt is left")
        if (cfg.routes.dataset_self > 0 or cfg.routes.offline_dpo > 0) and not pairs:
            raise DataError(f"data.max_prompt_length={d.max_prompt_length}: no pair is left")
    if d.max_response_length and pairs:
        cut = [
            PreferencePair(p.prompt, *(cut_response(tokenizer, t, d.max_response_length) for t in (p.chosen, p.rejected))) for p in pairs
        ]
        if log:
            count = sum((a.chosen != b.chosen) + (a.rejected != b.rejected) for a, b in zip(pairs, cut))
            print(f"data: {count} of {2 * len(pairs)} pair responses longer than {d.max_response_length} tokens "
                  f"cut to their first {d.max_response_length}", file=sys.stderr)
        pairs = cut
    return train, held_out, pairs


def apply_chat_template_kwargs(kwargs: dict, *renderers) -> None:
    """Give ``data.chat_template_kwargs`` to what renders chat templates: the policy, and the reward
    models among the scorers (a weighted sum's parts included)."""
    for renderer in renderers:
        for part in getattr(renderer, "scorers", [renderer]):
            if hasattr(part, "chat_template_kwargs"):
                part.chat_template_kwargs = dict(kwargs)
