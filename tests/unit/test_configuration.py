"""The workflow's configuration checked as a spec is: one line per problem naming the key, a suggestion for a
misspelt key, non-finite and oversized numbers refused, defaults filled in."""

from __future__ import annotations

import math

import pytest
import yaml

from cellquery.configuration import DEFAULT_CONFIG, check_config
from cellquery.errors import SpecError

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
