"""Which data files of a version may hold a value, from the statistics the Delta log carries.

Each ``add`` action of the log may carry ``stats``: the file's row count and, per column, its
null count, minimum and maximum. A file whose statistics prove that no row equals a value need
not be fetched: on an object store each file is a request, and a registry grown by single
saves is one file per save, each holding one row (its minimum is its maximum), so
``Record.get(name=...)`` names one file of dozens.

A file is ruled out only when its statistics prove it; anything unknown keeps it:
- no statistics, or none for the column (a type lamina writes none for, a column added
  after the file was written): kept;
- a column whose every row is NULL (null count = row count) holds no value: ruled out;
- text bounds may be truncated by other writers (Spark and deltalake cut long strings): a
  truncated minimum is a prefix of the true one, so a value below it is below the true
  minimum; a truncated maximum is a prefix of the true one, so a value above it is above the
  true maximum unless the maximum is a prefix of the value;
- a value and bounds of different kinds (text against numbers, booleans, timestamps written
  as text, NaN) are not compared: kept.
Text compares as Python strings, by code point, which is the byte order of UTF-8 that Parquet
statistics and DuckDB's ``=`` use.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class FileStats:
    """The statistics of one data file, as its ``add`` action states them."""

    num_records: int | None
    minimum: dict
    maximum: dict
    nulls: dict

    @classmethod
    def of_action(cls, add: dict) -> FileStats | None:
        """The statistics of an ``add`` action; None when it carries none."""
        text = add.get("stats")
        if not text:
            return None
        stats = json.loads(text) if isinstance(text, str) else text
        records = stats.get("numRecords")
        return cls(None if records is None else int(records), stats.get("minValues") or {},
                   stats.get("maxValues") or {}, stats.get("nullCount") or {})

    def all_null(self, column: str) -> bool:
        """Whether every row of the file is NULL in ``column``, as far as stated."""
        nulls = self.nulls.get(column)
        return (self.num_records is not None and isinstance(nulls, int)
                and not isinstance(nulls, bool) and nulls >= self.num_records)

    def may_equal(self, column: str, value) -> bool:
        """Whether a row of the file may hold ``value`` (not None) in ``column``."""
        if self.all_null(column):
            return False
        low, high = self.minimum.get(column), self.maximum.get(column)
        if low is None or high is None:
            return True
        if isinstance(value, str):
            if not (isinstance(low, str) and isinstance(high, str)):
                return True
            return not (value < low or (value > high and not value.startswith(high)))
        if _number(value) and _number(low) and _number(high):
            if isinstance(value, float) and math.isnan(value):
                return True
            return low <= value <= high
        return True

    def may_match(self, equal: dict) -> bool:
        """Whether a row of the file may hold every ``{column: value}`` of ``equal``."""
        return all(self.may_equal(column, value) for column, value in equal.items())


def files_that_may_hold_ids(files, stats: dict, ids: list[int]) -> list[str]:
    """The ``files`` that may hold a row whose ``id`` is one of ``ids``: those whose id
    bounds take in one of them (a file without statistics of its ids is kept)."""
    wanted = sorted(ids)
    kept = []
    for uri in files:
        found = stats.get(uri)
        if found is not None and found.all_null("id"):
            continue
        low = None if found is None else found.minimum.get("id")
        high = None if found is None else found.maximum.get("id")
        if not (_number(low) and _number(high)):
            kept.append(uri)
            continue
        at = bisect.bisect_left(wanted, low)
        if at < len(wanted) and wanted[at] <= high:
            kept.append(uri)
    return kept


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _comparable(value, schema: pa.Schema, column: str) -> bool:
    index = schema.get_field_index(column)
    if index < 0:
        return False
    kind = schema.field(index).type
    if isinstance(value, str):
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)
    return _number(value) and (pa.types.is_integer(kind) or pa.types.is_floating(kind))


def files_that_may_match(files, stats: dict, equal: dict, schema: pa.Schema) -> list[str]:
    """The ``files`` (URIs) that may hold a row equal to ``equal``, given ``stats`` by URI
    (a file without an entry is kept). Only the columns of ``schema`` whose type is the
    value's kind are compared (text with text; numbers with integers or floats): other
    columns' statistics (timestamps as text, decimals) do not compare as the query does."""
    equal = {c: v for c, v in equal.items() if _comparable(v, schema, c)}
    if not equal:
        return list(files)
    kept = []
    for uri in files:
        found = stats.get(uri)
        if found is None or found.may_match(equal):
            kept.append(uri)
    return kept
