"""Rows not read before are served from a decoded copy of their data file on this machine
(engine/row_cache.py) once it is built: what such a copy answers must equal what the Parquet
file holds (the oracle reads the file with pyarrow, not through lamina), a damaged copy must not
be trusted, two processes building one copy must both answer right, and the folder of copies
stays under its bound."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import textwrap
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lamina as ln
from lamina.catalog import append_commit
from lamina.catalog.location import Location
from lamina.engine import connections, row_cache, session

from helpers import filesystem, reset_process_state, spawn

# Children of the two-process test: the registry read from its data files, as on_files does.
ON_FILES = """
from lamina.engine import connections, row_index, session
session.IN_MEMORY_VALUES = 0
connections.LOCAL_COPY_BYTES = 0
"""


@pytest.fixture
def on_files(monkeypatch):
    """Registries stay on their data files (no copy in memory, no whole read of a small
    remote registry into local copies), read in small row groups and copied in batches of 4
    rows, so a copy's batches straddle the file's row groups."""
    monkeypatch.setattr(session, "IN_MEMORY_VALUES", 0)
    monkeypatch.setattr(connections, "LOCAL_COPY_BYTES", 0)
    monkeypatch.setattr(append_commit, "ROW_GROUP_ROWS", 3)
    monkeypatch.setattr(row_cache, "BATCH_ROWS", 4)


def cache_of(instance) -> row_cache.RowCache:
    return session.session_for(instance)._by_value.row_index.row_cache


def record_files(root: str) -> list[str]:
    fs = filesystem(root)
    folder = Location.of(root).join(".lamina/catalog/core/record")
    return [p for p in fs.find(folder) if p.endswith(".parquet") and "/_delta_log/" not in p]


def file_rows(root: str, path: str) -> list[dict]:
    """The oracle: the rows of a Parquet file as pyarrow reads its bytes."""
    return pq.read_table(io.BytesIO(filesystem(root).cat_file(path))).to_pylist()


def copies() -> dict[str, int]:
    folder = row_cache.folder()
    return {p.name: p.stat().st_size for p in folder.glob("*.arrow")} if folder.exists() else {}


def test_rows_from_a_copy_equal_the_rows_of_the_data_file(instance, on_files, block_reads):
    saved = ln.save([ln.Record(name=f"r{i}", description="told" if i % 4 == 1 else None)
                     for i in range(11)])
    assert ln.Record.get(name="r0").id == saved[0].id  # read from the file
    assert cache_of(instance)._builds == {}  # one row asked of a file starts no copy
    assert ln.Record.get(name="r1").id == saved[1].id  # a second one starts it
    cache_of(instance).wait()
    block_reads.clear()
    (file,) = record_files(instance.root)
    expected = {row["name"]: row for row in file_rows(instance.root, file)}
    for record in reversed(saved):
        got = ln.Record.get(name=record.name)
        row = expected[record.name]
        assert (got.id, got.uid, got.description, got.created_at, got.is_type) == (
            row["id"], row["uid"], row["description"], row["created_at"], row["is_type"])
    assert block_reads == []  # every row came from the copy


def test_a_copy_holds_every_row_and_column_of_its_file(instance, on_files):
    ln.save([ln.Record(name=f"c{i}", description=None if i % 3 else f"d{i}")
             for i in range(10)])
    ln.Record.get(name="c5")
    ln.Record.get(name="c6")
    cache_of(instance).wait()
    (file,) = record_files(instance.root)
    expected = file_rows(instance.root, file)
    snapshot = ln.current().store(ln.Record._spec).snapshot()
    ((uri, size),) = zip(snapshot.files, snapshot.sizes)
    assert uri.split("://")[-1] == file.split("://")[-1]
    decoded = row_cache.DecodedFile.open(row_cache.copy_path(uri, size), len(expected))
    assert decoded is not None
    assert [decoded.row(position) for position in range(len(expected))] == expected


def test_a_truncated_copy_is_not_trusted_and_is_built_again(instance, on_files, block_reads):
    saved = ln.save([ln.Record(name=f"t{i}") for i in range(7)])
    ln.Record.get(name="t0")
    ln.Record.get(name="t1")
    cache_of(instance).wait()
    ((name, size),) = copies().items()
    path = row_cache.folder() / name
    with open(path, "r+b") as copy:
        copy.truncate(size // 2)
    reset_process_state()  # a new process: the copy is opened from disk again
    ln.connect(instance.root)
    block_reads.clear()
    assert [ln.Record.get(name=f"t{i}").id for i in (6, 2)] == [saved[6].id, saved[2].id]
    assert block_reads != []  # read from the data file, not from the damaged copy
    cache_of(ln.current()).wait()
    assert copies() == {name: size}  # built again, whole
    block_reads.clear()
    assert ln.Record.get(name="t4").id == saved[4].id
    assert block_reads == []


def test_two_processes_building_one_copy_both_answer_right(instance, on_files, block_reads):
    saved = ln.save([ln.Record(name=f"p{i}") for i in range(40)])
    expected = {r.name: r.id for r in saved}
    child = ON_FILES + textwrap.dedent(f"""
        from lamina.engine import row_cache
        row_cache.BATCH_ROWS = 4
        ln.connect({instance.root!r})
        first = ln.Record.get(name="p0").id
        ln.Record.get(name="p1")  # a second row of the file starts the build
        cache = session.session_for(ln.current())._by_value.row_index.row_cache
        cache.wait()
        calls = []
        read_block = row_index._DataFile.read_block
        row_index._DataFile.read_block = lambda *a: calls.append(a) or read_block(*a)
        found = {{f"p{{i}}": ln.Record.get(name=f"p{{i}}").id for i in range(40)}}
        print(json.dumps({{"first": first, "found": found, "file_reads": len(calls)}}))
    """)
    children = [spawn(child) for _ in range(2)]
    for process in children:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        answer = json.loads(out.strip().splitlines()[-1])
        assert answer["first"] == expected["p0"] and answer["found"] == expected
        assert answer["file_reads"] == 0
    assert len(copies()) == 1  # one copy, whole: this process trusts it
    reset_process_state()
    ln.connect(instance.root)
    assert ln.Record.get(name="p17").id == expected["p17"]
    assert block_reads == []  # from the copy they left


def parquet_files(folder, count: int) -> list[str]:
    """``count`` Parquet files of 1000 rows each (ids from ``1000 * number``), in row groups
    of 300."""
    files = []
    for i in range(count):
        path = folder / f"{i}.parquet"
        pq.write_table(pa.table({"id": list(range(i * 1000, (i + 1) * 1000)),
                                 "name": [f"row {j}" for j in range(1000)]}), path,
                       row_group_size=300)
        files.append(str(path))
    return files


def ask_until_built(cache: row_cache.RowCache, path: str) -> row_cache.DecodedFile | None:
    """Ask rows of the file at ``path`` until its copy is built (or refused): its copy then."""
    parquet = pq.ParquetFile(path)
    groups = lambda: (parquet.read_row_group(g) for g in range(parquet.num_row_groups))
    for _ in range(row_cache.MISSES_BEFORE_BUILD):  # the last of these starts the build
        assert cache.file(path, os.path.getsize(path), 1000, groups) is None
    cache.wait()
    return cache.file(path, os.path.getsize(path), 1000, groups)


def test_eviction_keeps_the_copies_under_their_bound(tmp_path, monkeypatch):
    files = parquet_files(tmp_path, 4)
    one_copy = None
    cache = row_cache.RowCache()
    for number, path in enumerate(files):
        if number == 1:  # room for two copies
            monkeypatch.setenv("LAMINA_ROW_CACHE_MB", str((2 * one_copy + 100) / 2**20))
        decoded = ask_until_built(cache, path)
        one_copy = one_copy or sum(copies().values())
        assert decoded.row(999) == {"id": number * 1000 + 999, "name": "row 999"}
    assert sum(copies().values()) <= 2 * one_copy + 100
    kept = {row_cache.copy_path(p, os.path.getsize(p)).name for p in files[2:]}
    assert set(copies()) == kept  # the two opened last


def test_a_copy_larger_than_the_bound_is_not_built_and_removes_no_other(tmp_path,
                                                                        monkeypatch):
    first, second = parquet_files(tmp_path, 2)
    cache = row_cache.RowCache()
    assert ask_until_built(cache, first).row(0) == {"id": 0, "name": "row 0"}
    kept = copies()
    monkeypatch.setenv("LAMINA_ROW_CACHE_MB", str(sum(kept.values()) / 2 / 2**20))
    assert ask_until_built(cache, second) is None  # its rows come from the file
    assert copies() == kept
    assert [p.name for p in row_cache.folder().iterdir()] == list(kept)  # no temporary left
    assert ask_until_built(cache, second) is None and cache._builds == {}  # not tried again
    # A copy that alone passes the bound is removed by itself, the others stay.
    monkeypatch.delenv("LAMINA_ROW_CACHE_MB")
    assert ask_until_built(row_cache.RowCache(), second) is not None
    built = row_cache.copy_path(second, os.path.getsize(second))
    # The folder of the copy it built is evicted, even if the cache folder moved since.
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "moved"))
    assert row_cache.evict(built.stat().st_size - 1, keep=built) == [built]
    assert sorted(p.name for p in built.parent.iterdir()) == list(kept)


def test_a_build_keeps_the_copy_in_place_and_refuses_a_file_of_other_rows(tmp_path):
    (path,) = parquet_files(tmp_path, 1)
    parquet = pq.ParquetFile(path)
    groups = lambda: (parquet.read_row_group(g) for g in range(parquet.num_row_groups))
    copy = tmp_path / "copies" / "one.arrow"
    row_cache.build(copy, 1000, groups(), limit=2**30)
    inode = copy.stat().st_ino
    row_cache.build(copy, 1000, groups(), limit=2**30)  # as another process would
    assert copy.stat().st_ino == inode  # the copy someone may have mapped stays in place
    other = copy.with_name("other.arrow")
    with pytest.raises(ValueError, match="1000 rows read for a file of 1001"):
        row_cache.build(other, 1001, groups(), limit=2**30)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["one.arrow"]


def test_a_copy_removed_by_another_process_is_let_go_and_built_again(tmp_path):
    first, second = parquet_files(tmp_path, 2)
    cache = row_cache.RowCache()
    ask_until_built(cache, first)
    row_cache.copy_path(first, os.path.getsize(first)).unlink()  # evicted elsewhere
    ask_until_built(cache, second)  # a build ends here: it lets go of what is gone
    assert ask_until_built(cache, first).row(5) == {"id": 5, "name": "row 5"}
    assert set(copies()) == {row_cache.copy_path(p, os.path.getsize(p)).name
                             for p in (first, second)}


def test_copies_of_two_batch_sizes_do_not_remove_each_other(tmp_path, monkeypatch):
    """As two versions of lamina on one machine would build them."""
    (path,) = parquet_files(tmp_path, 1)
    batch_rows = row_cache.BATCH_ROWS
    assert ask_until_built(row_cache.RowCache(), path).row(7) == {"id": 7, "name": "row 7"}
    monkeypatch.setattr(row_cache, "BATCH_ROWS", 64)
    assert ask_until_built(row_cache.RowCache(), path).row(70) == {"id": 70, "name": "row 70"}
    monkeypatch.setattr(row_cache, "BATCH_ROWS", batch_rows)
    assert len(copies()) == 2
    assert row_cache.RowCache().file(path, os.path.getsize(path), 1000, None).row(999) == {
        "id": 999, "name": "row 999"}  # opened, not removed


def test_a_process_forked_during_a_build_builds_the_copy_itself(tmp_path):
    (path,) = parquet_files(tmp_path, 1)
    parquet = pq.ParquetFile(path)
    go_on = threading.Event()

    def groups():  # the parent's build waits until the child has built its own
        go_on.wait()
        return (parquet.read_row_group(g) for g in range(parquet.num_row_groups))

    cache = row_cache.RowCache()
    size = os.path.getsize(path)
    for _ in range(row_cache.MISSES_BEFORE_BUILD):
        assert cache.file(path, size, 1000, groups) is None
    assert cache._builds  # the parent's build is under way

    def child():
        for _ in range(row_cache.MISSES_BEFORE_BUILD):
            cache.file(path, size, 1000, groups_now)
        cache.wait()
        decoded = cache.file(path, size, 1000, groups_now)
        os._exit(0 if decoded is not None and decoded.row(3)["id"] == 3 else 1)

    groups_now = lambda: (parquet.read_row_group(g) for g in range(parquet.num_row_groups))
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    go_on.set()
    cache.wait()
    assert process.exitcode == 0
    assert cache.file(path, size, 1000, groups_now).row(999)["id"] == 999
