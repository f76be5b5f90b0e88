"""A small append committed by lamina itself: one Parquet file and one Delta log entry.

``write_deltalake`` costs 10–14 ms for a one-row append on a local root and, on S3, a LIST
before the commit and a LIST and two GETs of the entry it has just written after it (six
requests in all). A save knows everything that commit needs: the rows, the version it planned
on, the commit info. So it writes the Parquet file with pyarrow and puts
``_delta_log/<version + 1>.json`` — an ``add`` action with the file's statistics and the
``commitInfo`` — with put-if-absent: exactly the next version or nothing, the same protocol
deltalake follows (its ``create_write_transaction`` silently re-bases onto a newer version,
which would commit ids planned on an old snapshot). Two requests on S3; figures in
bench/README.md ("Commit path").

Compaction uses the same pieces (:func:`write_data_file`, :func:`remove_action`,
:func:`put_log_entry`) to commit its merged file and the removal of the small ones.

Only the plain case is taken here: unpartitioned tables whose protocol (reader 1, writer 2)
asks nothing more of a writer, rows with the table's own columns. The store decides from the
log reader's state of the version it planned on (delta_log.LogState keeps the protocol), so an
append opens no deltalake table. Schema changes, replaces and
deletes stay with deltalake.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .location import Location

# The Delta protocol versions whose writers need nothing beyond add actions and commit info
# (no table features, invariants or column mapping).
PLAIN_PROTOCOL = (1, 2)
# Same row groups and codec as the store's deltalake writes (deltalake_commit.WRITER_PROPERTIES).
ROW_GROUP_ROWS = 16_384
# Text columns whose values are (nearly) all distinct: a dictionary page of them never pays
# (the writer builds it, then falls back to plain values once it outgrows its limit). Written
# plain, a 100,000-row artifact chunk is written in 0.099 s instead of 0.129 s and is 6 %
# smaller (median of 7, bench/ingest_encoding_results.json). Every other column keeps its dictionary.
PLAIN_TEXT_COLUMNS = frozenset({"uid", "key", "hash", "_real_key"})
CLIENT = "lamina"


class LostRace(Exception):
    """Another writer committed this version first; nothing of ours is in the table."""


def supports(location: Location, protocol: dict | None) -> bool:
    """Whether an append to a table whose log declares ``protocol`` (its ``protocol``
    action, as delta_log.LogState holds it; None when unknown) can be committed here, else
    through deltalake. The log reader refuses partitioned tables, so its states are plain."""
    if protocol is None or location.type not in ("local", "s3"):
        return False
    versions = (int(protocol.get("minReaderVersion", 1)),
                int(protocol.get("minWriterVersion", 1)))
    return (versions[0] <= PLAIN_PROTOCOL[0] and versions[1] <= PLAIN_PROTOCOL[1]
            and not protocol.get("writerFeatures") and not protocol.get("readerFeatures"))


def commit_append(location: Location, table_uri: str, version: int, rows: pa.Table,
                  commit_info: dict, before_commit: Callable[[], None] | None = None,
                  before_upload: Callable[[], None] | None = None) -> tuple[dict, str]:
    """Commit ``rows`` as version ``version`` of the table at ``table_uri``; the ``add``
    action committed and the URI of the data file written. Raises LostRace when that version
    exists already. ``before_upload`` runs once the data file is encoded, before it is
    written; ``before_commit`` once it is written, before the log entry; what either raises
    aborts (nothing is left behind)."""
    name, data, add = encode_data_file(rows)
    if before_upload is not None:
        before_upload()
    data_uri = f"{table_uri}/{name}"
    _put(location, data_uri, data)
    try:
        if before_commit is not None:
            before_commit()
        put_log_entry(location, table_uri, version, [add],
                      {"operation": "WRITE", "operationParameters": {"mode": "Append"},
                       "operationMetrics": {"num_added_files": 1,
                                            "num_added_rows": rows.num_rows},
                       **commit_info})
    except BaseException:
        remove_file(location, data_uri)
        raise
    return add, data_uri


def write_data_file(location: Location, table_uri: str, rows: pa.Table,
                    data_change: bool = True) -> tuple[dict, str]:
    """Write ``rows`` as a new Parquet file of the table (invisible until a log entry adds
    it); its ``add`` action and URI. ``data_change=False`` marks rows that were in the table
    already (compaction), which streaming readers skip."""
    name, data, add = encode_data_file(rows, data_change)
    data_uri = f"{table_uri}/{name}"
    _put(location, data_uri, data)
    return add, data_uri


def encode_data_file(rows: pa.Table, data_change: bool = True) -> tuple[str, bytes, dict]:
    """``rows`` as a new data file: its name (relative to the table), its bytes and the
    ``add`` action that would commit it."""
    name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    buffer = pa.BufferOutputStream()
    pq.write_table(rows, buffer, compression="snappy", row_group_size=ROW_GROUP_ROWS,
                   use_dictionary=_dictionary_columns(rows.schema))
    data = buffer.getvalue().to_pybytes()
    add = {"add": {"path": name, "partitionValues": {}, "size": len(data),
                   "modificationTime": int(time.time() * 1000), "dataChange": data_change,
                   "stats": json.dumps(file_stats(rows), separators=(",", ":"))}}
    return name, data, add


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet leaf paths of ``schema`` to dictionary-encode: all but PLAIN_TEXT_COLUMNS
    (pyarrow names nested leaves, e.g. ``records.list.element``)."""

    def leaves(path: str, kind: pa.DataType):
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            yield from leaves(f"{path}.list.element", kind.value_type)
        elif pa.types.is_struct(kind):
            for child in kind:
                yield from leaves(f"{path}.{child.name}", child.type)
        elif pa.types.is_map(kind):
            yield from leaves(f"{path}.key_value.key", kind.key_type)
            yield from leaves(f"{path}.key_value.value", kind.item_type)
        else:
            yield path

    return [leaf for field in schema if field.name not in PLAIN_TEXT_COLUMNS
            for leaf in leaves(field.name, field.type)]


def remove_action(path: str, size: int, data_change: bool = True) -> dict:
    """The log action that takes the data file ``path`` (relative to the table) out."""
    return {"remove": {"path": path, "deletionTimestamp": int(time.time() * 1000),
                       "dataChange": data_change, "extendedFileMetadata": True,
                       "partitionValues": {}, "size": size}}


def put_log_entry(location: Location, table_uri: str, version: int, actions: list[dict],
                  commit_info: dict) -> None:
    """Put ``_delta_log/<version>.json`` holding ``actions`` and the commit info, unless that
    version exists (LostRace). Data files the actions add must be written first: a reader
    that sees the entry must find them."""
    info = {"timestamp": int(time.time() * 1000), "clientVersion": CLIENT, **commit_info}
    entry = "\n".join(json.dumps(action, separators=(",", ":"))
                      for action in ({"commitInfo": info}, *actions)) + "\n"
    log_uri = f"{table_uri}/_delta_log/{version:020d}.json"
    if not _put_if_absent(location, log_uri, entry.encode()):
        raise LostRace(log_uri)


def file_stats(rows: pa.Table) -> dict:
    """Delta ``stats`` of a data file holding ``rows``: the row count, and per top-level
    column of a number, boolean or string type its null count, minimum and maximum (what
    readers prune files with; ``id``'s maximum is the store's id high-water mark). Other
    types get none, which tells a reader to look inside the file."""
    minimum, maximum, nulls = {}, {}, {}
    for field, column in zip(rows.schema, rows.columns):
        kind = field.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind) or pa.types.is_string(kind)
                or pa.types.is_large_string(kind)):
            continue
        nulls[field.name] = column.null_count
        if column.null_count == len(column):
            continue
        low, high = pc.min_max(column).values()
        low, high = low.as_py(), high.as_py()
        if isinstance(low, float) and not (math.isfinite(low) and math.isfinite(high)):
            continue  # NaN and infinities have no place in JSON statistics
        minimum[field.name], maximum[field.name] = low, high
    return {"numRecords": rows.num_rows, "minValues": minimum, "maxValues": maximum,
            "nullCount": nulls}


def _put(location: Location, uri: str, data: bytes) -> None:
    if location.is_local:
        with open(uri, "wb") as f:
            f.write(data)
    else:
        location.fs.pipe_file(uri, data)


def _put_if_absent(location: Location, uri: str, data: bytes) -> bool:
    """Write ``uri`` unless it exists (atomically: a reader sees all of it or nothing)."""
    if location.is_local:
        tmp = os.path.join(os.path.dirname(uri), f".{uuid.uuid4()}.json.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, uri)  # fails if the target exists
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    try:
        location.fs.pipe_file(uri, data, mode="create")
    except FileExistsError:
        return False
    return True


def remove_file(location: Location, uri: str) -> None:
    """Best effort: a file no log entry names is invisible to readers (vacuum removes it)."""
    try:
        if location.is_local:
            os.unlink(uri)
        else:
            location.fs.rm_file(uri)
    except OSError:
        pass
