"""A table's version as readers see it (:class:`Snapshot`), what one commit changes
(:class:`Change`), and the two ways a snapshot is built: from the log state delta_log.py reads,
or from a deltalake table (time travel, logs that reader does not support).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from .delta_log import LogState
from .file_stats import FileStats, files_that_may_hold_ids, files_that_may_match
from .location import Location
from .tables import TableSpec

if TYPE_CHECKING:
    from deltalake import DeltaTable

# The highest id a table has ever held, as a table property: part of every snapshot's
# metadata (checkpoints included, and read with it at no cost), so it outlives the rows. A
# delete first raises it to the table's max id, then deletes; new ids continue after it, so an
# id is never reused even when the newest row is deleted (the rows' max(id) statistic would go
# down). A Delta app transaction (``txn``) would fit in the delete's own commit, but reading it
# back replays the log: 330 ms per save on the loopback S3 server.
ID_HIGH_WATER = "lamina.idHighWater"


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
    # Each file's statistics by URI, as the log states them (file_stats.py); a file without
    # an entry may hold anything.
    stats: Mapping[str, FileStats] = field(default_factory=dict, repr=False, compare=False)

    def files_that_may_match(self, equal: dict) -> list[str]:
        """The files of this snapshot whose statistics do not rule out a row whose columns
        equal ``equal``'s values."""
        return files_that_may_match(self.files, self.stats, equal, self.schema)

    def files_that_may_hold_ids(self, ids: list[int]) -> list[str]:
        """The files of this snapshot whose statistics do not rule out all of ``ids``."""
        return files_that_may_hold_ids(self.files, self.stats, ids)

    def read(self, columns: list[str] | None = None, filter=None,
             files: Sequence[str] | None = None, threads: bool = False) -> pa.Table:
        """Rows of this snapshot, or of some of its ``files`` (a ``pyarrow.compute`` filter is
        pushed down to Parquet). Files written before a column existed read it as NULL.
        ``threads`` reads the files in parallel (many small files on an object store)."""
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
        return dataset.to_table(columns=columns, filter=filter, use_threads=threads)

    def read_whole(self, files: Sequence[str]) -> pa.Table:
        """Every row of ``files`` (small ones), each fetched whole with one request, all at
        once on an object store: a read through the Parquet footer first costs two requests a
        file (a compaction of 32 files made 64 GETs while it held the table's lease)."""
        location = self.location
        if location is None or location.is_local or not files:
            return self.read(files=files)
        import pyarrow.parquet as pq

        fetched = location.read_many(list(files))
        return pa.concat_tables([to_arrow(pq.read_table(pa.BufferReader(fetched[f])),
                                          self.schema) for f in files])

    @property
    def next_id(self) -> int:
        """The id of the next new row: ids are never reused (see ID_HIGH_WATER)."""
        return self.max_id + 1

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


    @classmethod
    def of_log(cls, spec: TableSpec, location: Location, state: LogState) -> Snapshot:
        """The snapshot of the log state ``state``, with each file's size and statistics."""
        from deltalake import Schema

        files = tuple(f.uri for f in state.files.values())
        sizes = tuple(f.size for f in state.files.values())
        schema = pa.schema(Schema.from_json(state.schema_string).to_arrow())
        high_water = int(state.configuration.get(ID_HIGH_WATER, 0))
        stats = {f.uri: f.stats for f in state.files.values() if f.stats is not None}
        snapshot = cls(spec, state.version, files, schema, high_water, location, sizes, stats)
        ids = [f.max_id for f in state.files.values()]
        if None in ids:  # no statistics: scan the ids
            ids = pc.max(snapshot.read(["id"]).column("id")).as_py()
            ids = [ids or 0]
        return replace(snapshot, max_id=max([high_water, *ids]))

    @classmethod
    def of_table(cls, spec: TableSpec, location: Location, table: DeltaTable) -> Snapshot:
        """The snapshot of the deltalake table ``table`` at the version it is loaded at."""
        files = tuple(table.file_uris())
        schema = pa.schema(table.schema().to_arrow())
        high_water = int(table.metadata().configuration.get(ID_HIGH_WATER, 0))
        snapshot = cls(spec, table.version(), files, schema, high_water, location)
        if not files:
            return snapshot
        actions = pa.table(table.get_add_actions(flatten=True))
        ids = actions.column("max.id") if "max.id" in actions.column_names else None
        if ids is not None and ids.null_count == 0:
            max_id = int(pc.max(ids).as_py() or 0)
        else:  # no statistics: scan the ids
            max_id = int(pc.max(snapshot.read(["id"]).column("id")).as_py() or 0)
        return replace(snapshot, max_id=max(max_id, high_water))


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


def to_arrow(rows: Sequence[dict] | pa.Table, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        missing = [n for n in schema.names if n not in rows.column_names]
        for name in missing:
            rows = rows.append_column(schema.field(name), pa.nulls(rows.num_rows, schema.field(name).type))
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(list(rows), schema=schema)

