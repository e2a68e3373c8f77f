"""The built-in lemma modules, their loader, and the loaders of a user's own lemma modules.

Kept out of ``proofs/__init__.py`` on purpose: an editable install made before ``__init__.py``
existed resolves ``proofs`` as a namespace package, whose submodules still import normally.

A user's lemma module is any module that exports ``LEMMA``, a :class:`proofs.tools.lemma.Lemma`
with a negative control. :func:`lemma_from_module` imports one by its dotted name (from
``sys.path``, as ``import pkg.mod`` would); :func:`lemmas_from_directory` imports every ``*.py``
file of one directory. Anything wrong with such a module raises :class:`LemmaModuleError`, a
:class:`sail.config.ConfigError`, which ``sail`` reports as one line with exit status 2.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
import sys
from pathlib import Path

from proofs.tools.lemma import Lemma
from sail.config import ConfigError

LEMMA_NAMES = (
    "softmax_derivatives",
    "implicit_reward",
    "pair_derivative",
    "sail_gradient",
    "surrogate_unbiased",
    "self_label_term",
    "loglinear_hessian",
    "vanilla_sail_nonconcave",
    "fisher_identity",
    "policy_to_ref_nonconvex",
    "elementary_bounds",
    "pl_template",
    "strong_concavity_pl",
    "linear_rate",
    "stochastic_rate",
    "kl_optimal_policy",
    "regularisation_bias",
    "certify_jets",
)
"""Every lemma module, in the order of docs/theory.md."""


def load_lemma(name: str):
    """The ``LEMMA`` object of module ``proofs.<name>``; KeyError for an unknown name."""
    if name not in LEMMA_NAMES:
        raise KeyError(name)
    return importlib.import_module(f"proofs.{name}").LEMMA


def all_lemmas() -> list:
    return [load_lemma(name) for name in LEMMA_NAMES]


class LemmaModuleError(ConfigError):
    """A lemma module the user named that cannot be run; the message is ``SOURCE: PROBLEM`` on one
    line, SOURCE being ``--module NAME``, a file of ``--path DIR`` or the option at fault."""

    def __init__(self, source: str, problem: str):
        super().__init__(source, problem)
        self.args = (f"{source}: {self.problem}",)


def checked_lemma(value, source: str) -> Lemma:
    """``value`` if it is a runnable :class:`Lemma`, else :class:`LemmaModuleError` saying why: a
    name without blanks (``--only`` selects by it), callable checkers, a negative control with its
    description, and a positive finite tolerance."""
    if not isinstance(value, Lemma):
        raise LemmaModuleError(source, f"LEMMA is a {type(value).__name__}, not a proofs.tools.lemma.Lemma")
    if not isinstance(value.name, str) or not value.name or re.search(r"\s", value.name):
        raise LemmaModuleError(source, f"LEMMA.name must be a non-empty string without blanks, got {value.name!r}")
    if getattr(value, "negative_control", None) is None:
        raise LemmaModuleError(source, f"lemma {value.name!r} has no negative control (negative_control is None)")
    if not isinstance(value.control, str) or not value.control.strip():
        raise LemmaModuleError(source, f"lemma {value.name!r} has no negative control (control, which describes it, is empty)")
    for field in ("prove", "negative_control", "cross_check"):
        if not callable(getattr(value, field)):
            raise LemmaModuleError(source, f"lemma {value.name!r}: {field} is not callable")
    tolerance = value.tolerance
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (math.isfinite(tolerance) and tolerance > 0):
        raise LemmaModuleError(source, f"lemma {value.name!r}: tolerance must be a positive finite number, got {tolerance!r}")
    return value


def _exported_lemma(module, source: str) -> Lemma:
    if not hasattr(module, "LEMMA"):
        raise LemmaModuleError(source, "exports no LEMMA")
    return checked_lemma(module.LEMMA, source)


def _import_failure(source: str, exc: BaseException) -> LemmaModuleError:
    return LemmaModuleError(source, f"cannot be imported: {type(exc).__name__}: {exc}")


def lemma_from_module(module_name: str) -> Lemma:
    """The checked ``LEMMA`` of the module ``module_name``, imported by ``importlib.import_module``
    (so from ``sys.path``; the ``sail`` script does not put the working directory there)."""
    source = f"--module {module_name}"
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # missing, a syntax error, or raised while importing
        raise _import_failure(source, exc) from exc
    return _exported_lemma(module, source)


def _unique_module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    return f"_sail_user_lemma_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


def _import_file(path: Path, source: str):
    name = _unique_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LemmaModuleError(source, "cannot be imported: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _import_failure(source, exc) from exc
    return module


def lemmas_from_directory(directory) -> tuple[list[tuple[str, Lemma]], list[str]]:
    """Import every ``*.py`` file directly in ``directory`` whose name does not start with ``_``,
    in name order, and return ([(source, LEMMA)] of those that export ``LEMMA``, [the sources of
    those that do not]).

    Each file is imported under a name of its own (``_sail_user_lemma_<hash>_<stem>``), so two
    directories may hold files of the same name. While the directory's files are imported, the
    directory is first on ``sys.path``, so a file may import a sibling helper by its plain name
    (``import helpers``) at import time; it is taken off ``sys.path`` afterwards (a sibling so
    imported stays in ``sys.modules`` under its plain name). A file that fails to import, a
    ``LEMMA`` that is not a runnable :class:`Lemma`, a ``directory`` that is not a directory or one
    in which no file exports ``LEMMA`` raise :class:`LemmaModuleError`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise LemmaModuleError(f"--path {directory}", "not a directory")
    files = sorted(p for p in directory.glob("*.py") if p.is_file() and not p.name.startswith("_"))
    entries, skipped = [], []
    folder = str(directory.resolve())
    sys.path.insert(0, folder)
    try:
        for path in files:
            source = str(path)
            module = _import_file(path, source)
            if hasattr(module, "LEMMA"):
                entries.append((source, _exported_lemma(module, source)))
            else:
                skipped.append(source)
    finally:
        sys.path.remove(folder)
    if not entries:
        looked = ", ".join(p.name for p in files) or "no *.py file"
        raise LemmaModuleError(f"--path {directory}", f"no module exports LEMMA (looked at {looked})")
    return entries, skipped
