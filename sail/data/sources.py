"""Where records come from: a JSONL file read line by line, a ``.json`` or ``.parquet`` file, a
``save_to_disk`` directory, a hub dataset id, or a ``datasets.Dataset`` already in memory.

:func:`open_source` gives every kind as :class:`Rows`: the columns (None for JSONL, whose lines may
differ) and ``(where, record)`` pairs, ``where`` naming the file and line or the dataset and row for
errors. Everything but JSONL is read with the ``datasets`` library: files with
``load_dataset("json" | "parquet", data_files=...)``, directories with ``load_from_disk`` (a
``DatasetDict`` needs the split), hub ids with ``load_dataset(id, name=subset, split=split)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

from sail.data.records import DataError, _records

FILE_BUILDERS = {".json": "json", ".parquet": "parquet"}
"""File suffix → the ``datasets`` builder that reads it (``.jsonl`` is read line by line)."""
KINDS = "a .jsonl, .json or .parquet file, a save_to_disk directory or a hub dataset id"


class Rows(NamedTuple):
    """The records of one source."""

    name: str
    """The source as errors name it."""
    columns: tuple[str, ...] | None
    """The dataset's columns; None for JSONL (each line has its own fields)."""
    records: Iterable[tuple[str, dict]]
    """``(where, record)``: ``where`` is ``file:line`` or ``name row i``."""


def missing_column(key: str, column: str, name: str, columns: Iterable[str]) -> DataError:
    """The error for a column that is not there: the key that named it, the source and its columns."""
    return DataError(f"{key}: no column {column!r} in {name} (its columns: {', '.join(columns)})")


def _looks_like_path(source: str) -> bool:
    path = Path(source)
    return path.is_absolute() or source.startswith((".", "~")) or path.suffix in (".jsonl", *FILE_BUILDERS, ".csv", ".txt")


def _load(what: str, loader, *args, **kwargs):
    try:
        return loader(*args, **kwargs)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure, reported with what was asked
        raise DataError(f"cannot load {what}: {' '.join(str(exc).split())}") from None


def _no_splits(name: str, split_key: str) -> DataError:
    return DataError(f"{split_key}: {name} is one file or dataset without splits (splits come with a hub "
                     "dataset or a saved DatasetDict); name the held-out prompts with data.eval_prompts or data.eval_fraction")


def dataset_rows(data, name: str, split: str = "train", split_key: str = "data.split", limit: int = 0, needs_split: bool = False) -> Rows:
    """:class:`Rows` of a ``datasets.Dataset`` (or of the ``split`` of a ``DatasetDict``), its first
    ``limit`` rows when ``limit`` > 0; ``needs_split``: refuse a dataset without splits."""
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{split_key}: no split {split!r} in {name} (its splits: {', '.join(data)})")
        data = data[split]
    elif needs_split:
        raise _no_splits(name, split_key)
    if limit and limit < len(data):
        data = data.select(range(limit))
    return Rows(name, tuple(data.column_names), ((f"{name} row {i}", row) for i, row in enumerate(data)))


def open_source(
    source, key: str, split: str = "train", subset: str = "", limit: int = 0, split_key: str = "data.split", needs_split: bool = False
) -> Rows:
    """The records of ``source``: a path, a hub dataset id, a ``datasets.Dataset`` or ``DatasetDict``, or
    a list of dicts. ``key`` names the config key that gave it, ``split_key`` the one that gave the
    split; ``subset`` is the hub dataset's configuration (``load_dataset``'s ``name``). Files and
    datasets without splits ignore ``split``, unless ``needs_split`` (a held-out split), which refuses them."""
    import datasets

    if needs_split and (isinstance(source, (list, tuple, datasets.Dataset)) or Path(str(source)).expanduser().is_file()):
        raise _no_splits(key if not isinstance(source, (str, Path)) else str(source), split_key)
    if isinstance(source, (list, tuple)):
        records = list(source)[: limit or None]
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"{key}[{i}]: expected a mapping of column to value, got {type(record).__name__}")
        return Rows(key, None, ((f"{key}[{i}]", record) for i, record in enumerate(records)))
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return dataset_rows(source, f"the {key} dataset", split, split_key, limit, needs_split)
    if not isinstance(source, (str, Path)) or not str(source):
        raise DataError(f"{key}: expected {KINDS}, got {source!r}")
    source = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return dataset_rows(_load(source, datasets.load_from_disk, str(path)), source, split, split_key, limit, needs_split)
    if path.is_file():
        if path.suffix == ".jsonl":
            records = ((f"{source}:{lineno}", record) for lineno, record in _records(path))
            return Rows(source, None, _first(records, limit))
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataError(f"{key}: {source}: not a file type read here ({KINDS})")
        data = _load(source, datasets.load_dataset, builder, data_files=str(path), split="train")
        return dataset_rows(data, source, limit=limit)
    if _looks_like_path(source):
        raise DataError(f"{key}: {source}: no such file or directory")
    subset_text = f", subset {subset!r}" if subset else ""
    data = _load(f"the dataset {source!r} (split {split!r}{subset_text})", datasets.load_dataset, source, name=subset or None, split=split)
    return dataset_rows(data, source, limit=limit)


def _first(records, limit: int):
    for i, record in enumerate(records):
        if limit and i >= limit:
            return
        yield record
