"""Answers and reads kept per table version for counts and displays: rows read by id, list
indexes (list_index.py), row columns for counts among candidates (row_columns.py), and whole
answers of statements. A version never changes, so what was read of it stays right; the
Session drops a registry's entries when its version moves (forget).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..catalog.instance import MAIN_BRANCH_ID
from .held_rows import HeldRows
from .list_index import ListIndex
from .planner import id_list_condition, id_list_params
from .row_columns import RowColumns

if TYPE_CHECKING:
    from .session import Session

# Rows read from a registry's files by id (to show them: rows_by_id) kept per version
# and set of columns, up to this many (a display of a sparse filter shown again reads none).
READ_BY_ID_ROWS = 4096
# Rows per Arrow batch when a whole column is streamed from DuckDB to build a kept structure
# (a list index): ~34 MiB of the records column at a time.
STREAMED_BATCH_ROWS = 1_000_000
# What the list indexes of one session may take together; past it the least recently used
# are dropped (the one just built is kept whatever its size). At 1e7 artifacts the guide's
# three (records, schemas, a categorical feature) take 450 MiB together
# (bench/query_memory_results.json).
LIST_INDEX_BYTES = 512 * 2**20
# Answers of statements kept per set of table versions (arrow_of_versions).
KEPT_ANSWERS = 64
# The name under which count_among shows DuckDB the candidate rows, for one statement.
_CANDIDATE_ROWS = "_candidate_rows"


class VersionCaches:
    """The per-version caches of one Session, over its views."""

    def __init__(self, session: Session):
        self._session = session
        # (registry, columns) -> (version, HeldRows) of rows read by id (see rows_by_id).
        self._read_by_id: dict[tuple[str, tuple], tuple[int, HeldRows]] = {}
        # (tables and versions, statement, parameters) -> answer (see arrow_of_versions).
        self._answers: dict[tuple, pa.Table] = {}
        # (registry, list column) -> (version, ListIndex) of the rows on the main branch.
        self._list_indexes: dict[tuple[str, str], tuple[int, ListIndex]] = {}
        # registry -> (version, columns of its rows on the main branch in id order, their ids
        # as numpy): see count_among.
        self._row_columns: dict[str, RowColumns] = {}

    def forget(self, qualified: str) -> None:
        """Drop what was kept of registry ``qualified`` (its version moved); answers are keyed
        by version and age out."""
        self._list_indexes = {k: v for k, v in self._list_indexes.items() if k[0] != qualified}
        self._row_columns.pop(qualified, None)
        self._read_by_id = {k: v for k, v in self._read_by_id.items() if k[0] != qualified}

    def rows_by_id(self, spec, ids: np.ndarray, columns: list[str]) -> pa.Table:
        """The rows of ``spec``'s current version with ``ids``, in that order, with
        ``columns`` (names the caller validated); each row is read from the files once per
        version (up to READ_BY_ID_ROWS rows kept). Why: the rows a sparse filter shows are
        spread over the table, and reading them decodes every shown column of each row
        group they fall in (10-15 ms at 1e5 artifacts); a display is asked again and again
        at one version."""
        session = self._session
        with session._lock:
            session.refresh([spec])
            version = session._versions.get(spec.qualified)
            key = (spec.qualified, tuple(columns))
            kept = self._read_by_id.get(key)
            read = kept[1] if kept is not None and kept[0] == version else None
            missing = ids if read is None else ids[~read.has(ids)]
            if len(missing):
                names = ", ".join(f't."{c}"' for c in dict.fromkeys(["id", *columns]))
                table = session.arrow(
                    f'SELECT {names} FROM "{spec.view}" t WHERE {id_list_condition("t")}',
                    id_list_params(missing.tolist()), [spec])
                if read is None or read.table.num_rows + table.num_rows <= READ_BY_ID_ROWS:
                    read = HeldRows(table if read is None
                                    else pa.concat_tables([read.table, table]), None)
                    self._read_by_id[key] = (version, read)
                else:
                    # Past the cap only the new rows are kept; the answer needs the held too.
                    self._read_by_id[key] = (version, HeldRows(table, None))
                    read = HeldRows(pa.concat_tables(
                        [read.take(ids, read.table.column_names), table]), None)
            return read.take(ids, columns)

    def rows_holding(self, spec, tests) -> np.ndarray | None:
        """The sorted ids of the rows on the main branch of ``spec``'s current version that
        pass every one of ``tests`` (ListTest: a list column holds one of some ids), from an
        index of each list column built once per version (list_index.py); None while the
        version is younger than session.IN_MEMORY_AFTER_SECONDS (a loop of saves builds none)."""
        session = self._session
        with session._lock:
            session.refresh([spec])
            qualified = spec.qualified
            version = session._versions.get(qualified)
            if not session.version_lasted(qualified):
                return None
            columns = session._columns[qualified]
            if any(test.column not in columns for test in tests):
                return None
            found = None
            for test in sorted(tests, key=lambda t: len(t.ids)):
                rows = self._list_index(spec, version, test.column).rows_holding(test.ids)
                found = rows if found is None else np.intersect1d(found, rows,
                                                                  assume_unique=True)
            return found

    def _list_index(self, spec, version: int, column: str) -> ListIndex:
        session = self._session
        key = (spec.qualified, column)
        kept = self._list_indexes.pop(key, None)
        if kept is None or kept[0] != version:
            branch = f" WHERE branch_id = {MAIN_BRANCH_ID}" if spec.has_branch else ""
            batches = session.con.execute(f'SELECT id, "{column}" FROM "{spec.view}"{branch}'
                                          ).to_arrow_reader(STREAMED_BATCH_ROWS)
            kept = (version, ListIndex(batches))
            held = kept[1].nbytes + self.list_index_bytes
            while self._list_indexes and held > LIST_INDEX_BYTES:
                held -= self._list_indexes.pop(next(iter(self._list_indexes)))[1].nbytes
        self._list_indexes[key] = kept  # most recently used last
        return kept[1]

    @property
    def list_index_bytes(self) -> int:
        """What the list indexes kept take."""
        return sum(index.nbytes for _, index in self._list_indexes.values())

    def count_among(self, spec, ids: np.ndarray, condition: str, params: list,
                    columns: set[str], specs=(), answer: str = "count(*)"):
        """How many of the rows with ``ids`` (sorted, on the main branch of ``spec``'s current
        version, as rows_holding gives them) meet ``condition`` (alias ``t``, reading
        ``columns`` of the row): one statement over those rows alone, taken from columns kept
        per version (row_columns.py). None when the columns would outgrow ROW_COLUMNS_BYTES,
        or the ids are not all rows of this version (the caller runs the whole statement).
        ``answer``: a fixed aggregate over the rows meeting it instead of their count, e.g.
        ``list(t.id)`` for their ids."""
        session = self._session
        with session._lock:
            session.refresh([spec, *specs])
            kept = self._kept_columns(spec, columns - {"id"})
            rows = None if kept is None else kept.rows(ids, columns - {"id"})
            if rows is None:
                return None
            session.con.register(_CANDIDATE_ROWS, rows)
            try:
                return session.con.execute(f'SELECT {answer} FROM "{_CANDIDATE_ROWS}" t '
                                           f"WHERE {condition}", params).fetchone()[0]
            finally:
                session.con.unregister(_CANDIDATE_ROWS)

    def kept_columns(self, spec, columns: set[str]) -> RowColumns | None:
        """_kept_columns of ``spec``'s current version once it has lasted
        IN_MEMORY_AFTER_SECONDS (a loop of saves reads none); None before."""
        session = self._session
        with session._lock:
            session.refresh([spec])
            if not session.version_lasted(spec.qualified):
                return None
            return self._kept_columns(spec, columns)

    def _kept_columns(self, spec, columns: set[str]) -> RowColumns | None:
        """The kept ids and ``columns`` of the main-branch rows of ``spec``'s current version,
        each read once per version; None when one is not a column of the version or is too
        large to keep."""
        session = self._session
        qualified = spec.qualified
        if not columns <= session._columns[qualified]:
            return None
        version = session._versions[qualified]
        kept = self._row_columns.get(qualified)
        if kept is None or kept.version != version:
            kept = self._row_columns[qualified] = RowColumns(version)
        missing = kept.to_read(columns)
        if missing is None:
            return None
        if missing or kept.ids is None:
            branch = f" WHERE branch_id = {MAIN_BRANCH_ID}" if spec.has_branch else ""
            names = ", ".join(f'"{c}"' for c in ["id", *missing])
            # In file order, which is id order as the store writes rows (RowColumns.add sorts
            # otherwise): an ORDER BY made reading a column of 1e6 rows ~2x dearer.
            read = session.con.execute(f'SELECT {names} FROM "{spec.view}"{branch}'
                                       ).to_arrow_table().combine_chunks()
            if not kept.add(read):
                return None
        return kept

    def arrow_of_versions(self, sql: str, params: list, specs) -> pa.Table:
        """arrow(), answered from memory when the same statement ran on the same versions of
        every table it reads (``specs``: all of them; the statement reads their views, not
        this session's temp tables). A version never changes, so neither does the answer.
        Why: a display of a sparse relation filter with another condition checks it over
        older row groups' condition columns on every call (~7 ms at 1e5 artifacts), and a
        display is asked again and again at one version."""
        session = self._session
        with session._lock:
            session.refresh(specs)
            versions = session._versions
            key = (tuple(sorted((s.qualified, versions.get(s.qualified)) for s in specs)),
                   sql, repr(params))
            found = self._answers.pop(key, None)
            if found is None:
                found = session.arrow(sql, params, specs)
                while len(self._answers) >= KEPT_ANSWERS:
                    self._answers.pop(next(iter(self._answers)))
            self._answers[key] = found  # most recently used last
            return found
