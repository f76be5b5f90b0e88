"""The DuckDB connections of a session besides its main one, and what confines each.

- The main connection (queries the planner writes) may read files under the catalog folder
  only (``allowed_directories``).
- ``ln.sql`` runs user-written SQL on a connection of its own that may read exactly the data
  files of the snapshots it shows (``allowed_paths``), and nothing else: no local file, no other
  bucket, no other prefix of the same bucket, no artifact file, no Python variable. Exact paths,
  not a directory, because DuckDB compares remote paths as text, and an object store answers
  ``<catalog>/core/../../instance.json`` with a file outside the catalog. Once external access
  is off, DuckDB refuses to widen what a connection may read, so the sandbox is rebuilt (not
  widened) when a registry gets a new version.
- Artifact files (``Artifact.open("duckdb")``) are read on a third, unconfined connection.

Object-store credentials reach each connection as a DuckDB secret that is re-created whenever
the credentials in force change.
"""

from __future__ import annotations

import io
import json
import os
import threading

import duckdb
import pyarrow as pa

from ..catalog.location import Location
from ..catalog.store import CATALOG_DIR, Snapshot
from ..extensions import load_statement


def quote(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class CredentialSecret:
    """The DuckDB secret through which a connection reads an object store, re-created whenever
    the credentials in force change (rotated keys, a new session token), so a long session
    keeps reading without reconnecting."""

    def __init__(self, location: Location, name: str, scope: str | None = None):
        self.location, self.name, self.scope = location, name, scope
        self._installed: object = ()  # never equal to a credentials value

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create or replace the secret on ``con`` if the credentials changed since last time."""
        if self.location.is_local:
            return
        credentials = self.location.aws_credentials()
        if credentials == self._installed:
            return
        statement = self.location.duckdb_secret(self.name, self.scope)
        if statement:
            con.execute(statement)
        self._installed = credentials


def new_connection(location: Location) -> duckdb.DuckDBPyConnection:
    """A connection able to read ``location``'s kind of storage (httpfs for object stores),
    caching what it reads of the immutable Delta data files."""
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    # A query slower than 2 s (a loaded machine) would print DuckDB's progress bar on the
    # user's stdout: in the middle of their output, or of a child process's JSON lines.
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET parquet_metadata_cache = true")
    if not location.is_local:
        con.execute(load_statement("duckdb_extension_httpfs"))
        # Delta data files are immutable: cache their HTTP metadata and contents without
        # re-validating them on every query (saves a HEAD per file per statement).
        con.execute("SET enable_http_metadata_cache = true")
        con.execute("SET validate_external_file_cache = 'NO_VALIDATION'")
    return con


def catalog_scope(location: Location) -> str:
    return location.join(CATALOG_DIR).rstrip("/") + "/"


def confine_to_catalog(con: duckdb.DuckDBPyConnection, location: Location) -> None:
    """Let ``con`` read files under the catalog folder only, for good."""
    con.execute("SET allowed_directories = [" + quote(catalog_scope(location)) + "]")
    con.execute("SET enable_external_access = false")


# On an object store, a registry whose data files add up to at most this many bytes is read
# whole into memory once per version: one concurrent GET per file, where DuckDB's httpfs sends a
# HEAD and a GET per file for every version it binds (the feature and record tables of a
# catalog built by single saves are tens of small files: 20-44 requests per first query).
# Larger registries stay Parquet scans that read only the row groups a query needs.
IN_MEMORY_BYTES = 4 * 2**20


def create_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot,
                in_memory: bool = False) -> None:
    """(Re)point the view of ``snapshot``'s registry at that snapshot's data files; with
    ``in_memory``, a small registry on an object store at its rows (see IN_MEMORY_BYTES)."""
    spec = snapshot.spec
    if in_memory and small_remote(snapshot):
        rows = f"_rows_{spec.view}"
        con.register(rows, read_whole(snapshot))
        con.execute(f'CREATE OR REPLACE VIEW "{spec.view}" AS SELECT * FROM "{rows}"')
        return
    if snapshot.files:
        files = ", ".join(quote(f) for f in snapshot.files)
        # File paths come from the Delta log of our own root, quoted as literals.
        # Files written before a feature column was added lack it: unite them by name.
        # One file has one schema, and union_by_name costs a little on every bind.
        union = ", union_by_name = true" if len(snapshot.files) > 1 else ""
        source = f"read_parquet([{files}]{union})"
    else:
        empty = f"_empty_{spec.view}"
        con.register(empty, snapshot.schema.empty_table())
        source = empty
    con.execute(f'CREATE OR REPLACE VIEW "{spec.view}" AS SELECT * FROM {source}')


def small_remote(snapshot: Snapshot) -> bool:
    """Whether create_view(in_memory=True) reads ``snapshot``'s rows whole into memory."""
    location = snapshot.location
    return (bool(snapshot.files) and snapshot.sizes is not None and location is not None
            and not location.is_local and sum(snapshot.sizes) <= IN_MEMORY_BYTES)


def read_whole(snapshot: Snapshot) -> pa.Table:
    """Every row of ``snapshot``, its files fetched concurrently in one GET each; files written
    before a column existed read it as NULL. Data files never change (each commit adds new
    ones), so a file read for an earlier version is not fetched again: a save moves the version
    and the next query reads only the file it added (it re-read every small file before)."""
    import pyarrow.parquet as pq

    with _FILES_LOCK:
        missing = [f for f in snapshot.files if f not in _FILES]
        if missing:
            blobs = snapshot.location.read_many(missing)
            for uri in missing:
                _FILES[uri] = pq.read_table(io.BytesIO(blobs[uri]))
            wanted = set(snapshot.files)
            while (len(_FILES) > len(wanted)
                   and sum(t.nbytes for t in _FILES.values()) > FILE_CACHE_BYTES):
                _FILES.pop(next(f for f in _FILES if f not in wanted))
        parts = [_FILES[f] for f in snapshot.files]
    schema = snapshot.schema
    return pa.concat_tables([_conform(part, schema) for part in parts]).combine_chunks()


# Small registries' data files as read (by URI, in the order read), up to this many bytes.
FILE_CACHE_BYTES = 64 * 2**20
_FILES: dict[str, pa.Table] = {}
_FILES_LOCK = threading.Lock()


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [part.column(f.name).cast(f.type) if f.name in part.column_names
               else pa.nulls(part.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class SqlSandbox:
    """The connections ``ln.sql`` runs on: views over the snapshots of the registries a query
    names, and no other file. One connection per set of snapshots, the last few kept: a view
    binds by reading its files' schemas, so making views only for the registries a query names
    and reusing them until those registries change keeps ``ln.sql`` cheap (bench/README.md,
    "Open catalog")."""

    KEPT = 4

    def __init__(self, location: Location):
        self.location = location
        self._connections: dict[tuple, tuple[duckdb.DuckDBPyConnection, CredentialSecret]] = {}
        # Parses queries (json_serialize_sql) and can read nothing.
        self._parser = duckdb.connect()
        self._parser.execute("SET enable_external_access = false")

    def tables(self, select: str) -> set[str] | None:
        """The names of the tables and views a SELECT reads, from its parse tree (parsing
        binds nothing, so ``?`` parameters are fine); None when DuckDB cannot serialise it."""
        tree = json.loads(self._parser.execute("SELECT json_serialize_sql(?)",
                                                [select]).fetchone()[0])
        if tree.get("error"):
            return None
        names: set[str] = set()
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("type") == "BASE_TABLE":
                    names.add(node.get("table_name"))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return names

    def connection(self, snapshots: list[Snapshot]) -> duckdb.DuckDBPyConnection:
        """A confined connection whose views show ``snapshots``."""
        shown = tuple((s.spec.qualified, s.version) for s in snapshots)
        found = self._connections.pop(shown, None)
        if found is None:
            con = new_connection(self.location)
            secret = CredentialSecret(self.location, "lamina_sql",
                                      scope=catalog_scope(self.location))
            secret.install(con)
            files = sorted({f for s in snapshots for f in s.files})
            con.execute("SET allowed_paths = [" + ", ".join(quote(f) for f in files) + "]")
            con.execute("SET enable_external_access = false")
            for snapshot in snapshots:
                create_view(con, snapshot)
            found = (con, secret)
            while len(self._connections) >= self.KEPT:
                oldest = next(iter(self._connections))
                self._connections.pop(oldest)[0].close()
        self._connections[shown] = found  # most recently used last
        con, secret = found
        secret.install(con)
        return con

    def close(self) -> None:
        for con, _ in self._connections.values():
            con.close()
        self._connections.clear()
        self._parser.close()
