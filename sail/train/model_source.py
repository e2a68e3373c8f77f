"""Where the model a config key names lives: a local directory, or a hub id that the hub answers
for or that the hub cache holds.

A name that is neither fails at once with one line naming the key and the name, instead of the
hub client's retries (about 50 s on a machine without a network) and a traceback. A name that
cannot be a hub id (absolute, relative with ``./``, ``~``, or not a valid repo id) must be a
directory. For a hub id, one short probe (:data:`PROBE_TIMEOUT_S`) asks the hub whether the model
exists; when the hub cannot be reached, or ``HF_HUB_OFFLINE`` is set, the hub cache's copy is used
if there is one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sail.train.errors import TrainingError

PROBE_TIMEOUT_S = 5.0
"""Seconds the hub has to answer whether a model exists."""


def _offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _hub_like(name: str) -> bool:
    """Whether ``name`` could be a hub repo id (``name`` or ``owner/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached(name: str) -> str | None:
    """The hub cache's snapshot directory of ``name``, without asking the hub; None if not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, whatever the hub client calls it
        return None


def _hub_answers(name: str, key: str) -> bool:
    """Ask the hub once whether ``name`` exists: True if it answered (the model exists, or it is
    gated or private: loading says more), False if it could not be reached; a model it does not
    know fails here."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    try:
        api.model_info(name, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise TrainingError(
            f"{key}: no such directory {name!r}, nor a model on the hub {api.endpoint} (a private one needs HF_TOKEN)"
        ) from None
    except HfHubHTTPError:
        return True
    except Exception:  # noqa: BLE001 - no connection, DNS failure, timeout: the hub is out of reach
        return False
    return True


def locate_model(name_or_path: str, key: str) -> str:
    """The directory or hub id to load ``name_or_path`` from (module docstring); a name that cannot
    be loaded raises :class:`TrainingError` with one line naming ``key``."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise TrainingError(f"{key}: {name_or_path!r} is a file, not a model directory")
    if not _hub_like(name_or_path):
        raise TrainingError(f"{key}: no such directory {name_or_path!r}")
    offline = _offline()
    if not offline and _hub_answers(name_or_path, key):
        if _cached(name_or_path) is None and os.environ.get("RANK", "0") == "0":
            print(f"sail: {key}: downloading {name_or_path!r} from the hub (not cached yet)", file=sys.stderr)
        return name_or_path
    cached = _cached(name_or_path)
    if cached is None:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise TrainingError(f"{key}: no such directory {name_or_path!r}, nor a hub model in the local cache ({why})")
    return cached
