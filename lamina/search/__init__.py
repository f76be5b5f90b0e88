"""Search: rank the rows of a table for a query string. Ranks and nothing else.

Two entry points:

- :func:`search_registry` — a registry (``TableSpec``) through an engine ``Session``: the index is
  built over the registry's current snapshot and cached under (instance, table, fields, Delta
  version), so it is built once per snapshot and reused by every query until the next commit.
- :func:`search_table` — any table (Arrow, pandas, a DuckDB relation, or a function returning
  one) with given text columns, for tables outside the catalog such as a public ontology
  (``bt.CellType.public().search``). Pass a ``cache_key`` that changes when the data does (e.g.
  ``("CL", "v2026-03-26")``); without one the index is cached for the table object itself.

Both return a pandas DataFrame of the matching rows, best first, with a ``score`` column (100 is
an exact name match; see :mod:`lamina.search.rank` for the tiers), a ``match`` column saying why
the row matched (exact, synonym, plural, spelling, abbreviation, word, prefix, bm25, typo) and a
``matched`` column with the field and text that matched (``synonyms: IBD``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow as pa

from ..catalog.instance import MAIN_BRANCH_ID
from ..errors import FieldError, ValidationError, unknown_field
from .index import LONG, NAME, SHORT, Field, SearchIndex
from .rank import BANDS, TIERS, Hit, Query, rank

# Fields holding several values separated by "|" (the seed system's convention for synonyms).
SPLIT_FIELDS = frozenset({"synonyms"})
# Long free text: matched by words and BM25, never as a whole or by trigrams.
LONG_FIELDS = frozenset({"description", "source_code"})
# Indexes kept in memory (least recently used dropped first). A newer snapshot of a table
# replaces the index of its older one right away.
MAX_INDEXES = 16


def search_registry(session, spec, string: str, *, field: str | Sequence[str] | None = None,
                    limit: int | None = 20, case_sensitive: bool = False) -> pd.DataFrame:
    """Rank the rows of registry ``spec`` (main branch) for ``string``.

    The DataFrame is indexed by ``id`` and holds the indexed fields, ``score`` and ``match``.
    """
    query = check_query(string, limit, case_sensitive)
    fields, searched = registry_fields(spec, field)
    family = ("registry", session.instance.uid, session.instance.root, spec.qualified, fields)
    with session.lock:
        key = (family, session.current_version(spec))
        index = _CACHE.get(key)
        if index is None:
            where = f"WHERE branch_id = {MAIN_BRANCH_ID}" if spec.has_branch else ""
            names = ", ".join(f'"{f.name}"' for f in fields)
            # Identifiers come from the declared TableSpec, never from the caller.
            source = session.con.execute(
                f'SELECT id, {names} FROM "{spec.view}" {where} ORDER BY id').to_arrow_table()
    if index is None:
        index = _CACHE.build(key, lambda: source, fields)
    hits = rank(index, query, limit=limit, fields=searched, case_sensitive=case_sensitive)
    return _frame(index, hits, index_by="id")


def registry_fields(spec, field: str | Sequence[str] | None = None
                    ) -> tuple[tuple[Field, ...], tuple[int, ...] | None]:
    """The fields to index for a search of ``spec`` and, when ``field`` restricts it, the
    positions of the searched ones among them. The registry's name field and declared search
    fields share one index; a restriction to some of them reuses it; other text fields (``uid``,
    ``hash``, ...) get an index of their own."""
    text = [c.name for c in spec.columns if pa.types.is_string(c.type) and not c.json]
    default = [n for n in dict.fromkeys([spec.name_field, *spec.search_fields]) if n in text]
    names = _requested(field, text, spec) if field is not None else default
    if not names:
        raise FieldError(f"{spec.model} has no text fields to search")
    indexed = default if set(names) <= set(default) else names
    fields = tuple(Field(n, _role(n, spec.name_field), n in SPLIT_FIELDS) for n in indexed)
    searched = None if field is None else tuple(indexed.index(n) for n in names)
    return fields, searched


def _requested(field, text: list[str], spec) -> list[str]:
    names = [field] if isinstance(field, str) else list(field)
    if not names:
        raise FieldError(f"field= names no field; text fields of {spec.model}: {text}")
    for name in names:
        if not isinstance(name, str):
            raise FieldError(f"field= takes field names, got {name!r}")
        if spec.column(name) is None:
            raise unknown_field(name, spec.model, text)
        if name not in text:
            raise FieldError(f"{spec.model}.{name} is not a text field and cannot be "
                             f"searched; text fields: {text}")
    return list(dict.fromkeys(names))


def _role(name: str, name_field: str | None, id_fields: Sequence[str] = (),
          long_fields: Sequence[str] = LONG_FIELDS) -> int:
    if name in long_fields:
        return LONG
    if name == name_field or name == "uid" or name.endswith("_id") or name in id_fields:
        return NAME
    return SHORT


def search_table(data, string: str, *, fields: Sequence[str], name_field: str | None = None,
                 key: str | None = None, id_fields: Sequence[str] = (),
                 split_fields: Sequence[str] = tuple(SPLIT_FIELDS),
                 long_fields: Sequence[str] = tuple(LONG_FIELDS), cache_key=None,
                 field: str | Sequence[str] | None = None, limit: int | None = 20,
                 case_sensitive: bool = False) -> pd.DataFrame:
    """Rank the rows of ``data`` by its text columns ``fields`` for ``string``.

    ``data`` is a ``pyarrow.Table``, a pandas DataFrame, a DuckDB relation, or a function
    returning one of these (called only when the index has to be built).
    ``cache_key`` names the data and its version, e.g. ``("bionty", "CL", "2026-03-26")``: the
    index is built once per ``cache_key`` and reused; it is required when ``data`` is a
    function. Without it the index is cached for the ``data`` object itself, so pass the same
    object again to reuse it.
    ``name_field`` (default: the first of ``fields``), ``key`` (the id column, e.g.
    ``ontology_id``) and ``id_fields`` count as names for the exact tier; ``split_fields`` hold
    ``|``-separated values; ``long_fields`` are free text. ``field`` restricts the search to one
    (or some) of ``fields``.

    Returns every column of the matching rows plus ``score`` and ``match``, best first.
    """
    query = check_query(string, limit, case_sensitive)
    if isinstance(fields, str):
        fields = [fields]
    fields = list(dict.fromkeys(fields))
    if not fields:
        raise FieldError("search_table() needs at least one text field")
    if callable(data) and cache_key is None:
        raise ValidationError("search_table() needs a cache_key when data is a function")
    name_field = name_field or fields[0]
    ids = tuple({*id_fields, *([key] if key else [])})
    searched = None
    if field is not None:
        names = [field] if isinstance(field, str) else list(field)
        for name in names:
            if name not in fields:
                raise FieldError(f"{name!r} is not one of the searched text fields {fields}")
        searched = tuple(fields.index(n) for n in dict.fromkeys(names))
    specs = tuple(Field(n, _role(n, name_field, ids, tuple(long_fields)), n in split_fields)
                  for n in fields)
    family = ("table", ("object", id(data)) if cache_key is None else cache_key, specs)
    index = _CACHE.get((family, None))
    if index is None:
        def source() -> pa.Table:
            return _arrow(data() if callable(data) else data, fields)

        index = _CACHE.build((family, None), source, specs,
                             origin=None if cache_key is not None else data)
    hits = rank(index, query, limit=limit, fields=searched, case_sensitive=case_sensitive)
    return _frame(index, hits)


def _arrow(data, fields: Sequence[str]) -> pa.Table:
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif hasattr(data, "to_arrow_table"):
        table = data.to_arrow_table()
    elif hasattr(data, "arrow"):
        table = data.arrow()
        if not isinstance(table, pa.Table):  # DuckDB returns a RecordBatchReader in new versions
            table = table.read_all()
    else:
        raise ValidationError(f"cannot search a {type(data).__name__}; pass a pyarrow.Table, "
                              "a pandas DataFrame or a DuckDB relation")
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise FieldError(f"no column(s) {missing} to search; columns: {table.column_names}")
    for name in fields:
        kind = table.schema.field(name).type
        column = table.column(name)
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_dictionary(kind) or column.null_count == len(column)):
            raise FieldError(f"{name!r} is not a text column ({kind}) and cannot be searched")
    return table


def check_query(string, limit, case_sensitive) -> Query:
    """Validate the arguments of a search and parse the query."""
    if not isinstance(string, str):
        raise ValidationError(f"search() takes a query string, got {type(string).__name__}")
    if not string.strip():
        raise ValidationError("search() needs a query with at least one non-space character")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError(f"limit must be a positive integer (or None for all matches), "
                              f"got {limit!r}")
    if not isinstance(case_sensitive, bool):
        raise ValidationError(f"case_sensitive must be True or False, got {case_sensitive!r}")
    return Query.parse(string)


def _frame(index: SearchIndex, hits: list[Hit], index_by: str | None = None) -> pd.DataFrame:
    data = index.source.take(pa.array([h.rid for h in hits], type=pa.int64())).to_pydict()
    data["score"] = [h.score for h in hits]
    data["match"] = [h.match for h in hits]
    data["matched"] = [_matched(index, h.eid) for h in hits]
    if index_by is None:
        return pd.DataFrame(data)
    return pd.DataFrame(data, index=pd.Index(data.pop(index_by), name=index_by))


# Matched text longer than this (a description) is cut, with an ellipsis.
MATCHED_CHARS = 60


def _matched(index: SearchIndex, eid: int) -> str:
    value = index.values[eid].as_py()
    if len(value) > MATCHED_CHARS:
        value = value[:MATCHED_CHARS - 1] + "…"
    return f"{index.fields[int(index.fid[eid])].name}: {value}"


# ---- the index cache -------------------------------------------------------------------------
class IndexCache:
    """Built indexes by key ``(family, version)``; one build per key even under threads."""

    def __init__(self, capacity: int = MAX_INDEXES):
        self.capacity = capacity
        self._indexes: OrderedDict = OrderedDict()
        self._origins: dict = {}
        self._building: dict = {}
        self._lock = threading.Lock()
        self.builds = 0

    def get(self, key) -> SearchIndex | None:
        with self._lock:
            index = self._indexes.get(key)
            if index is not None:
                self._indexes.move_to_end(key)
            return index

    def build(self, key, source: Callable[[], pa.Table], fields, origin=None) -> SearchIndex:
        with self._lock:
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            index = self.get(key)
            if index is not None:
                return index
            index = SearchIndex(source(), fields, key)
            with self._lock:
                self.builds += 1
                family = key[0]
                for old in [k for k in self._indexes if k[0] == family]:
                    self._drop(old)
                self._indexes[key] = index
                # Keep the searched object alive while its index is cached, so that a cache key
                # made from its id() cannot be taken over by another object.
                self._origins[key] = origin
                while len(self._indexes) > self.capacity:
                    self._drop(next(iter(self._indexes)))
                self._building.pop(key, None)
            return index

    def _drop(self, key) -> None:
        self._indexes.pop(key, None)
        self._origins.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._indexes.clear()
            self._origins.clear()

    def info(self) -> dict:
        """What is cached: builds so far and, per index, its key, rows, entries, build time and
        approximate memory."""
        with self._lock:
            return {"builds": self.builds, "indexes": [
                {"key": k, "rows": i.n_rows, "entries": i.n_entries,
                 "build_seconds": round(i.build_seconds, 3),
                 "memory_mb": round(i.memory_bytes() / 2**20, 1)}
                for k, i in self._indexes.items()]}


_CACHE = IndexCache()


def cache_info() -> dict:
    return _CACHE.info()


def clear_cache() -> None:
    _CACHE.clear()


__all__ = ["BANDS", "TIERS", "Field", "IndexCache", "SearchIndex", "cache_info", "check_query",
           "clear_cache", "registry_fields", "search_registry", "search_table"]
