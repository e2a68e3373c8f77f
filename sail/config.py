"""The one typed config loader: dataclasses from YAML/JSON/dicts, dotted ``key=value`` overrides,
errors that name the key, and the field docs that ``--help`` prints.

``build(Config, data)`` walks the dataclass fields recursively. An unknown key, a value of the wrong
type, a value outside a ``Literal[...]`` field's choices, or a ``__post_init__`` range check (raised as
:class:`FieldError`) fails with :class:`ConfigError` naming the full dotted key (``run.steps``,
``model.lora.rank``), worked out from the path being built, never from the message. ``--set``
overrides are parsed as YAML scalars (``--set objective.gamma=1e-3 --set model.lora.rsLoRA=true``).

Every field carries a docstring (a string literal right below it); :func:`field_docs` reads them and
:func:`describe` lists every key of a config tree with its type, default and docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad configuration; the message names the dotted key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = " ".join(str(problem).split())  # one line, whatever a library said
        super().__init__(f"config key {key!r}: {self.problem}")


class FieldError(ValueError):
    """A ``__post_init__`` check that failed on ``field`` (a name, or a dotted path below the class
    that raises it, such as ``optimizer.lr``); :func:`build` reports it under the full dotted key."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> dict:
    """``typing.get_type_hints(cls)``, worked out once per class (configs are built often)."""
    return typing.get_type_hints(cls)


def _outside_choices(value, hint) -> str | None:
    """What is wrong with ``value`` for the ``Literal`` type ``hint`` (None: it is one of its choices)."""
    choices = typing.get_args(hint)
    if any(value == c and type(value) is type(c) for c in choices):  # True is not 1
        return None
    return f"expected one of {', '.join(map(repr, choices))}, got {value!r}"


def check_choices(obj) -> None:
    """Raise :class:`FieldError` for the first ``Literal`` field of dataclass ``obj`` whose value is
    not one of its choices (for objects built in Python rather than by :func:`build`)."""
    for name, hint in _type_hints(type(obj)).items():
        if typing.get_origin(hint) is typing.Literal:
            problem = _outside_choices(getattr(obj, name), hint)
            if problem:
                raise FieldError(name, problem)


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""A number in exponent notation, which YAML 1.1 reads as a string unless it has a dot (``1e-3``)."""


def _check_type(value, hint, key: str):
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return value
    if origin is typing.Literal:
        problem = _outside_choices(value, hint)
        if problem:
            raise ConfigError(key, problem)
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        nested = [arg for arg in args if dataclasses.is_dataclass(arg)]
        if isinstance(value, dict) and len(nested) == 1:  # a section that may be null: keep its keys in errors
            return build(nested[0], value, key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # ``X | None``: what is wrong for X
            raise errors[0]
        raise ConfigError(key, f"expected {_type_name(hint)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (typing.Any,)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if hint is float and isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string; a quoted "1" stays a string
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the floats
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    return value


def build(cls, data: dict | None, prefix: str = ""):
    """Instantiate dataclass ``cls`` from a nested dict, validating keys, types and ranges.

    Keys not given keep ``cls()``'s defaults, including those that a parent's default factory
    sets for a nested section (a partial ``objective:`` block keeps the other objective defaults).
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {data!r}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((name for name in data if name not in fields), key=repr)
    if unknown and (not isinstance(unknown[0], str) or not unknown[0]):
        raise ConfigError(prefix or "<root>", f"{unknown[0]!r} is not a key (known here: {', '.join(sorted(fields))})")
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        renamed = getattr(cls, "RENAMED_KEYS", {}).get(unknown[0])
        if renamed:
            raise ConfigError(key, f"renamed to {renamed!r}")
        raise ConfigError(key, f"unknown key (known here: {', '.join(sorted(fields))})")
    try:
        defaults = cls()
    except (TypeError, ValueError):
        defaults = None
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        default = getattr(defaults, name, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = merge(dataclasses.asdict(default), value)
        kwargs[name] = _check_type(value, hints[name], key)
    missing = [
        name for name, f in fields.items()
        if f.init and name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(key, "required")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except FieldError as exc:
        raise ConfigError(".".join(part for part in (prefix, exc.field) if part) or "<root>", exc.problem) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(prefix or "<root>", str(exc)) from None


def field_docs(cls) -> dict[str, str]:
    """Field name → its docstring (the string literal written right below the field)."""
    return dict(_field_docs(cls))


@functools.lru_cache(maxsize=None)
def _field_docs(cls) -> tuple[tuple[str, str], ...]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return tuple(docs.items())


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " | ".join(repr(c) for c in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def describe(cls, prefix: str = "", instance=None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, docstring) for every leaf field of the config tree ``cls``;
    defaults are those of ``instance`` (``cls()`` when not given)."""
    instance = cls() if instance is None else instance
    hints = _type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key, value)
        else:
            rows.append((key, _type_name(hints[f.name]), repr(value), docs.get(f.name, "")))
    return rows


def help_text(cls, instance=None, width: int = 100) -> str:
    """Every key of ``cls`` with its type, default and docstring, for an ``argparse`` epilog."""
    lines = []
    for key, type_name, default, doc in describe(cls, instance=instance):
        lines.append(f"  {key}: {type_name} = {default}")
        for paragraph in doc.split("\n\n"):
            text = " ".join(paragraph.split())
            lines += textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are booleans, so
    ``mixed_precision: no`` or ``--set run.mixed_precision=no`` stays the string "no"."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load(text: str):
    return yaml.load(text, Loader=_Yaml12BoolLoader)


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(item, "empty key")
        try:
            value = _load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(key, f"cannot parse value {raw!r}: {exc}") from None

        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "conflicting overrides")
        node[parts[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge (``update`` wins)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"no such file: {path}")
    try:
        data = _load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    return data


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None):
    """``cls`` from its defaults ← ``base`` ← the YAML file at ``path`` (if any) ← ``key=value``
    overrides, validated."""
    data = merge(base or {}, load_yaml(path) if path else {})
    return build(cls, merge(data, parse_overrides(overrides or [])))


def add_config_arguments(parser, config_help: str, example: str, repeatable: bool = False) -> None:
    """``--config`` (a list when ``repeatable``) and repeatable ``--set KEY=VALUE`` options of a
    command that loads a config."""
    if repeatable:
        parser.add_argument("--config", action="append", default=[], help=config_help)
    else:
        parser.add_argument("--config", help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override a config key, e.g. {example}")
