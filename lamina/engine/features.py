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
from datetime import datetime, time

import pyarrow as pa

from ..catalog import tables
from ..catalog.tables import TableSpec
from ..catalog.tables.spec import BOOL, DATE, DATETIME, FLOAT, IDS, INT, STR
from ..errors import FieldError, ValidationError
from .filter_tree import SEP
from .lookups import (LOOKUPS, ListTest, SubQuery, coerce, compare, list_holds_any,
                      unknown_comparator)

FEATURE_ID_PATH = "_feature_id_"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

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
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ValidationError(f"{where} expects a list, got {value!r}")
        return [_encode_scalar(v, dtype.arrow.value_type, where) for v in value]
    return _encode_scalar(value, dtype.arrow, where)


def _encode_scalar(value, arrow_type: pa.DataType, where: str):
    """The write rules on top of a filter's coercion, the same as bulk ingest's (see
    tests/test_value_encoding.py): an integer column takes whole numbers only, a float column
    stores floats, a date column takes a datetime only at midnight."""
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if pa.types.is_integer(arrow_type) and isinstance(value, (int, float)) and not (
            isinstance(value, bool) or (whole and INT64_MIN <= value <= INT64_MAX)):
        raise ValidationError(f"{where} expects an integer, got {value!r}")
    if pa.types.is_floating(arrow_type) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if pa.types.is_date(arrow_type) and isinstance(value, datetime) and value.time() != time(0):
        raise ValidationError(f"{where} expects a date, got the datetime {value!r}")
    return coerce(value, arrow_type, where)


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
    needles = _json_needles(lookup, value)
    if needles:
        # Parsing JSON is most of the cost of such a filter (~40 ms per 1e6 rows on 2 cores,
        # against ~8 ms for a substring search): test first that the text holds the value.
        # A necessary condition only, so the answer does not change: see _json_needles.
        test = " OR ".join(f"contains({lhs}, ?)" for _ in needles)
        return f"({test}) AND {sql}", [*needles, path, *params]
    return sql, [path, *params]


# Text that JSON encoders write as itself: no quote, backslash, slash, control or non-ASCII
# character (escaped by some encoders), none of <, >, &, ' (escaped by others), and nothing
# that minified JSON or a re-printed number could produce differently (:, ,, {, }, ...). The
# one assumption: plain letters, digits, space, '_', '.', '-' are not written as \uXXXX
# escapes, which no common encoder does (lamina writes dicts with json.dumps; DuckDB, serde,
# Jackson, Go and JavaScript do not either).
_PLAIN_TEXT = re.compile(r"^[A-Za-z0-9 _.\-]+$")
_INTEGER = re.compile(r"^-?[0-9]+$")
_NUMBER_CHARS = set("0123456789.eE+-")
_MAX_NEEDLES = 8


def _json_needles(lookup: str, value) -> list[str]:
    """Substrings that the JSON text of a row must contain for a string comparison on one of
    its keys to hold; none when that cannot be known.

    ``json_extract_string`` reads a string key as the string and any other value as JSON text
    printed by DuckDB, so ``'123'`` also equals the number ``123``: the needle is the compared
    text without quotes. It is safe for plain text (``_PLAIN_TEXT``) that is not a number DuckDB
    could print differently from how it was written (``1.5`` may be stored as ``15e-1``): for
    ``exact``/``in`` any text but a non-integer number; for ``contains``/``startswith``/
    ``endswith`` only text with a character no number has."""
    if lookup in ("exact", "in"):
        values = value if isinstance(value, (list, tuple)) else [value]
        if len(values) > _MAX_NEEDLES or not all(
                isinstance(v, str) and _PLAIN_TEXT.match(v)
                and (_INTEGER.match(v) or not _is_number(v)) for v in values):
            return []
    elif lookup in ("contains", "startswith", "endswith"):
        values = [value]
        if not (isinstance(value, str) and _PLAIN_TEXT.match(value)
                and not set(value) <= _NUMBER_CHARS):
            return []
    else:
        return []
    return list(dict.fromkeys(values))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_lookup(rest: list[str]) -> tuple[list[str], str]:
    if rest and rest[-1] in LOOKUPS:
        return rest[:-1], rest[-1]
    return rest, "exact"


def feature_condition(feature: FeatureInfo, rest: list[str], value, alias: str, where: str,
                      has_column: bool, label_ids=None, table: str | None = None
                      ) -> tuple[str, list]:
    """SQL for a filter on a feature. ``has_column`` is False when no row has a value yet.
    ``label_ids(spec, condition, params)``, when given, returns the ids of the labels of
    ``spec`` that meet ``condition`` now; ``table`` is the view of the annotated table
    (both for categorical filters: see _categorical_condition)."""
    keys, lookup = split_lookup(rest)
    if not has_column:
        # No row carries this feature yet: every value is NULL. The value is still checked
        # against the dtype (labels are not looked up), so a wrong one fails as it would later.
        _feature_sql(feature, keys, lookup, rest, value, f"{alias}.{feature.column}", where)
        if lookup == "isnull":
            return ("true" if value else "false"), []
        return "false", []
    return _feature_sql(feature, keys, lookup, rest, value, f"{alias}.{feature.column}", where,
                        label_ids, table)


def _feature_sql(feature, keys, lookup, rest, value, column, where, label_ids=None, table=None
                 ) -> tuple[str, list]:
    try:
        return _feature_sql_unchecked(feature, keys, lookup, rest, value, column, where,
                                      label_ids, table)
    except ValidationError as exc:
        raise ValidationError(f"{exc} (feature {feature.name!r} has dtype "
                              f"{feature.dtype.text})") from None


def _feature_sql_unchecked(feature, keys, lookup, rest, value, column, where, label_ids, table
                           ) -> tuple[str, list]:
    dtype = feature.dtype
    if dtype.kind == "dict":
        if not keys:
            if lookup != "isnull":
                raise FieldError(f"{where}: compare a key of the dict feature "
                                 f"{feature.name!r}, e.g. {feature.name}__<key>=...")
            return LOOKUPS["isnull"](column, value, pa.string(), where).as_sql()
        return json_condition(column, keys, lookup, value, where)
    if dtype.kind == "cat":
        if keys:
            raise unknown_comparator(keys[0], where, f"feature {feature.name!r}",
                                     sorted(LOOKUPS))
        return _categorical_condition(feature, column, lookup, value, where, label_ids, table)
    if dtype.kind == "list":
        if lookup == "isnull" and not keys:
            return LOOKUPS["isnull"](column, value, dtype.arrow, where).as_sql()
        element = coerce(value, dtype.arrow.value_type, where)
        return f"coalesce(list_contains({column}, ?), false)", [element]
    return compare(column, dtype.arrow, rest, value, where, f"feature {feature.name!r}")


# How a categorical filter tests a row's list of label ids against the k ids it asks for,
# measured with DuckDB 1.5 on 2 cores (bench/features.py; 1e5 rows of 1-3 ids each):
#   k <= 2:  list_contains(col, ?) OR ...               ~10 ms for k=2 (~5 ms per id)
#   k <= 32: any element in a constant list (a lambda)  ~15 ms at k=10, ~30 ms at k=45
#   more:    a semi-join over the unnested lists        ~20 ms whatever k
# list_has_any(col, <list>), the obvious form, hashes the list for every row: 34 ms at k=2,
# 1.7 s at k=500, 9 s at k=5000.
MAX_CONTAINS = 2
MAX_LAMBDA = 32


def _categorical_condition(feature, column, lookup, value, where, label_ids=None, table=None
                           ) -> tuple[str, list]:
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
    if label_ids is not None and not has_subquery(value):
        # The labels are resolved now, on the label table's current snapshot (a small table),
        # so that the scan of the annotated table tests constants: list_contains(col, 7) is
        # 3-5x faster in DuckDB than a semi-join on the label table, the form used when no
        # resolver can query (and for QuerySet values). One label by name or id can be
        # looked up as get() does, without reading every file of the label table.
        plain = lookup == "exact" and (_is_id(value) if by_id else isinstance(value, str))
        found = label_ids(spec, inner, params, equal={field: value} if plain else None)
        return contains_any(column, found, feature.column, table)
    labels = f'SELECT l.id FROM "{spec.view}" l WHERE {inner}'
    if table is None:
        return f"coalesce(list_has_any({column}, (SELECT list(id) FROM ({labels}))), false)", params
    return list_holds_any(column.rsplit(".", 1)[0], feature.column, table, labels), params


def contains_any(column: str, ids: list[int], name: str, table: str | None
                  ) -> tuple[str, list]:
    """True where the list ``column`` (``<alias>.<name>``, a column of the view ``table``)
    holds one of ``ids``; NULL lists hold none. See MAX_CONTAINS for the forms."""
    ids = sorted({int(i) for i in ids})
    if not ids:
        return ListTest("false", [], name, ids)
    if len(ids) <= MAX_CONTAINS:
        tests = " OR ".join(f"list_contains({column}, ?)" for _ in ids)
        return ListTest(f"coalesce({tests}, false)", ids, name, ids)
    if len(ids) <= MAX_LAMBDA or table is None:
        return ListTest(f"coalesce(len(list_filter({column}, lambda x: "
                        "list_contains(?::BIGINT[], x))) > 0, false)", [ids], name, ids)
    return ListTest(list_holds_any(column.rsplit(".", 1)[0], name, table,
                                   "SELECT unnest(?::BIGINT[])"), [ids], name, ids)


def has_subquery(value) -> bool:
    if isinstance(value, SubQuery):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, SubQuery) for v in value)


def _is_id(value) -> bool:
    """Records arrive here as their integer ids (the planner converts them)."""
    return isinstance(value, int) and not isinstance(value, bool)


def features_of(rows: list[dict]) -> list[FeatureInfo]:
    """FeatureInfo for rows of the feature table (skipping feature types)."""
    return [FeatureInfo(r["id"], r["name"], parse_dtype(r["_dtype_str"]))
            for r in rows if not r.get("is_type") and r.get("_dtype_str")]


class FeatureSet:
    """The features of one version of the feature table, read as far as they are asked for.

    Why: a filter names one or two features, and on an object store each data file of the
    feature table is a request; a table grown by single saves has a file per feature (ten
    files: 10 of the 17 requests of a first feature filter, bench/s3_results.json). A name or
    id is looked up as get() looks up a row (Session.rows_equal: only the files whose
    statistics allow it); every feature is read when a caller needs them all, or when the
    lookup cannot tell."""

    def __init__(self, read_all, lookup=None):
        # read_all() -> rows of every feature on the main branch; lookup(column, value) ->
        # the rows on the main branch whose column equals value, or None when it cannot tell.
        self._read_all, self._lookup = read_all, lookup
        self._every: list[FeatureInfo] | None = None
        self._found: dict[tuple[str, object], list[FeatureInfo]] = {}

    def all(self) -> list[FeatureInfo]:
        if self._every is None:
            self._every = features_of(self._read_all())
        return list(self._every)

    def having(self, column: str, value) -> list[FeatureInfo]:
        """The features whose ``column`` (``name`` or ``id``) equals ``value``."""
        if self._every is None and self._lookup is not None:
            found = self._found.get((column, value))
            if found is None:
                rows = self._lookup(column, value)
                if rows is not None:
                    found = features_of(sorted(rows, key=lambda row: row["id"]))
                    self._found[(column, value)] = found
            if found is not None:
                return list(found)
        return [f for f in self.all() if getattr(f, column) == value]


class FeatureResolver:
    """Features by name or id for the planner, from one snapshot of the feature table."""

    def __init__(self, features: FeatureSet, table_columns, run=None, version=None,
                 rows_equal=None):
        self._features = features
        self._table_columns = table_columns  # spec -> set of column names in its view
        # run(sql, params, specs) -> pyarrow.Table on current snapshots; None: labels of
        # categorical filters are matched by a subquery when the filter runs.
        self._run = run
        # version(spec) -> the version of spec's table the views now show (after a refresh);
        # with it, resolved label ids are kept per label-table version (a filter compiles
        # twice, at filter() and when it runs; a label table of many small files costs
        # ~1-2 ms a query).
        self._version = version
        # rows_equal(spec, {column: value}) -> rows, or None when it cannot tell (see
        # Session.rows_equal).
        self._rows_equal = rows_equal
        self._label_cache: dict = {}

    def by_name(self, name: str) -> list[FeatureInfo]:
        return self._features.having("name", name)

    def by_id(self, feature_id: int) -> FeatureInfo | None:
        return next(iter(self._features.having("id", feature_id)), None)

    def all(self) -> list[FeatureInfo]:
        return self._features.all()

    def names(self) -> list[str]:
        return [f.name for f in self._features.all()]

    def has_column(self, spec: TableSpec, feature: FeatureInfo) -> bool:
        return feature.column in self._table_columns(spec)

    @property
    def label_ids(self):
        """``label_ids(spec, condition, params, reads=())``: ids of the rows in ``spec``'s
        view that meet ``condition`` (on alias ``l``), which may also read the registries
        ``reads`` (kept per version of each); None when this resolver cannot query.
        ``equal``, ``{column: value}``, says that ``condition`` asks exactly that (no branch
        either): the labels are then looked up as ``get()`` looks up rows, when it can."""
        if self._run is None:
            return None

        def label_ids(spec: TableSpec, condition: str, params: list, reads=(),
                      equal: dict | None = None) -> list[int]:
            specs = sorted({spec, *reads}, key=lambda s: s.qualified)
            key = None
            if self._version is not None:
                key = (tuple((s.qualified, self._version(s)) for s in specs), condition,
                       _hashable(params))
                try:
                    return list(self._label_cache[key])
                except (KeyError, TypeError):  # TypeError: a parameter that cannot be hashed
                    pass
            rows = None
            if equal is not None and not reads and self._rows_equal is not None:
                rows = self._rows_equal(spec, equal)
            if rows is not None:
                ids = sorted({row["id"] for row in rows})
            else:
                table = self._run(f'SELECT DISTINCT l.id FROM "{spec.view}" l WHERE {condition}',
                                  params, specs)
                ids = table.column(0).to_pylist()
            if key is not None:
                if len(self._label_cache) >= 256:
                    self._label_cache.clear()
                try:
                    self._label_cache[key] = tuple(ids)
                except TypeError:
                    pass
            return ids

        return label_ids


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


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
