"""Which rows of a registry hold a value, and those rows, without a statement: an index of a
column per data file (value -> row position), each file's footer, and the rows already read.

Why: ``Artifact.get(key=...)`` and the two lookups of ``Artifact(file, key=...)`` ran a
statement over the registry's Parquet files whenever the registry was too large (or its
version too new) to be served from memory. Such a statement decodes a 16 Ki-row group in
every column: 13 ms at 1e5 artifacts, 17 ms at 1e6; in a loop of saves, each lookup opened
every small file the saves had added. A Delta data file never changes (a commit adds and
removes whole files), so what is read from one stays right for as long as a snapshot holds
it: a new version costs reading one column of the files it added, and a row read once is not
decoded again.

A row not read before comes from a decoded copy of its data file on this machine once one
is built (row_cache.py): a memory-mapped Arrow record batch and one row of it, 0.3-0.7 ms of
CPU for a whole get() at 1e5 and 1e6 artifacts, against 6.4-7.9 ms without, load 4-6.5
(bench/row_lookups_runs/after-rowcache.json and before-4e39f40-same-minutes.json). The second
row asked of a file starts its copy in the background (0.2 s of CPU for a 1e5-row file, ~1 s
for 933k rows), and until the copy is in place rows are read from the file by position (its
row group found in the footer kept from the first read). From a local file, polars reads the
aligned block of BLOCK_ROWS rows that holds it: its scan decodes only the rows of the slice,
where pyarrow and DuckDB build every value of the 16 Ki-row group: 3.6 ms of CPU against 10.6
(pyarrow) and 7.6 (DuckDB by file_row_number) for an artifact of the guide's 1e5 catalog, load
~7 (bench/row_reads.py). What remains there is decompressing the group's pages, decoding the
dictionaries of its unique text, and polars parsing the footer again (it takes no parsed one: 2
of the 5 ms in a 933k-row file): the floor the copy removes. From an object store, the one row
group, through a pyarrow fragment (polars would fetch the footer again: one more request per
read). Columns the group's statistics show NULL throughout (about a third of an artifact's:
unused relations and features) are filled in, not read. The last blocks read are kept: the
rows of a listing asked one by one fall mostly in one block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..catalog.snapshot import Snapshot
from .row_cache import RowCache

if TYPE_CHECKING:
    import polars as pl
    import pyarrow.dataset as ds

# A file of at most this many rows is indexed with a dict (microseconds to build and to
# ask); a larger one with sorted 64-bit hashes of its values (16 bytes a row, and a binary
# search): a dict of the 1e6 keys of the guide's catalog took ~1 s to build (load ~4); the
# first get(key=) there, which reads the column and builds the hashed index, 0.3 s of CPU
# (bench/row_lookups_results.json, with the bytes held).
DICT_ROWS = 4096
# Rows kept after they were read (~5 KB each with 51 columns).
CACHED_ROWS = 1024
# Rows read together from a local file when one of them is asked, aligned in their row group:
# polars decodes these 256 for about the CPU of one (3.64 against 3.42 ms, the guide's 1e5
# artifact file, bench/row_reads_results.json), so the neighbours of a row in a listing come
# with it.
BLOCK_ROWS = 256
# Blocks kept after a row was read from them (a page of a listing spans one or two); on an
# object store a block is a whole row group (6.8 MiB decoded for the guide's artifacts).
BLOCKS_KEPT = 2
# Rows not read before that a lookup reads from their files one block each; more are
# left to one statement (the versions of a key spread over the small files of many saves).
UNREAD_ROWS = 8


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
    import polars as pl

    # The hash _keys gives, without building an Arrow array first (0.07 against 0.10 ms).
    return np.uint64(pl.Series([value], dtype=pl.String).hash(seed=0)[0])


class _FileColumn:
    """The positions of one data file's rows by their value in one text or integer column."""

    __slots__ = ("_by_value", "_keys", "_positions")

    def __init__(self, values: pa.Array):
        positions = np.flatnonzero(pc.is_valid(values).to_numpy(zero_copy_only=False))
        values = values.take(pa.array(positions))
        self._by_value: dict | None = None
        if len(values) <= DICT_ROWS:
            self._by_value = {}
            for value, position in zip(values.to_pylist(), positions.tolist()):
                self._by_value.setdefault(value, []).append(position)
            return
        keys = _keys(values)
        order = np.argsort(keys)  # ties (one hash, several rows) are all returned
        self._keys = keys[order]
        self._positions = positions[order].astype(np.int32)

    def positions(self, value: str | int, key) -> list[int]:
        """Positions of rows whose value is ``value`` (hashed: also those that share its
        hash); ``key()`` gives the value's key in the sorted index (computed once per lookup)."""
        if self._by_value is not None:
            return self._by_value.get(value, [])
        start = np.searchsorted(self._keys, key(), side="left")
        stop = np.searchsorted(self._keys, key(), side="right")
        return self._positions[start:stop].tolist()

    @property
    def nbytes(self) -> int:
        if self._by_value is not None:
            return 0  # small by construction (DICT_ROWS)
        return self._keys.nbytes + self._positions.nbytes


class _Block:
    """Rows of one row group read together; ``start`` is the first one's offset in the group."""

    __slots__ = ("_rows", "start")

    def __init__(self, start: int, rows: pa.Table | pl.DataFrame):
        self.start, self._rows = start, rows

    def row(self, offset: int) -> dict:
        """The row at ``offset`` in the group, as Python values."""
        if isinstance(self._rows, pa.Table):  # a slice is zero-copy; take() copies every column
            return self._rows.slice(offset - self.start, 1).to_pylist()[0]
        return self._rows.row(offset - self.start, named=True)


class _DataFile:
    """One data file, its footer read once (the file never changes): read whole for the
    columns the index asks, or a block of rows at a time.

    Why several ways: a local file is opened with a ParquetFile for whole columns, since
    pyarrow's dataset scanner costs more per read than the read itself (3 columns of the 17 KB
    file of one save: 2.2 ms against 0.46 ms, load ~12), and with polars for a block of rows
    (the module docstring says why); a file on an object store through a fragment opened with
    the size the log gives (no HEAD request)."""

    __slots__ = ("_filesystem", "_fragment", "_location", "_null_columns", "_path", "_size",
                 "_starts", "metadata", "names")

    def __init__(self, snapshot: Snapshot, file: str):
        location = self._location = snapshot.location
        self._path = location.arrow_path(file)
        self._size = dict(zip(snapshot.files, snapshot.sizes or ())).get(file)
        self._fragment = self._filesystem = None
        if location.is_local:
            self.metadata = pq.read_metadata(self._path)
        else:
            self.metadata = self._remote().metadata
        self.names = self.metadata.schema.to_arrow_schema().names
        counts = [self.metadata.row_group(g).num_rows
                  for g in range(self.metadata.num_row_groups)]
        self._starts = np.cumsum([0, *counts])
        # Per row group, the flat columns every row of which is NULL (from the statistics):
        # filled in, not decoded. A list column is always read: its statistics count an empty
        # list as NULL too.
        self._null_columns: dict[int, set[str]] = {}

    def read(self, columns: list[str]) -> pa.Table:
        """``columns`` (those the file has) of the whole file."""
        columns = [c for c in columns if c in self.names]
        if self._location.is_local:
            parquet = pq.ParquetFile(self._path, metadata=self.metadata)
            return parquet.read(columns, use_threads=False)
        return self._remote().to_table(columns=columns, use_threads=False)

    def _remote(self) -> ds.ParquetFileFragment:
        """The file as a fragment of the location's current filesystem (rebuilt with new
        credentials: a fragment keeps the one it was made with)."""
        import pyarrow.dataset as ds  # here: it imports pandas, which a registry import must not

        filesystem = self._location.arrow_fs
        if filesystem is not self._filesystem:
            self._fragment = ds.ParquetFileFormat().make_fragment(
                self._path, filesystem, file_size=self._size)
            self._filesystem = filesystem
        return self._fragment

    def row_groups(self) -> Iterator[pa.Table]:
        """Every row group of the file in order, all columns (the build of its row cache, on
        another thread: it opens the file on its own)."""
        import pyarrow.dataset as ds

        if self._location.is_local:
            parquet = pq.ParquetFile(self._path, metadata=self.metadata)
            for group in range(self.metadata.num_row_groups):
                yield parquet.read_row_group(group, use_threads=False)
            return
        # Its own fragment (the reading thread's is not shared), made again when the location's
        # filesystem was (new credentials), as _remote does.
        filesystem = fragment = None
        for group in range(self.metadata.num_row_groups):
            current = self._location.arrow_fs
            if current is not filesystem:
                filesystem = current
                fragment = ds.ParquetFileFormat().make_fragment(
                    self._path, filesystem, file_size=self._size)
            yield fragment.subset(row_group_ids=[group]).to_table(use_threads=False)

    @property
    def size(self) -> int | None:
        return self._size

    def groups_of(self, positions: list[int]) -> dict[int, list[int]]:
        """``{row group: [offset in the group, ...]}`` of the rows at ``positions``."""
        found: dict[int, list[int]] = {}
        for position, group in zip(positions, np.searchsorted(self._starts, positions,
                                                              side="right") - 1):
            found.setdefault(int(group), []).append(position - int(self._starts[group]))
        return found

    def block_start(self, offset: int) -> int:
        """Where the block holding the row at ``offset`` of its row group starts in the group:
        BLOCK_ROWS aligned rows of a local file; on an object store, the whole group (one
        request for its columns)."""
        return offset - offset % BLOCK_ROWS if self._location.is_local else 0

    def read_block(self, group: int, start: int) -> _Block:
        """The block of ``group`` starting at ``start``, without the columns NULL throughout
        in the group."""
        nulls = self._nulls(group)
        columns = [n for n in self.names if n not in nulls]
        if not self._location.is_local:
            fragment = self._remote().subset(row_group_ids=[group])
            return _Block(0, fragment.to_table(columns=columns, use_threads=False))
        import polars as pl

        first = int(self._starts[group]) + start
        length = min(BLOCK_ROWS, int(self._starts[group + 1]) - first)
        scan = pl.scan_parquet(self._path, glob=False, hive_partitioning=False)
        return _Block(start, scan.select(columns).slice(first, length).collect())

    def _nulls(self, group: int) -> set[str]:
        nulls = self._null_columns.get(group)
        if nulls is None:
            meta = self.metadata.row_group(group)
            schema = self.metadata.schema.to_arrow_schema()
            nulls = set()
            for index in range(meta.num_columns):
                column = meta.column(index)
                name = column.path_in_schema
                statistics = column.statistics
                if (name in self.names and not pa.types.is_nested(schema.field(name).type)
                        and statistics is not None and statistics.has_null_count
                        and statistics.null_count == meta.num_rows):
                    nulls.add(name)
            self._null_columns[group] = nulls
        return nulls


class RowIndex:
    """Per data file, the positions of its rows by value of the text columns asked so far, its
    rows' ids and its footer; and the rows last read, by file and id. Callers hold the
    session's lock."""

    def __init__(self):
        # (file, (column, prefix length or None)) -> the index of that column of the file
        self._columns: dict[tuple[str, tuple], _FileColumn] = {}
        self._ids: dict[str, np.ndarray] = {}
        self._data_files: dict[str, _DataFile] = {}
        # table -> the columns asked of it, and the files indexed for it (to forget those
        # its snapshots no longer hold)
        self._asked: dict[str, set[tuple]] = {}
        self._files: dict[str, set[str]] = {}
        self._rows: OrderedDict[tuple[str, int], dict] = OrderedDict()
        # (file, row group, start of the block in it) -> the block as read, the last BLOCKS_KEPT
        self._blocks: OrderedDict[tuple[str, int, int], _Block] = OrderedDict()
        self.row_cache = RowCache()

    def candidates(self, snapshot: Snapshot, column: str, value: str | int,
                   prefix: int | None = None) -> dict[int, tuple[str, int]]:
        """``{id: (file, position)}`` of the rows of ``snapshot`` whose ``column`` may equal
        ``value`` (a superset: the rows themselves decide); with ``prefix``, whose
        ``column`` starts with ``value`` of that length (a uid stem)."""
        self._forget_files_not_in(snapshot)
        asked = self._asked.setdefault(snapshot.spec.qualified, set())
        indexed = (column, prefix)
        asked.add(indexed)
        # A file new to the index is read once for every column asked of its table so far
        # (the content check and the key lookup of Artifact(...) read the new file of the
        # last save once, not twice).
        missing = {f: [i for i in sorted(asked, key=repr) if (f, i) not in self._columns]
                   for f in snapshot.files}
        missing = {f: columns for f, columns in missing.items() if columns}
        if missing:
            self._index(snapshot, missing)
        computed = []

        def key():
            if not computed:
                computed.append(_key(value))
            return computed[0]

        return {int(self._ids[f][position]): (f, position) for f in snapshot.files
                for position in self._columns[(f, indexed)].positions(value, key)}

    def _index(self, snapshot: Snapshot,
               missing: dict[str, list[tuple[str, int | None]]]) -> None:
        def read(file: str) -> pa.Table:
            data = self._data_files.get(file) or _DataFile(snapshot, file)
            self._data_files[file] = data
            columns = [column for column, _ in missing[file]]
            return data.read(list(dict.fromkeys(
                columns if file in self._ids else ["id", *columns])))

        files = list(missing)
        local = snapshot.location is None or snapshot.location.is_local
        if local or len(files) < 2:
            tables = [read(f) for f in files]
        else:
            with ThreadPoolExecutor(min(len(files), 16)) as pool:
                tables = list(pool.map(read, files))
        for file, table in zip(files, tables):
            if file not in self._ids:
                self._ids[file] = table.column("id").to_numpy()
            for column, prefix in missing[file]:
                values = (table.column(column).combine_chunks() if column in table.column_names
                          else pa.nulls(table.num_rows))  # a file from before the column
                if prefix is not None:
                    values = pc.utf8_slice_codeunits(values, 0, prefix)
                self._columns[(file, (column, prefix))] = _FileColumn(values)
            self._files.setdefault(snapshot.spec.qualified, set()).add(file)

    def _forget_files_not_in(self, snapshot: Snapshot) -> None:
        indexed = self._files.get(snapshot.spec.qualified)
        if not indexed:
            return
        gone = indexed.difference(snapshot.files)
        if gone:
            indexed -= gone
            self._columns = {k: v for k, v in self._columns.items() if k[0] not in gone}
            for file in gone:
                self._ids.pop(file, None)
                self._data_files.pop(file, None)
            self.row_cache.forget(gone)
            for key in [k for k in self._rows if k[0] in gone]:
                del self._rows[key]
            for key in [k for k in self._blocks if k[0] in gone]:
                del self._blocks[key]

    def rows(self, snapshot: Snapshot, found: dict[int, tuple[str, int]]) -> list[dict] | None:
        """The rows of ``found`` (from :meth:`candidates` on ``snapshot``): those read before
        from memory, the others from their data files; None when more than UNREAD_ROWS
        were not read before."""
        rows, unread = [], {}
        for row_id, (file, position) in found.items():
            row = self._rows.get((file, row_id))
            if row is None:
                unread.setdefault(file, []).append(position)
            else:
                rows.append(row)
        if sum(map(len, unread.values())) > UNREAD_ROWS:
            return None
        for row_id, (file, _) in found.items():
            if (file, row_id) in self._rows:
                self._rows.move_to_end((file, row_id))
        for file, positions in unread.items():
            data = self._data_files.get(file) or _DataFile(snapshot, file)
            self._data_files[file] = data
            decoded = self.row_cache.file(file, data.size, data.metadata.num_rows,
                                          data.row_groups)
            if decoded is not None:
                for position in positions:
                    row = decoded.row(position)
                    self._keep_row(file, row)
                    rows.append(row)
                continue
            for group, offsets in data.groups_of(positions).items():
                for offset in offsets:
                    row = self._block(file, data, group, offset).row(offset)
                    row = {name: row.get(name) for name in data.names}
                    self._keep_row(file, row)
                    rows.append(row)
        return rows

    def _block(self, file: str, data: _DataFile, group: int, offset: int) -> _Block:
        """The block holding the row at ``offset`` of ``group``, read lately or now: the rows
        of a listing, asked one by one in its order, mostly fall in the block of the row
        before."""
        key = (file, group, data.block_start(offset))
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = data.read_block(group, key[2])
            while len(self._blocks) > BLOCKS_KEPT:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(key)
        return block

    def _keep_row(self, file: str, row: dict) -> None:
        self._rows[(file, row["id"])] = row
        while len(self._rows) > CACHED_ROWS:
            self._rows.popitem(last=False)

    def nbytes(self) -> int:
        """Bytes of the hashed indexes and of the files' ids held (for the bench)."""
        return (sum(c.nbytes for c in self._columns.values())
                + sum(ids.nbytes for ids in self._ids.values()))
