"""Registries as Delta tables inside the storage root: snapshots, commits, compaction, time travel.

Every write goes through :meth:`TableStore.transact`. It reads the latest snapshot, lets the caller
plan a change against it (assign ids, check uniqueness), and commits that change as exactly the
next Delta version. If another writer committed first, the put-if-absent of the log entry fails,
and the plan is made again on the newer snapshot. So ids stay unique and checks stay true
without a server or a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (CommitProperties, DeltaTable, PostCommitHookProperties, WriterProperties,
                       write_deltalake)
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from ..errors import CommitConflict
from .delta_log import DeltaLogReader, LogState, UnsupportedLog
from .location import Location
from .tables import TableSpec

logger = logging.getLogger("lamina")

CATALOG_DIR = ".lamina/catalog"
LOCKS_DIR = ".lamina/locks"
MAX_ATTEMPTS = 60
# After a lost race a writer waits up to this many times as long as its attempt took.
BACKOFF_ATTEMPTS = 8
# Compaction merges small files once a table has this many; readers keep their snapshot.
COMPACT_AFTER_FILES = 32
# Only the commit that brings the count to the threshold, or to one of every this many files
# past it, compacts: one writer does it instead of every racing writer after every commit
# (8 writers on a local root: p99 save 4.4 s when all of them tried; bench/README.md).
COMPACT_RETRY_FILES = 8
# Commits a compaction may lose to other writers' appends before it gives up this round.
COMPACT_COMMIT_ATTEMPTS = 5
# Files below this size are merged by compaction (a one-row commit writes a few KB).
SMALL_FILE_BYTES = 16 * 2**20
# A compaction rewrites rows by runs of consecutive ids; beyond this many runs it waits.
MAX_ID_RUNS = 1000
# deltalake's post-commit hook lists the whole log after every commit to decide whether to
# checkpoint (one LIST per save on S3); the store checkpoints every CHECKPOINT_INTERVAL
# versions itself, which is what the hook would do with the default interval.
_NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
CHECKPOINT_INTERVAL = 100
# The highest id a table has ever held, as a table property: part of every snapshot's
# metadata (checkpoints included, and read with it at no cost), so it outlives the rows. A
# delete first raises it to the table's max id, then deletes; new ids continue after it, so an
# id is never reused even when the newest row is deleted (the rows' max(id) statistic would go
# down). A Delta app transaction (``txn``) would fit in the delete's own commit, but reading it
# back replays the log: 330 ms per save on the loopback S3 server.
ID_HIGH_WATER = "lamina.idHighWater"
# Commit-info keys that ``ln.history()`` reads back (catalog/history.py).
USER_KEY, OPERATION_KEY = "lamina_user", "lamina_operation"
# Row groups of 16 Ki rows: DuckDB parallelises a scan and prunes by min/max statistics per
# row group, and ids grow with every commit, so the display columns of the newest 100 rows
# are one or two row groups (the default to_dataframe() reads those only; with 122,880-row
# groups it decoded every display column of a 1e5 table, ~20 ms). deltalake's default (1 Mi
# rows) leaves one group per file. Snappy, as deltalake's default: WriterProperties without a
# codec writes uncompressed (+65 % bytes). Figures: bench/README.md, "Query".
_WRITER = WriterProperties(max_row_group_size=16_384, compression="SNAPPY")


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: the Parquet files that make it up, and their schema."""

    spec: TableSpec
    version: int
    files: tuple[str, ...]
    schema: pa.Schema
    max_id: int
    # Reads the files; None for a table that does not exist yet (no files).
    location: Location | None = field(default=None, repr=False, compare=False)
    # Each file's size in bytes when the log was read by this process's reader: a read then
    # needs no HEAD per file to find its footer.
    sizes: tuple[int, ...] | None = field(default=None, repr=False, compare=False)

    def read(self, columns: list[str] | None = None, filter=None,
             files: Sequence[str] | None = None) -> pa.Table:
        """Rows of this snapshot, or of some of its ``files`` (a ``pyarrow.compute`` filter is
        pushed down to Parquet). Files written before a column existed read it as NULL."""
        import pyarrow.dataset as ds

        files = self.files if files is None else files
        if not files or self.location is None:
            empty = self.schema.empty_table()
            return empty.select(columns) if columns else empty
        location = self.location
        known = dict(zip(self.files, self.sizes)) if self.sizes is not None else {}
        parquet = ds.ParquetFileFormat()
        fragments = [parquet.make_fragment(location.arrow_path(f), location.arrow_fs,
                                           file_size=known.get(f)) for f in files]
        dataset = ds.FileSystemDataset(fragments, self.schema, parquet, location.arrow_fs)
        return dataset.to_table(columns=columns, filter=filter, use_threads=False)

    @property
    def next_id(self) -> int:
        """The id of the next new row: ids are never reused (see ID_HIGH_WATER)."""
        return self.max_id + 1

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


@dataclass
class Change:
    """What one commit does to one table: append new rows, replace rows by id, delete by id."""

    # Rows as dicts (one save) or an Arrow table (bulk loads).
    append: list[dict] | pa.Table = field(default_factory=list)
    replace: list[dict] = field(default_factory=list)
    delete_ids: list[int] = field(default_factory=list)
    # Columns the rows bring that the table does not have yet (feature values): name -> type.
    new_columns: dict = field(default_factory=dict)
    # Anything the planner wants back after the commit (new ids, an existing row, ...).
    result: object = None

    def __bool__(self) -> bool:
        return bool(len(self.append) or self.replace or self.delete_ids)


class TableStore:
    """One registry's Delta table. Thread-safe; one instance per table per process."""

    def __init__(self, location: Location, spec: TableSpec):
        self.location = location
        self.spec = spec
        self.uri = location.join(CATALOG_DIR, spec.module, spec.name)
        self._table: DeltaTable | None = None
        # Reads go through the log reader (few requests); writes through ``_table``.
        self._reader = DeltaLogReader(location, self.uri)
        self._log: LogState | None = None
        # The latest table's snapshot, kept until the version moves: a save and the query
        # that follows it would otherwise each list the add actions of the same version.
        self._current: Snapshot | None = None
        self._options: dict | None = None
        self._lock = threading.RLock()
        # Who commits through this store, written into each commit's info for the history.
        self.committer: str | None = None

    def _commit_properties(self, operation: str | None = None) -> CommitProperties:
        metadata = {USER_KEY: self.committer} if self.committer else {}
        if operation:
            metadata[OPERATION_KEY] = operation
        return CommitProperties(max_commit_retries=0, custom_metadata=metadata or None)

    # ---- reading -------------------------------------------------------------------------
    def _latest(self) -> DeltaTable | None:
        with self._lock:
            options = self.location.delta_options
            # A DeltaTable keeps the credentials it was opened with: open it again when they
            # change (rotated keys, a new session token).
            if self._table is None or options != self._options:
                try:
                    self._table = DeltaTable(self.uri, storage_options=options)
                    self._options = options
                except TableNotFoundError:
                    return None
            elif self._moved_since(self._table.version()):
                self._table.update_incremental()
            return self._table

    def _moved_since(self, version: int) -> bool:
        """Whether a version newer than ``version`` may exist, known from one stat (local) or
        one HEAD (object stores) instead of a read of the log (a LIST of the log folder and a
        GET per new commit). Delta versions are consecutive and a commit creates exactly
        ``_delta_log/<version + 1>.json`` (put-if-absent), so while that file is missing
        nothing newer exists."""
        return self.location.has_file(f"{self.uri}/_delta_log/{version + 1:020d}.json")

    def snapshot(self, version: int | datetime | None = None) -> Snapshot:
        """The latest snapshot, or a past one (time travel) by version number or timestamp."""
        if version is None:
            return self.snapshot_newer_than(None)
        table = DeltaTable(self.uri, storage_options=self.location.delta_options)
        table.load_as_version(version)
        return self._snapshot_of(table)

    def snapshot_newer_than(self, version: int | None) -> Snapshot | None:
        """The latest snapshot, or None when it is ``version`` still. The log is read once per
        process and then only what was committed since (see delta_log.py); a log the reader
        does not support is read with deltalake."""
        with self._lock:
            try:
                state = self._latest_log()
            except UnsupportedLog as exc:
                logger.debug("reading %s with deltalake: %s", self.uri, exc)
                return self._snapshot_newer_than_deltalake(version)
            latest = -1 if state is None else state.version
            if latest == version:
                return None
            if state is None:
                return Snapshot(self.spec, -1, (), self.spec.arrow_schema(), 0)
            current = self._current
            if current is None or current.version != state.version or current.sizes is None:
                current = self._current = self._snapshot_of_log(state)
            return current

    def _latest_log(self) -> LogState | None:
        written = self._table
        if written is not None and written.version() > (-1 if self._log is None
                                                       else self._log.version):
            self._log = self._reader.adopt(written)  # what this process committed
        if self._log is None:
            self._log = self._reader.load()
        else:
            self._log = self._reader.update(self._log) or self._log
        return self._log

    def _snapshot_of_log(self, state: LogState) -> Snapshot:
        from deltalake import Schema

        files = tuple(f.uri for f in state.files.values())
        sizes = tuple(f.size for f in state.files.values())
        schema = pa.schema(Schema.from_json(state.schema_string).to_arrow())
        high_water = int(state.configuration.get(ID_HIGH_WATER, 0))
        snapshot = Snapshot(self.spec, state.version, files, schema, high_water, self.location,
                            sizes)
        ids = [f.max_id for f in state.files.values()]
        if None in ids:  # no statistics: scan the ids
            ids = pc.max(snapshot.read(["id"]).column("id")).as_py()
            ids = [ids or 0]
        return replace(snapshot, max_id=max([high_water, *ids]))

    def _snapshot_newer_than_deltalake(self, version: int | None) -> Snapshot | None:
        table = self._latest()
        latest = -1 if table is None else table.version()
        if latest == version:
            return None
        if table is None:
            return Snapshot(self.spec, -1, (), self.spec.arrow_schema(), 0)
        return self._latest_snapshot(table)

    def known_columns(self) -> frozenset[str]:
        """The columns of the latest snapshot this process has seen, without any I/O (empty
        before the first read)."""
        current = self._current
        return frozenset(current.schema.names) if current is not None else frozenset()

    def _latest_snapshot(self, table: DeltaTable) -> Snapshot:
        current = self._current
        if current is None or current.version != table.version():
            current = self._current = self._snapshot_of(table)
        return current

    def _snapshot_of(self, table: DeltaTable) -> Snapshot:
        files = tuple(table.file_uris())
        schema = pa.schema(table.schema().to_arrow())
        high_water = int(table.metadata().configuration.get(ID_HIGH_WATER, 0))
        snapshot = Snapshot(self.spec, table.version(), files, schema, high_water, self.location)
        if not files:
            return snapshot
        actions = pa.table(table.get_add_actions(flatten=True))
        ids = actions.column("max.id") if "max.id" in actions.column_names else None
        if ids is not None and ids.null_count == 0:
            max_id = int(pc.max(ids).as_py() or 0)
        else:  # no statistics: scan the ids
            max_id = int(pc.max(snapshot.read(["id"]).column("id")).as_py() or 0)
        return replace(snapshot, max_id=max(max_id, high_water))

    def version(self) -> int:
        table = self._latest()
        return -1 if table is None else table.version()

    # ---- writing -------------------------------------------------------------------------
    def ensure(self) -> DeltaTable:
        """Create the table if it does not exist (idempotent under concurrent creators)."""
        table = self._latest()
        if table is not None:
            return table
        try:
            DeltaTable.create(
                self.uri,
                schema=self.spec.arrow_schema(),
                mode="error",
                partition_by=list(self.spec.partition_by) or None,
                storage_options=self.location.delta_options,
                name=self.spec.qualified,
                commit_properties=self._commit_properties(),
            )
        except Exception as exc:  # another process created it first
            if self._latest() is None:
                raise exc
        table = self._latest()
        assert table is not None
        return table

    def transact(self, plan: Callable[[Snapshot], Change]) -> Change:
        """Plan a change on the latest snapshot and commit it as the next version, re-planning
        on the newer snapshot whenever another writer won the race. Credentials that may not
        write raise PermissionDenied before anything is committed."""
        with self.location.writing(self.uri):
            return self._transact(plan)

    def _transact(self, plan: Callable[[Snapshot], Change]) -> Change:
        for attempt in range(MAX_ATTEMPTS):
            started = time.perf_counter()
            with self._lock, self._machine_turn():
                table = self.ensure()
                snapshot = self._latest_snapshot(table)
                change = plan(snapshot)
                if not change:
                    return change
                try:
                    self._commit(table, snapshot, change)
                except CommitFailedError:
                    # The next attempt reads just the commits we missed (update_incremental):
                    # reloading the whole log instead made every lost race cost a full replay.
                    lost = time.perf_counter() - started
                else:
                    lost = None
                    # The write advanced ``table`` to the version it committed, so counting
                    # its files needs no second read of the log.
                    n_files = len(table.file_uris())
                    self._checkpoint_if_due(table)
            if lost is not None:
                time.sleep(_backoff(attempt, lost))
                continue
            self._maybe_compact(n_files)
            return change
        raise CommitConflict(
            f"could not commit to {self.spec.qualified} after {MAX_ATTEMPTS} attempts; "
            "too many concurrent writers"
        )

    def _machine_turn(self):
        """On a local root, writers on this machine take turns (an flock held from reading the
        snapshot to the commit), so they do not lose races to each other: 8 racing processes
        spent most of their time re-planning lost commits (p99 save 2.8 s, 0.75 s with turns).
        Correctness does not depend on it: the commit is still put-if-absent at exactly the
        next version, which is what guards against writers on other machines and on object
        stores (where this is a no-op)."""
        if not self.location.is_local:
            return contextlib.nullcontext()
        path = self.location.join(LOCKS_DIR, f"{self.spec.qualified}.lock")
        with _TURNS_LOCK:
            turn = _TURNS.setdefault(path, _Turn(path))
        return turn.held()

    def _commit(self, table: DeltaTable, snapshot: Snapshot, change: Change) -> None:
        options = self.location.delta_options
        schema = snapshot.schema
        evolve = {}
        if change.new_columns:
            missing = {n: t for n, t in change.new_columns.items() if n not in schema.names}
            for name, arrow_type in missing.items():
                schema = schema.append(pa.field(name, arrow_type))
            evolve = {"schema_mode": "merge"} if missing else {}
        if change.delete_ids:
            if len(change.append) or change.replace:
                raise ValueError("a change either deletes rows or writes them, not both")
            # Deleting the row that holds the highest id takes two commits; dying between
            # them leaves a raised mark and no row deleted.
            mark = int(table.metadata().configuration.get(ID_HIGH_WATER, 0))
            if mark < snapshot.max_id <= max(change.delete_ids):
                table.alter.set_table_properties({ID_HIGH_WATER: str(snapshot.max_id)},
                                                 raise_if_not_exists=False,
                                                 commit_properties=self._commit_properties(
                                                     "id mark"),
                                                 post_commithook_properties=_NO_HOOKS)
                self._checkpoint_if_due(table)
            table.delete(predicate=_ids_predicate(change.delete_ids),
                         commit_properties=self._commit_properties(),
                         post_commithook_properties=_NO_HOOKS)
            return
        if change.replace:
            if len(change.append):
                raise ValueError("a change either replaces rows or appends them, not both")
            rows = to_arrow(change.replace, schema)
            write_deltalake(table, rows, mode="overwrite",
                            predicate=_ids_predicate([r["id"] for r in change.replace]),
                            commit_properties=self._commit_properties(), storage_options=options,
                            writer_properties=_WRITER, post_commithook_properties=_NO_HOOKS,
                            **evolve)
            return
        write_deltalake(table, to_arrow(change.append, schema), mode="append",
                        commit_properties=self._commit_properties(), storage_options=options,
                        writer_properties=_WRITER, post_commithook_properties=_NO_HOOKS,
                        **evolve)

    # ---- housekeeping --------------------------------------------------------------------
    @staticmethod
    def _checkpoint_if_due(table: DeltaTable) -> None:
        """Checkpoint the log every CHECKPOINT_INTERVAL versions, so a new reader loads one
        Parquet checkpoint and the commits after it instead of replaying every commit."""
        if table.version() % CHECKPOINT_INTERVAL == 0:
            table.create_checkpoint()
            table.cleanup_metadata()

    def _maybe_compact(self, n_files: int) -> None:
        if n_files >= COMPACT_AFTER_FILES and (
                n_files - COMPACT_AFTER_FILES) % COMPACT_RETRY_FILES == 0:
            self.compact()

    def compact(self) -> dict:
        """Merge the table's small files into one, as an ordinary commit.

        The rows of the small files are read once and written back unchanged by a predicate
        overwrite on their ids, committed at exactly the next version. Before each attempt the
        small files must all still be in the table: other writers' appends are simply
        rebased over, but a concurrent compaction or an edit of one of those rows ends this
        round (the next commit tries again). On a local root writers take turns
        (``_machine_turn``), so it does not lose; on S3 each lost attempt rewrites the small
        files again (8 racing writers: p99 save 12.8 s with one attempt, 27 s with five, but
        with one the table kept growing past the threshold while writers raced).
        deltalake's ``optimize.compact()`` is not used:
        two of them racing on the same files both commit (a concurrent removal with
        ``dataChange=false`` is not seen as a conflict; delta-rs #1348, #3982), which leaves
        every merged row in the table twice. Old files stay until vacuum, so readers of an
        older snapshot are never broken."""
        with self._lock, self._machine_turn():
            table = self._latest()
            if table is None:
                return {}
            paths, small = _file_paths(table)
            if len(small) < 2:
                return {}
            rows = self._snapshot_of(table).read(files=[f"{self.uri}/{p}" for p in small])
            predicate = _id_runs_predicate(rows.column("id"))
            if predicate is None:
                return {}
            for _ in range(COMPACT_COMMIT_ATTEMPTS):
                try:
                    write_deltalake(table, rows, mode="overwrite", predicate=predicate,
                                    commit_properties=self._commit_properties("compact"),
                                    storage_options=self.location.delta_options,
                                    writer_properties=_WRITER,
                                    post_commithook_properties=_NO_HOOKS)
                except CommitFailedError:
                    table = self._latest()
                    if (table is None or not small <= _file_paths(table)[0]
                            or pa.schema(table.schema().to_arrow()) != rows.schema):
                        return {}  # merged or edited meanwhile, or new columns: next round
                    continue
                self._checkpoint_if_due(table)
                return {"numFilesRemoved": len(small), "numRowsRewritten": rows.num_rows,
                        "version": table.version()}
            return {}

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete files no snapshot younger than ``retention_hours`` needs."""
        table = self._latest()
        if table is None:
            return []
        return table.vacuum(retention_hours=retention_hours, dry_run=False,
                            enforce_retention_duration=False)

    def history(self, limit: int | None = None) -> list[dict]:
        table = self._latest()
        return [] if table is None else table.history(limit)


class _Turn:
    """One lock file's flock, shared by the threads and stores of this process: re-entrant
    (a thread that holds it may commit again), and taken from the OS once per process (a
    second ``open`` of the same file would wait for the first)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._handle = None

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._depth == 0:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._handle = open(self.path, "a")
                fcntl.flock(self._handle, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._handle, fcntl.LOCK_UN)
                    self._handle.close()
                    self._handle = None


_TURNS: dict[str, _Turn] = {}
_TURNS_LOCK = threading.Lock()


def _backoff(attempt: int, took: float) -> float:
    """Seconds to wait after losing the commit race for the ``attempt``-th time, when the lost
    attempt took ``took`` seconds: a random share of a window as long as a few attempts, so
    racing writers spread out over the time a commit takes on this storage (5 ms locally,
    100 ms on S3) instead of a fixed schedule tuned for one of them. Outside the store's lock."""
    return random.uniform(0, took * min(2 ** attempt, BACKOFF_ATTEMPTS))


def to_arrow(rows: Sequence[dict] | pa.Table, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        missing = [n for n in schema.names if n not in rows.column_names]
        for name in missing:
            rows = rows.append_column(schema.field(name), pa.nulls(rows.num_rows, schema.field(name).type))
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(list(rows), schema=schema)


def _ids_predicate(ids: Sequence[int]) -> str:
    # Ids are ints we hold; int() makes sure nothing else reaches the predicate.
    return "id IN (" + ", ".join(str(int(i)) for i in ids) + ")"


def _file_paths(table: DeltaTable) -> tuple[set[str], set[str]]:
    """The data files of ``table``'s version, all and the small ones, as paths relative to
    the table (the add actions hold them percent-encoded once more)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = [unquote(p) for p in actions.column("path").to_pylist()]
    sizes = actions.column("size_bytes").to_pylist()
    return set(paths), {p for p, size in zip(paths, sizes) if size < SMALL_FILE_BYTES}


def _id_runs_predicate(ids: pa.ChunkedArray) -> str | None:
    """A predicate matching exactly ``ids``, as ranges of consecutive ids."""
    if not len(ids) or ids.null_count:
        return None
    values = sorted(set(ids.to_pylist()))
    runs = [[values[0], values[0]]]
    for value in values[1:]:
        if value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    if len(runs) > MAX_ID_RUNS:
        return None
    return " OR ".join(f"id = {int(lo)}" if lo == hi else f"(id >= {int(lo)} AND id <= {int(hi)})"
                       for lo, hi in runs)
