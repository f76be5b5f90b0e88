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

import atexit
import functools
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence

import duckdb

from ..catalog.location import Location
from ..catalog.snapshot import Snapshot
from ..catalog.store import CATALOG_DIR
from ..errors import ValidationError
from ..extensions import load_statement


def quote(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


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


# What DuckDB's buffer manager may hold per connection: operators' state (hash tables, sorts),
# temp tables (a registry's newest rows, small registries copied) and its cache of file data;
# past it, operators spill to a folder of the connection's own. DuckDB's default is 80% of RAM.
# Why 512 MiB: at 1e7 artifacts the guide's calls that build no cache take <= 113 MiB in a
# fresh process, and DuckDB holds 72 MiB after all of them; a GROUP BY of the 1e7 keys took
# 740 MiB by default, 570 MiB at 512 MiB and 312 MiB at 256 MiB, spilling
# (bench/query_memory_results.json); half of issue 11's 1 GiB per query is left to the Arrow
# side (list indexes, kept columns, the answer itself).
MEMORY_LIMIT = "512MiB"


def new_connection(location: Location) -> duckdb.DuckDBPyConnection:
    """A connection able to read ``location``'s kind of storage (httpfs for object stores),
    caching what it reads of the immutable Delta data files, within MEMORY_LIMIT."""
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    con.execute(f"SET memory_limit = {quote(MEMORY_LIMIT)}")
    # A folder per connection: DuckDB names its spill files per database, and connections
    # sharing a folder could overwrite each other's.
    con.execute(f"SET temp_directory = {quote(tempfile.mkdtemp(dir=_process_dir()))}")
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
    """Let ``con`` read files under the catalog folder only (and, for an object store, the
    local copies of its small registries' files this process made), for good."""
    allowed = [catalog_scope(location)]
    if not location.is_local:
        allowed.append(_copies_dir() + os.sep)
    con.execute("SET allowed_directories = [" + ", ".join(map(quote, allowed)) + "]")
    con.execute("SET enable_external_access = false")


# On an object store, a registry whose data files add up to at most this many bytes is copied
# to local disk once per file and read there: one concurrent GET per file, where DuckDB's
# httpfs sends a HEAD and then a ranged GET per column chunk it reads (the feature and record
# tables of a catalog built by single saves are tens of small files: 20-44 requests per first
# query; the 11 MB artifact file of 1e5 artifacts took 12 requests for one count, 5 in all
# with the whole file fetched; bench/README.md, "S3"). Larger registries stay Parquet scans
# that read only the row groups a query needs.
LOCAL_COPY_BYTES = 16 * 2**20


def create_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot,
                local_copy: bool = False) -> None:
    """(Re)point the view of ``snapshot``'s registry at that snapshot's data files; with
    ``local_copy``, a small registry on an object store at local copies of its files (see
    LOCAL_COPY_BYTES)."""
    spec = snapshot.spec
    files = local_copies(snapshot) if local_copy and small_remote(snapshot) else snapshot.files
    if files:
        source = parquet_source(files)
    else:
        empty = f"_empty_{spec.view}"
        con.register(empty, snapshot.schema.empty_table())
        source = empty
    con.execute(f'CREATE OR REPLACE VIEW "{spec.view}" AS SELECT * FROM {source}')


def parquet_source(files) -> str:
    """A ``read_parquet`` of ``files`` for a FROM clause. File paths come from the Delta log
    of our own root (or are our copies of those files), quoted as literals. Files written
    before a feature column was added lack it: they are united by name. One file has one
    schema, and union_by_name costs a little on every bind."""
    union = ", union_by_name = true" if len(files) > 1 else ""
    return f"read_parquet([{', '.join(map(quote, files))}]{union})"


def small_remote(snapshot: Snapshot) -> bool:
    """Whether create_view(local_copy=True) reads ``snapshot`` from local copies of its files."""
    location = snapshot.location
    return (bool(snapshot.files) and snapshot.sizes is not None and location is not None
            and not location.is_local and sum(snapshot.sizes) <= LOCAL_COPY_BYTES)


def local_copies(snapshot: Snapshot, files: Sequence[str] | None = None) -> list[str]:
    """Local copies of ``snapshot``'s data files (or of those of them in ``files``), the
    missing ones fetched concurrently in one GET each. Data files never change (each commit
    adds new ones), so a file copied for an earlier version is not fetched again: a save moves
    the version and the next query fetches only the file it added.

    Why files on disk and not Arrow tables handed to DuckDB: from a file DuckDB reads only the
    columns and row groups a query needs, where an Arrow table is decoded whole first (~0.3 s
    of CPU for the 11 MB artifact file of 1e5 artifacts, for a count that reads one column)."""
    files = snapshot.files if files is None else files
    with _COPIES_LOCK:
        missing = [f for f in files if f not in _COPIES]
        if missing:
            folder = _copies_dir()
            for uri, blob in snapshot.location.read_many(missing).items():
                path = os.path.join(folder, f"{next(_NAMES)}.parquet")
                with open(path, "wb") as f:
                    f.write(blob)
                _COPIES[uri] = (path, len(blob))
            wanted = set(snapshot.files)
            while (len(_COPIES) > len(wanted)
                   and sum(size for _, size in _COPIES.values()) > FILE_CACHE_BYTES):
                # Forgotten, not deleted: a view of an older version may still read it (the
                # folder goes when the process exits).
                _COPIES.pop(next(f for f in _COPIES if f not in wanted))
        return [_COPIES[f][0] for f in files]


# Copies of small registries' data files (by URI, in the order copied), up to this many bytes.
FILE_CACHE_BYTES = 64 * 2**20
_COPIES: dict[str, tuple[str, int]] = {}  # URI -> (local path, size)
_NAMES = itertools.count()
_COPIES_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _process_dir() -> str:
    """This process's temporary folder (copies, DuckDB's spill files), removed when it exits."""
    folder = os.path.realpath(tempfile.mkdtemp(prefix="lamina-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=1)
def _copies_dir() -> str:
    """This process's folder of copies of small registries' files."""
    return tempfile.mkdtemp(prefix="copies-", dir=_process_dir())


_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALY[SZ]E)?\s+(.*)$", re.IGNORECASE | re.DOTALL)


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

    def select_of(self, sql: str) -> str:
        """The SELECT that ``sql``, one statement written for ``ln.sql``, runs (that of a plain
        EXPLAIN [ANALYZE]); ValidationError for anything else."""
        statements = self._parser.extract_statements(sql)
        if len(statements) != 1:
            raise ValidationError(f"ln.sql() runs exactly one statement, got {len(statements)}")
        kind = statements[0].type
        select = sql
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs what it explains (COPY ... TO a file, DROP VIEW ...): only a
            # plain EXPLAIN [ANALYZE] of a SELECT is read-only.
            explained = _EXPLAIN.match(statements[0].query)
            inner = self._parser.extract_statements(explained[1]) if explained else []
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                raise ValidationError("ln.sql() is read-only: EXPLAIN is allowed for a SELECT "
                                      "only")
            select = explained[1]
        elif kind != duckdb.StatementType.SELECT:
            raise ValidationError(f"ln.sql() is read-only: {kind.name} statements are refused; "
                                  "use the registries' save() and delete() to change data")
        return select

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
