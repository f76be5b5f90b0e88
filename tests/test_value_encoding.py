"""One set of rules for feature values: bulk ingest encodes a manifest column at once (Polars),
``artifact.features.add_values`` encodes one value at a time. Both must accept the same values,
store the same values and refuse the same ones, whatever the dtype.

The property compares the two encoders on random values of every feature dtype, given as a
typed manifest column (ints, floats, bools, text, dates, datetimes, dicts, lists). No catalog is
needed: the encoders only read the feature's dtype.

One difference is by design: a manifest read from CSV holds text, so bulk ingest also reads a
text cell of a number, bool or dict feature as the value it spells ("3", "true", a JSON object),
where a single value must have the feature's type; likewise the text elements of a list cell.
Text cells and lists of text are compared only for the dtypes whose single values take text too
(str, date, datetime).
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timezone

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lamina.engine.features import FeatureInfo, parse_dtype
from lamina.engine.features import encode as encode_one
from lamina.errors import ValidationError
from lamina.models.ingest.context import MANIFEST
from lamina.models.ingest.encode import encode as encode_column
from lamina.models.ingest.report import Issues

DTYPES = ["int", "float", "num", "bool", "str", "date", "datetime", "dict", "list[int]",
          "list[float]", "list[str]", "list[bool]", "list[date]"]

ints = st.integers(-(2**53), 2**53)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
integral_floats = st.integers(-(2**40), 2**40).map(float)
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
dates = st.dates(date(1900, 1, 1), date(2200, 12, 31))
naive = st.datetimes(datetime(1900, 1, 1), datetime(2200, 12, 31))
midnight = dates.map(lambda d: datetime.combine(d, time(0)))
aware = naive.map(lambda d: d.replace(tzinfo=timezone.utc))

# (Polars dtype of the manifest column, values of it)
COLUMNS = {
    "int": (pl.Int64, ints),
    "float": (pl.Float64, floats | integral_floats),
    "bool": (pl.Boolean, st.booleans()),
    "text": (pl.String, words),
    "date text": (pl.String, dates.map(date.isoformat)),
    "datetime text": (pl.String, naive.map(datetime.isoformat)),
    "date": (pl.Date, dates),
    "datetime": (pl.Datetime("us"), naive | midnight),
    "datetime utc": (pl.Datetime("us", "UTC"), aware),
    "dict": (None, None),  # drawn in column(): one shape per column
    "list of int": (pl.List(pl.Int64), st.lists(ints, max_size=4)),
    "list of float": (pl.List(pl.Float64), st.lists(floats | integral_floats, max_size=4)),
    "list of text": (pl.List(pl.String), st.lists(words, max_size=4)),
}


@st.composite
def column(draw):
    kind = draw(st.sampled_from(sorted(COLUMNS)))
    dtype, values = COLUMNS[kind]
    if kind == "dict":
        # A dict column has one type per key (a manifest column is typed), and a missing key
        # and a null value are the same cell in it: these dicts have no None values.
        shape = draw(st.sampled_from(["flat", "nested"]))
        values = (st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(-1000, 1000),
                                  min_size=3) if shape == "flat" else
                  st.fixed_dictionaries({"name": words,
                                         "nested": st.fixed_dictionaries({"x": ints, "y": words})}))
    cells = draw(st.lists(st.none() | values, min_size=1, max_size=8))
    return kind, dtype, cells


def stored(value):
    """A stored value as compared: dict features hold JSON text (compared as JSON), datetimes
    compare as instants, floats by value."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, list):
        return [stored(v) for v in value]
    return value


def outcome(info: FeatureInfo, value) -> tuple[str, object]:
    if info.dtype.kind == "dict" and value is not None:
        value = json.loads(value)
    return "stored", stored(value)


def one_at_a_time(info: FeatureInfo, cells: list) -> list:
    results = []
    for cell in cells:
        try:
            results.append(outcome(info, encode_one(info, cell)))
        except ValidationError:
            results.append(("refused", None))
    return results


def whole_column(info: FeatureInfo, dtype, cells: list) -> list:
    series = pl.Series(MANIFEST + "x", cells, dtype=dtype, strict=True)
    frame = pl.DataFrame([series]).with_columns(
        pl.int_range(0, len(cells), dtype=pl.Int64).alias("_row"))
    issues = Issues()
    values = frame.select(encode_column(frame, "x", info, issues).alias("v"))["v"].to_list()
    refused = set(issues.rows().tolist())
    return [("refused", None) if row in refused else outcome(info, value)
            for row, value in enumerate(values)]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


@pytest.mark.parametrize("dtype_text", DTYPES)
@settings(max_examples=50, deadline=None)
@given(drawn=column())
def test_bulk_and_single_value_encoders_agree(dtype_text, drawn):
    kind, dtype, cells = drawn
    info = FeatureInfo(1, "x", parse_dtype(dtype_text))
    element_kind = dtype_text.removeprefix("list[").removesuffix("]")
    text = dtype == pl.String or dtype == pl.List(pl.String)
    assume(not text or element_kind in ("str", "date", "datetime"))
    single = one_at_a_time(info, cells)
    bulk = whole_column(info, dtype, cells)
    for cell, one, many in zip(cells, single, bulk):
        assert one[0] == many[0] and same(one[1], many[1]), (
            f"{dtype_text} feature, {kind} cell {cell!r}: one value -> {one}, a column -> {many}")
