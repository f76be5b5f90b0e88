"""The DuckDB connection of an instance: extensions, credentials, views over current snapshots.

Each registry is a view named after its table (``artifact``, ``bionty_celltype``) over the Parquet
files of one Delta snapshot. Before a query runs, the views it touches are moved to the latest
snapshot if a writer committed since; that check reads only the Delta log. A small registry
read twice at one version is served from a copy in memory instead (and get() from an index of
its rows) until its version moves.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from ..catalog import tables
from ..catalog.instance import MAIN_BRANCH_ID, Instance
from ..catalog.store import CATALOG_DIR, Snapshot
from ..errors import ValidationError
from .connections import (CredentialSecret, SqlSandbox, catalog_scope, confine_to_catalog,
                          create_view, identifier, local_copies, new_connection,
                          parquet_source, small_remote)
from .features import FeatureResolver, FeatureSet
from .frames import import_pandas_meanwhile
from .held_rows import HeldRows
from .list_index import ListIndex
from .planner import STEM_LOOKUP, id_list_condition, id_list_params
from .row_columns import RowColumns
from .row_index import RowIndex


# Top-N queries up to this LIMIT read their non-sort columns for the winning rows only.
LATE_MATERIALIZATION_ROWS = 1000
# A registry of at most this many values (rows x columns) is copied into DuckDB's memory when
# a second query reads the same version (see Session._keep_in_memory): e.g. 15,000 records or
# 5,000 artifacts with 10 features. The copy costs ~10 ms per 100,000 values (copies of 2,000
# and 20,000 artifacts of 51 columns: 50 and 117 ms CPU at load 8.5).
IN_MEMORY_VALUES = 250_000
# ... and only once the version has been shown this long: the reads of one call (a save reads
# the artifact registry four times within milliseconds) do not pay for a copy; the next
# command a person types does. Copying inside each save made Artifact(...).save() 43 -> 73 ms
# CPU (40 saves into a new instance, load ~9).
IN_MEMORY_AFTER_SECONDS = 0.2
# A registry too large to copy whole keeps this many of its newest ids in memory instead (see
# Session.newest_rows): one Parquet row group as the store writes them.
NEWEST_IN_MEMORY_IDS = 16_384
# Rows read from a registry's files by id (to show them: Session.rows_by_id) kept per version
# and set of columns, up to this many (a display of a sparse filter shown again reads none).
READ_BY_ID_ROWS = 4096
# Answers of statements kept per set of table versions (Session.arrow_of_versions).
KEPT_ANSWERS = 64
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


_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALY[SZ]E)?\s+(.*)$", re.IGNORECASE | re.DOTALL)


class Session:
    """The DuckDB connections of one instance (planner queries, ``ln.sql``'s sandbox, artifact
    files; see connections.py); safe to share between threads."""

    def __init__(self, instance: Instance):
        import_pandas_meanwhile()  # the first statement's parameters will need it
        self.instance = instance
        self.con = new_connection(instance.location)
        self._lock = threading.RLock()
        self._versions: dict[str, int] = {}
        self._columns: dict[str, frozenset] = {}
        # (version, resolver, resolver on the columns last seen: see features(fresh=False))
        self._features: tuple[int, FeatureResolver, FeatureResolver] | None = None
        self._pinned: dict[str, Snapshot] = {}
        self._id_ranges: dict[str, tuple] = {}
        # When each view's current version was first shown; whether the registry is copied
        # into memory (True), left on its files (False), or not decided yet (absent).
        self._shown_at: dict[str, float] = {}
        self._in_memory: set[str] = set()
        self._copy_decided: set[str] = set()
        # (registry, version, columns) -> {id: row} of registries served from memory.
        self._by_id: dict[tuple, dict] = {}
        # (registry, version, column) -> {value: [row, ...]} of registries served from memory.
        self._indexes: dict[tuple, dict] = {}
        # registry -> (version, in-memory table, lowest id left out) of the newest rows of a
        # registry too large to copy whole (table None: not worth a copy).
        self._newest: dict[str, tuple[int, str | None, int]] = {}
        # registry -> (version, HeldRows) of the rows it keeps in memory (see held_rows).
        self._held: dict[str, tuple[int, HeldRows]] = {}
        # (registry, columns) -> (version, HeldRows) of rows read by id (see rows_by_id).
        self._read_by_id: dict[tuple[str, tuple], tuple[int, HeldRows]] = {}
        # (tables and versions, statement, parameters) -> answer (see arrow_of_versions).
        self._answers: dict[tuple, pa.Table] = {}
        # (registry, list column) -> (version, ListIndex) of the rows on the main branch.
        self._list_indexes: dict[tuple[str, str], tuple[int, ListIndex]] = {}
        # registry -> (version, columns of its rows on the main branch in id order, their ids
        # as numpy): see count_among.
        self._row_columns: dict[str, RowColumns] = {}
        # Of registries read from their files: ids by value per data file, and rows read.
        self._row_index = RowIndex()
        # Top-N queries (to_dataframe's default limit of 100, order_by + limit) first find the
        # winning rows from the filter and sort columns only, then read the other columns of
        # just those rows. DuckDB does this up to LIMIT 50 by default; at 1e6 artifacts it cuts
        # a default to_dataframe() several-fold (bench/README.md, "Query").
        self.con.execute(f"SET late_materialization_max_rows = {LATE_MATERIALIZATION_ROWS}")
        self._credentials = CredentialSecret(instance.location, "lamina_catalog",
                                             scope=catalog_scope(instance.location))
        self._credentials.install(self.con)
        confine_to_catalog(self.con, instance.location)
        self._snapshots: dict[str, Snapshot] = {}
        # Snapshots taken as current whose views still show an older one (see refresh), and
        # those of them whose view is a copy in memory, or whose newest rows are, to drop when
        # re-pointed.
        self._behind: dict[str, Snapshot] = {}
        self._in_memory_behind: set[str] = set()
        self._newest_behind: set[str] = set()
        self._sandbox = SqlSandbox(instance.location)
        self._objects: tuple[duckdb.DuckDBPyConnection, CredentialSecret] | None = None
        # Per thread: the tables checked for new commits during the current call (one_view).
        self._call = threading.local()

    @property
    def lock(self) -> threading.RLock:
        """Held by callers that need several steps to see one state of the views (e.g. search:
        refresh, read the viewed version, read the rows of that version)."""
        return self._lock

    # ---- views -------------------------------------------------------------------------
    @contextmanager
    def one_view(self, checked=()):
        """Within, each table is checked for new commits once, however many statements the
        call runs (one LIST on an object store instead of one per statement: a default
        to_dataframe() of a label filter listed the artifact log 7 times), and the call sees
        one version of it throughout; tables in ``checked`` count as checked already. Yields
        the set of tables checked. Re-entrant; per thread."""
        outer = getattr(self._call, "checked", None)
        if outer is not None:
            yield outer
            return
        self._call.checked = set(checked)
        try:
            yield self._call.checked
        finally:
            self._call.checked = None

    def refresh(self, specs, views: bool = True) -> None:
        """Move ``specs`` to their latest snapshots (unless pinned) and point their views at
        them; on an object store the tables are checked concurrently (one round trip for all
        of them). With ``views=False`` a view is re-pointed only when its registry is due to
        be copied into memory, else when a statement first needs it (_point_view): a lookup
        answered from the row index (the two of Artifact(...) after each save) runs none."""
        checked = getattr(self._call, "checked", None)
        with self._lock:
            self._credentials.install(self.con)
            due = []
            specs = {spec.qualified: spec for spec in specs}.values()
            for spec in specs:
                if spec.qualified in self._pinned:
                    continue
                if checked is not None:
                    if spec.qualified in checked and spec.qualified in self._versions:
                        continue
                    checked.add(spec.qualified)
                due.append(spec)
            for spec, snapshot in zip(due, self._newer_snapshots(due)):
                if snapshot is not None:
                    self._move_to(snapshot)
                if views or (self._copy_due(spec.qualified) and self._view_is_free(spec)):
                    self._point_view(spec)
                    self._keep_in_memory(spec)
            if views:
                for spec in specs:
                    self._point_view(spec)

    def _view_is_free(self, spec) -> bool:
        """Whether pointing ``spec``'s view fetches no files: anything but a small registry
        on an object store whose view does not show its current snapshot yet. Pointing that
        one fetches every file of it, which lookups by value do without
        (_rows_equal_in_copies): a feature filter's warm repeat fetched the nine feature
        files its first run had not needed."""
        behind = self._behind.get(spec.qualified)
        return behind is None or not small_remote(behind)

    def _newer_snapshots(self, specs) -> list:
        def newer(spec):
            store = self.instance.store(spec)
            return store.snapshot_newer_than(self._versions.get(spec.qualified))

        if len(specs) < 2 or self.instance.location.is_local:
            return [newer(spec) for spec in specs]
        with ThreadPoolExecutor(len(specs)) as pool:
            return list(pool.map(newer, specs))

    def refresh_all(self) -> None:
        self.refresh(tables.BY_QUALIFIED.values())

    def _move_to(self, snapshot: Snapshot) -> None:
        """Take ``snapshot`` as its registry's current version; its view follows when a
        statement needs it (_point_view)."""
        qualified = snapshot.spec.qualified
        self._behind[qualified] = snapshot
        self._in_memory_behind |= {qualified} & self._in_memory
        self._in_memory.discard(qualified)
        if self._newest.pop(qualified, (None, None))[1] is not None:
            self._newest_behind.add(qualified)
        self._list_indexes = {k: v for k, v in self._list_indexes.items() if k[0] != qualified}
        self._row_columns.pop(qualified, None)
        self._held.pop(qualified, None)
        self._read_by_id = {k: v for k, v in self._read_by_id.items() if k[0] != qualified}
        self._shown_at[qualified] = time.monotonic()
        self._copy_decided.discard(qualified)
        self._snapshots[qualified] = snapshot
        self._versions[qualified] = snapshot.version
        self._columns[qualified] = frozenset(snapshot.schema.names)

    def _point_view(self, spec) -> None:
        """Point the view of ``spec`` at its current snapshot if it still shows an older one."""
        snapshot = self._behind.pop(spec.qualified, None)
        if snapshot is None:
            return
        create_view(self.con, snapshot, local_copy=True)
        if spec.qualified in self._in_memory_behind:
            self.con.execute(f'DROP TABLE IF EXISTS "{_memory_table(spec)}"')
            self._in_memory_behind.discard(spec.qualified)
        if spec.qualified in self._newest_behind:
            self.con.execute(f'DROP TABLE IF EXISTS "{_newest_table(spec)}"')
            self._newest_behind.discard(spec.qualified)

    def _copy_due(self, qualified: str) -> bool:
        """Whether _keep_in_memory would decide about ``qualified`` now."""
        return qualified not in self._copy_decided and (
            time.monotonic() - self._shown_at[qualified] >= IN_MEMORY_AFTER_SECONDS)

    def _keep_in_memory(self, spec) -> None:
        """Serve a small registry from a copy in DuckDB's memory once a query reads a version
        shown for IN_MEMORY_AFTER_SECONDS or more.

        Why: the small registries (records, users, features, schemas, ontology terms) are
        what get(), relation filters and includes read, and each statement over their Parquet
        files pays for opening every file (a registry saved row by row has one per save):
        ``Record.get(name=)`` on 81 records in 21 files took 11 ms from the files and 1.4 ms
        from the copy (1e5-artifact guide catalog). A snapshot never changes, so the copy is
        right until the version moves, when _point_view drops it. Waiting until a version
        has lasted keeps a loop of saves (each reads the registry several times, then moves
        its version) from copying on every save; the copy reads the files once, as the
        queries it replaces would have."""
        qualified = spec.qualified
        if not self._copy_due(qualified):
            return
        self._copy_decided.add(qualified)
        snapshot = self._snapshots[qualified]
        if not snapshot.files:
            return
        # Answered from the Parquet footers (cached by the first query).
        rows = self.con.execute(f'SELECT count(*) FROM "{spec.view}"').fetchone()[0]
        if rows * len(snapshot.schema.names) > IN_MEMORY_VALUES:
            return
        memory = _memory_table(spec)
        self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{memory}" AS SELECT * FROM "{spec.view}"')
        self.con.execute(f'CREATE OR REPLACE VIEW "{spec.view}" AS SELECT * FROM "{memory}"')
        self._in_memory.add(qualified)

    def newest_rows(self, spec) -> tuple[str, int] | None:
        """``(table, low)``: an in-memory table holding every row of ``spec``'s current version
        whose id is above ``low``, for a registry too large to copy whole, once its version has
        been shown for IN_MEMORY_AFTER_SECONDS; None otherwise. Dropped when the version moves.

        Why: a display (to_dataframe's newest 100 rows of a filter) read from the Parquet
        files decodes every column of the row groups its id window touches; the same
        statement on the copy of the newest 16,384 rows skips the decoding (before and after:
        bench/README.md, "Guide"). Ids grow with every commit, so the newest rows are where
        displays look first."""
        with self._lock:
            self.refresh([spec])
            qualified = spec.qualified
            version = self._versions.get(qualified)
            kept = self._newest.get(qualified)
            if kept is not None and kept[0] == version:
                return None if kept[1] is None else kept[1:]
            if qualified in self._in_memory or (
                    time.monotonic() - self._shown_at[qualified] < IN_MEMORY_AFTER_SECONDS):
                return None
            span = self.id_range(spec)
            if span is None:
                self._newest[qualified] = (version, None, 0)
                return None
            table, low = _newest_table(spec), span[1] - NEWEST_IN_MEMORY_IDS
            self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS SELECT * FROM '
                             f'"{spec.view}" WHERE id > ?', [low])
            self._newest[qualified] = (version, table, low)
            return table, low

    def held_rows(self, spec) -> HeldRows | None:
        """The rows of ``spec``'s current version this session keeps in DuckDB's memory (the
        whole registry, or its newest rows: see newest_rows), as an Arrow table in this
        process, made once per version; None when it keeps none."""
        with self._lock:
            self.refresh([spec])
            qualified = spec.qualified
            version = self._versions.get(qualified)
            kept = self._held.get(qualified)
            if kept is not None and kept[0] == version:
                return kept[1]
            if qualified in self._in_memory:
                source, low = _memory_table(spec), None
            else:
                newest = self.newest_rows(spec)
                if newest is None:
                    return None
                source, low = newest
            rows = self.con.execute(f'SELECT * FROM "{source}"').to_arrow_table()
            held = HeldRows(rows, low)
            self._held[qualified] = (version, held)
            return held

    def rows_by_id(self, spec, ids: np.ndarray, columns: list[str]) -> pa.Table:
        """The rows of ``spec``'s current version with ``ids``, in that order, with
        ``columns`` (names the caller validated); each row is read from the files once per
        version (up to READ_BY_ID_ROWS rows kept). Why: the rows a sparse filter shows are
        spread over the table, and reading them decodes every shown column of each row
        group they fall in (10-15 ms at 1e5 artifacts); a display is asked again and again
        at one version."""
        with self._lock:
            self.refresh([spec])
            version = self._versions.get(spec.qualified)
            key = (spec.qualified, tuple(columns))
            kept = self._read_by_id.get(key)
            read = kept[1] if kept is not None and kept[0] == version else None
            missing = ids if read is None else ids[~read.has(ids)]
            if len(missing):
                names = ", ".join(f't."{c}"' for c in dict.fromkeys(["id", *columns]))
                table = self.arrow(
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
        version is younger than IN_MEMORY_AFTER_SECONDS (a loop of saves builds none)."""
        with self._lock:
            self.refresh([spec])
            qualified = spec.qualified
            version = self._versions.get(qualified)
            if time.monotonic() - self._shown_at[qualified] < IN_MEMORY_AFTER_SECONDS:
                return None
            columns = self._columns[qualified]
            if any(test.column not in columns for test in tests):
                return None
            found = None
            for test in sorted(tests, key=lambda t: len(t.ids)):
                rows = self._list_index(spec, version, test.column).rows_holding(test.ids)
                found = rows if found is None else np.intersect1d(found, rows,
                                                                  assume_unique=True)
            return found

    def _list_index(self, spec, version: int, column: str) -> ListIndex:
        key = (spec.qualified, column)
        kept = self._list_indexes.get(key)
        if kept is None or kept[0] != version:
            branch = f" WHERE branch_id = {MAIN_BRANCH_ID}" if spec.has_branch else ""
            rows = self.con.execute(f'SELECT id, "{column}" FROM "{spec.view}"{branch}'
                                    ).to_arrow_table()
            kept = self._list_indexes[key] = (version, ListIndex(rows.column(0),
                                                                 rows.column(1)))
        return kept[1]

    def count_among(self, spec, ids: np.ndarray, condition: str, params: list,
                    columns: set[str], specs=(), answer: str = "count(*)"):
        """How many of the rows with ``ids`` (sorted, on the main branch of ``spec``'s current
        version, as rows_holding gives them) meet ``condition`` (alias ``t``, reading
        ``columns`` of the row): one statement over those rows alone, taken from columns kept
        per version (row_columns.py). None when the columns would outgrow ROW_COLUMNS_BYTES,
        or the ids are not all rows of this version (the caller runs the whole statement).
        ``answer``: a fixed aggregate over the rows meeting it instead of their count, e.g.
        ``list(t.id)`` for their ids."""
        with self._lock:
            self.refresh([spec, *specs])
            kept = self._kept_columns(spec, columns - {"id"})
            rows = None if kept is None else kept.rows(ids, columns - {"id"})
            if rows is None:
                return None
            self.con.register(_CANDIDATE_ROWS, rows)
            try:
                return self.con.execute(f'SELECT {answer} FROM "{_CANDIDATE_ROWS}" t '
                                        f"WHERE {condition}", params).fetchone()[0]
            finally:
                self.con.unregister(_CANDIDATE_ROWS)

    def kept_columns(self, spec, columns: set[str]) -> RowColumns | None:
        """_kept_columns of ``spec``'s current version once it has lasted
        IN_MEMORY_AFTER_SECONDS (a loop of saves reads none); None before."""
        with self._lock:
            self.refresh([spec])
            if time.monotonic() - self._shown_at[spec.qualified] < IN_MEMORY_AFTER_SECONDS:
                return None
            return self._kept_columns(spec, columns)

    def _kept_columns(self, spec, columns: set[str]) -> RowColumns | None:
        """The kept ids and ``columns`` of the main-branch rows of ``spec``'s current version,
        each read once per version; None when one is not a column of the version or is too
        large to keep."""
        qualified = spec.qualified
        if not columns <= self._columns[qualified]:
            return None
        version = self._versions[qualified]
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
            read = self.con.execute(f'SELECT {names} FROM "{spec.view}"{branch}'
                                    ).to_arrow_table().combine_chunks()
            if not kept.add(read):
                return None
        return kept

    def id_range(self, spec) -> tuple[int, int] | None:
        """The lowest and highest id in ``spec``'s view (None when empty), once per version:
        DuckDB answers it from the Parquet statistics."""
        with self._lock:
            self.refresh([spec])
            version = self._versions.get(spec.qualified)
            cached = self._id_ranges.get(spec.qualified)
            if cached is None or cached[0] != version:
                low, high = self.con.execute(
                    f'SELECT min(id), max(id) FROM "{spec.view}"').fetchone()
                cached = (version, None if low is None else (int(low), int(high)))
                self._id_ranges[spec.qualified] = cached
            return cached[1]

    def fields_by_id(self, spec, fields: list[str], ids: list[int]) -> dict[int, dict]:
        """``{id: {field: value}}`` for the rows of ``spec`` with these ids (``fields`` are
        column names the caller validated). A registry served from memory answers from a
        mapping of all its rows kept per version: the includes of a shown page then cost no
        statement at all (each one, even on a 100-row copy, is ~1-2 ms of DuckDB)."""
        names = ", ".join(f"t.{f}" for f in dict.fromkeys(["id", *fields]))
        with self._lock:
            self.refresh([spec], views=False)
            qualified = spec.qualified
            if qualified in self._in_memory:
                key = (qualified, self._versions[qualified], names)
                every = self._by_id.get(key)
                if every is None:
                    rows = self.con.execute(f'SELECT {names} FROM "{spec.view}" t')
                    every = {r["id"]: r for r in rows.to_arrow_table().to_pylist()}
                    self._by_id = {k: v for k, v in self._by_id.items() if k[0] != qualified}
                    self._by_id[key] = every
                return {i: every[i] for i in ids if i in every}
            source = self._source_of_ids(spec, ids)
            if source is None:
                return {}
            statement = f"SELECT {names} FROM {{}} t WHERE {id_list_condition('t')}"
            try:
                rows = self.con.execute(statement.format(source), id_list_params(ids))
            except duckdb.BinderException:  # the chosen files predate a field: the view
                self._point_view(spec)
                rows = self.con.execute(statement.format(identifier(spec.view)),
                                        id_list_params(ids))
            return {r["id"]: r for r in rows.to_arrow_table().to_pylist()}

    def _source_of_ids(self, spec, ids: list[int]) -> str | None:
        """What fields_by_id reads: for a small registry on an object store whose view does
        not show its current snapshot yet (its files not all fetched), local copies of the
        files whose id bounds take in one of ``ids`` (a page's labels are a few files of a
        registry grown by single saves); else the view. None when no file may hold them."""
        snapshot = self._snapshots[spec.qualified]
        if small_remote(snapshot) and spec.qualified in self._behind:
            files = snapshot.files_that_may_hold_ids(ids)
            if not files:
                return None
            if len(files) < len(snapshot.files):
                return parquet_source(local_copies(snapshot, files))
        self._point_view(spec)
        return identifier(spec.view)

    def rows_equal(self, spec, equal: dict) -> list[dict] | None:
        """The rows of ``spec`` whose columns equal the values in ``equal`` (see
        Compiler.equalities), from an index of the registry's rows when it is served from
        memory, else from the index of its data files when ``equal`` names a text value or
        the id; None otherwise (the caller runs a statement).

        Why: ``get(name=...)`` is the call people type most, and one DuckDB statement costs
        ~1-1.5 ms even on the in-memory copy; a dict lookup costs microseconds. The index is
        of one version and is rebuilt when the version moves."""
        with self._lock:
            self.refresh([spec], views=False)
            qualified = spec.qualified
            if qualified not in self._in_memory:
                return self._rows_equal_in_files(spec, equal)
            # Index the most telling column: a name or key rather than a flag or the branch.
            column = min(equal, key=lambda c: (c == "branch_id", isinstance(equal[c], bool)))
            key = (qualified, self._versions[qualified], column)
            index = self._indexes.get(key)
            if index is None:
                rows = self.con.execute(f'SELECT * FROM "{spec.view}"').to_arrow_table()
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
        snapshot = self._snapshots[spec.qualified]
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
            found = self._row_index.candidates(snapshot, "uid", equal[column],
                                               prefix=len(equal[column]))
        elif column is not None:
            found = self._row_index.candidates(snapshot, column, equal[column])
        if found is None or len(found) > ROW_INDEX_CANDIDATES:
            self._point_view(spec)
            return None
        rows = self._row_index.rows(snapshot, found)
        if rows is None:
            self._point_view(spec)
            return None
        # A row read at an older version lacks the columns added since (NULL in the view).
        columns = dict.fromkeys(self._columns[spec.qualified])
        return [{**columns, **row} for row in rows if _matches(row, equal)]

    def _rows_equal_in_copies(self, spec, snapshot: Snapshot, equal: dict) -> list[dict] | None:
        """rows_equal for a small registry on an object store not yet served from memory:
        read from local copies of only the data files whose statistics do not rule the
        values out (file_stats.py). A registry grown by single saves has a file per row, so
        ``get(name=...)`` fetches one file, not every file of the registry. None when the
        statistics rule out no file (the caller's statement reads the view, which copies
        them all, as it does for a uid stem, which no statistic names)."""
        files = [] if STEM_LOOKUP in equal else snapshot.files_that_may_match(equal)
        if STEM_LOOKUP in equal or len(files) == len(snapshot.files):
            self._point_view(spec)
            return None
        if not files:
            return []
        source = parquet_source(local_copies(snapshot, files))
        present = {d[0] for d in self.con.execute(f"SELECT * FROM {source} LIMIT 0").description}
        if not present.issuperset(equal):
            return []  # a column these files lack is NULL in each of their rows
        where = " AND ".join(f"{identifier(c)} = ?" for c in equal)
        rows = self.con.execute(f"SELECT * FROM {source} WHERE {where}", list(equal.values()))
        # Files written before a column was added lack it (NULL in the view).
        columns = dict.fromkeys(self._columns[spec.qualified])
        return [{**columns, **row} for row in rows.to_arrow_table().to_pylist()]

    def current_version(self, spec) -> int | None:
        """The version the view of ``spec`` shows once refreshed (pinned: the pinned one)."""
        with self._lock:
            self.refresh([spec])
            return self._versions.get(spec.qualified)

    def latest_version(self, spec) -> int | None:
        """current_version, without pointing the view (a statement that reads it will):
        on an object store, pointing a small registry's view fetches all its files."""
        with self._lock:
            self.refresh([spec], views=False)
            return self._versions.get(spec.qualified)

    def viewed_version(self, spec) -> int | None:
        """The table version the view of ``spec`` currently shows."""
        return self._versions.get(spec.qualified)

    def columns(self, spec) -> frozenset:
        """The columns of ``spec``'s view (feature columns appear once a value is written)."""
        with self._lock:
            self.refresh([spec])
            return self._columns[spec.qualified]

    def features(self, fresh: bool = True) -> FeatureResolver:
        """The features of the current feature snapshot, read once per version. With
        ``fresh=False``, those this session has already seen, and table columns as last seen,
        without checking for new commits (for checks that are retried fresh when they fail)."""
        spec = tables.get("core.feature")
        with self._lock:
            if not fresh and self._features is not None:
                return self._features[2]
            # The view is pointed when every feature is read (a lookup by name reads only
            # the files that may hold it).
            self.refresh([spec], views=False)
            version = self._versions[spec.qualified]
            if self._features is None or self._features[0] != version:
                found = FeatureSet(functools.partial(self._main_branch_features, spec),
                                   functools.partial(self._main_branch_rows, spec))
                self._features = (
                    version, FeatureResolver(found, self.columns, self.arrow,
                                             self.latest_version, self.rows_equal),
                    FeatureResolver(found, self._seen_columns))
            return self._features[1]

    def _main_branch_features(self, spec) -> list[dict]:
        with self._lock:
            self.refresh([spec])
            return self.con.execute(
                f'SELECT id, name, _dtype_str, is_type FROM "{spec.view}" '
                f"WHERE branch_id = {MAIN_BRANCH_ID} ORDER BY id").to_arrow_table().to_pylist()

    def _main_branch_rows(self, spec, column: str, value) -> list[dict] | None:
        return self.rows_equal(spec, {column: value, "branch_id": MAIN_BRANCH_ID})

    def _seen_columns(self, spec) -> frozenset:
        """The columns of ``spec``'s view as last refreshed (refreshed if never)."""
        with self._lock:
            seen = self._columns.get(spec.qualified)
            return seen if seen is not None else self.columns(spec)

    def pin(self, spec, version: int | datetime) -> Snapshot:
        """Time travel: serve ``spec`` from a past snapshot until :meth:`unpin`."""
        with self._lock:
            snapshot = self.instance.store(spec).snapshot(version)
            self._move_to(snapshot)
            self._point_view(spec)
            self._pinned[spec.qualified] = snapshot
            return snapshot

    def unpin(self, spec) -> None:
        with self._lock:
            self._pinned.pop(spec.qualified, None)
            self._versions.pop(spec.qualified, None)

    # ---- running -----------------------------------------------------------------------
    def arrow(self, sql: str, params: list | None = None, specs=()) -> pa.Table:
        with self._lock:
            self.refresh(specs)
            return self.con.execute(sql, params or []).to_arrow_table()

    def arrow_of_versions(self, sql: str, params: list, specs) -> pa.Table:
        """arrow(), answered from memory when the same statement ran on the same versions of
        every table it reads (``specs``: all of them; the statement reads their views, not
        this session's temp tables). A version never changes, so neither does the answer.
        Why: a display of a sparse relation filter with another condition checks it over
        older row groups' condition columns on every call (~7 ms at 1e5 artifacts), and a
        display is asked again and again at one version."""
        with self._lock:
            self.refresh(specs)
            key = (tuple(sorted((s.qualified, self._versions.get(s.qualified)) for s in specs)),
                   sql, repr(params))
            found = self._answers.pop(key, None)
            if found is None:
                found = self.arrow(sql, params, specs)
                while len(self._answers) >= KEPT_ANSWERS:
                    self._answers.pop(next(iter(self._answers)))
            self._answers[key] = found  # most recently used last
            return found

    def scalar(self, sql: str, params: list | None = None, specs=()):
        """The first value of the first row (no Arrow round trip: ~0.2 ms less per count)."""
        with self._lock:
            self.refresh(specs)
            row = self.con.execute(sql, params or []).fetchone()
            return None if row is None else row[0]

    def read_only(self, sql: str, params: list | None = None) -> pa.Table:
        """Run one user-written SELECT over the current snapshots of every registry."""
        statements = self.con.extract_statements(sql)
        if len(statements) != 1:
            raise ValidationError(f"ln.sql() runs exactly one statement, got {len(statements)}")
        kind = statements[0].type
        select = sql
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs what it explains (COPY ... TO a file, DROP VIEW ...): only a
            # plain EXPLAIN [ANALYZE] of a SELECT is read-only.
            explained = _EXPLAIN.match(statements[0].query)
            inner = self.con.extract_statements(explained[1]) if explained else []
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                raise ValidationError("ln.sql() is read-only: EXPLAIN is allowed for a SELECT "
                                      "only")
            select = explained[1]
        elif kind != duckdb.StatementType.SELECT:
            raise ValidationError(f"ln.sql() is read-only: {kind.name} statements are refused; "
                                  "use the registries' save() and delete() to change data")
        with self._lock:
            try:
                # Views (and readable files) for the registries the query names only.
                named = self._sandbox.tables(select)
                specs = [s for s in self.instance.table_specs() if named is None or s.view in named]
                self.refresh(specs)
                sandbox = self._sandbox.connection([self._snapshots[s.qualified] for s in specs])
                return sandbox.execute(sql, params or []).to_arrow_table()
            except duckdb.PermissionException as exc:
                catalog = self.instance.location.join(CATALOG_DIR)
                raise ValidationError(
                    "ln.sql() reads the registries of this instance only (the tables under "
                    f"{catalog}); it cannot read other files, buckets or prefixes. DuckDB "
                    f"said: {str(exc).splitlines()[0]}") from None

    def close(self) -> None:
        with self._lock:
            self.con.close()
            self._sandbox.close()
            if self._objects is not None:
                self._objects[0].close()
                self._objects = None

    def objects_connection(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for reading artifact files (``Artifact.open("duckdb")``), apart
        from the catalog's connection, which is confined to the catalog's tables."""
        with self._lock:
            if self._objects is None:
                con = new_connection(self.instance.location)
                self._objects = (con, CredentialSecret(self.instance.location, "lamina_objects"))
            con, secret = self._objects
            secret.install(con)
            return con

    def explain(self, sql: str, params: list | None = None, specs=()) -> str:
        with self._lock:
            self.refresh(specs)
            rows = self.con.execute("EXPLAIN " + sql, params or []).fetchall()
            return "\n".join(r[1] for r in rows)


# The name under which count_among shows DuckDB the candidate rows, for one statement.
_CANDIDATE_ROWS = "_candidate_rows"


def _memory_table(spec) -> str:
    return f"_memory_{spec.view}"


def _newest_table(spec) -> str:
    return f"_newest_{spec.view}"


_sessions: dict[int, Session] = {}
_sessions_lock = threading.Lock()


def session_for(instance: Instance) -> Session:
    with _sessions_lock:
        found = _sessions.get(id(instance))
        if found is None or found.instance is not instance:
            found = _sessions[id(instance)] = Session(instance)
        return found
