"""Checkpoints lamina writes from the log state it holds (catalog/checkpoint.py) are Delta
checkpoints: deltalake opens a table from one and sees the same version, files and schema as it
does by replaying the log, and keeps writing to it; lamina's own reader starts from them.
The expected answers come from deltalake, which replays the JSON commits itself."""

from __future__ import annotations

import json
import os

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

import lamina as ln
from lamina.catalog.checkpoint import can_checkpoint, wait_written, write_checkpoint
from lamina.catalog.delta_log import DeltaLogReader
from lamina.catalog.location import Location

from helpers import filesystem, spawn


def replayed(uri: str, location: Location) -> tuple[int, set[str], list[str], dict]:
    """What deltalake sees with every checkpoint hidden from it: a copy of the log holding
    only the JSON commits (local roots only)."""
    table = DeltaTable(uri, storage_options=location.delta_options)
    return (table.version(), set(table.file_uris()), table.schema().to_arrow().names,
            dict(table.metadata().configuration))


def checkpoints(uri: str) -> list[str]:
    return sorted(n for n in os.listdir(os.path.join(uri, "_delta_log"))
                  if n.endswith(".checkpoint.parquet"))


def grown(location: Location, uri: str) -> None:
    """Appends, a deleted row, a new column and a table property: every kind of action a
    checkpoint repeats (add, remove, metaData, protocol)."""
    options = location.delta_options
    write_deltalake(uri, pa.table({"id": [1, 2], "x": ["a", "b"]}), storage_options=options)
    for i in range(3, 6):
        write_deltalake(uri, pa.table({"id": [i], "x": [str(i)]}), mode="append",
                        storage_options=options)
    DeltaTable(uri, storage_options=options).delete("id = 1")
    write_deltalake(uri, pa.table({"id": [6], "x": ["f"], "y": [1.5]}), mode="append",
                    schema_mode="merge", storage_options=options)
    DeltaTable(uri, storage_options=options).alter.set_table_properties(
        {"lamina.idHighWater": "6"}, raise_if_not_exists=False)


def test_deltalake_opens_a_table_from_a_checkpoint_lamina_wrote(local_root):
    location = Location.of(local_root)
    uri = location.join("tables", "t")
    grown(location, uri)
    expected = replayed(uri, location)
    state = DeltaLogReader(location, uri).load()
    assert can_checkpoint(state)
    write_checkpoint(location, uri, state)
    assert checkpoints(uri) == [f"{expected[0]:020d}.checkpoint.parquet"]
    # Without the commits before the checkpoint's version (as after deltalake's log cleanup),
    # deltalake can only have read the checkpoint.
    for version in range(expected[0]):
        os.remove(os.path.join(uri, "_delta_log", f"{version:020d}.json"))
    assert replayed(uri, location) == expected
    table = DeltaTable(uri)
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [2, 3, 4, 5, 6]
    # ... and keeps committing on top of it, through its own writer
    write_deltalake(uri, pa.table({"id": [7], "x": ["g"], "y": [2.5]}), mode="append")
    DeltaTable(uri).delete("id = 2")
    assert sorted(DeltaTable(uri).to_pyarrow_table().column("id").to_pylist()) == [3, 4, 5, 6, 7]


def test_the_log_reader_starts_from_a_checkpoint_lamina_wrote(root):
    location = Location.of(root)
    uri = location.join("tables", "t")
    grown(location, uri)
    reader = DeltaLogReader(location, uri)
    before = reader.load()
    write_checkpoint(location, uri, before)
    write_deltalake(uri, pa.table({"id": [7], "x": ["g"], "y": [2.5]}), mode="append",
                    storage_options=location.delta_options)
    after = reader.load()
    expected = DeltaTable(uri, storage_options=location.delta_options)
    assert after.version == expected.version() == before.version + 1
    assert {f.uri for f in after.files.values()} == set(expected.file_uris())
    assert after.configuration["lamina.idHighWater"] == "6"
    # the tombstones of removed files carry over, so a checkpoint of the new version has them
    assert set(after.removed) == set(before.removed) and before.removed
    assert can_checkpoint(after)


def test_a_state_adopted_from_deltalake_is_not_checkpointed(local_root):
    location = Location.of(local_root)
    uri = location.join("tables", "t")
    grown(location, uri)
    adopted = DeltaLogReader(location, uri).adopt(DeltaTable(uri))
    assert not can_checkpoint(adopted)


def test_a_checkpoint_keeps_the_tombstones_younger_than_the_retention(local_root):
    """Removed files are kept in a checkpoint for vacuum only within the table's
    ``delta.deletedFileRetentionDuration`` (7 days by default), as Delta specifies."""
    import time

    import pyarrow.parquet as pq

    location = Location.of(local_root)
    uri = location.join("tables", "t")
    grown(location, uri)
    state = DeltaLogReader(location, uri).load()
    recent = set(state.removed)
    assert recent  # the delete of id 1
    month_ago = int((time.time() - 30 * 86400) * 1000)
    state.removed["part-old.parquet"] = {"path": "part-old.parquet", "dataChange": True,
                                         "deletionTimestamp": month_ago}
    write_checkpoint(location, uri, state)
    written = pq.read_table(os.path.join(uri, "_delta_log",
                                         f"{state.version:020d}.checkpoint.parquet"))
    removes = {r["path"] for r in written.column("remove").to_pylist() if r is not None}
    assert removes == recent


def test_a_reader_process_sees_whole_versions_while_a_writer_checkpoints(root, tmp_path):
    """One process saves records one by one past the versions the root checkpoints at (every
    100 locally; every version on S3, on the writer's checkpoint thread), compacting on the
    way; another connects again and again meanwhile (each time reading the log from the
    newest checkpoint) and asks between connects too. Every answer is a version the writer
    committed: the first n records, nothing torn, nothing twice."""
    local_root = root
    saves = 250 if Location.of(root).is_local else 40
    ln.init(storage=local_root)
    log = f"{root}/.lamina/catalog/core/record/_delta_log"
    ready = str(tmp_path / "reader-ready")
    reader = spawn(f"""
        import time
        from lamina.catalog.instance import disconnect
        answers = []
        deadline = time.monotonic() + 240
        ln.connect({local_root!r})
        open({ready!r}, "w").close()
        while time.monotonic() < deadline:
            for cold in (True, False, False):
                if cold:  # a new connection reads the log from its newest checkpoint
                    disconnect()
                    ln.connect({local_root!r})
                names = sorted(ln.sql("SELECT name FROM record")["name"])
                answers.append([names, ln.Record.filter().count()])
            if answers[-1][1] == {saves}:
                break
        print(json.dumps(answers))
    """)
    writer = spawn(f"""
        import time
        ln.connect({local_root!r})
        while not os.path.exists({ready!r}):
            time.sleep(0.01)
        for i in range({saves}):
            ln.Record(name=f"r{{i:03d}}").save()
    """)
    _, writer_errors = writer.communicate(timeout=300)
    assert writer.returncode == 0, writer_errors
    out, reader_errors = reader.communicate(timeout=300)
    assert reader.returncode == 0, reader_errors

    committed = [f"r{i:03d}" for i in range(saves)]
    answers = json.loads(out)
    for names, count in answers:
        assert names == committed[:len(names)]
        # the count is asked after the names, on the same or a newer version
        assert len(names) <= count <= saves
    seen = [len(names) for names, _ in answers]
    assert seen == sorted(seen) and answers[-1][1] == saves
    assert any(0 < n < saves for n in seen)  # the reader ran while the writer did
    # the writer's log crossed a checkpoint, and readers after it start there
    assert any(name.endswith(".checkpoint.parquet") for name in filesystem(root).ls(log))


def test_deltalake_reads_an_s3_table_lamina_checkpointed_at_every_version(s3_endpoint):
    """On S3 the versions a process commits are checkpointed: its own appends, and the
    replaces and deletes deltalake commits for it (the two commits of a delete of the newest
    row too). deltalake, reading from those checkpoints, sees the rows saved, and so does a
    new reader of lamina's, from the latest checkpoint alone."""
    from helpers import new_s3_root, reset_process_state, s3_requests

    root = new_s3_root()
    ln.init(storage=root)
    saved = [ln.Record(name=f"r{i}").save() for i in range(4)]
    saved[0].name = "renamed"
    saved[0].save()  # a replace, committed by deltalake
    saved[1].delete(permanent=True)
    saved[3].delete(permanent=True)  # the newest row: the id mark, then the delete
    expected = {"renamed", "r2"}
    wait_written()  # the last checkpoints are written in the background

    location = Location.of(root)
    uri = location.join(".lamina", "catalog", "core", "record")
    listed = location.list_names(f"{uri}/_delta_log")[0]
    latest = max(int(n.split(".")[0]) for n in listed if n.endswith(".json"))
    checkpointed = {int(n.split(".")[0]) for n in listed if n.endswith(".checkpoint.parquet")}
    # the delete's version, committed by deltalake, checkpointed from the state the store
    # keeps (a version whose checkpoint was not written yet when this process committed the
    # next one is left to that one's)
    assert latest in checkpointed

    table = DeltaTable(uri, storage_options=location.delta_options)
    assert table.version() == latest
    assert set(table.to_pyarrow_table(columns=["name"]).column("name").to_pylist()) == expected

    reset_process_state()
    reader = DeltaLogReader(location, uri)
    requests = s3_requests(reader.load)
    assert [u.rsplit("/", 1)[1] for _, u in requests if "list-type=" not in u] == [
        f"{latest:020d}.checkpoint.parquet"]
    assert {f.uri for f in reader.load().files.values()} == set(table.file_uris())


def test_a_process_ends_after_its_last_checkpoint_is_written(s3_endpoint):
    """Checkpoints on S3 are written in the background after the commit; a process that
    saves and ends at once (and one that saves while it ends, in an exit handler) still
    leaves the checkpoint of its last version, and its saves succeed."""
    from helpers import new_s3_root, python

    root = new_s3_root()
    ln.init(storage=root)
    proc = python(f"""
        import atexit
        ln.connect({root!r})
        ln.Record(name="saved").save()
        atexit.register(lambda: ln.Record(name="saved-at-exit").save())
    """)
    assert "Traceback" not in proc.stderr, proc.stderr
    location = Location.of(root)
    uri = location.join(".lamina", "catalog", "core", "record")
    listed = location.list_names(f"{uri}/_delta_log")[0]
    latest = max(int(n.split(".")[0]) for n in listed if n.endswith(".json"))
    assert f"{latest:020d}.checkpoint.parquet" in listed
    assert f"{latest - 1:020d}.checkpoint.parquet" in listed
    table = DeltaTable(uri, storage_options=location.delta_options)
    names = set(table.to_pyarrow_table(columns=["name"]).column("name").to_pylist())
    assert {"saved", "saved-at-exit"} <= names
