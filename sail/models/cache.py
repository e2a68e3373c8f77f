"""The on-disk cache of models the project builds itself (the addition task's base policy, the EM
organism and its misaligned fine-tune).

Each entry is a directory ``<root>/<kind>/<name>``, root = ``cache_dir``, else ``$SAIL_CACHE``, else
``~/.cache/sail``; the caller's name encodes what determines the weights (a hash of the recipe and
the seed), so a new recipe gets a new entry. :data:`BUILD_INFO`, written last, marks a complete
build and records how it was made.

Concurrency and crash safety (:func:`ensure_built`): builders of one entry serialise on the lock file
``<name>.lock``; a build is written into a fresh temporary directory beside the entry and moved into
place with one ``os.rename`` (atomic on one file system), so a reader never sees a half-written
entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from sail.io import write_json_atomically

BUILD_INFO = "sail_build.json"
"""Written last into a built model directory; its presence marks a complete build."""

CACHE_ENV = "SAIL_CACHE"

__all__ = ["BUILD_INFO", "CACHE_ENV", "cache_root", "ensure_built", "file_lock", "is_complete", "versions", "write_build_info"]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SAIL_CACHE``, else ``~/.cache/sail``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sail"


def content_key(data) -> str:
    """The first 10 hex digits of sha256 of ``data`` as sorted-key JSON (non-JSON values by ``str``):
    the part of a cache directory's name that changes with what was built."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished build (its :data:`BUILD_INFO` exists)."""
    return (path / BUILD_INFO).is_file()


@contextmanager
def file_lock(path: Path):
    """An exclusive inter-process lock on ``path`` (``filelock``, a dependency of transformers)."""
    from filelock import FileLock

    with FileLock(str(path)):
        yield


def ensure_built(final: Path, build: Callable[[Path], object]) -> Path:
    """Return ``final`` once it holds a complete build, calling ``build(tmp_dir)`` if it does not.

    ``build`` must write :data:`BUILD_INFO` last (:func:`write_build_info`). A directory without it
    (not made by this function) is treated as incomplete and replaced; a failing build leaves
    neither ``final`` nor its temporary directory (module docstring).
    """
    final = Path(final)
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.with_name(final.name + ".lock")):
        if is_complete(final):  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            build(tmp)
            if not is_complete(tmp):
                raise RuntimeError(f"build did not write {BUILD_INFO} into {tmp}")
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_build_info(out_dir: Path, info: dict) -> None:
    """Write :data:`BUILD_INFO` into ``out_dir`` atomically (the last step of a build)."""
    write_json_atomically(Path(out_dir) / BUILD_INFO, info, indent=2, sort_keys=True)


def versions() -> dict:
    """The versions of torch, transformers and tokenizers (recorded with every build)."""
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
