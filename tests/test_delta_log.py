"""The read path's own Delta log reader agrees with deltalake on what a version holds: the live
data files, the schema and the version, through appends, replaced and deleted rows, new columns
and checkpoints, read cold and brought up to date incrementally."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lamina.catalog.delta_log import DeltaLogReader
from lamina.catalog.location import Location


def deltalake_view(uri: str, location: Location) -> tuple[int, set[str], list[str]]:
    table = DeltaTable(uri, storage_options=location.delta_options)
    return table.version(), set(table.file_uris()), table.schema().to_arrow().names


def reader_view(state) -> tuple[int, set[str], list[str]]:
    from deltalake import Schema

    return (state.version, {f.uri for f in state.files.values()},
            Schema.from_json(state.schema_string).to_arrow().names)


def test_the_log_reader_sees_what_deltalake_sees(root):
    location = Location.of(root)
    uri = location.join("tables", "t")
    options = location.delta_options
    write_deltalake(uri, pa.table({"id": [1, 2], "x": ["a", "b"]}), storage_options=options)
    reader = DeltaLogReader(location, uri)
    state = reader.load()
    assert reader_view(state) == deltalake_view(uri, location)
    assert {f.max_id for f in state.files.values()} == {2}

    write_deltalake(uri, pa.table({"id": [3], "x": ["c"]}), mode="append",
                    storage_options=options)
    table = DeltaTable(uri, storage_options=options)
    table.delete("id = 1")
    write_deltalake(uri, pa.table({"id": [4], "x": ["d"], "y": [1.5]}), mode="append",
                    schema_mode="merge", storage_options=options)
    # incrementally from the first state, and cold
    updated = reader.update(state)
    assert reader_view(updated) == deltalake_view(uri, location)
    assert reader.update(updated) is None
    assert reader_view(reader.load()) == deltalake_view(uri, location)

    table = DeltaTable(uri, storage_options=options)
    table.create_checkpoint()
    write_deltalake(uri, pa.table({"id": [5], "x": ["e"], "y": [2.5]}), mode="append",
                    storage_options=options)
    cold = reader.load()
    assert reader_view(cold) == deltalake_view(uri, location)
    assert max(f.max_id for f in cold.files.values()) == 5


def test_a_table_without_a_commit_reads_as_missing(root):
    location = Location.of(root)
    assert DeltaLogReader(location, location.join("tables", "none")).load() is None


@pytest.mark.parametrize("root", ["local"], indirect=True)
def test_a_partitioned_table_is_left_to_deltalake(root):
    from lamina.catalog.delta_log import UnsupportedLog

    location = Location.of(root)
    uri = location.join("tables", "p")
    write_deltalake(uri, pa.table({"id": [1], "k": ["a"]}), partition_by=["k"])
    with pytest.raises(UnsupportedLog, match="partition"):
        DeltaLogReader(location, uri).load()


@pytest.mark.parametrize("source", ["machine", "instance"])
@pytest.mark.parametrize("start", [2, 40])
def test_a_checkpoint_of_a_table_made_again_misleads_no_reader(root, start, source):
    """Where a machine remembers a long log's checkpoint (settings.remember_checkpoint), or
    instance.json names one (the reader's ``hint``, log_hints.py), the listing starts there;
    when the table was made again since, with a checkpoint before that version (2) or fewer
    versions than it (40: the hint is past the log's end), the reader lists the log from its
    start."""
    from lamina.catalog import settings

    location = Location.of(root)
    uri = location.join("tables", "again")
    options = location.delta_options
    write_deltalake(uri, pa.table({"id": [1], "x": ["a"]}), storage_options=options)
    for i in range(2, 6):
        write_deltalake(uri, pa.table({"id": [i], "x": [str(i)]}), mode="append",
                        storage_options=options)
        if i == 2:
            DeltaTable(uri, storage_options=options).create_checkpoint()  # version 1
    if source == "instance":
        reader = DeltaLogReader(location, uri, hint=lambda: start)
    else:
        reader = DeltaLogReader(location, uri)
        settings.remember_checkpoint(reader.log_uri, start)
    state = reader.load()
    assert reader_view(state) == deltalake_view(uri, location)
    assert max(f.max_id for f in state.files.values()) == 5
