"""The DuckDB connection of an instance: extensions, credentials, views over current snapshots.

Each registry is a view named after its table (``artifact``, ``bionty_celltype``) over the Parquet
files of one Delta snapshot. Before a query runs, the views it touches are moved to the latest
snapshot if a writer committed since; that check reads only the Delta log.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime

import duckdb
import pyarrow as pa

from ..catalog import tables
from ..catalog.instance import Instance
from ..catalog.store import Snapshot
from ..errors import ValidationError
from ..extensions import load_statement
from .features import FeatureResolver, features_of


# Top-N queries up to this LIMIT read their non-sort columns for the winning rows only.
LATE_MATERIALIZATION_ROWS = 1000


_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALY[SZ]E)?\s+(.*)$", re.IGNORECASE | re.DOTALL)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Session:
    """One DuckDB connection for one instance; safe to share between threads."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.con = duckdb.connect(config={"threads": os.cpu_count() or 2})
        self._lock = threading.RLock()
        self._versions: dict[str, int] = {}
        self._columns: dict[str, frozenset] = {}
        self._features: tuple[int, FeatureResolver] | None = None
        self._pinned: dict[str, Snapshot] = {}
        self._id_ranges: dict[str, tuple] = {}
        self.con.execute("SET parquet_metadata_cache = true")
        self.con.execute("SET TimeZone = 'UTC'")
        # Top-N queries (to_dataframe's default limit of 100, order_by + limit) first find the
        # winning rows from the filter and sort columns only, then read the other columns of
        # just those rows. DuckDB does this up to LIMIT 50 by default; at 1e6 artifacts it cuts
        # a default to_dataframe() several-fold (bench/README.md, "Query").
        self.con.execute(f"SET late_materialization_max_rows = {LATE_MATERIALIZATION_ROWS}")
        if not instance.location.is_local:
            self.con.execute(load_statement("duckdb_extension_httpfs"))
            secret = instance.location.duckdb_secret()
            if secret:
                self.con.execute(secret)
            # Delta data files are immutable: cache their HTTP metadata and contents without
            # re-validating them on every query (saves a HEAD per file per statement).
            self.con.execute("SET enable_http_metadata_cache = true")
            self.con.execute("SET validate_external_file_cache = 'NO_VALIDATION'")

    @property
    def lock(self) -> threading.RLock:
        """Held by callers that need several steps to see one state of the views (e.g. search:
        refresh, read the viewed version, read the rows of that version)."""
        return self._lock

    # ---- views -------------------------------------------------------------------------
    def refresh(self, specs) -> None:
        """Point the views of ``specs`` at their latest snapshots (unless pinned)."""
        with self._lock:
            for spec in specs:
                if spec.qualified in self._pinned:
                    continue
                store = self.instance.store(spec)
                snapshot = store.snapshot_newer_than(self._versions.get(spec.qualified))
                if snapshot is not None:
                    self._create_view(snapshot)

    def refresh_all(self) -> None:
        self.refresh(tables.BY_QUALIFIED.values())

    def _create_view(self, snapshot: Snapshot) -> None:
        spec = snapshot.spec
        if snapshot.files:
            files = ", ".join(_quote(f) for f in snapshot.files)
            # File paths come from the Delta log of our own root, quoted as literals.
            # Files written before a feature column was added lack it: unite them by name.
            # One file has one schema, and union_by_name costs a little on every bind.
            union = ", union_by_name = true" if len(snapshot.files) > 1 else ""
            source = f"read_parquet([{files}]{union})"
        else:
            empty = f"_empty_{spec.view}"
            self.con.register(empty, snapshot.schema.empty_table())
            source = empty
        self.con.execute(f'CREATE OR REPLACE VIEW "{spec.view}" AS SELECT * FROM {source}')
        self._versions[spec.qualified] = snapshot.version
        self._columns[spec.qualified] = frozenset(snapshot.schema.names)

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

    def features(self) -> FeatureResolver:
        """The features of the current feature snapshot, read once per version."""
        spec = tables.get("core.feature")
        with self._lock:
            self.refresh([spec])
            version = self._versions[spec.qualified]
            if self._features is None or self._features[0] != version:
                rows = self.con.execute(
                    f'SELECT id, name, _dtype_str, is_type FROM "{spec.view}" '
                    "WHERE branch_id = 1 ORDER BY id").to_arrow_table().to_pylist()
                resolver = FeatureResolver(features_of(rows), self.columns, self.arrow,
                                           self.current_version)
                self._features = (version, resolver)
            return self._features[1]

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
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs what it explains (COPY ... TO a file, DROP VIEW ...): only a
            # plain EXPLAIN [ANALYZE] of a SELECT is read-only.
            explained = _EXPLAIN.match(statements[0].query)
            inner = self.con.extract_statements(explained[1]) if explained else []
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                raise ValidationError("ln.sql() is read-only: EXPLAIN is allowed for a SELECT "
                                      "only")
        elif kind != duckdb.StatementType.SELECT:
            raise ValidationError(f"ln.sql() is read-only: {kind.name} statements are refused; "
                                  "use the registries' save() and delete() to change data")
        with self._lock:
            self.refresh(self.instance.table_specs())
            return self.con.execute(sql, params or []).to_arrow_table()

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
