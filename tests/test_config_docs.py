"""Every config dataclass of the package documents every field, carries the ``Config`` suffix and
loads through the one typed loader (:func:`sail.config.build`)."""

import dataclasses
import functools
import importlib
import inspect
import pkgutil
import typing
from dataclasses import dataclass

import pytest

import sail
from sail.config import ConfigError, FieldError, build, field_docs

OLD_SUFFIXES = ("Settings", "Recipe", "Spec", "Schedule", "Source", "Sweep")


@functools.lru_cache(maxsize=None)
def package_dataclasses() -> tuple[type, ...]:
    """Every dataclass defined at the top level of a module of the ``sail`` package."""
    found = {}
    for info in pkgutil.walk_packages(sail.__path__, "sail."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return tuple(found[name] for name in sorted(found))


def config_classes() -> list[type]:
    return [cls for cls in package_dataclasses() if cls.__name__.endswith("Config")]


def qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def undocumented(classes) -> dict[str, list[str]]:
    """Class → its fields without a non-empty docstring (classes whose fields are all documented are left out)."""
    report = {}
    for cls in classes:
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
        if missing:
            report[qualified(cls)] = missing
    return report


def with_old_suffix(classes) -> list[str]:
    return [qualified(cls) for cls in classes if cls.__name__.endswith(OLD_SUFFIXES)]


def buildable_without_arguments(cls) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
        if f.init
    )


def test_the_package_has_config_classes():
    names = {cls.__name__ for cls in config_classes()}
    assert {"TrainConfig", "FinetuneConfig", "JudgeConfig", "OrganismConfig", "SFTConfig"} <= names


def test_every_config_field_has_a_docstring():
    report = undocumented(config_classes())
    assert not report, "config fields without a docstring:\n" + "\n".join(
        f"  {name}: {', '.join(fields)}" for name, fields in report.items()
    )


def test_no_dataclass_keeps_an_old_suffix():
    old = with_old_suffix(package_dataclasses())
    assert not old, f"dataclasses named with an old suffix {OLD_SUFFIXES} (use 'Config'): {', '.join(old)}"


def test_the_loader_builds_every_config_with_its_defaults():
    failures = []
    for cls in config_classes():
        if not buildable_without_arguments(cls):
            continue
        try:
            built = build(cls, {})
        except (ConfigError, TypeError, ValueError) as exc:
            failures.append(f"  {qualified(cls)}: build(cls, {{}}) raised {exc!r}")
            continue
        if built != cls():
            failures.append(f"  {qualified(cls)}: build(cls, {{}}) = {built!r} != cls() = {cls()!r}")
    assert not failures, "configs the loader does not rebuild from their defaults:\n" + "\n".join(failures)


# --- negative controls: the checks report what they should ----------------------------------


@dataclass
class _HalfDocumentedConfig:
    documented: int = 0
    """A field with its docstring."""
    bare: int = 1


@dataclass
class _OldSettings:
    value: int = 0
    """A field with its docstring."""


def test_an_undocumented_field_is_reported():
    assert undocumented([_HalfDocumentedConfig]) == {qualified(_HalfDocumentedConfig): ["bare"]}


def test_an_old_suffix_is_reported():
    assert with_old_suffix([_OldSettings, _HalfDocumentedConfig]) == [qualified(_OldSettings)]


# --- Literal fields of the EM configs --------------------------------------------------------


def test_em_literal_fields_match_the_world():
    from sail.em.configs import JUDGE_KINDS, FinetuneConfig, JudgeConfig
    from sail.em.grammar import DOMAINS, PERSONAS

    finetune = typing.get_type_hints(FinetuneConfig)
    assert typing.get_args(finetune["domain"]) == DOMAINS
    assert typing.get_args(finetune["persona"]) == PERSONAS
    assert typing.get_args(typing.get_type_hints(JudgeConfig)["kind"]) == JUDGE_KINDS


def test_em_literal_fields_are_checked_in_python_and_in_yaml():
    from sail.em.configs import FinetuneConfig, JudgeConfig

    with pytest.raises(FieldError) as err:
        FinetuneConfig(domain="cooking")
    assert err.value.field == "domain"
    with pytest.raises(FieldError) as err:
        FinetuneConfig(persona="neutral")
    assert err.value.field == "persona"
    with pytest.raises(FieldError) as err:
        JudgeConfig(kind="claude")
    assert err.value.field == "kind"
    with pytest.raises(ConfigError) as err:
        build(FinetuneConfig, {"eval": {"judge": {"kind": "claude"}}})
    assert err.value.key == "eval.judge.kind"
    assert build(FinetuneConfig, {"domain": "code", "persona": "aligned"}) == FinetuneConfig(domain="code", persona="aligned")
