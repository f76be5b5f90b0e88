"""Delta checkpoints written from the log state a process already holds (the write side of
delta_log.py).

A catalog grown by single saves commits one small log entry per save, and a new reader fetches
every entry since the last checkpoint: at a checkpoint every 100 versions, ``Record.get`` on a
record table of 55 commits made 79 requests (bench/README.md, "S3"). deltalake's
``create_checkpoint`` re-reads the log it checkpoints (its commits twice, the previous checkpoint
in ranged GETs): 50-60 requests on S3 for a checkpoint at version 10 or 20, which a checkpoint
every 10 versions would add to every tenth save. A store that has just committed knows the
state of that version already (delta_log.LogState, kept complete with every action a checkpoint
holds), so writing one costs one PUT (and one more for ``_last_checkpoint`` now and then): the
store checkpoints every version on an object store (CHECKPOINT_INTERVAL below), so a new
reader's log is one LIST and one checkpoint. Once every few hundred versions the store also
names its checkpoint in ``instance.json`` (log_hints.py), where a reader of a log longer than
one LIST page starts its listing.

A checkpoint is an optimisation, never the truth: it repeats the state of a version whose commit
file exists, and is written whole (a PUT on an object store, a rename locally), so a reader never
sees half of one. Two writers checkpointing the same version write the same actions.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from .delta_log import LAST_CHECKPOINT, LOG_DIR, LogState
from .location import Location

_MAP = pa.map_(pa.string(), pa.string())
_DELETION_VECTOR = pa.struct([
    pa.field("storageType", pa.string(), nullable=False),
    pa.field("pathOrInlineDv", pa.string(), nullable=False),
    pa.field("offset", pa.int32()),
    pa.field("sizeInBytes", pa.int32(), nullable=False),
    pa.field("cardinality", pa.int64(), nullable=False),
])
# The columns of a Delta checkpoint (PROTOCOL.md, "Checkpoint Schema"), as deltalake writes them.
SCHEMA = pa.schema([
    pa.field("txn", pa.struct([
        pa.field("appId", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("lastUpdated", pa.int64()),
    ])),
    pa.field("add", pa.struct([
        pa.field("path", pa.string(), nullable=False),
        pa.field("partitionValues", _MAP, nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("modificationTime", pa.int64(), nullable=False),
        pa.field("dataChange", pa.bool_(), nullable=False),
        pa.field("stats", pa.string()),
        pa.field("tags", _MAP),
        pa.field("deletionVector", _DELETION_VECTOR),
        pa.field("baseRowId", pa.int64()),
        pa.field("defaultRowCommitVersion", pa.int64()),
        pa.field("clusteringProvider", pa.string()),
    ])),
    pa.field("remove", pa.struct([
        pa.field("path", pa.string(), nullable=False),
        pa.field("deletionTimestamp", pa.int64()),
        pa.field("dataChange", pa.bool_(), nullable=False),
        pa.field("extendedFileMetadata", pa.bool_()),
        pa.field("partitionValues", _MAP),
        pa.field("size", pa.int64()),
        pa.field("stats", pa.string()),
        pa.field("tags", _MAP),
        pa.field("deletionVector", _DELETION_VECTOR),
        pa.field("baseRowId", pa.int64()),
        pa.field("defaultRowCommitVersion", pa.int64()),
    ])),
    pa.field("metaData", pa.struct([
        pa.field("id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("description", pa.string()),
        pa.field("format", pa.struct([
            pa.field("provider", pa.string(), nullable=False),
            pa.field("options", _MAP, nullable=False),
        ]), nullable=False),
        pa.field("schemaString", pa.string(), nullable=False),
        pa.field("partitionColumns", pa.list_(pa.field("element", pa.string(),
                                                       nullable=False)), nullable=False),
        pa.field("createdTime", pa.int64()),
        pa.field("configuration", _MAP, nullable=False),
    ])),
    pa.field("protocol", pa.struct([
        pa.field("minReaderVersion", pa.int32(), nullable=False),
        pa.field("minWriterVersion", pa.int32(), nullable=False),
        pa.field("readerFeatures", pa.list_(pa.field("element", pa.string(),
                                                     nullable=False))),
        pa.field("writerFeatures", pa.list_(pa.field("element", pa.string(),
                                                     nullable=False))),
    ])),
])


logger = logging.getLogger("lamina")

# Versions between checkpoints. Locally a commit read is a file read: the default interval.
# On an object store a new reader GETs every commit since the last checkpoint, one request
# each, and a first answer may make only a handful (issue 15: a label display reads three
# tables, each a LIST and its log, in 10 requests): a store that holds the log state of the
# version it committed checkpoints every version, one PUT after the commit, so a reader's log
# is one LIST and one GET at any version. A store that does not hold that state (another
# tool's commits) reads the log first, so it checkpoints every 10 versions.
# Figures: bench/README.md, "Straight from the bucket".
CHECKPOINT_INTERVAL = 100
REMOTE_CHECKPOINT_INTERVAL = 10
# ``_last_checkpoint`` is only a hint (write_checkpoint): written when a store's checkpoints
# pass a multiple of this (one PUT more), enough for a reader of a log past one LIST page to
# start near its end.
LAST_CHECKPOINT_INTERVAL = 10


def due(location: Location, version: int, state: LogState | None) -> bool:
    """Whether ``version``, just committed by a store holding ``state``, is checkpointed (see
    CHECKPOINT_INTERVAL). Version 0 never is: one commit file costs a reader what a
    checkpoint would."""
    if version <= 0:
        return False
    if location.is_local:
        return version % CHECKPOINT_INTERVAL == 0
    if state is not None and state.version == version and can_checkpoint(state):
        return True
    return version % REMOTE_CHECKPOINT_INTERVAL == 0


def hint_due(version: int, previous: int) -> bool:
    """Whether a checkpoint of ``version``, after one of ``previous``, also writes
    ``_last_checkpoint``: when it passes a multiple of LAST_CHECKPOINT_INTERVAL."""
    return version // LAST_CHECKPOINT_INTERVAL > previous // LAST_CHECKPOINT_INTERVAL
# One thread writes this process's checkpoints on an object store, in the order of the commits
# they follow (an older version's checkpoint never lands after a newer one of this process):
# a save returns once its commit has landed, without waiting another round trip for the PUT
# (loopback moto: a save's p50 12.7 ms until it returns, 21.5 ms until its checkpoint is
# written; bench/README.md, "Every version checkpointed").
# Its thread is joined when the interpreter exits, so a short script's last checkpoint is
# written before it ends.
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def in_background(write: Callable[[], None]) -> None:
    """Run ``write`` on the checkpoint thread; what it raises is logged, never the save's.
    While the interpreter shuts down (a save in an exit handler) it runs here and now."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-checkpoint")
        try:
            future = _writer.submit(write)
        except RuntimeError:  # no new threads after shutdown began
            future = Future()
            try:
                write()
                future.set_result(None)
            except Exception as exc:  # noqa: BLE001 - logged, as on the thread
                future.set_exception(exc)
    future.add_done_callback(_logged)


def _logged(future: Future) -> None:
    if future.exception() is not None:
        logger.warning("no checkpoint written: %s", future.exception())


def wait_written() -> None:
    """Wait until the checkpoints this process started writing are written (or failed): the
    one thread writes them in order, so a step queued behind them ends after the last."""
    with _writer_lock:
        writer = _writer
    if writer is None:
        return
    try:
        writer.submit(lambda: None).result()
    except RuntimeError:  # the interpreter is shutting down: its exit joined the thread
        pass


def can_checkpoint(state: LogState | None) -> bool:
    """Whether ``state`` holds every action a checkpoint of its version needs."""
    return (state is not None and state.complete and state.protocol is not None
            and state.metadata is not None
            and all(f.action is not None for f in state.files.values()))


def write_checkpoint(location: Location, table_uri: str, state: LogState,
                     hint: bool = True) -> None:
    """Write the checkpoint of ``state.version`` (one PUT on an object store) and, with
    ``hint``, point ``_last_checkpoint`` at it (one more). ``state`` must satisfy
    :func:`can_checkpoint`.

    ``_last_checkpoint`` is a hint, not the truth: Delta readers list the log from the
    version it names on, so a hint a few versions old is still correct (delta_log.py takes
    the newest checkpoint in that listing), and lamina's reader needs it only for a log
    longer than one LIST page after the checkpoint ``instance.json`` names (log_hints.py)."""
    if not can_checkpoint(state):
        raise ValueError(f"the state of version {state.version} is not complete")
    metadata = dict(state.metadata)
    metadata.setdefault("format", {"provider": "parquet", "options": {}})
    metadata["format"] = {"provider": metadata["format"].get("provider", "parquet"),
                          "options": metadata["format"].get("options") or {}}
    metadata.setdefault("partitionColumns", [])
    metadata["configuration"] = metadata.get("configuration") or {}
    rows = [{"protocol": state.protocol}, {"metaData": metadata}]
    rows += [{"add": {**f.action, "partitionValues": f.action.get("partitionValues") or {}}}
             for f in state.files.values()]
    # Tombstones tell vacuum when a file left the table; like deltalake, a checkpoint keeps
    # only those younger than the table's retention, so it does not grow with every compaction.
    oldest = time.time() * 1000 - _retention_ms(state.configuration)
    rows += [{"remove": remove} for remove in state.removed.values()
             if remove.get("deletionTimestamp", oldest) >= oldest]
    table = pa.Table.from_pylist([_map_items(row) for row in rows], schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    log_uri = f"{table_uri}/{LOG_DIR}"
    _put_whole(location, f"{log_uri}/{state.version:020d}.checkpoint.parquet",
               buffer.getvalue())
    if hint:
        found = {"version": state.version, "size": table.num_rows,
                 "sizeInBytes": buffer.tell(), "numOfAddFiles": len(state.files)}
        _put_whole(location, f"{log_uri}/{LAST_CHECKPOINT}",
                   json.dumps(found, separators=(",", ":")).encode())


_MAP_FIELDS = ("partitionValues", "tags", "configuration", "options")
# Delta's default for ``delta.deletedFileRetentionDuration``, and the units its value may use.
_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
_UNIT_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
            "day": 86_400_000, "week": 604_800_000}


def _retention_ms(configuration: dict[str, str]) -> float:
    """The table's ``delta.deletedFileRetentionDuration`` ("interval 7 days") in ms."""
    value = configuration.get("delta.deletedFileRetentionDuration", "")
    match = re.fullmatch(r"\s*interval\s+(\d+)\s+(\w+?)s?\s*", value, re.IGNORECASE)
    if match is None or match[2].lower() not in _UNIT_MS:
        return _DEFAULT_RETENTION_MS
    return int(match[1]) * _UNIT_MS[match[2].lower()]


def _map_items(row: dict) -> dict:
    """``row`` with its map fields as lists of (key, value) pairs, as pyarrow builds maps."""
    def convert(value):
        if isinstance(value, dict):
            return {k: (list(v.items()) if k in _MAP_FIELDS and isinstance(v, dict)
                        else convert(v)) for k, v in value.items()}
        return value

    return convert(row)


def _put_whole(location: Location, uri: str, data: bytes) -> None:
    """Write ``uri`` so that a reader sees all of it or the previous content: one PUT on an
    object store, a rename of a hidden temporary file locally (Delta readers skip names that
    start with a dot)."""
    if location.is_local:
        tmp = os.path.join(os.path.dirname(uri), f".{uuid.uuid4()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, uri)
    else:
        location.fs.pipe_file(uri, data)
