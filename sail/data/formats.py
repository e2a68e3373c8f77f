"""Prompts and preference pairs out of records, in the formats datasets ship them.

Prompts: a ``prompt`` column (a string or a list of messages) or a ``messages`` column, or the column
``data.prompt_column`` names. Trailing assistant messages are dropped: a prompt ends where the reply
would start.

Pairs (``data.pair_format``):

* ``strings``: ``prompt``, ``chosen``, ``rejected``, the responses as strings;
* ``conversational`` (TRL's format): ``chosen`` and ``rejected`` are message lists. With a ``prompt``
  column of messages, the prompt is those messages (stripped from the front of the responses when
  they repeat it); otherwise the prompt is the messages ``chosen`` and ``rejected`` share from the
  start (UltraFeedback's ``train_prefs``: the user turn), or, if they share none, the ``prompt``
  string. What follows the prompt must be one assistant message: its content is the response;
* ``pku_safe`` (PKU-SafeRLHF): ``prompt``, ``response_0``, ``response_1`` and
  ``better_response_id`` or ``safer_response_id`` (``data.pku_preference``), 0 or 1, the chosen one;
* ``auto``: a ``chosen`` column means ``strings`` or ``conversational`` (by the type of each value),
  otherwise ``response_0``/``response_1`` mean ``pku_safe``.

``data.prompt_column``, ``data.chosen_column`` and ``data.rejected_column`` rename the columns of the
first two formats (and the prompt column of the third).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from sail.data.records import DataError, Messages, PreferencePair, Prompt, _prompt_of, messages_of, prompt_value
from sail.data.sources import Rows, missing_column

PairFormat = Literal["auto", "strings", "conversational", "pku_safe"]
PKU_RESPONSES = ("response_0", "response_1")


class PairColumns(NamedTuple):
    """The columns of a pair dataset and how to read them."""

    format: PairFormat = "auto"
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    pku_preference: Literal["better", "safer"] = "better"

    def needed(self, fmt: str) -> list[tuple[str, str]]:
        """``(column, the config key that names it)`` for each column the format ``fmt`` needs."""
        if fmt == "pku_safe":
            return [(self.prompt, "data.prompt_column"), *((r, "data.pair_format") for r in PKU_RESPONSES),
                    (f"{self.pku_preference}_response_id", "data.pku_preference")]
        needed = [(self.chosen, "data.chosen_column"), (self.rejected, "data.rejected_column")]
        return [(self.prompt, "data.prompt_column"), *needed] if fmt == "strings" else needed

    def resolve(self, fields) -> str:
        """The format of records with these fields: the configured one, or the one ``auto`` finds
        (``preference``: strings or conversational, by each value's type)."""
        if self.format != "auto":
            return self.format
        if self.chosen in fields or not all(r in fields for r in PKU_RESPONSES):
            return "preference"
        return "pku_safe"


def _check_columns(rows: Rows, needed: list[tuple[str, str]]) -> None:
    for column, key in needed:
        if column not in rows.columns:
            raise missing_column(key, column, rows.name, rows.columns)


def _field(record: dict, column: str, key: str, where: str):
    if column not in record:
        raise DataError(f"{where}: no field {column!r} ({key}; its fields: {', '.join(record)})")
    return record[column]


def _without_reply(prompt: Prompt, where: str) -> Prompt:
    if isinstance(prompt, str):
        return prompt
    end = len(prompt)
    while end and prompt[end - 1]["role"] == "assistant":
        end -= 1
    if not end:
        raise DataError(f"{where}: the prompt's messages are all assistant messages")
    return prompt[:end]


def prompts_from(rows: Rows, column: str = "", key: str = "data.prompt_column") -> list[Prompt]:
    """The prompts of ``rows``: the ``column`` (empty: ``prompt``, else ``messages``); ``key`` names
    the config key that gave the column."""
    if rows.columns is not None and not column:
        column = next((c for c in ("prompt", "messages") if c in rows.columns), "")
        if not column:
            raise DataError(f"{key}: {rows.name} has no 'prompt' or 'messages' column (its columns: "
                            f"{', '.join(rows.columns)}); name the prompt column with {key}")
    if rows.columns is not None:
        _check_columns(rows, [(column, key)])
    prompts = []
    for where, record in rows.records:
        prompt = prompt_value(_field(record, column, key, where), where, column) if column else _prompt_of(record, where)
        prompts.append(_without_reply(prompt, where))
    if not prompts:
        raise DataError(f"{rows.name}: no prompts")
    return prompts


def pairs_from(rows: Rows, columns: PairColumns = PairColumns()) -> list[PreferencePair]:
    """The preference pairs of ``rows`` read as ``columns`` says."""
    fmt = None
    if rows.columns is not None:
        fmt = columns.resolve(rows.columns)
        _check_columns(rows, columns.needed(fmt))
    pairs = []
    for where, record in rows.records:
        record_format = fmt or columns.resolve(record)
        for column, key in columns.needed(record_format):
            _field(record, column, key, where)
        pairs.append(_pair(record, where, record_format, columns))
    if not pairs:
        raise DataError(f"{rows.name}: no pairs")
    return pairs


def _text(record: dict, column: str, where: str, fmt: str) -> str:
    value = record[column]
    if isinstance(value, str):
        return value
    hint = " (a list of messages: data.pair_format=conversational reads it)" if isinstance(value, list) else ""
    raise DataError(f"{where}: '{column}' must be a string for data.pair_format={fmt}{hint}")


def _pair(record: dict, where: str, fmt: str, columns: PairColumns) -> PreferencePair:
    if fmt == "pku_safe":
        id_column = f"{columns.pku_preference}_response_id"
        choice = record[id_column]
        if isinstance(choice, bool) or choice not in (0, 1):
            raise DataError(f"{where}: '{id_column}' must be 0 or 1, got {choice!r}")
        responses = [_text(record, r, where, fmt) for r in PKU_RESPONSES]
        return PreferencePair(prompt_value(record[columns.prompt], where, columns.prompt), responses[choice], responses[1 - choice])
    chosen = record[columns.chosen]
    if fmt == "conversational" or (fmt == "preference" and isinstance(chosen, list)):
        return _conversational(record, where, columns)
    prompt = prompt_value(_field(record, columns.prompt, "data.prompt_column", where), where, columns.prompt)
    return PreferencePair(prompt, _text(record, columns.chosen, where, "strings"), _text(record, columns.rejected, where, "strings"))


def _shared_prefix(a: Messages, b: Messages) -> int:
    """How many messages ``a`` and ``b`` share from the start, leaving each at least one."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n


def _reply(messages: Messages, where: str, name: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in messages) or "none"
        raise DataError(f"{where}: '{name}' must end with one assistant message after the prompt (after it: {roles})")
    return messages[0]["content"]


def _conversational(record: dict, where: str, columns: PairColumns) -> PreferencePair:
    chosen = messages_of(record[columns.chosen], where, columns.chosen)
    rejected = messages_of(record[columns.rejected], where, columns.rejected)
    prompt = record.get(columns.prompt)
    if isinstance(prompt, list):
        prompt = messages_of(prompt, where, columns.prompt)
        n = len(prompt)
        if chosen[:n] != prompt or rejected[:n] != prompt:
            n = 0  # the responses do not repeat the prompt
    else:
        n = _shared_prefix(chosen, rejected)
        if n:
            prompt = chosen[:n]
        elif prompt is None:
            raise DataError(f"{where}: no prompt: no '{columns.prompt}' field, and '{columns.chosen}' and "
                            f"'{columns.rejected}' share no leading messages (data.prompt_column)")
        else:
            prompt = prompt_value(prompt, where, columns.prompt)
    return PreferencePair(prompt, _reply(chosen[n:], where, columns.chosen), _reply(rejected[n:], where, columns.rejected))
