"""Step-numbered, atomic, verified, exact checkpoints of a training run.

``RUN/checkpoint-<step>/`` holds the trainable weights in the form a user loads them:

* LoRA: ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's ``save_pretrained``, the
  saved key names), so ``PeftModel.from_pretrained(base, "RUN/checkpoint-<step>")`` loads it;
* ``model.trainable: head``: ``head_delta.safetensors``, one tensor ``delta`` [V, d] added to the LM
  head's weight;

and, for ``--resume``, ``optimizer.pt`` (the optimiser's state), ``generator.pt`` (the shared
generator's state), ``state.json`` (the loop's step, baseline, counters, evaluations) and
``train_config.json`` (the resolved config the run had when it saved, every key).

A checkpoint is written into ``checkpoint-<step>.tmp/``, every file and directory fsynced at each
step, the ``COMPLETE`` marker written last, then renamed into place. The marker is JSON: the step,
``config_sha256`` (:func:`config_digest` of ``train_config.json``) and every file's size and sha256.
Deleting a checkpoint (the rotation of ``keep``, or one of the same step being replaced) removes its
marker first and fsyncs the directory, so a directory deleted part-way is never complete. A run
killed at any moment leaves complete checkpoints and debris; :func:`list_checkpoints` sees only the
complete ones, and the next save removes the debris, any checkpoint past its step (an abandoned
continuation) and, with ``keep``, the oldest beyond that many. :func:`load_checkpoint` tries the
newest first and falls back to older ones when one does not verify or load: its files must match its
marker (:func:`verify_checkpoint`) and read, its weights match the model's tensors and be finite.

Every change a save makes on disk is one call of :func:`_mkdir`, :func:`_write`, :func:`_fsync`,
:func:`_rename` or :func:`_delete` (``tests/test_checkpoint_faults.py`` crashes a save at each).

A run directory from before step numbering has one ``checkpoint/`` (weights as
``adapter.safetensors`` under the model's parameter names); it is read as a checkpoint of the step
its ``state.json`` records. A marker that holds ``ok`` (from before markers recorded files) is taken
as it is, and such a checkpoint records no config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from sail.io import dumps_strict, loads_strict
from sail.models.head import delta_head_of

MARKER = "COMPLETE"
PREFIX = "checkpoint-"
ADAPTER_FILE = "adapter_model.safetensors"
"""PEFT's weights file (saved key names, no adapter name in them)."""
HEAD_FILE = "head_delta.safetensors"
"""The head parametrisation's weights: one tensor ``delta``."""
LEGACY_DIRS = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
CONFIG_FILE = "train_config.json"
"""The resolved config a checkpoint was made with (every key), which ``--resume`` compares."""
LEGACY_FILE = "adapter.safetensors"
"""The weights of a checkpoint from before step numbering, under the model's parameter names."""
_STEP_DIR = re.compile(re.escape(PREFIX) + r"(\d+)")


class CheckpointError(ValueError):
    """No usable checkpoint, or one that does not fit the model; the message is one line."""


class Checkpoint(NamedTuple):
    step: int
    path: Path


class Restored(NamedTuple):
    """What :func:`load_checkpoint` read (the weights are already in the model)."""

    path: Path
    optimizer_state: dict
    generator_state: torch.Tensor
    state: dict
    skipped: list[str]
    """One line per newer checkpoint that did not verify or load, with the reason."""
    config: dict | None
    """The resolved config it was made with (``train_config.json``); None for an older checkpoint."""
    config_sha256: str | None
    """Its marker's :func:`config_digest` of ``config``."""


# --- the weights -------------------------------------------------------------------------


def write_weights(model, directory: Path) -> None:
    """The trainable weights into ``directory``: ``head_delta.safetensors`` for the head
    parametrisation, else PEFT's ``save_pretrained`` (``adapter_config.json`` and
    ``adapter_model.safetensors``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    head = delta_head_of(model)
    if head is not None:
        save_file({"delta": head.delta.detach().cpu().contiguous()}, str(directory / HEAD_FILE))
    else:
        model.save_pretrained(str(directory))


def weights_file(directory: Path) -> Path | None:
    """The weights file a checkpoint (or adapter) directory holds, or None."""
    for name in (HEAD_FILE, ADAPTER_FILE, LEGACY_FILE):
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None


def model_tensors(model, file_name: str) -> dict[str, torch.nn.Parameter]:
    """The model's trainable parameters under the names ``file_name`` stores them by."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if file_name == HEAD_FILE:
        head = delta_head_of(model)
        return {"delta": head.delta} if head is not None else {}
    if file_name == LEGACY_FILE:
        return trainable
    from peft import get_peft_model_state_dict

    if not hasattr(model, "peft_config"):
        return {}
    by_storage = {p.data_ptr(): p for p in trainable.values()}
    named = {key: by_storage.get(t.data_ptr()) for key, t in get_peft_model_state_dict(model).items()}
    if None in named.values() or len(named) != len(trainable):
        raise CheckpointError("the adapter's saved tensors are not exactly the trainable parameters")
    return named


def read_weights(path: Path, model=None) -> dict[str, torch.Tensor]:
    """The tensors of weights file ``path``, checked finite and, with ``model``, matching its
    trainable tensors' names and shapes."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # a truncated or corrupt file raises safetensors' own errors
        raise CheckpointError(f"{path} does not load: {' '.join(str(exc).split())}") from None
    bad = next((k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} is not finite")
    if model is not None:
        expected = model_tensors(model, path.name)
        if set(tensors) != set(expected):
            missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
            raise CheckpointError(f"{path} does not fit the model (missing {missing[:2]}, unexpected {extra[:2]})")
        wrong = next((k for k, t in tensors.items() if t.shape != expected[k].shape), None)
        if wrong is not None:
            raise CheckpointError(f"{path}: {wrong} has shape {tuple(tensors[wrong].shape)}, the model's {tuple(expected[wrong].shape)}")
    return tensors


@torch.no_grad()
def _copy_into(model, file_name: str, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in model_tensors(model, file_name).items():
        p.copy_(tensors[name].to(p.device, p.dtype))


def load_weights(model, path: Path) -> None:
    """Copy the weights file ``path`` into the model's trainable tensors (in place, so an optimiser
    holding them keeps them)."""
    _copy_into(model, Path(path).name, read_weights(Path(path), model))


# --- the directories ---------------------------------------------------------------------


def _step_of(path: Path) -> int | None:
    match = _STEP_DIR.fullmatch(path.name)
    if match:
        return int(match.group(1))
    if path.name in LEGACY_DIRS:
        try:
            return int(json.loads((path / "state.json").read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The run's complete checkpoints (the marker written), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        step = _step_of(path) if (path / MARKER).is_file() else None
        if step is not None:
            found.append(Checkpoint(step, path))
    return sorted(found, key=lambda c: (c.step, c.path.name.startswith(PREFIX)))


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint directory of a run whose files match its marker, or None."""
    for c in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(c.path)
        except CheckpointError:
            continue
        return c.path
    return None


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The complete checkpoint of ``step``; :class:`CheckpointError` names the steps there are."""
    found = list_checkpoints(run_dir)
    for c in reversed(found):
        if c.step == step:
            return c.path
    steps = ", ".join(str(c.step) for c in found) or "none"
    raise CheckpointError(f"{run_dir} has no complete checkpoint of step {step} (complete ones: {steps})")


# --- the marker ----------------------------------------------------------------------------


def config_digest(config: dict) -> str:
    """The sha256 of a resolved config (a dict of JSON values): of its JSON with sorted keys."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """The files below ``directory`` but the marker, as sorted relative POSIX paths."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and p.name != MARKER)


def _marker(directory: Path, step: int, config: dict | None) -> str:
    files = {name: {"size": (directory / name).stat().st_size, "sha256": _sha256(directory / name)} for name in _files(directory)}
    digest = config_digest(config) if config is not None else None
    return json.dumps({"step": step, "config_sha256": digest, "files": files}, indent=1)


def verify_checkpoint(path: Path) -> dict:
    """The marker of checkpoint directory ``path`` once every file it lists has the size and sha256
    it records; ``{}`` for a marker from before markers recorded files (``ok``). A file that is
    missing or differs, or a marker that does not read, is a :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        text = (path / MARKER).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: its {MARKER} marker does not read: {exc}") from None
    if text.strip() == "ok":
        return {}
    try:
        marker = json.loads(text)
        files = marker["files"]
        expected = {str(name): (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path}: its {MARKER} marker is not the JSON record of its files") from None
    for name, (size, sha256) in expected.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing (its marker lists it)")
        if file.stat().st_size != size:
            raise CheckpointError(f"{path}: {name} has {file.stat().st_size} bytes, its marker records {size}")
        if _sha256(file) != sha256:
            raise CheckpointError(f"{path}: {name} does not match the sha256 its marker records")
    return marker


# --- the disk operations of a save ---------------------------------------------------------


def _mkdir(path: Path) -> None:
    path.mkdir()


def _write(path: Path, write) -> None:
    """Create ``path`` with ``write(path)`` (for the weights, ``path`` is the directory they go in)."""
    write(path)


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        if not directory:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        if not directory:
            raise
    finally:
        os.close(fd)


def sync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (files made, renamed or removed in it) durable."""
    _fsync(Path(path), directory=True)


def _rename(source: Path, target: Path) -> None:
    os.replace(source, target)


def _delete(path: Path) -> None:
    """Remove a file, or a directory and all it holds (what cannot be removed is left as debris)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Delete a checkpoint (or debris) directory: its marker first, made durable, so that a crash
    part-way leaves an incomplete directory, never a complete one with files missing."""
    if (path / MARKER).exists():
        _delete(path / MARKER)
        _fsync(path, directory=True)
    _delete(path)
    _fsync(path.parent, directory=True)


def save_checkpoint(
    run_dir: Path, model, optimizer_state: dict, generator_state: torch.Tensor, state: dict, keep: int = 0,
    config: dict | None = None,
) -> Path:
    """Write ``checkpoint-<state["step"]>/`` atomically, with ``config`` (the resolved config, JSON
    values) in ``train_config.json`` and its digest in the marker; refuses non-finite parameters.
    Then removes debris, checkpoints past this step and, with ``keep`` > 0, all but the newest ``keep``."""
    for name, p in model.named_parameters():
        if p.requires_grad and not torch.isfinite(p).all():
            raise ValueError(f"refusing to checkpoint non-finite parameter {name}")
    run_dir = Path(run_dir)
    step = int(state["step"])
    final = run_dir / f"{PREFIX}{step}"
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        _remove(tmp)
    _mkdir(tmp)
    _fsync(run_dir, directory=True)
    _write(tmp, lambda directory: write_weights(model, directory))
    _write(tmp / "optimizer.pt", lambda path: torch.save(optimizer_state, path))
    _write(tmp / "generator.pt", lambda path: torch.save(generator_state.clone(), path))
    _write(tmp / "state.json", lambda path: path.write_text(dumps_strict(state, indent=1)))  # evaluations may hold NaN
    if config is not None:
        _write(tmp / CONFIG_FILE, lambda path: path.write_text(json.dumps(config, indent=1)))
    for name in _files(tmp):
        _fsync(tmp / name)
    _fsync(tmp, directory=True)
    marker = _marker(tmp, step, config)
    _write(tmp / MARKER, lambda path: path.write_text(marker))
    _fsync(tmp / MARKER)
    _fsync(tmp, directory=True)
    if final.exists():  # a checkpoint of this step that did not verify or load, resumed from an earlier one
        _remove(final)
    _rename(tmp, final)
    _fsync(run_dir, directory=True)
    _tidy(run_dir, step, keep)
    return final


def _tidy(run_dir: Path, step: int, keep: int) -> None:
    """Remove what no resume will read: unfinished or replaced directories, checkpoints past
    ``step`` (left by a run that went further before it was resumed from an earlier one), and the
    oldest complete checkpoints beyond ``keep`` (0: keep all). The newest is never removed."""
    for path in sorted(run_dir.iterdir()):
        if not path.is_dir():
            continue
        match = _STEP_DIR.fullmatch(path.name)
        debris = path.name.startswith(PREFIX) and path.name.endswith((".tmp", ".old"))
        debris |= path.name in LEGACY_DIRS and not (path / MARKER).is_file()
        debris |= bool(match) and not (path / MARKER).is_file()
        if debris or (match and int(match.group(1)) > step):
            _remove(path)
    if keep > 0:
        for c in list_checkpoints(run_dir)[:-keep]:
            _remove(c.path)


def _read(path: Path, model) -> tuple[dict[str, torch.Tensor], dict, torch.Tensor, dict, dict | None]:
    weights = weights_file(path)
    if weights is None:
        raise CheckpointError(f"{path} holds no weights file")
    tensors = read_weights(weights, model)
    try:
        optimizer_state = torch.load(path / "optimizer.pt", weights_only=True)
        generator_state = torch.load(path / "generator.pt", weights_only=True)
        state = loads_strict((path / "state.json").read_text())
        config = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).is_file() else None
    except Exception as exc:  # missing, truncated or corrupt files
        raise CheckpointError(f"{path} does not load: {' '.join(str(exc).split())}") from None
    return tensors, optimizer_state, generator_state, state, config


def load_checkpoint(run_dir: Path, model) -> Restored:
    """The newest checkpoint of ``run_dir`` that verifies (:func:`verify_checkpoint`) and loads
    completely, its weights copied into ``model``'s trainable tensors; older ones are tried when a
    newer one does not."""
    skipped = []
    for c in reversed(list_checkpoints(run_dir)):
        try:
            marker = verify_checkpoint(c.path)
            tensors, optimizer_state, generator_state, state, config = _read(c.path, model)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        _copy_into(model, weights_file(c.path).name, tensors)
        return Restored(c.path, optimizer_state, generator_state, state, skipped, config, marker.get("config_sha256"))
    reason = f": the newest: {skipped[0]}" if skipped else ""
    raise CheckpointError(f"no complete checkpoint in {run_dir}{reason}")
