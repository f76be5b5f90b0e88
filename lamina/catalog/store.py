"""Registries as Delta tables inside the storage root: snapshots, commits, compaction, time travel.

Every write goes through :meth:`TableStore.transact`. It reads the latest snapshot, lets the caller
plan a change against it (assign ids, check uniqueness), and commits that change as exactly the
next Delta version. If another writer committed first, the put-if-absent of the log entry fails,
and the plan is made again on the newer snapshot. So ids stay unique and checks stay true
without a server or a lock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial

import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from ..errors import CommitConflict
from . import append_commit, checkpoint, compaction, deltalake_commit, turns
from .delta_log import DeltaLogReader, LogState, UnsupportedLog
from .file_stats import FileStats
from .location import Location
from .log_hints import LogHints
from .snapshot import Change, Snapshot, to_arrow
from .tables import TableSpec

logger = logging.getLogger("lamina")

CATALOG_DIR = ".lamina/catalog"
MAX_ATTEMPTS = 60
# Commits of its own through deltalake a store fetches by name to keep its log state complete
# (_log_of_own); a delete of the newest row makes two.
FOLLOWED_COMMITS = 2
# Appends of up to this many rows are committed by the store itself (append_commit.py): a
# one-row save in ~1 ms of commit instead of ~10-14 ms through write_deltalake locally, two
# requests instead of six on S3. Bulk appends stay with deltalake's writer (file splitting,
# memory use), which bulk ingest was measured with.
SMALL_APPEND_ROWS = 10_000
# A save plans on the version this store confirmed less than this long ago without asking the
# store again (a warm save's lookups have just confirmed it); if another writer committed
# meanwhile, the commit is refused and re-planned, which costs what the check would have
# saved only in that case.
SEEN_LATELY_SECONDS = 1.0
# After this many lost races a writer queues for the table's turn (turns.py); before, it backs
# off a random share of its lost attempt and races again.
TURN_AFTER_LOSSES = 2
# A table another writer committed to within this many seconds counts as contended.
CONTENDED_SECONDS = 30.0
# A commit lands at exactly the version after the snapshot it was planned on, or fails: no
# rebase onto a newer version the plan never saw. (Also imported by the peer bench's fix-up.)
_EXACT_NEXT_VERSION = CommitProperties(max_commit_retries=0)
# The writer settings of lamina's data files, under the name the peer bench's fix-up
# (../shared/peer-bench, not ours to change) imports from here.
_WRITER = deltalake_commit.WRITER_PROPERTIES
# Commit-info keys that ``ln.history()`` reads back (catalog/history.py).
USER_KEY, OPERATION_KEY = "lamina_user", "lamina_operation"


class TableStore:
    """One registry's Delta table. Thread-safe; one instance per table per process."""

    def __init__(self, location: Location, spec: TableSpec, hints: LogHints | None = None):
        self.location = location
        self.spec = spec
        self.uri = location.join(CATALOG_DIR, spec.module, spec.name)
        self._table: DeltaTable | None = None
        # Reads, and the appends the store commits itself, go through the log reader (few
        # requests), which lists a long log from the instance's hint (log_hints.py); the
        # commits deltalake makes through ``_table``, opened on first use.
        self._hints = hints
        self._reader = DeltaLogReader(location, self.uri, hint=(
            (lambda: None) if hints is None else partial(hints.start, spec.qualified)))
        self._log: LogState | None = None
        # The latest table's snapshot, kept until the version moves: a save and the query
        # that follows it would otherwise each list the add actions of the same version.
        self._current: Snapshot | None = None
        self._options: dict | None = None
        self._lock = threading.RLock()
        # Who commits through this store, written into each commit's info for the history.
        self.committer: str | None = None
        # The newest version this store wrote a checkpoint of (_write_checkpoint_now).
        self._checkpointed = -1
        # When (time.monotonic) the latest version was last confirmed (_seen_lately).
        self._checked_at = float("-inf")
        # When (time.monotonic) this store last saw a commit of another writer, or lost a race
        # (_contended).
        self._others_seen_at = float("-inf")

    def _commit_metadata(self, operation: str | None = None) -> dict:
        metadata = {USER_KEY: self.committer} if self.committer else {}
        if operation:
            metadata[OPERATION_KEY] = operation
        return metadata

    def _commit_properties(self, operation: str | None = None) -> CommitProperties:
        metadata = self._commit_metadata(operation)
        if not metadata:
            return _EXACT_NEXT_VERSION
        return CommitProperties(max_commit_retries=0, custom_metadata=metadata)

    # ---- reading -------------------------------------------------------------------------
    def _latest(self, recheck: bool = True) -> DeltaTable | None:
        """The table at its latest version; with ``recheck=False`` the version this store saw
        last (a commit planned on it is refused if the table moved meanwhile)."""
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
            elif not recheck:
                return self._table
            elif self._moved_since(self._known_version()):
                self._others_seen_at = time.monotonic()
                self._table.update_incremental()
            self._checked_at = time.monotonic()
            return self._table

    def _seen_lately(self) -> bool:
        return time.monotonic() - self._checked_at < SEEN_LATELY_SECONDS

    def _known_version(self) -> int:
        """The newest version this store has seen: its DeltaTable's, or that of a commit this
        store wrote itself (append_commit), which the DeltaTable is not told about until it
        is needed (reading back our own log entry would cost a LIST and a GET on S3)."""
        current = self._current
        version = self._table.version() if self._table is not None else -1
        return max(version, current.version) if current is not None else version

    def _synced(self, table: DeltaTable | None) -> DeltaTable | None:
        """``table`` brought up to the store's own latest commit, for what reads its log or
        commits through deltalake."""
        current = self._current
        if table is not None and current is not None and table.version() < current.version:
            table.update_incremental()
        return table

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

    def _snapshot_of(self, table: DeltaTable) -> Snapshot:
        """The snapshot of ``table`` at the version it is loaded at (also called by the peer
        bench's fix-up, ../shared/peer-bench, which is not ours to change)."""
        return Snapshot.of_table(self.spec, self.location, table)

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
                current = self._current = Snapshot.of_log(self.spec, self.location, state)
            return current

    def _latest_log(self) -> LogState | None:
        written = self._table
        if written is not None and written.version() > (-1 if self._log is None
                                                       else self._log.version):
            self._log = self._log_of_own(written)
        if self._log is None:
            self._log = self._reader.load()
        else:
            newer = self._reader.update(self._log)
            if newer is not None:
                if newer.version > self._known_version():  # not only commits of ours
                    self._others_seen_at = time.monotonic()
                self._log = newer
        # The latest version is confirmed: a save planned on it within SEEN_LATELY_SECONDS
        # asks no more (its lookups have just read the log).
        self._checked_at = time.monotonic()
        return self._log

    def _log_of_own(self, table: DeltaTable) -> LogState:
        """The log state of ``table``, which this process has just committed to (or created)
        through deltalake. On an object store, from the state held before and the few new
        commits fetched by name (one round trip, no LIST): it stays complete, so the new
        version is checkpointed without a read of the log. Else adopted from ``table``
        without a request, and not checkpointed from."""
        state = self._log
        if not self.location.is_local and (
                (state is None and table.version() == 0)
                or (checkpoint.can_checkpoint(state)
                    and 0 < table.version() - state.version <= FOLLOWED_COMMITS)):
            return self._reader.read_commits(state or LogState(version=-1), table.version())
        return self._reader.adopt(table)

    def _snapshot_newer_than_deltalake(self, version: int | None) -> Snapshot | None:
        table = self._latest()
        if table is None:
            return None if version == -1 else Snapshot(self.spec, -1, (),
                                                      self.spec.arrow_schema(), 0)
        snapshot = self._latest_snapshot(table)
        return None if snapshot.version == version else snapshot

    def known_columns(self) -> frozenset[str]:
        """The columns of the latest snapshot this process has seen, without any I/O (empty
        before the first read)."""
        current = self._current
        return frozenset(current.schema.names) if current is not None else frozenset()

    def _latest_snapshot(self, table: DeltaTable) -> Snapshot:
        current = self._current
        # A current snapshot ahead of the table is one this store committed itself.
        if current is None or current.version < table.version():
            current = self._current = self._snapshot_of(table)
        return current

    def version(self) -> int:
        with self._lock:
            return -1 if self._latest() is None else self._known_version()

    # ---- writing -------------------------------------------------------------------------
    def ensure(self, recheck: bool = True) -> DeltaTable:
        """Create the table if it does not exist (idempotent under concurrent creators)."""
        table = self._latest(recheck)
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

    def transact(self, plan: Callable[[Snapshot], Change],
                 before_commit: Callable[[], None] | None = None) -> Change:
        """Plan a change on the latest snapshot and commit it as the next version, re-planning
        on the newer snapshot whenever another writer won the race. ``before_commit`` is
        called before each commit (after the change's data file is written, where the store
        writes it itself); what it raises aborts the commit. Credentials that may not write
        raise PermissionDenied before anything is committed."""
        with self.location.writing(self.uri):
            return self._transact(plan, before_commit)

    def _transact(self, plan: Callable[[Snapshot], Change],
                  before_commit: Callable[[], None] | None) -> Change:
        losses = 0
        holds_turn = queue_for_turn = False
        due = None  # the version to checkpoint once the commit has landed
        with contextlib.ExitStack() as turn:
            for attempt in range(MAX_ATTEMPTS):
                if not holds_turn and (losses >= TURN_AFTER_LOSSES or queue_for_turn):
                    # A writer that keeps losing, or that found others waiting for the turn,
                    # waits for its own turn in the order it asked (S3, turns.py) instead of
                    # racing them.
                    turn.enter_context(self._queued_turn())
                    holds_turn = True
                with self._lock, self._turn():
                    started = time.perf_counter()
                    # A first attempt on an object store plans on the version confirmed
                    # moments ago without asking again (one request): if the table moved, the
                    # commit at the next version is refused and the next attempt reads what
                    # it missed.
                    if attempt == 0 or self.location.is_local:
                        snapshot = self._planning_snapshot(
                            recheck=attempt > 0 or self.location.is_local
                            or not self._seen_lately())
                    else:
                        snapshot = self._after_lost_race()
                    change = plan(snapshot)
                    if not change:
                        return change
                    outcome = None
                    try:
                        n_files = self._commit(snapshot, change, before_commit,
                                               yield_turn=not holds_turn
                                               and self._contended())
                    except (CommitFailedError, append_commit.LostRace):
                        outcome = "lost"
                        self._others_seen_at = time.monotonic()
                    except turns.TurnTaken:
                        outcome = "queue"
                    else:
                        due = self._checkpoint_due()
                if outcome is None:
                    break
                if outcome == "queue":
                    queue_for_turn = True
                else:
                    losses += 1
                    if losses < TURN_AFTER_LOSSES and not holds_turn:
                        time.sleep(_backoff(time.perf_counter() - started))
            else:
                raise CommitConflict(
                    f"could not commit to {self.spec.qualified} after {MAX_ATTEMPTS} attempts; "
                    "too many concurrent writers")
        # Written once the commit has landed and the turn is released: other writers do not
        # wait for it.
        self._write_checkpoint(due)
        self._maybe_compact(n_files)
        return change

    def _contended(self) -> bool:
        """Whether other writers committed to this table lately: only then does a first
        attempt check for writers holding or awaiting the turn (one LIST, beside the encoding
        of its rows), so a lone user's save makes no request for it."""
        return time.monotonic() - self._others_seen_at < CONTENDED_SECONDS

    def _planning_snapshot(self, recheck: bool) -> Snapshot:
        """The latest snapshot, for a commit attempt to plan on; the table is created first if
        it does not exist. Read by the log reader, which a save's lookups have just brought up
        to date: with ``recheck`` False, the version it confirmed moments ago is planned on
        without a request (the commit is refused if the table moved meanwhile). No deltalake
        table is opened for this: on S3, opening one re-read every commit since the last
        checkpoint twice (82 of the 139 requests of a first save in a process on a catalog of
        25 single saves; bench/README.md, "Requests per save on S3")."""
        current = self._current
        if (not recheck and current is not None and current.sizes is not None
                and self._log is not None
                and self._log.version == current.version == self._known_version()):
            return current
        snapshot = self.snapshot_newer_than(None)
        if snapshot.version < 0:
            self.ensure()
            snapshot = self.snapshot_newer_than(None)
        return snapshot

    def _after_lost_race(self) -> Snapshot:
        """The latest snapshot after a lost race on an object store: the log reader fetches
        just the commits this store missed (one LIST, their GETs concurrently). deltalake's
        ``update_incremental`` read them one by one: 100-450 ms per lost race for 8 writers on
        loopback S3, most of a losing writer's wait."""
        snapshot = self.snapshot_newer_than(None)
        self._checked_at = time.monotonic()
        return snapshot

    def _deltalake_at(self, version: int) -> DeltaTable:
        """The deltalake table at ``version``, for the commits deltalake makes (replaces,
        deletes, new columns, bulk appends, logs the store's own append does not support):
        opened on first use, then moved to the planned version, after which deltalake
        commits."""
        table = self.ensure(recheck=False)
        if table.version() < version:
            table.update_incremental()  # metadata and protocol of the newer commits too
        if table.version() != version:
            table.load_as_version(version)
        return table

    def _turn(self):
        """The turn one commit attempt is made in (turns.py): the machine's flock on a local
        root, nothing on S3 (writers race)."""
        return turns.turn_for(self.location, self.spec.qualified)

    def _queued_turn(self):
        """The table's turn on S3 (turns.py), taken in the order it was asked for by writers
        that lost the race or found others waiting; taken before the store's lock."""
        return turns.queued_turn(self.location, self.spec.qualified)

    def _commit(self, snapshot: Snapshot, change: Change,
                before_commit: Callable[[], None] | None = None,
                yield_turn: bool = False) -> int:
        """Commit ``change`` as the version after ``snapshot``'s; the number of data files the
        table then has. With ``yield_turn``, an append raises TurnTaken instead of committing
        while other writers hold or await the table's turn (checked while its rows are
        encoded, before their upload). A small
        append is committed from the log reader's state of that version (its protocol says
        whether the store may), without a deltalake table."""
        schema = snapshot.schema
        missing = {n: t for n, t in change.new_columns.items() if n not in schema.names}
        state = self._log
        if (0 < len(change.append) <= SMALL_APPEND_ROWS and not change.replace
                and not change.delete_ids and not missing
                and state is not None and state.version == snapshot.version
                and append_commit.supports(self.location, state.protocol)):
            # The turn check runs while the rows are encoded, and an attempt that yields
            # uploads nothing (a data file written and removed again costs two requests).
            taken = turns.turn_taken(self.location, self.spec.qualified) if yield_turn else None
            rows = to_arrow(change.append, schema)
            add, uri = append_commit.commit_append(
                self.location, self.uri, snapshot.version + 1, rows, self._commit_metadata(),
                before_commit, before_upload=None if taken is None else _unless_taken(taken))
            max_id = pc.max(rows.column("id")).as_py() or 0
            sizes = None if snapshot.sizes is None else (*snapshot.sizes, add["add"]["size"])
            stats = {**snapshot.stats, uri: FileStats.of_action(add["add"])}
            self._current = replace(snapshot, version=snapshot.version + 1,
                                    files=(*snapshot.files, uri), sizes=sizes, stats=stats,
                                    max_id=max(snapshot.max_id, max_id))
            self._log = self._reader.committed(state, [add])
            self._checked_at = time.monotonic()
            return len(self._current.files)
        table = self._deltalake_at(snapshot.version)
        if before_commit is not None:
            before_commit()
        deltalake_commit.commit_through_deltalake(
            table, snapshot, change, missing, self.location.delta_options,
            self._commit_properties, after_id_mark=self._checkpoint_if_due)
        if not self.location.is_local:  # checkpointed from it (_checkpoint_due)
            self._log = self._log_of_own(table)
        return len(table.file_uris())

    # ---- housekeeping --------------------------------------------------------------------
    def _checkpoint_if_due(self) -> None:
        self._write_checkpoint(self._checkpoint_due())

    def _checkpoint_due(self) -> int | None:
        """The version just committed, when its checkpoint is due (checkpoint.due)."""
        version = self._known_version()
        return version if checkpoint.due(self.location, version, self._log) else None

    def _write_checkpoint(self, version: int | None) -> None:
        """Checkpoint ``version`` (None: nothing due), so a new reader loads one Parquet
        checkpoint and the commits after it: on an object store on the checkpoint thread
        (checkpoint.in_background), so the save does not wait for the PUT. Written from the
        log state this store holds, else from the log as delta_log.py reads it (a LIST, the
        commits since the last checkpoint); by deltalake for a log that reader does not
        support. The commit has landed: a checkpoint that cannot be written is skipped
        (readers replay a commit or more), not reported as a failed save."""
        if version is None:
            return
        if self.location.is_local:
            self._write_checkpoint_now(version)
        else:
            checkpoint.in_background(lambda: self._write_checkpoint_now(version))

    def _write_checkpoint_now(self, version: int) -> None:
        """Checkpoint ``version``, or the newer version this store holds by now (a
        background write that starts after the next commit writes that one's checkpoint,
        once); ``_last_checkpoint`` and the instance's log hint when due (checkpoint.py,
        log_hints.py)."""
        with self._lock:
            state, done = self._log, self._checkpointed
        try:
            held = (state is not None and state.version >= version
                    and checkpoint.can_checkpoint(state))
            if not held:
                if state is not None and state.version > version:
                    return  # a newer commit of this process is checkpointed by its own rule
                try:
                    state = self._reader.load()
                except UnsupportedLog:
                    state = None
                if state is not None:
                    with self._lock:
                        if self._log is None or self._log.version <= state.version:
                            self._log = state
            elif state.version <= done:
                return  # written already, by the write for an older commit
            if checkpoint.can_checkpoint(state):
                hint = not held or checkpoint.hint_due(
                    state.version, done if done >= 0 else state.version - 1)
                checkpoint.write_checkpoint(self.location, self.uri, state, hint=hint)
                with self._lock:
                    self._checkpointed = max(self._checkpointed, state.version)
                if self._hints is not None:
                    self._hints.advance(self.spec.qualified, state.version)
                return
        except OSError as exc:
            logger.warning("no checkpoint of %s at version %d: %s", self.uri, version, exc)
            return
        if version % checkpoint.CHECKPOINT_INTERVAL == 0:
            table = self._synced(self.ensure(recheck=False))
            table.create_checkpoint()
            table.cleanup_metadata()

    def _maybe_compact(self, n_files: int) -> None:
        if compaction.due(n_files):
            self.compact()

    def compact(self) -> dict:
        """Merge the table's small files into one, as an ordinary commit.

        The rows of the small files are read once and written to one new file; the commit
        removes the small files and adds it (``dataChange: false``, as Delta's OPTIMIZE), at
        exactly the next version. After a lost race the same file is committed again at the
        next version, provided the small files are all still in the table: other writers'
        appends are rebased over at the cost of one log PUT, while a concurrent compaction or
        an edit of one of those rows ends this round (the next commit tries again); what it
        reads, first and after a lost race, comes from the log reader (only the commits it
        has not seen; deltalake's re-read made a compaction on S3 take 5.3 s on average,
        bench/foundation_latency_runs/probe-before-turns.json). The merge runs outside the
        table's turn, and each commit attempt in the machine's flock locally; on S3 it does
        not queue for the turn: in the queue it held up every waiting writer for its whole
        merge (1.3 s at load 10, five times in the 200 saves of the 8-writer race), while a
        commit of its that wins makes at most the one holder re-plan. Two compactions may
        then merge the same files at once; the first to commit ends the other's round.
        Before, a compaction rewrote through a predicate overwrite, which on S3 re-read every
        small file and rewrote them again after each lost race: 8 racing writers, p99 save
        27 s (bench/README.md). deltalake's ``optimize.compact()`` is not used: two of them
        racing on the same files both commit (a concurrent removal with ``dataChange=false``
        is not seen as a conflict; delta-rs #1348, #3982), which leaves every merged row in
        the table twice. Old files stay until vacuum, so readers of an older snapshot are
        never broken."""
        with self._lock:
            try:
                state = self._latest_log()
            except UnsupportedLog:
                return {}  # not a log lamina writes: left as it is
            if state is None:
                return {}
            sizes = compaction.small_files(state)
            if len(sizes) < 2 or not append_commit.supports(self.location, state.protocol):
                return {}
        # In id order, as appends left them: the newest rows stay in the last row groups.
        rows = Snapshot.of_log(self.spec, self.location, state).read_whole(
            [state.files[p].uri for p in sizes]).sort_by("id")
        add, merged_uri = append_commit.write_data_file(self.location, self.uri, rows,
                                                        data_change=False)
        actions = [add, *(append_commit.remove_action(p, sizes[p], data_change=False)
                          for p in sorted(sizes))]
        # No rows change: ln.history() shows a compaction with 0 rows.
        info = {"operation": "OPTIMIZE", "operationParameters": {},
                "operationMetrics": {"num_added_files": 1, "num_removed_files": len(sizes)},
                **self._commit_metadata("compact")}
        for _ in range(compaction.COMMIT_ATTEMPTS):
            with self._lock, self._turn():
                # Only the commits since the merge began (one LIST, their GETs concurrently).
                newer = self._reader.update(state) or state
                if (not sizes.keys() <= newer.files.keys()
                        or newer.schema_string != state.schema_string):
                    break  # merged or edited meanwhile, or new columns: next round
                state = newer
                try:
                    append_commit.put_log_entry(self.location, self.uri, state.version + 1,
                                                actions, info)
                except append_commit.LostRace:
                    continue
                self._log = self._reader.committed(state, actions)
                self._current = Snapshot.of_log(self.spec, self.location, self._log)
                due, version = self._checkpoint_due(), self._log.version
            # Outside the turn, as a save's: other writers do not wait for the checkpoint.
            self._write_checkpoint(due)
            return {"numFilesRemoved": len(sizes), "numRowsRewritten": rows.num_rows,
                    "version": version}
        append_commit.remove_file(self.location, merged_uri)
        return {}

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete files no snapshot younger than ``retention_hours`` needs."""
        table = self._synced(self._latest())
        if table is None:
            return []
        return table.vacuum(retention_hours=retention_hours, dry_run=False,
                            enforce_retention_duration=False)

    def history(self, limit: int | None = None) -> list[dict]:
        table = self._synced(self._latest())
        return [] if table is None else table.history(limit)


def _backoff(took: float) -> float:
    """Seconds to wait after losing the commit race, when the lost attempt took ``took``
    seconds: a random share of one attempt, so racing writers spread out over the time a
    commit takes on this storage (5 ms locally, 50-100 ms on S3). The window does not grow
    with the number of lost attempts: a writer that keeps losing would wait longer and longer while writers
    that just won try again at once (8 writers on S3, one run each at load 12-13: p99 20 s
    with a window doubling up to 8 attempts, 13 s with one attempt; bench/README.md). Outside
    the store's lock."""
    return random.uniform(0, took)


def _unless_taken(taken) -> Callable[[], None]:
    """A wait for the turn check ``taken`` that raises TurnTaken when other writers hold or
    await the turn."""
    def check() -> None:
        if taken.result():
            raise turns.TurnTaken
    return check
