"""Atomic file writes: a reader sees a file's old content or all of its new content, never a torn one.

The text goes to a fresh file in the destination's directory (so both are on one file system), is
flushed and ``fsync``-ed to disk, and then replaces the destination with one ``os.replace``, which is
atomic on POSIX and Windows. The new file gets the permissions an ordinary ``open(path, "w")``
would give (``0o666`` less the umask). If anything fails before the replace, the temporary file is
removed and the destination is untouched.

JSON is written strict (:func:`dumps_strict`): no bare ``NaN`` or ``Infinity``, which strict
parsers reject; a non-finite number is written ``null`` with a flag next to it (:func:`strict_json`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

__all__ = [
    "NON_FINITE_SUFFIX", "dumps_strict", "loads_strict", "restore_non_finite", "strict_json", "write_json_atomically",
    "write_bytes_atomically", "write_text_atomically",
]


def _fresh_file(directory: Path, name: str) -> tuple[int, Path]:
    """An open descriptor of a new, empty file ``.<name>.<random>.tmp`` in ``directory``."""
    while True:
        candidate = directory / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), candidate
        except FileExistsError:
            continue


def write_text_atomically(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path``'s content with ``text`` atomically (module docstring); returns the path."""
    return write_bytes_atomically(path, text.encode(encoding))


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path``'s content with ``data`` atomically (module docstring); returns the path."""
    path = Path(path)
    fd, tmp = _fresh_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, data, end: str = "\n", **json_kwargs) -> Path:
    """Write ``dumps_strict(data, **json_kwargs) + end`` to ``path`` atomically; returns the path."""
    return write_text_atomically(path, dumps_strict(data, **json_kwargs) + end)


NON_FINITE_SUFFIX = "_nonfinite"
"""A non-finite number at key ``k`` is written ``"k": null`` with its kind at ``"k_nonfinite"``."""
_KINDS = ("nan", "inf", "-inf")


def _kind(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _strict(obj):
    """(the JSON-ready copy of ``obj``, its flag): the flag is None, a kind (``obj`` is a non-finite
    number) or ``{"<i>" or "<i>.<j>…": kind}`` (the non-finite numbers of a list, by index path)."""
    if isinstance(obj, dict):
        out, keys = {}, {str(k) for k in obj}
        for k, v in obj.items():
            key = str(k)
            out[key], flag = _strict(v)
            if flag is not None:
                if key + NON_FINITE_SUFFIX in keys:
                    raise ValueError(f"key {key + NON_FINITE_SUFFIX!r} is taken: it cannot flag the non-finite value of {key!r}")
                out[key + NON_FINITE_SUFFIX] = flag
        return out, None
    if isinstance(obj, (list, tuple)):
        items, flags = [], {}
        for i, v in enumerate(obj):
            value, flag = _strict(v)
            items.append(value)
            if isinstance(flag, str):
                flags[str(i)] = flag
            elif flag is not None:
                flags.update({f"{i}.{path}": kind for path, kind in flag.items()})
        return items, flags or None
    if isinstance(obj, float):
        return (float(obj), None) if math.isfinite(obj) else (None, _kind(obj))
    if not isinstance(obj, (str, bytes, int)) and callable(getattr(obj, "tolist", None)):
        return _strict(obj.tolist())  # numpy and torch arrays and scalars
    return obj, None


def strict_json(data):
    """A copy of ``data`` that strict JSON can hold: numpy and torch arrays and scalars become
    lists and Python numbers, tuples lists, keys strings, and each NaN or ±∞ becomes ``null`` with
    a flag next to it in the nearest enclosing object: ``"k": null, "k_nonfinite": "nan"`` (or
    ``"inf"``, ``"-inf"``) for a number at key ``k``, ``"k_nonfinite": {"2": "inf", "3.0": "nan"}``
    (index paths) for the numbers of a list at ``k``. A non-finite number in no object (a bare
    number or a top-level list) or a flag key that is already taken raises :class:`ValueError`.
    :func:`restore_non_finite` undoes the replacement."""
    out, flag = _strict(data)
    if flag is not None:
        raise ValueError(f"a non-finite number outside any JSON object cannot be flagged ({flag})")
    return out


def dumps_strict(data, **json_kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` ``(data)`` with ``allow_nan=False``: every JSON the
    package writes or prints goes through here, so no bare ``NaN`` or ``Infinity`` gets out."""
    return json.dumps(strict_json(data), allow_nan=False, **json_kwargs)


def _put(value, path: list[str], kind: str):
    if not path:
        return float(kind) if value is None else value
    if isinstance(value, list) and path[0].isdigit() and int(path[0]) < len(value):
        i = int(path[0])
        value[i] = _put(value[i], path[1:], kind)
    return value


def restore_non_finite(data):
    """The inverse of :func:`strict_json` on parsed JSON: each flagged ``null`` back to its NaN or
    ±∞, the flags removed."""
    if isinstance(data, list):
        return [restore_non_finite(v) for v in data]
    if not isinstance(data, dict):
        return data
    out = {k: restore_non_finite(v) for k, v in data.items()}
    for key, flag in data.items():
        base = key[: -len(NON_FINITE_SUFFIX)]
        if not key.endswith(NON_FINITE_SUFFIX) or base not in out:
            continue
        if isinstance(flag, str) and flag in _KINDS and out[base] is None:
            out[base] = float(flag)
        elif isinstance(flag, dict) and isinstance(out[base], list) and all(v in _KINDS for v in flag.values()):
            for path, kind in flag.items():
                out[base] = _put(out[base], path.split("."), kind)
        else:
            continue
        del out[key]
    return out


def _reject_constant(name: str):
    raise ValueError(f"not strict JSON: bare {name}")


def loads_strict(text: str | bytes):
    """Parse strict JSON (a bare ``NaN`` or ``Infinity`` raises :class:`ValueError`) and restore the
    flagged non-finite numbers (:func:`restore_non_finite`)."""
    return restore_non_finite(json.loads(text, parse_constant=_reject_constant))
