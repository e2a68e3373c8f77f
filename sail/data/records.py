"""Records: the prompt and pair types, and JSONL files read line by line.

Prompt lines: ``{"prompt": "..."}`` or ``{"messages": [{"role": ..., "content": ...}, ...]}``.
A malformed line raises :class:`DataError` with the file and the 1-based line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from sail.io import dumps_strict

Messages = list[dict]
Prompt = Union[str, Messages]


class DataError(ValueError):
    """Data that cannot be read: the message names the file and line, or the config key, the column
    and the columns there are. It is one line, whatever the data quoted in it holds."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class PreferencePair:
    prompt: Prompt
    chosen: str
    rejected: str


def _records(path: str | Path):
    """``(line number, object)`` for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def messages_of(value, where: str, name: str) -> Messages:
    """``value`` as a non-empty list of ``{"role", "content"}`` messages (other keys dropped)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{name}' must be a non-empty list")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: {name}[{i}] must have string 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def prompt_value(value, where: str, name: str = "prompt") -> Prompt:
    """A prompt from one field: a non-empty string or a list of messages."""
    if isinstance(value, list):
        return messages_of(value, where, name)
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: '{name}' must be a non-empty string or a list of messages")
    return value


def _prompt_of(record: dict, where: str) -> Prompt:
    """The prompt of a record with a ``messages`` or a ``prompt`` field."""
    if "messages" in record:
        return messages_of(record["messages"], where, "messages")
    if "prompt" in record:
        return prompt_value(record["prompt"], where)
    raise DataError(f"{where}: needs a 'prompt' or 'messages' field (has {sorted(record)})")


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(dumps_strict(r) + "\n")
