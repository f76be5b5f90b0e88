"""Frames look the same on pandas 2 and 3: text columns hold str or None (pandas 3 would give
its ``str`` dtype with NaN for a missing value)."""

from __future__ import annotations

import math

import lamina as ln

from helpers import local_only


def _text_column_is_plain(column) -> bool:
    return column.dtype == object and all(v is None or isinstance(v, str) for v in column)


@local_only
def test_missing_text_is_none_in_every_frame(instance, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a")
    ln.Artifact(str(path), key="a.txt").save()
    ln.Record(name="Experiment 1").save()
    frame = ln.Artifact.to_dataframe()
    assert list(frame["description"]) == [None] and list(frame["kind"]) == [None]
    assert _text_column_is_plain(frame["key"]) and _text_column_is_plain(frame["description"])
    included = ln.Artifact.to_dataframe(include=["created_by__name", "run__uid"])
    assert list(included["run__uid"]) == [None]
    assert _text_column_is_plain(included["created_by__name"])
    sql = ln.sql("SELECT key, description FROM artifact")
    assert list(sql["description"]) == [None] and _text_column_is_plain(sql["key"])
    scores = ln.Record.search("experiment").scores
    assert _text_column_is_plain(scores["name"]) and list(scores["description"]) == [None]
    # Numbers keep NaN for missing values, as on pandas 2.
    assert math.isnan(frame["n_observations"].iloc[0])
