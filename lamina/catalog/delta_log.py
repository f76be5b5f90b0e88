"""The latest version of a Delta table, read from its log in few requests (the read path).

Why not ``deltalake.DeltaTable`` for reading: on an object store, opening one (deltalake 1.6)
fetches every commit file since the last checkpoint twice and reads a one-file checkpoint in
six ranged GETs, twice (24 requests for a table of 11 commits, 13 for one with a fresh
checkpoint); each is a network round trip. This reader makes, for a table it has not seen:

- one LIST of the log (a log of more than 1000 files, which a table with hundreds of
  commits since its logs were last cleaned up has, is listed from a checkpoint instead, so
  thousands of older commits cost nothing: see ``_names``),
- one GET per file it needs: the newest checkpoint (whole, in one request) and each commit
  after it, issued concurrently;

and to bring a table it has seen up to date, one LIST of the commits after the version it holds
(an empty answer: nothing moved), then one GET per new commit. Commit files are whole objects
written put-if-absent, so a listed commit is complete: a reader never sees half a commit.

It reads what lamina writes: protocol reader version 1, no partition columns, no deletion
vectors. A log that needs more raises :class:`UnsupportedLog`, and the caller reads the table
with deltalake instead. Writes and time travel stay with deltalake.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from . import settings
from .file_stats import FileStats
from .location import Location

LOG_DIR = "_delta_log"
LAST_CHECKPOINT = "_last_checkpoint"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")


class UnsupportedLog(Exception):
    """The log uses a feature this reader does not implement (read it with deltalake)."""


@dataclass(frozen=True)
class DataFile:
    """One data file of a version: its URI, size in bytes and largest ``id`` (None when the
    commit carried no statistics), and the ``add`` action that added it (None when the state
    was not read from the log), which a checkpoint repeats; its statistics (file_stats.py),
    None when unknown."""

    uri: str
    size: int
    max_id: int | None
    action: dict | None = field(default=None, compare=False, repr=False)
    stats: FileStats | None = field(default=None, compare=False, repr=False)


@dataclass
class LogState:
    """A table's state at ``version``: its live data files and latest metadata; with
    ``complete``, also every action a checkpoint of this version holds (checkpoint.py)."""

    version: int
    files: dict[str, DataFile] = field(default_factory=dict)  # by decoded path in the log
    schema_string: str = ""
    configuration: dict[str, str] = field(default_factory=dict)
    protocol: dict | None = None
    metadata: dict | None = None
    # Removed files, by decoded path: their ``remove`` actions (tombstones, kept for vacuum).
    removed: dict[str, dict] = field(default_factory=dict)
    complete: bool = True

    def next(self) -> LogState:
        """A copy to apply the following commits to."""
        return LogState(self.version, dict(self.files), self.schema_string,
                        dict(self.configuration), self.protocol, self.metadata,
                        dict(self.removed), self.complete)


class DeltaLogReader:
    """Reads the latest state of the Delta table at ``uri`` and keeps it up to date."""

    def __init__(self, location: Location, uri: str,
                 hint: Callable[[], int | None] = lambda: None):
        self.location = location
        self.uri = uri.rstrip("/")
        self.log_uri = f"{self.uri}/{LOG_DIR}"
        # A checkpoint version the table's log may be listed from (log_hints.py).
        self.hint = hint

    def load(self) -> LogState | None:
        """The latest state; None when the table does not exist (no commit file)."""
        names = self._names()
        base = _newest_checkpoint(names)
        commits = _commit_versions(names)
        wanted = _contiguous(commits, -1 if base is None else base)
        if base is None and not wanted:
            if commits:  # older commits were cleaned up and no checkpoint covers them
                raise UnsupportedLog("the log has neither version 0 nor a checkpoint")
            return None
        paths = [f"{self.log_uri}/{v:020d}.json" for v in wanted]
        checkpoint = None if base is None else f"{self.log_uri}/{base:020d}.checkpoint.parquet"
        blobs = self.location.read_many(paths + ([checkpoint] if checkpoint else []))
        state = LogState(version=-1)
        if checkpoint is not None:
            self._apply_checkpoint(state, blobs[checkpoint])
            state.version = base
        for version, path in zip(wanted, paths):
            self._apply_commit(state, blobs[path])
            state.version = version
        return state

    def update(self, state: LogState) -> LogState | None:
        """``state`` brought to the latest version; None when nothing was committed since (one
        LIST of the commits after ``state.version``; locally one stat of the next commit file,
        cheaper than listing a folder of hundreds of files)."""
        if self.location.is_local and not os.path.exists(
                f"{self.log_uri}/{state.version + 1:020d}.json"):
            return None
        names, _ = self.location.list_names(self.log_uri, after=f"{state.version:020d}.json")
        wanted = _contiguous(_commit_versions(names), state.version)
        return self.read_commits(state, wanted[-1]) if wanted else None

    def read_commits(self, state: LogState, version: int) -> LogState:
        """``state`` brought to ``version``, which is known to exist (this process has just
        committed it through deltalake): the commits after ``state.version`` fetched by name,
        concurrently, with no LIST."""
        wanted = list(range(state.version + 1, version + 1))
        paths = [f"{self.log_uri}/{v:020d}.json" for v in wanted]
        blobs = self.location.read_many(paths)
        updated = state.next()
        for number, path in zip(wanted, paths):
            self._apply_commit(updated, blobs[path])
            updated.version = number
        return updated

    # ---- reading the log ---------------------------------------------------------------
    def _names(self) -> list[str]:
        """The names of the log's files from its newest checkpoint on (or all of them). A log
        of more than one LIST page (1000 names: 500 versions, each a commit and its
        checkpoint) is listed from a checkpoint: the newer of the one ``instance.json`` names
        (log_hints.py) and the one this machine remembers from an earlier process (one LIST,
        as for a new table), else the one ``_last_checkpoint`` names (a GET and a second
        LIST). A hint is only where a listing starts: if the listing from it finds no
        checkpoint (the table was made again), the log is listed from the start; if it fills
        a page (a stale hint), from ``_last_checkpoint``."""
        starts = [v for v in (self.hint(), settings.remembered_checkpoint(self.log_uri))
                  if v is not None]
        complete = True
        if starts:
            names, complete = self.location.list_names(
                self.log_uri, after=f"{max(starts):020d}", first_page=True)
            if complete and _newest_checkpoint(names) is not None:
                return names
        if complete:
            names, complete = self.location.list_names(self.log_uri, first_page=True)
            if complete:
                return names
        # Without that checkpoint, replay the whole log.
        last = self._last_checkpoint_version()
        if last is not None:
            names, _ = self.location.list_names(self.log_uri, after=f"{last:020d}")
        if last is None or _newest_checkpoint(names) is None:
            return self.location.list_names(self.log_uri)[0]
        settings.remember_checkpoint(self.log_uri, _newest_checkpoint(names))
        return names

    def _last_checkpoint_version(self) -> int | None:
        try:
            blob = self.location.read_many([f"{self.log_uri}/{LAST_CHECKPOINT}"])
        except FileNotFoundError:
            return None
        return int(json.loads(next(iter(blob.values())))["version"])

    def committed(self, state: LogState, actions: list[dict]) -> LogState:
        """``state`` at the next version, which this process has just committed with
        ``actions``: its own log entry need not be read back."""
        updated = state.next()
        updated.version = state.version + 1
        for action in actions:
            self._apply_action(updated, action)
        return updated

    def _apply_commit(self, state: LogState, blob: bytes) -> None:
        for line in blob.splitlines():
            if line.strip():
                self._apply_action(state, json.loads(line))

    def _apply_action(self, state: LogState, action: dict) -> None:
        if "add" in action:
            self._add(state, action["add"])
        elif "remove" in action:
            path = unquote(action["remove"]["path"])
            state.files.pop(path, None)
            state.removed[path] = action["remove"]
        elif "metaData" in action:
            self._metadata(state, action["metaData"])
        elif "protocol" in action:
            _check_protocol(action["protocol"])
            state.protocol = action["protocol"]
        elif "commitInfo" not in action and "cdc" not in action:
            state.complete = False  # app transactions, domain metadata: not carried over

    def _apply_checkpoint(self, state: LogState, blob: bytes) -> None:
        import pyarrow.parquet as pq

        # ParquetFile: read_table goes through pyarrow.dataset, one more module to import.
        parquet = pq.ParquetFile(io.BytesIO(blob))
        columns = [c for c in ("add", "remove", "metaData", "protocol", "txn")
                   if c in parquet.schema_arrow.names]
        for row in parquet.read(columns=columns).to_pylist():
            if row.get("add") is not None:
                self._add(state, _as_action(row["add"]))
            elif row.get("remove") is not None:
                remove = _as_action(row["remove"])
                state.removed[unquote(remove["path"])] = remove
            elif row.get("metaData") is not None:
                meta = _as_action(row["metaData"])
                meta["format"] = _as_action(meta["format"])
                self._metadata(state, meta)
            elif row.get("protocol") is not None:
                protocol = _as_action(row["protocol"])
                _check_protocol(protocol)
                state.protocol = protocol
            elif row.get("txn") is not None:
                state.complete = False

    def _add(self, state: LogState, add: dict) -> None:
        if add.get("deletionVector"):
            raise UnsupportedLog("deletion vectors")
        if add.get("partitionValues"):
            raise UnsupportedLog("partition values")
        stats = FileStats.of_action(add)
        max_id = None if stats is None else stats.maximum.get("id")
        path = unquote(add["path"])
        state.files[path] = DataFile(self._file_uri(path), int(add["size"]),
                                     None if max_id is None else int(max_id), add, stats)
        state.removed.pop(path, None)

    @staticmethod
    def _metadata(state: LogState, meta: dict) -> None:
        if meta.get("partitionColumns"):
            raise UnsupportedLog("partition columns")
        state.schema_string = meta["schemaString"]
        state.configuration = dict(meta.get("configuration") or {})
        state.metadata = meta

    def adopt(self, table) -> LogState:
        """The state of ``table``, a deltalake table this process holds (it has just committed
        through it), without a request: the version it wrote need not be fetched back."""
        import pyarrow as pa

        actions = pa.table(table.get_add_actions(flatten=True))
        ids = (actions.column("max.id").to_pylist() if "max.id" in actions.column_names
               else [None] * actions.num_rows)
        files = {}
        for path, size, max_id in zip(actions.column("path").to_pylist(),
                                      actions.column("size_bytes").to_pylist(), ids):
            path = unquote(path)
            files[path] = DataFile(self._file_uri(path), int(size),
                                   None if max_id is None else int(max_id))
        metadata = table.metadata()
        if metadata.partition_columns:
            raise UnsupportedLog("partition columns")
        held = table.protocol()
        protocol = {"minReaderVersion": held.min_reader_version,
                    "minWriterVersion": held.min_writer_version}
        if held.reader_features:
            protocol["readerFeatures"] = list(held.reader_features)
        if held.writer_features:
            protocol["writerFeatures"] = list(held.writer_features)
        _check_protocol(protocol)
        # Without the log's actions: a checkpoint is not written from this state.
        return LogState(table.version(), files, table.schema().to_json(),
                        dict(metadata.configuration), protocol, complete=False)

    def _file_uri(self, path: str) -> str:
        """The URI of a data file from its path in the log (relative to the table, decoded)."""
        if "://" in path:
            return path
        return os.path.join(self.uri, path) if self.location.is_local else f"{self.uri}/{path}"



# Map columns of a checkpoint, read back as lists of (key, value) pairs.
_MAPS = ("partitionValues", "tags", "configuration", "options")


def _as_action(row: dict) -> dict:
    """A checkpoint row's struct as the log's JSON has it: maps as dicts, unset fields left
    out."""
    return {k: (dict(v) if k in _MAPS else v) for k, v in row.items() if v is not None}


def _newest_checkpoint(names: list[str]) -> int | None:
    """The version of the newest single-file checkpoint among ``names`` (multi-part ones are
    not read: the writer makes single-file checkpoints)."""
    versions = [int(m[1]) for n in names if (m := _CHECKPOINT.match(n))]
    return max(versions) if versions else None


def _commit_versions(names: list[str]) -> list[int]:
    return sorted(int(m[1]) for n in names if (m := _COMMIT.match(n)))


def _contiguous(versions: list[int], after: int) -> list[int]:
    """The versions ``after + 1, after + 2, ...`` present in ``versions``, up to the first gap
    (a commit is only written once the one before it exists, so a gap is a listing cut short)."""
    wanted, expected = [], after + 1
    for version in versions:
        if version < expected:
            continue
        if version != expected:
            break
        wanted.append(version)
        expected += 1
    return wanted


# Reader features that change nothing about which files make up a version or how they read.
_HARMLESS_FEATURES = {"timestampNtz"}


def _check_protocol(protocol: dict) -> None:
    reader = int(protocol.get("minReaderVersion", 1))
    features = set(protocol.get("readerFeatures") or ())
    if reader == 2 or reader > 3 or features - _HARMLESS_FEATURES:
        raise UnsupportedLog(f"reader version {reader}, reader features {sorted(features)}")
