"""Prompts and offline preference pairs from JSONL files (or a HF dataset, where reachable).

Prompt lines: ``{"prompt": "..."}`` or ``{"messages": [{"role": ..., "content": ...}, ...]}``.
Pair lines: ``{"prompt": ..., "chosen": "...", "rejected": "..."}`` (``prompt`` may be messages).
A malformed line raises :class:`DataError` with the file and the 1-based line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

Messages = list[dict]
Prompt = Union[str, Messages]


class DataError(ValueError):
    """A malformed data file; the message gives ``path:line``."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: Prompt
    chosen: str
    rejected: str


def _records(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def _prompt_of(record: dict, where: str) -> Prompt:
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: messages[{i}] must have string 'role' and 'content'")
        return messages
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, list):
            return _prompt_of({"messages": prompt}, where)
        if not isinstance(prompt, str) or not prompt:
            raise DataError(f"{where}: 'prompt' must be a non-empty string or a list of messages")
        return prompt
    raise DataError(f"{where}: needs a 'prompt' or 'messages' field (has {sorted(record)})")


def load_prompts(path: str | Path) -> list[Prompt]:
    prompts = [_prompt_of(record, f"{path}:{lineno}") for lineno, record in _records(path)]
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def load_pairs(path: str | Path) -> list[PreferencePair]:
    pairs = []
    for lineno, record in _records(path):
        where = f"{path}:{lineno}"
        prompt = _prompt_of(record, where)
        for field in ("chosen", "rejected"):
            if not isinstance(record.get(field), str):
                raise DataError(f"{where}: '{field}' must be a string")
        pairs.append(PreferencePair(prompt, record["chosen"], record["rejected"]))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


def load_hf_prompts(name: str, split: str = "train", column: str = "prompt", limit: int | None = None) -> list[Prompt]:
    """Prompts from a HF dataset by name (needs the optional ``datasets`` package and a reachable hub)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise DataError(f"loading the HF dataset {name!r} needs the 'datasets' package") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - report any loader failure with the name
        raise DataError(f"cannot load HF dataset {name!r} (split {split!r}): {exc}") from None
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    return [_prompt_of({"prompt": row[column]}, f"{name}[{i}]") for i, row in enumerate(rows)]


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
