"""The workflow's configuration checked as a spec is: one line per problem naming the key, a suggestion for a
misspelt key, non-finite and oversized numbers refused, defaults filled in."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cellquery.errors import SpecError
from cellquery.spec.configuration import DEFAULT_CONFIG, check_config

SHIPPED = yaml.safe_load(DEFAULT_CONFIG.read_text())


def problems(**changed) -> list[str]:
    with pytest.raises(SpecError) as raised:
        check_config(SHIPPED | changed)
    return raised.value.problems


def test_the_shipped_config_passes_and_a_missing_key_takes_its_default():
    config = {key: value for key, value in SHIPPED.items() if key != "cache_headroom_gb"}
    check_config(config)
    assert config["cache_headroom_gb"] == 1


@pytest.mark.parametrize(
    ("changed", "line"),
    [
        ({"cache_headroom_gb": math.nan}, "config: cache_headroom_gb: nan is not a finite number"),
        (
            {"cache_headroom_gb": 1e300},
            "config: cache_headroom_gb: 1e+300 is greater than the maximum of 1000000",
        ),
        ({"demo_seed": 2**40}, "config: demo_seed: 1099511627776 is greater than the maximum of 4294967295"),
        ({"fetch": "streamed"}, "config: fetch: 'streamed' is not one of ['auto', 'cache', 'stream']"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(changed, line):
    assert problems(**changed) == [line]


def test_an_unknown_key_is_one_line_with_a_suggestion():
    config = dict(SHIPPED)
    config["cache_headrom_gb"] = config.pop("cache_headroom_gb")
    with pytest.raises(SpecError) as raised:
        check_config(config)
    assert raised.value.problems == [
        "config: unknown key 'cache_headrom_gb'; did you mean 'cache_headroom_gb'?"
    ]


HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [None, True, False, "", [], {}, 0, -1, 2**64, 1e308, -0.0, math.nan, math.inf, -math.inf]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.text(
        alphabet=st.sampled_from(["\x00", "\u200b", "\t", "/", ":", "~", "a", "0"]), min_size=1, max_size=6
    ),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def hostile_configs(draw) -> tuple[dict, str]:
    """(the shipped config with one key given a hostile value, or one key misspelt or added; that key)."""
    config = dict(SHIPPED)
    key = draw(st.sampled_from([*SHIPPED, "cache_headrom_gb", "shard size", "\u200bfetch", ""]))
    config[key] = draw(HOSTILE_VALUES)
    return config, key


def finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(item) for item in value.values())
    if isinstance(value, list):
        return all(finite(item) for item in value)
    return True


@settings(max_examples=300, deadline=None, derandomize=True)
@given(mutant=hostile_configs())
def test_a_hostile_config_value_is_refused_naming_its_key_or_accepted_finite(mutant):
    """The property the examples above sample: any value at any key is refused in lines that each name that
    key, or accepted with every number finite; never an error of another kind."""
    config, key = mutant
    try:
        check_config(config)
    except SpecError as error:
        named = (f"config: {key}: ", f"config: {key}.", f"config: {key!r} ", f"config: unknown key {key!r}")
        assert error.problems and all(line.startswith(named) for line in error.problems), error.problems
        assert all("\n" not in line for line in error.problems)
    else:
        assert key in SHIPPED and finite(config[key]), config[key]
