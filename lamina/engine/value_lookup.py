"""Lookups by value (``get(name=...)``, ``filter(key=...).first()``) answered without a
statement where possible: from an index of a registry served from memory, from the index of
its data files (row_index.py), or from local copies of the few files that may hold the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from ..catalog.snapshot import Snapshot
from .connections import identifier, local_copies, parquet_source, small_remote
from .planner import STEM_LOOKUP
from .row_index import RowIndex

if TYPE_CHECKING:
    from .session import Session

# A lookup through the row index fetches the rows of at most this many candidates (the
# versions under one key, say); a more common value is left to one statement.
ROW_INDEX_CANDIDATES = 64


def _indexed_value(row: dict, column: str, value):
    """What an index of ``column`` keys ``row`` by (a uid stem: the uid's first characters,
    as many as the stem asked has)."""
    if column == STEM_LOOKUP:
        uid = row["uid"]
        return None if uid is None else uid[:len(value)]
    return row[column]


def _matches(row: dict, equal: dict) -> bool:
    """Whether ``row`` holds every value of ``equal`` (Compiler.equalities)."""
    return all(_indexed_value(row, c, v) == v if c == STEM_LOOKUP else row.get(c) == v
               for c, v in equal.items())


class ValueLookups:
    """The lookups by value of one Session (Session.rows_equal), over its views and copies,
    with the indexes they keep per version."""

    def __init__(self, session: Session):
        self._session = session
        # (registry, version, column) -> {value: [row, ...]} of registries served from memory.
        self._indexes: dict[tuple, dict] = {}
        # Of registries read from their files: ids by value per data file, and rows read.
        self.row_index = RowIndex()

    def rows_equal(self, spec, equal: dict) -> list[dict] | None:
        """The rows of ``spec`` whose columns equal the values in ``equal`` (see
        Compiler.equalities), from an index of the registry's rows when it is served from
        memory, else from the index of its data files when ``equal`` names a text value or
        the id; None otherwise (the caller runs a statement).

        Why: ``get(name=...)`` is the call people type most, and one DuckDB statement costs
        ~1-1.5 ms even on the in-memory copy; a dict lookup costs microseconds. The index is
        of one version and is rebuilt when the version moves."""
        session = self._session
        with session._lock:
            session.refresh([spec], views=False)
            qualified = spec.qualified
            if qualified not in session._in_memory:
                return self._rows_equal_in_files(spec, equal)
            # Index the most telling column: a name or key rather than a flag or the branch.
            column = min(equal, key=lambda c: (c == "branch_id", isinstance(equal[c], bool)))
            key = (qualified, session._versions[qualified], column)
            index = self._indexes.get(key)
            if index is None:
                rows = session._held_rows(spec).table
                index = {}
                for row in rows.to_pylist():
                    index.setdefault(_indexed_value(row, column, equal[column]), []).append(row)
                self._indexes = {k: v for k, v in self._indexes.items() if k[0] != qualified
                                 or k[1] == key[1]}
                self._indexes[key] = index
            return [dict(row) for row in index.get(equal[column], ()) if _matches(row, equal)]

    def _rows_equal_in_files(self, spec, equal: dict) -> list[dict] | None:
        """rows_equal for a registry read from its data files (see row_index.py): the ids of
        the rows holding the text value (or the id), then those rows, each read once per data
        file. None when ``equal`` has neither, when the value is too common to fetch its rows
        one by one (``filter(suffix=".h5ad").first()``: the statement reads one). A small
        registry on an object store is read from local copies of its files instead
        (_rows_equal_in_copies): indexing its files would fetch them again."""
        session = self._session
        snapshot = session._snapshots[spec.qualified]
        if small_remote(snapshot):
            return self._rows_equal_in_copies(spec, snapshot, equal)
        # The column that names a row, when there is one: a uid, key or hash before a name,
        # a name before a suffix or a kind.
        texts = sorted((c for c, v in equal.items() if isinstance(v, str)),
                       key=lambda c: (c not in ("uid", "key", "hash", STEM_LOOKUP),
                                      c != spec.name_field))
        column = texts[0] if texts else "id" if "id" in equal else None
        found = None
        if column == STEM_LOOKUP:
            found = self.row_index.candidates(snapshot, "uid", equal[column],
                                               prefix=len(equal[column]))
        elif column is not None:
            found = self.row_index.candidates(snapshot, column, equal[column])
        if found is None or len(found) > ROW_INDEX_CANDIDATES:
            session._point_view(spec)
            return None
        rows = self.row_index.rows(snapshot, found)
        if rows is None:
            session._point_view(spec)
            return None
        # A row read at an older version lacks the columns added since (NULL in the view).
        columns = dict.fromkeys(session._columns[spec.qualified])
        return [{**columns, **row} for row in rows if _matches(row, equal)]

    def _rows_equal_in_copies(self, spec, snapshot: Snapshot, equal: dict) -> list[dict] | None:
        """rows_equal for a small registry on an object store not yet served from memory:
        read from local copies of only the data files whose statistics do not rule the
        values out (file_stats.py). A registry grown by single saves has a file per row, so
        ``get(name=...)`` fetches one file, not every file of the registry. None when the
        statistics rule out no file (the caller's statement reads the view, which copies
        them all, as it does for a uid stem, which no statistic names)."""
        session = self._session
        files = [] if STEM_LOOKUP in equal else snapshot.files_that_may_match(equal)
        if STEM_LOOKUP in equal or len(files) == len(snapshot.files):
            session._point_view(spec)
            return None
        if not files:
            return []
        source = parquet_source(local_copies(snapshot, files))
        where = " AND ".join(f"{identifier(c)} = ?" for c in equal)
        try:
            rows = session.con.execute(f"SELECT * FROM {source} WHERE {where}",
                                       list(equal.values()))
        except duckdb.BinderException:
            return []  # a column these files lack is NULL in each of their rows
        # Files written before a column was added lack it (NULL in the view).
        columns = dict.fromkeys(session._columns[spec.qualified])
        return [{**columns, **row} for row in rows.to_arrow_table().to_pylist()]
