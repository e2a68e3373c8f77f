"""``sail build organism [--verify] [--seed N] [--cache-dir DIR]``: build the EM organism and the
misaligned policy, and compare them with the weights the package ships (:mod:`sail.em.weights`).

Without ``--verify`` both are built into the cache (``--cache-dir``, else ``$SAIL_CACHE``, else
``~/.cache/sail``), or found there, never taken from the shipped copies. ``--verify`` rebuilds both
into a temporary cache (removed afterwards) and exits with status 1 unless each
``model.safetensors`` has the sha256 the manifest records. Builds are bit-exact on one machine and
torch build; another CPU or torch build may give other bytes (and nearby figures).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sail.em.organism import ensure_base_organism
from sail.em.realign import ensure_misaligned_policy
from sail.em.weights import manifest, sha256_of


def build_both(cache_dir, seed: int = 0) -> list[Path]:
    """The organism's and the misaligned policy's directories in ``cache_dir``, built if missing."""
    organism = ensure_base_organism(cache_dir, seed=seed, shipped=False)
    return [Path(organism), Path(ensure_misaligned_policy(cache_dir, seed=seed, shipped=False))]


def compare_with_shipped(directory: Path) -> tuple[bool, str]:
    """Whether ``directory``'s ``model.safetensors`` is the shipped one of its name, and a line saying so."""
    digest = sha256_of(directory / "model.safetensors")
    shipped = manifest().get(directory.name, {}).get("model.safetensors")
    if shipped is None:
        return False, f"{directory.name}: model.safetensors sha256 {digest}; no shipped weights of this name"
    if shipped == digest:
        return True, f"{directory.name}: model.safetensors sha256 {digest} = the shipped weights"
    return False, f"{directory.name}: model.safetensors sha256 {digest} ≠ the shipped {shipped}"


def cmd_build_organism(args) -> int:
    from sail.train.console import quiet_third_party

    quiet_third_party()
    if args.verify:
        with tempfile.TemporaryDirectory(prefix="sail-verify-") as tmp:
            results = [compare_with_shipped(path) for path in build_both(tmp, args.seed)]
    else:
        paths = build_both(args.cache_dir, args.seed)
        results = [compare_with_shipped(path) for path in paths]
        for path in paths:
            print(path)
    for _, line in results:
        print(line)
    if not args.verify:
        return 0
    if all(same for same, _ in results):
        print("verified: a rebuild gives the shipped weights byte for byte")
        return 0
    print("sail build organism --verify: the rebuild differs from the shipped weights (another CPU or torch build?)", file=sys.stderr)
    return 1
