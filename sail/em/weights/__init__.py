"""The built EM organism and misaligned policy, shipped with the package (docs/em_organism.md).

Building them takes minutes on a CPU, so the default recipe of ``sail train`` would spend most of
its first run on it. Each shipped model is a directory named as its cache entry (the recipe's key:
:func:`sail.em.organism.organism_dir_name`, the misaligned policy's ``misaligned-<key>-seed<seed>``),
holding what a build writes (``model.safetensors``, the tokenizer, ``sail_build.json``).
``manifest.json`` records the sha256 of each of its files. :func:`shipped_model` returns the
directory of a name only when every file matches; otherwise the caller builds as before.

The shipped bytes are those the current code builds from an empty cache on the development
machine (2-core x86, torch 2.13.0+cpu); ``sail build organism --verify`` rebuilds both and compares.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).parent
"""Where the shipped model directories and the manifest live."""

MANIFEST = "manifest.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: Path | None = None) -> dict[str, dict[str, str]]:
    """Shipped model name → {file name: sha256}."""
    path = (root or ROOT) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_model(name: str, root: Path | None = None) -> Path | None:
    """The shipped directory of the model ``name`` when its files match the manifest, else None
    (with one line on stderr when the files are there but differ)."""
    root = root or ROOT
    files = manifest(root).get(name)
    if not files:
        return None
    directory = root / name
    for file, digest in files.items():
        if not (directory / file).is_file() or sha256_of(directory / file) != digest:
            print(f"sail: the shipped {name}/{file} does not match its sha256 in {root / MANIFEST}; building it instead", file=sys.stderr)
            return None
    return directory
