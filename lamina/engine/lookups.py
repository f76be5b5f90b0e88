"""Comparators: one small class each, turning ``lhs <op> value`` into SQL and bound parameters.

The shape follows Django's ``lookups.py``: a lookup validates its value against the column's
type when constructed, and ``as_sql`` returns SQL text in which every value is a ``?``.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
import threading
from typing import ClassVar

import duckdb
import pyarrow as pa

from ..errors import FieldError, ValidationError, did_you_mean


class SubQuery:
    """A compiled query used as a value (``field__in=QuerySet``): SQL selecting one column."""

    def __init__(self, sql: str, params: list, specs=()):
        self.sql, self.params, self.specs = sql, list(params), tuple(specs)


class ListTest(tuple):
    """``(sql, params)`` of a condition true where the list ``column`` of the queried row holds
    one of ``ids`` (NULL lists hold none): what an index of that column answers without a
    statement (Session.list_index)."""

    column: str
    ids: tuple

    def __new__(cls, sql: str, params: list, column: str, ids):
        made = super().__new__(cls, (sql, params))
        made.column, made.ids = column, tuple(ids)
        return made


def list_test(sql: str, params: list, column: str, ids) -> tuple[str, list]:
    """A :class:`ListTest` when every one of ``ids`` is an integer id; plain ``(sql, params)``
    otherwise (DuckDB then compares or rejects the values)."""
    ids = list(ids)
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return ListTest(sql, params, column, ids)
    return sql, params


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    if pa.types.is_boolean(t):
        return "True or False"
    if pa.types.is_timestamp(t):
        return "a datetime"
    if pa.types.is_date(t):
        return "a date"
    return "a string"


def coerce(value, arrow_type: pa.DataType, where: str):
    """``value`` as the Python type the column holds, or a ValidationError naming the field."""
    if value is None:
        return None
    bad = ValidationError(f"{where} expects {_type_name(arrow_type)}, got {value!r}")
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if pa.types.is_integer(arrow_type) and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if pa.types.is_boolean(arrow_type):
        if not isinstance(value, bool):
            raise bad
        return value
    if pa.types.is_timestamp(arrow_type):
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise bad from None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        raise bad
    if pa.types.is_date(arrow_type):
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise bad from None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        raise bad
    if not isinstance(value, str):
        raise bad
    return value


class Lookup:
    name: ClassVar[str]
    # The type a lookup's value must have; None means "the column's own type".
    value_type: ClassVar[pa.DataType | None] = None

    def __init__(self, lhs: str, value, arrow_type: pa.DataType, where: str):
        self.lhs = lhs
        # ``where`` is the path as the user wrote it, usually already ending in the lookup.
        named = self.name == "exact" or where.endswith(f"__{self.name}")
        self.where = where if named else f"{where}__{self.name}"
        self.value = self.prepare(value, self.value_type or arrow_type)

    def prepare(self, value, arrow_type):
        return coerce(value, arrow_type, self.where)

    def as_sql(self) -> tuple[str, list]:
        raise NotImplementedError


class _Binary(Lookup):
    operator: ClassVar[str]

    def as_sql(self):
        return f"{self.lhs} {self.operator} ?", [self.value]


class Exact(_Binary):
    name, operator = "exact", "="

    def as_sql(self):
        if self.value is None:
            return f"{self.lhs} IS NULL", []
        return super().as_sql()


class GreaterThan(_Binary):
    name, operator = "gt", ">"


class GreaterThanOrEqual(_Binary):
    name, operator = "gte", ">="


class LessThan(_Binary):
    name, operator = "lt", "<"


class LessThanOrEqual(_Binary):
    name, operator = "lte", "<="


class _Text(Lookup):
    value_type = pa.string()
    function: ClassVar[str]
    case_insensitive: ClassVar[bool] = False

    def as_sql(self):
        if self.case_insensitive:
            return f"{self.function}(lower({self.lhs}), lower(?))", [self.value]
        return f"{self.function}({self.lhs}, ?)", [self.value]


class IExact(_Text):
    name = "iexact"

    def as_sql(self):
        return f"lower({self.lhs}) = lower(?)", [self.value]


class Contains(_Text):
    name, function = "contains", "contains"


class IContains(Contains):
    name, case_insensitive = "icontains", True


class StartsWith(_Text):
    name, function = "startswith", "starts_with"


class IStartsWith(StartsWith):
    name, case_insensitive = "istartswith", True


class EndsWith(_Text):
    name, function = "endswith", "ends_with"


class IEndsWith(EndsWith):
    name, case_insensitive = "iendswith", True


class Regex(_Text):
    name = "regex"
    flags: ClassVar[str] = ""

    def as_sql(self):
        if self.flags:
            return f"regexp_matches({self.lhs}, ?, '{self.flags}')", [self.value]
        return f"regexp_matches({self.lhs}, ?)", [self.value]


    def prepare(self, value, arrow_type):
        value = super().prepare(value, arrow_type)
        check_regex(value, self.where)
        return value


_REGEX_CHECK = threading.local()


def check_regex(pattern: str, where: str) -> None:
    """Refuse a pattern DuckDB's regex engine (RE2) cannot compile, naming it, before the
    filter runs. RE2, not Python's ``re``: their syntaxes differ (no look-arounds in RE2)."""
    con = getattr(_REGEX_CHECK, "con", None)
    if con is None:
        con = _REGEX_CHECK.con = duckdb.connect()
    try:
        con.execute("SELECT regexp_matches('', ?)", [pattern])
    except duckdb.Error as exc:
        reason = str(exc).split(": ", 1)[-1].removesuffix(f": {pattern}")
        raise ValidationError(f"{where}: {pattern!r} is not a valid regular expression "
                              f"({reason})") from None


class IRegex(Regex):
    name, flags = "iregex", "i"


class IsNull(Lookup):
    name = "isnull"
    value_type = pa.bool_()

    def prepare(self, value, arrow_type):
        if not isinstance(value, bool):
            raise ValidationError(f"{self.where} expects True or False, got {value!r}")
        return value

    def as_sql(self):
        return f"{self.lhs} IS {'' if self.value else 'NOT '}NULL", []


class In(Lookup):
    name = "in"

    def prepare(self, value, arrow_type):
        if isinstance(value, SubQuery):
            return value
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValidationError(f"{self.where} expects a list or a QuerySet, got {value!r}")
        return [coerce(v, arrow_type, self.where) for v in value]

    def as_sql(self):
        if isinstance(self.value, SubQuery):
            return f"{self.lhs} IN ({self.value.sql})", list(self.value.params)
        values = [v for v in self.value if v is not None]
        if not values:
            return "false", []
        return f"{self.lhs} IN ({', '.join('?' * len(values))})", values


class Range(Lookup):
    name = "range"

    def prepare(self, value, arrow_type):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            raise ValidationError(f"{self.where} expects a (low, high) pair, got {value!r}")
        return [coerce(v, arrow_type, self.where) for v in value]

    def as_sql(self):
        return f"{self.lhs} BETWEEN ? AND ?", list(self.value)


LOOKUPS: dict[str, type[Lookup]] = {
    cls.name: cls
    for cls in (Exact, IExact, GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual, In,
                Contains, IContains, StartsWith, IStartsWith, EndsWith, IEndsWith, IsNull,
                Range, Regex, IRegex)
}


class Transform:
    """A function of a column that lookups then compare (``created_at__year__gte=2025``)."""

    name: ClassVar[str]
    function: ClassVar[str]
    output_type: ClassVar[pa.DataType] = pa.int64()

    @classmethod
    def applies_to(cls, arrow_type: pa.DataType) -> bool:
        return pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)

    @classmethod
    def as_sql(cls, lhs: str) -> str:
        return f"{cls.function}({lhs})"


class Year(Transform):
    name, function = "year", "year"


class Month(Transform):
    name, function = "month", "month"


class Day(Transform):
    name, function = "day", "day"


TRANSFORMS: dict[str, type[Transform]] = {t.name: t for t in (Year, Month, Day)}


def tests_null(rest: list[str], value) -> bool:
    """Whether a path's lookup asks for NULL: ``__isnull=True``, or ``=None`` (exact)."""
    if rest[-1] == "isnull":
        return value is True
    return value is None and (rest[-1] == "exact" or rest[-1] not in LOOKUPS)


def compare(lhs: str, arrow_type: pa.DataType, rest: list[str], value, where: str,
            owner: str) -> tuple[str, list]:
    """``lhs`` through the transforms in ``rest`` (year, month, day), then its lookup
    (``exact`` when none is named): ``created_at__year__gte=2025``."""
    lookup_name = "exact"
    for i, name in enumerate(rest):
        transform = TRANSFORMS.get(name)
        if transform is not None and transform.applies_to(arrow_type):
            lhs, arrow_type = transform.as_sql(lhs), transform.output_type
        elif name in LOOKUPS and i == len(rest) - 1:
            lookup_name = name
        else:
            temporal = pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)
            valid = sorted(LOOKUPS) + (sorted(TRANSFORMS) if temporal else [])
            raise unknown_comparator(name, where, owner, valid)
    lookup = LOOKUPS[lookup_name]
    if issubclass(lookup, _Text) and not (pa.types.is_string(arrow_type)
                                          or pa.types.is_large_string(arrow_type)):
        # Refused here, before any SQL runs (DuckDB would fail to bind contains(BIGINT, ...)).
        valid = [n for n, cls in sorted(LOOKUPS.items()) if not issubclass(cls, _Text)]
        raise FieldError(f"comparator {lookup_name!r} in {where!r} compares text, but {owner} "
                         f"is {arrow_type}; valid comparators: {', '.join(valid)}")
    return lookup(lhs, value, arrow_type, where).as_sql()


def unknown_comparator(name: str, where: str, owner: str, valid: list[str]) -> FieldError:
    return FieldError(f"unknown comparator {name!r} in {where!r} on {owner}"
                      f"{did_you_mean(name, valid)}; valid comparators: {', '.join(valid)}")


def list_holds_any(alias: str, column: str, view: str, ids_sql: str) -> str:
    """True where the list ``column`` of row ``alias`` (a row of ``view``) holds any id that
    ``ids_sql`` selects; NULL and empty lists hold none.

    Why a semi-join over the unnested lists: DuckDB's ``list_has_any`` against a list of many
    ids hashes that list for every row (~1 s per 1e6 rows at 100 ids); the semi-join is one
    hash join (~40 ms)."""
    return (f"{alias}.id IN (SELECT _u.id FROM (SELECT id, unnest({column}) AS v "
            f'FROM "{view}") _u WHERE _u.v IN ({ids_sql}))')
