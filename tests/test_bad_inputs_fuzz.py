"""Random bad inputs through the loaders: every value either loads or raises the loader's one error
type naming the key (:class:`~sail.config.ConfigError`) or the file (:class:`~sail.data.DataError`),
never another exception.

* random values (strings, numbers, inf/nan, lists, mappings, None, booleans) at random keys of every
  command's config, as a mapping and as ``--set`` text;
* random instance files, and valid ones with one key changed to a random value;
* random prompt and pair lines, read in every pair format.
"""

import json
import math
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sail.config import ConfigError, build, describe, parse_overrides
from sail.data import DataError, PairColumns, load_pairs, load_prompts
from sail.em.realign_study import RealignStudyConfig
from sail.em.study import StudyConfig
from sail.theory.instance import load_instance, random_instance
from sail.theory.llm.config import CheckConfig, LLMInstanceConfig
from sail.train.config import TrainConfig

CONFIGS = [TrainConfig, StudyConfig, LLMInstanceConfig, CheckConfig]
"""The configs built in milliseconds; ``RealignStudyConfig`` checks every run of its sweep when it is
built (a tenth of a second), so it has a test of its own with fewer examples."""

FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**63, 1e300, -1e300, math.inf, -math.inf, math.nan, "", "nan", "inf", "1e-3", "true", "no"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def keys_of(cls) -> list[str]:
    """Every dotted key of ``cls``, its sections and a few that are not there."""
    leaves = [row[0] for row in describe(cls)]
    sections = sorted({key.rsplit(".", 1)[0] for key in leaves if "." in key})
    return leaves + sections + ["bogus", f"{leaves[0].split('.')[0]}.bogus"]


def nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def loads_or_names_a_key(load) -> None:
    """``load()`` returns, or raises a :class:`ConfigError` with a key; nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated values load with a warning
        try:
            load()
        except ConfigError as exc:
            assert exc.key and "\n" not in str(exc), str(exc)


set_texts = st.one_of(st.text(max_size=16), st.sampled_from(["[", "{a: 1}", "{bogus:1}", "[1, [2]]", ".inf", "-.nan", "1e999", "~", "!!python/none"]))


def loads_or_names_a_key_both_ways(cls, key: str, value, text: str) -> None:
    """``value`` at ``key`` of ``cls`` as a mapping, and ``text`` at ``key`` as a ``--set`` override."""
    loads_or_names_a_key(lambda: build(cls, nested(key, value)))
    loads_or_names_a_key(lambda: build(cls, parse_overrides([f"{key}={text}"])))


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
@FUZZ
@given(data=st.data())
def test_random_values_at_random_keys(cls, data):
    key = data.draw(st.sampled_from(keys_of(cls)), label="key")
    loads_or_names_a_key_both_ways(cls, key, data.draw(values, label="value"), data.draw(set_texts, label="text"))


@settings(max_examples=40)
@given(key=st.sampled_from(["train", "train.run.steps", "train.objective", "train.bogus", "sweep", *keys_of(RealignStudyConfig)]),
       value=values, text=set_texts)
def test_random_realign_study_configs(key, value, text):
    loads_or_names_a_key_both_ways(RealignStudyConfig, key, value, text)


def _instance() -> dict:
    return json.loads(json.dumps(random_instance(0, n_contexts=2, n_responses=3, dim=2).to_dict()))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(data=st.data())
def test_random_instance_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("inst") / "instance.json"
    if data.draw(st.booleans(), label="whole file"):
        document = data.draw(json_values, label="document")
    else:
        document = _instance()
        key = data.draw(st.sampled_from([*document, "bogus"]), label="key")
        document[key] = data.draw(json_values, label="value")
    path.write_text(json.dumps(document))
    loads_or_names_a_key(lambda: load_instance(path))


FIELDS = ["prompt", "messages", "chosen", "rejected", "response_0", "response_1", "better_response_id", "safer_response_id", "role", "content"]
message = st.dictionaries(st.sampled_from(["role", "content", "name"]), st.one_of(st.text(max_size=6), st.integers(), st.none()), max_size=3)
field_values = st.one_of(
    st.text(max_size=8), st.integers(min_value=-2, max_value=3), st.none(), st.booleans(), st.lists(message, max_size=3), json_values,
)
records = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=5)
lines = st.one_of(
    records.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=20).map(lambda text: text.replace("\n", " ")),
    st.binary(max_size=12).map(lambda raw: raw.replace(b"\n", b" ")),
)


def _write_lines(path, drawn) -> None:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in drawn))


def loads_or_names_the_file(load, path) -> None:
    try:
        load()
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)


@FUZZ
@given(data=st.data())
def test_random_prompt_lines(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    _write_lines(path, data.draw(st.lists(lines, max_size=4), label="lines"))
    loads_or_names_the_file(lambda: load_prompts(path), path)


@FUZZ
@given(data=st.data())
def test_random_pair_lines(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    _write_lines(path, data.draw(st.lists(lines, max_size=4), label="lines"))
    fmt = data.draw(st.sampled_from(["auto", "strings", "conversational", "pku_safe"]), label="format")
    loads_or_names_the_file(lambda: load_pairs(path, PairColumns(format=fmt)), path)
