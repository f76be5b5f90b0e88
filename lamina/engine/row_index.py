"""Which rows of a registry hold a value, without a statement: an index of a column per data
file, and the rows already read, by file.

Why: ``Artifact.get(key=...)`` and the two lookups of ``Artifact(file, key=...)`` ran a
statement over the registry's Parquet files whenever the registry was too large (or its
version too new) to be served from memory. Such a statement decodes a 16 Ki-row group in
every column: 13 ms at 1e5 artifacts, 17 ms at 1e6; in a loop of saves, each lookup opened
every small file the saves had added. A Delta data file never changes (a commit adds and
removes whole files), so what is read from one stays right for as long as a snapshot holds
it: a new version costs reading one column of the files it added, and a row read once is not
decoded again.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..catalog.store import Snapshot

# A file of at most this many rows is indexed with a dict (microseconds to build and to
# ask); a larger one with sorted 64-bit hashes of its values (16 bytes a row, and a binary
# search): a dict of the 1e6 keys of the guide's catalog took ~1 s to build (load ~4); the
# first get(key=) there, which reads the column and builds the hashed index, 0.3 s of CPU
# (bench/row_lookups_results.json, with the bytes held).
DICT_ROWS = 4096
# Rows kept after they were read (~5 KB each with 51 columns).
CACHED_ROWS = 1024


def _keys(values: pa.Array) -> np.ndarray:
    """What the sorted index of a large file holds per value: the value itself for integers
    (ids), a 64-bit hash for text (colliding values are told apart by the rows)."""
    if pa.types.is_integer(values.type):
        return values.to_numpy().astype(np.int64)
    import polars as pl

    return pl.Series(values).cast(pl.String).hash(seed=0).to_numpy()


def _key(value: str | int):
    if isinstance(value, int):
        return np.int64(value)
    return _keys(pa.array([value], pa.string()))[0]


class _FileColumn:
    """The ids of one data file's rows by their value in one text or integer column."""

    __slots__ = ("_by_value", "_ids", "_keys")

    def __init__(self, ids: pa.Array, values: pa.Array):
        present = pc.is_valid(values)
        ids, values = ids.filter(present), values.filter(present)
        self._by_value: dict | None = None
        if len(values) <= DICT_ROWS:
            self._by_value = {}
            for value, row_id in zip(values.to_pylist(), ids.to_pylist()):
                self._by_value.setdefault(value, []).append(row_id)
            return
        keys = _keys(values)
        order = np.argsort(keys)  # ties (one hash, several rows) are all returned
        self._keys = keys[order]
        self._ids = ids.to_numpy()[order]

    def ids(self, value: str | int, key) -> list[int]:
        """Ids of rows whose value is ``value`` (hashed: also those that share its hash);
        ``key()`` gives the value's key in the sorted index (computed once per lookup)."""
        if self._by_value is not None:
            return self._by_value.get(value, [])
        start = np.searchsorted(self._keys, key(), side="left")
        stop = np.searchsorted(self._keys, key(), side="right")
        return self._ids[start:stop].tolist()

    @property
    def nbytes(self) -> int:
        if self._by_value is not None:
            return 0  # small by construction (DICT_ROWS)
        return self._keys.nbytes + self._ids.nbytes


class RowIndex:
    """Per data file, the ids of its rows by value of the text columns asked so far; and the
    rows last read, by file and id. Callers hold the session's lock."""

    def __init__(self):
        self._columns: dict[tuple[str, str], _FileColumn] = {}
        # table -> the columns asked of it, and the files indexed for it (to forget those
        # its snapshots no longer hold)
        self._asked: dict[str, set[str]] = {}
        self._files: dict[str, set[str]] = {}
        self._rows: OrderedDict[tuple[str, int], dict] = OrderedDict()

    def candidates(self, snapshot: Snapshot, column: str, value: str | int) -> dict[int, str]:
        """``{id: file}`` of the rows of ``snapshot`` whose ``column`` may equal ``value``
        (a superset: the rows themselves decide)."""
        self._forget_files_not_in(snapshot)
        asked = self._asked.setdefault(snapshot.spec.qualified, set())
        asked.add(column)
        # A file new to the index is read once for every column asked of its table so far
        # (the content check and the key lookup of Artifact(...) read the new file of the
        # last save once, not twice).
        missing = {f: [c for c in sorted(asked) if (f, c) not in self._columns]
                   for f in snapshot.files}
        missing = {f: columns for f, columns in missing.items() if columns}
        if missing:
            self._index(snapshot, missing)
        computed = []

        def key():
            if not computed:
                computed.append(_key(value))
            return computed[0]

        return {row_id: f for f in snapshot.files
                for row_id in self._columns[(f, column)].ids(value, key)}

    def _index(self, snapshot: Snapshot, missing: dict[str, list[str]]) -> None:
        def read(file: str) -> pa.Table:
            columns = list(dict.fromkeys(["id", *missing[file]]))
            return snapshot.read(columns=columns, files=[file])

        files = list(missing)
        local = snapshot.location is None or snapshot.location.is_local
        if local or len(files) < 2:
            tables = [read(f) for f in files]
        else:
            with ThreadPoolExecutor(min(len(files), 16)) as pool:
                tables = list(pool.map(read, files))
        for file, table in zip(files, tables):
            ids = table.column("id").combine_chunks()
            for column in missing[file]:
                self._columns[(file, column)] = _FileColumn(
                    ids, table.column(column).combine_chunks())
            self._files.setdefault(snapshot.spec.qualified, set()).add(file)

    def _forget_files_not_in(self, snapshot: Snapshot) -> None:
        indexed = self._files.get(snapshot.spec.qualified)
        if not indexed:
            return
        gone = indexed.difference(snapshot.files)
        if gone:
            indexed -= gone
            self._columns = {k: v for k, v in self._columns.items() if k[0] not in gone}
            for key in [k for k in self._rows if k[0] in gone]:
                del self._rows[key]

    def cached_row(self, file: str, row_id: int) -> dict | None:
        row = self._rows.get((file, row_id))
        if row is not None:
            self._rows.move_to_end((file, row_id))
        return row

    def keep_row(self, file: str, row: dict) -> None:
        self._rows[(file, row["id"])] = row
        while len(self._rows) > CACHED_ROWS:
            self._rows.popitem(last=False)

    def nbytes(self) -> int:
        """Bytes of the hashed indexes held (for the bench)."""
        return sum(c.nbytes for c in self._columns.values())
