"""Cells and datasets per value (`value_counts.per_value`), for any column a spec may name."""

from __future__ import annotations

import pandas as pd

from cellquery.query.value_counts import per_value


def test_a_criterion_on_dataset_id_counts_its_own_values():
    """The smoke spec names its dataset: the column counted is the one the datasets are counted by."""
    frame = pd.DataFrame({"dataset_id": ["a", "a", "b"]})
    assert per_value(frame, "dataset_id", ["a", "c"]) == {
        "a": {"cells": 2, "datasets": 1},
        "c": {"cells": 0, "datasets": 0},
    }


def test_a_multi_valued_column_counts_each_term():
    frame = pd.DataFrame(
        {"disease_ontology_term_id": ["MONDO:1 || MONDO:2", "MONDO:1"], "dataset_id": ["a", "b"]}
    )
    assert per_value(frame, "disease_ontology_term_id") == {
        "MONDO:1": {"cells": 2, "datasets": 2},
        "MONDO:2": {"cells": 1, "datasets": 1},
    }
