"""Dataclass configs from YAML/dicts with dotted ``key=value`` overrides and errors that name the key.

``build(Config, data)`` walks the dataclass fields recursively: an unknown key, a value of the wrong
type, or a ``__post_init__`` range check fails with :class:`ConfigError` naming the full dotted key
(``train.lr``, ``model.lora.rank``). ``--set`` overrides are parsed as YAML scalars
(``--set objective.gamma=1e-3 --set model.lora.rsLoRA=true``).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad configuration; the message names the dotted key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"config key {key!r}: {problem}")


def _check_type(value, hint, key: str):
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(key, f"expected {hint}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (typing.Any,)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if hint in (int, float) and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept numbers written that way
        try:
            value = float(value) if hint is float else int(value)
        except ValueError:
            raise ConfigError(key, f"expected {'a number' if hint is float else 'an integer'}, got {value!r}") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
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
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
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
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(_guess_key(prefix, str(exc), fields), str(exc)) from None


def _guess_key(prefix: str, message: str, fields) -> str:
    """The key a ``__post_init__`` message starts with: they are written ``"<field> must …"`` or
    ``"<section>.<field> must …"``; otherwise the section itself."""
    first = message.split()[0] if message else ""
    section = prefix.rsplit(".", 1)[-1]
    if section and first.startswith(section + "."):
        first = first[len(section) + 1 :]
    if first.split(".")[0] in fields:
        name = first
    else:
        return prefix or "<root>"
    return f"{prefix}.{name}" if prefix else name


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are booleans, so
    ``mixed_precision: no`` or ``--set train.mixed_precision=no`` stays the string "no"."""


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
        data = _load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    return data


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None):
    """``cls`` from its defaults ← the YAML file at ``path`` (if any) ← ``key=value`` overrides, validated."""
    data = load_yaml(path) if path else {}
    return build(cls, merge(data, parse_overrides(overrides or [])))
