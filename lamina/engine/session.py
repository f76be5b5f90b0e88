"""The DuckDB connection of an instance: extensions, credentials, views over current snapshots.

Each registry is a view named after its table (``artifact``, ``bionty_celltype``) over the Parquet
files of one Delta snapshot. Before a query runs, the views it touches are moved to the latest
snapshot if a writer committed since; that check reads only the Delta log.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pyarrow as pa

from ..catalog import tables
from ..catalog.instance import Instance
from ..catalog.store import CATALOG_DIR, Snapshot
from ..errors import ValidationError
from .connections import (CredentialSecret, SqlSandbox, catalog_scope, confine_to_catalog,
                          create_view, new_connection)
from .features import FeatureResolver, features_of


# Top-N queries up to this LIMIT read their non-sort columns for the winning rows only.
LATE_MATERIALIZATION_ROWS = 1000


_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALY[SZ]E)?\s+(.*)$", re.IGNORECASE | re.DOTALL)


class Session:
    """The DuckDB connections of one instance (planner queries, ``ln.sql``'s sandbox, artifact
    files; see connections.py); safe to share between threads."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.con = new_connection(instance.location)
        self._lock = threading.RLock()
        self._versions: dict[str, int] = {}
        self._columns: dict[str, frozenset] = {}
        # (version, resolver, resolver on the columns last seen: see features(fresh=False))
        self._features: tuple[int, FeatureResolver, FeatureResolver] | None = None
        self._pinned: dict[str, Snapshot] = {}
        self._id_ranges: dict[str, tuple] = {}
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

    def refresh(self, specs) -> None:
        """Point the views of ``specs`` at their latest snapshots (unless pinned); on an object
        store the tables are checked concurrently (one round trip for all of them)."""
        checked = getattr(self._call, "checked", None)
        with self._lock:
            self._credentials.install(self.con)
            due = []
            for spec in {spec.qualified: spec for spec in specs}.values():
                if spec.qualified in self._pinned:
                    continue
                if checked is not None:
                    if spec.qualified in checked and spec.qualified in self._versions:
                        continue
                    checked.add(spec.qualified)
                due.append(spec)
            for snapshot in self._newer_snapshots(due):
                if snapshot is not None:
                    self._create_view(snapshot)

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

    def _create_view(self, snapshot: Snapshot) -> None:
        create_view(self.con, snapshot, in_memory=True)
        self._snapshots[snapshot.spec.qualified] = snapshot
        self._versions[snapshot.spec.qualified] = snapshot.version
        self._columns[snapshot.spec.qualified] = frozenset(snapshot.schema.names)

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

    def current_version(self, spec) -> int | None:
        """The version the view of ``spec`` shows once refreshed (pinned: the pinned one)."""
        with self._lock:
            self.refresh([spec])
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
            self.refresh([spec])
            version = self._versions[spec.qualified]
            if self._features is None or self._features[0] != version:
                rows = self.con.execute(
                    f'SELECT id, name, _dtype_str, is_type FROM "{spec.view}" '
                    "WHERE branch_id = 1 ORDER BY id").to_arrow_table().to_pylist()
                found = features_of(rows)
                self._features = (
                    version, FeatureResolver(found, self.columns, self.arrow,
                                             self.current_version),
                    FeatureResolver(found, self._seen_columns))
            return self._features[1]

    def _seen_columns(self, spec) -> frozenset:
        """The columns of ``spec``'s view as last refreshed (refreshed if never)."""
        with self._lock:
            seen = self._columns.get(spec.qualified)
            return seen if seen is not None else self.columns(spec)

    def pin(self, spec, version: int | datetime) -> Snapshot:
        """Time travel: serve ``spec`` from a past snapshot until :meth:`unpin`."""
        with self._lock:
            snapshot = self.instance.store(spec).snapshot(version)
            self._create_view(snapshot)
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


_sessions: dict[int, Session] = {}
_sessions_lock = threading.Lock()


def session_for(instance: Instance) -> Session:
    with _sessions_lock:
        found = _sessions.get(id(instance))
        if found is None or found.instance is not instance:
            found = _sessions[id(instance)] = Session(instance)
        return found
