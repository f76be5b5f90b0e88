"""Features: dtypes, value encoding, and feature filters.

Each feature's values live in one typed column ``f_<feature id>`` on the annotated table
(artifact, record, run), so DuckDB prunes and scans them like any field. Why flat columns and
not one struct or map column: a struct would have to be rewritten whole whenever a feature is
added, and a MAP<str, JSON> cannot be pruned by Parquet statistics or compared natively. With
flat columns, adding a feature is a schema merge in the commit that first writes it, files
written before simply lack the column (DuckDB's ``union_by_name`` reads NULL there), and a
filter on a float feature is a plain column comparison. The id in the name keeps the column
stable when a feature is renamed and keeps equal names under different feature types apart.

Categorical values are ``list<int64>`` of label ids; dicts are JSON text; dates are DATE.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from ..catalog import tables
from ..catalog.tables import TableSpec
from ..catalog.tables.spec import BOOL, DATE, DATETIME, FLOAT, IDS, INT, STR
from ..errors import FieldError, ValidationError
from .lookups import LOOKUPS, SubQuery, coerce, compare

FEATURE_ID_PATH = "_feature_id_"
SEP = "__"

SCALAR_TYPES = {"str": STR, "int": INT, "float": FLOAT, "num": FLOAT, "bool": BOOL,
                "date": DATE, "datetime": DATETIME, "dict": STR}
_CAT = re.compile(r"^cat\[(?P<registry>[\w.]+?)(?:\[(?P<type>[^\]]+)\])?\]$")
_LIST = re.compile(r"^list\[(?P<inner>\w+)\]$")


@dataclass(frozen=True)
class FeatureDtype:
    text: str
    kind: str  # a key of SCALAR_TYPES, "list" or "cat"
    arrow: pa.DataType
    label_spec: TableSpec | None = None
    label_type: str | None = None  # cat[Record[Perturbation]]: only records of that type

    @property
    def is_categorical(self) -> bool:
        return self.kind == "cat"


def registry_spec(name: str) -> TableSpec | None:
    """``Record`` / ``ULabel`` / ``bionty.CellType`` → the table it names."""
    module, _, model = name.rpartition(".")
    for spec in tables.BY_QUALIFIED.values():
        if spec.model == model and spec.module == (module or "core"):
            return spec
    return None


def parse_dtype(text: str) -> FeatureDtype:
    text = text.strip()
    if text in SCALAR_TYPES:
        return FeatureDtype(text, text, SCALAR_TYPES[text])
    match = _LIST.match(text)
    if match and match["inner"] in SCALAR_TYPES and match["inner"] != "dict":
        return FeatureDtype(text, "list", pa.list_(SCALAR_TYPES[match["inner"]]))
    match = _CAT.match(text)
    if match:
        spec = registry_spec(match["registry"])
        if spec is not None:
            return FeatureDtype(text, "cat", IDS, spec, match["type"])
    raise ValidationError(
        f"unknown feature dtype {text!r}; use one of {', '.join(SCALAR_TYPES)}, list[str] (or "
        "another scalar), cat[Record], cat[Record[TypeName]], cat[ULabel], cat[bionty.CellType]")


@dataclass(frozen=True)
class FeatureInfo:
    id: int
    name: str
    dtype: FeatureDtype

    @property
    def column(self) -> str:
        return f"f_{int(self.id)}"


def encode(feature: FeatureInfo, value):
    """A non-categorical value as stored in the feature's column (validated against the dtype)."""
    dtype, where = feature.dtype, f"feature {feature.name!r} ({feature.dtype.text})"
    if value is None:
        return None
    if dtype.kind == "dict":
        if not isinstance(value, dict):
            raise ValidationError(f"{where} expects a dict, got {value!r}")
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except TypeError as exc:
            raise ValidationError(f"{where}: {exc}") from None
    if dtype.kind == "list":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValidationError(f"{where} expects a list, got {value!r}")
        return [coerce(v, dtype.arrow.value_type, where) for v in value]
    if dtype.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if dtype.kind == "date" and isinstance(value, datetime):
        raise ValidationError(f"{where} expects a date, got the datetime {value!r}")
    return coerce(value, dtype.arrow, where)


def decode(feature: FeatureInfo, value):
    if value is None:
        return None
    if feature.dtype.kind == "dict":
        return json.loads(value)
    return value


def json_path(keys: list[str]) -> str:
    """A JSON path for dict keys, each quoted so that any key text is just a key."""
    return "$" + "".join('."' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys)


def json_condition(lhs: str, keys: list[str], lookup: str, value, where: str) -> tuple[str, list]:
    """A comparison on the value at ``keys`` inside a JSON column (``study_metadata__detail2__gt``).
    The value's Python type picks how the JSON value is read: number, bool or text."""
    path = json_path(keys)
    probe = value[0] if isinstance(value, (list, tuple)) and value else value
    if lookup == "isnull":
        sql, params = LOOKUPS["isnull"](f"json_extract({lhs}, ?)", value, pa.string(),
                                        where).as_sql()
        return sql, [path, *params]
    if isinstance(probe, bool):
        expr, arrow_type = f"TRY_CAST(json_extract_string({lhs}, ?) AS BOOLEAN)", pa.bool_()
    elif isinstance(probe, (int, float)):
        expr, arrow_type = f"TRY_CAST(json_extract_string({lhs}, ?) AS DOUBLE)", pa.float64()
    else:
        expr, arrow_type = f"json_extract_string({lhs}, ?)", pa.string()
    sql, params = LOOKUPS[lookup](expr, value, arrow_type, where).as_sql()
    return sql, [path, *params]


def split_lookup(rest: list[str]) -> tuple[list[str], str]:
    if rest and rest[-1] in LOOKUPS:
        return rest[:-1], rest[-1]
    return rest, "exact"


def feature_condition(feature: FeatureInfo, rest: list[str], value, alias: str, where: str,
                      has_column: bool) -> tuple[str, list]:
    """SQL for a filter on a feature. ``has_column`` is False when no row has a value yet."""
    keys, lookup = split_lookup(rest)
    column = f"{alias}.{feature.column}"
    dtype = feature.dtype
    if not has_column:
        # No row carries this feature yet: every value is NULL.
        if lookup == "isnull":
            return ("true" if value else "false"), []
        return "false", []
    if dtype.kind == "dict":
        if not keys:
            if lookup != "isnull":
                raise FieldError(f"{where}: compare a key of the dict feature "
                                 f"{feature.name!r}, e.g. {feature.name}__<key>=...")
            return LOOKUPS["isnull"](column, value, pa.string(), where).as_sql()
        return json_condition(column, keys, lookup, value, where)
    if dtype.kind == "cat":
        if keys:
            raise FieldError(f"unknown comparator {keys[0]!r} in {where!r} on feature "
                             f"{feature.name!r}; valid comparators: {', '.join(sorted(LOOKUPS))}")
        return _categorical_condition(feature, column, lookup, value, where)
    if dtype.kind == "list":
        if lookup == "isnull" and not keys:
            return LOOKUPS["isnull"](column, value, dtype.arrow, where).as_sql()
        element = coerce(value, dtype.arrow.value_type, where)
        return f"coalesce(list_contains({column}, ?), false)", [element]
    return compare(column, dtype.arrow, rest, value, where, f"feature {feature.name!r}")


def _categorical_condition(feature, column, lookup, value, where) -> tuple[str, list]:
    if lookup == "isnull":
        if not isinstance(value, bool):
            raise ValidationError(f"{where} expects True or False, got {value!r}")
        if value:
            return f"({column} IS NULL OR len({column}) = 0)", []
        return f"len({column}) > 0", []
    spec = feature.dtype.label_spec
    by_id = _is_id(value) or isinstance(value, SubQuery) or (
        isinstance(value, (list, tuple)) and bool(value) and all(_is_id(v) for v in value))
    field = "id" if by_id else (spec.name_field or "name")
    arrow_type = pa.int64() if by_id else spec.column(field).type
    inner, params = LOOKUPS[lookup](f"l.{field}", value, arrow_type, where).as_sql()
    labels = f'SELECT list(l.id) FROM "{spec.view}" l WHERE {inner}'
    return f"coalesce(list_has_any({column}, ({labels})), false)", params


def _is_id(value) -> bool:
    """Records arrive here as their integer ids (the planner converts them)."""
    return isinstance(value, int) and not isinstance(value, bool)


def features_of(rows: list[dict]) -> list[FeatureInfo]:
    """FeatureInfo for rows of the feature table (skipping feature types)."""
    return [FeatureInfo(r["id"], r["name"], parse_dtype(r["_dtype_str"]))
            for r in rows if not r.get("is_type") and r.get("_dtype_str")]


class FeatureResolver:
    """Features by name or id for the planner, from one snapshot of the feature table."""

    def __init__(self, features: list[FeatureInfo], table_columns):
        self._features = features
        self._table_columns = table_columns  # spec -> set of column names in its view

    def by_name(self, name: str) -> list[FeatureInfo]:
        return [f for f in self._features if f.name == name]

    def by_id(self, feature_id: int) -> FeatureInfo | None:
        return next((f for f in self._features if f.id == feature_id), None)

    def all(self) -> list[FeatureInfo]:
        return list(self._features)

    def names(self) -> list[str]:
        return [f.name for f in self._features]

    def has_column(self, spec: TableSpec, feature: FeatureInfo) -> bool:
        return feature.column in self._table_columns(spec)


def to_display(feature: FeatureInfo, value, label_names: dict[int, str]):
    """A stored value as users read it: label names (a set when several), dicts, dates."""
    if value is None:
        return None
    if feature.dtype.is_categorical:
        names = [label_names.get(i) for i in value]
        if not names:
            return None
        return names[0] if len(names) == 1 else set(names)
    return decode(feature, value)


def is_feature_path(head: str) -> bool:
    return head.startswith(FEATURE_ID_PATH)


def feature_id_path(feature_id: int, lookup: str | None = None) -> str:
    return f"{FEATURE_ID_PATH}{int(feature_id)}" + (f"{SEP}{lookup}" if lookup else "")


__all__ = ["FeatureDtype", "FeatureInfo", "FeatureResolver", "parse_dtype", "encode", "decode",
           "feature_condition", "to_display"]
