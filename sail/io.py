"""Atomic file writes: a reader sees a file's old content or all of its new content, never a torn one.

The text goes to a fresh file in the destination's directory (so both are on one file system), is
flushed and ``fsync``-ed to disk, and then replaces the destination with one ``os.replace``, which is
atomic on POSIX and Windows. The new file gets the permissions an ordinary ``open(path, "w")``
would give (``0o666`` less the umask). If anything fails before the replace, the temporary file is
removed and the destination is untouched.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

__all__ = ["write_json_atomically", "write_text_atomically"]


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
    path = Path(path)
    fd, tmp = _fresh_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, data, end: str = "\n", **json_kwargs) -> Path:
    """Write ``json.dumps(data, **json_kwargs) + end`` to ``path`` atomically; returns the path."""
    return write_text_atomically(path, json.dumps(data, **json_kwargs) + end)
