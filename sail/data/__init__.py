"""Prompts and offline preference pairs: from JSONL, JSON or parquet files, ``save_to_disk``
directories, hub datasets or ``datasets.Dataset`` objects, in the formats datasets ship them.

* :mod:`sail.data.records`: the prompt and pair types, JSONL read line by line (``file:line`` errors);
* :mod:`sail.data.sources`: every kind of source as rows (:func:`open_source`);
* :mod:`sail.data.formats`: prompts and pairs out of rows (strings, TRL's conversational format,
  PKU-SafeRLHF, renamed columns);
* :mod:`sail.data.lengths`: how a prompt is tokenised, and the length caps.

Errors are :class:`DataError`, one line naming the file and line, or the config key, the column and
the columns there are.
"""

from __future__ import annotations

from pathlib import Path

from sail.data.formats import PairColumns, PairFormat, pairs_from, prompts_from
from sail.data.lengths import cut_prompt_left, cut_response, prompt_token_ids
from sail.data.records import DataError, Messages, PreferencePair, Prompt, _prompt_of, _records, write_jsonl  # noqa: F401 - the line reader, for sail.em.questions
from sail.data.sources import Rows, open_source

__all__ = [
    "DataError",
    "Messages",
    "PairColumns",
    "PairFormat",
    "PreferencePair",
    "Prompt",
    "Rows",
    "cut_prompt_left",
    "cut_response",
    "load_hf_prompts",
    "load_pairs",
    "load_prompts",
    "open_source",
    "pairs_from",
    "prompt_token_ids",
    "prompts_from",
    "write_jsonl",
]


def load_prompts(source: str | Path, column: str = "", split: str = "train", subset: str = "", limit: int = 0) -> list[Prompt]:
    """Prompts from any source :func:`open_source` reads (a JSONL file: ``prompt`` or ``messages`` per
    line); ``column`` names the prompt column (empty: ``prompt``, else ``messages``)."""
    return prompts_from(open_source(source, "data.prompts", split, subset, limit), column)


def load_pairs(
    source: str | Path, columns: PairColumns = PairColumns(), split: str = "train", subset: str = "", limit: int = 0
) -> list[PreferencePair]:
    """Preference pairs from any source :func:`open_source` reads, in the format ``columns`` says
    (by default recognised from the columns)."""
    return pairs_from(open_source(source, "data.pairs", split, subset, limit), columns)


def load_hf_prompts(name: str, split: str = "train", column: str = "prompt", limit: int | None = None) -> list[Prompt]:
    """Prompts from the ``column`` of a hub dataset's ``split``."""
    return load_prompts(name, column, split, limit=limit or 0)
