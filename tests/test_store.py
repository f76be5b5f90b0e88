"""The table store under the registries: time travel, automatic compaction, and commits that
re-plan when another writer got there first."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

import lamina as ln
from lamina.catalog import (checkpoint, compaction, deltalake_commit, settings,
                            store as store_module, tables)
from lamina.catalog.snapshot import Change
from lamina.catalog.store import TableStore
from lamina.errors import CommitConflict

from helpers import spawn

RECORD = tables.get("core.record")


def names(snapshot) -> list[str]:
    return sorted(snapshot.read(["name"])["name"].to_pylist())


def test_time_travel_sees_older_rows(instance):
    store = instance.store(RECORD)
    first = ln.Record(name="first").save()
    v_first = store.version()
    ln.Record(name="second").save()
    ln.Record(name="third").save()
    first.name = "first, renamed"
    first.save()
    third = ln.Record.get(name="third")
    third.delete(permanent=True)

    assert names(store.snapshot()) == ["first, renamed", "second"]
    past = store.snapshot(version=v_first)
    assert past.version == v_first
    assert names(past) == ["first"]
    assert names(store.snapshot(version=v_first + 2)) == ["first", "second", "third"]
    # A past snapshot is read-only history: the latest one is unchanged by opening it.
    # (Deleting the newest row is two commits: the table's id mark goes up first.)
    assert store.version() == v_first + 5
    assert names(store.snapshot()) == ["first, renamed", "second"]


def test_time_travel_by_timestamp(instance):
    store = instance.store(RECORD)
    for name in ["a", "b"]:
        ln.Record(name=name).save()
    # Object stores keep modification times to the second: leave a second on each side.
    time.sleep(1.1)
    when = datetime.now(timezone.utc)
    time.sleep(1.1)
    ln.Record(name="c").save()
    snapshot = store.snapshot(version=when)
    assert names(snapshot) == ["a", "b"]
    assert snapshot.version == store.version() - 1


def test_compaction_after_many_small_commits(instance):
    store = instance.store(RECORD)
    threshold = compaction.COMPACT_AFTER_FILES
    counts = []
    before_compaction = None
    for i in range(threshold + 5):
        ln.Record(name=f"r{i:03d}").save()
        snapshot = store.snapshot()
        counts.append(len(snapshot.files))
        if before_compaction is None and len(counts) == threshold - 1:
            before_compaction = snapshot
    # Every commit writes one small file; the table never keeps the threshold's worth.
    assert max(counts) < threshold
    assert any(later < earlier for earlier, later in zip(counts, counts[1:]))
    assert counts[-1] < threshold // 2
    # Data intact: every row once, nothing lost or duplicated.
    rows = store.snapshot().read(["id", "name"]).to_pylist()
    assert sorted(r["name"] for r in rows) == [f"r{i:03d}" for i in range(threshold + 5)]
    assert len({r["id"] for r in rows}) == len(rows)
    assert ln.Record.filter().count() == threshold + 5
    # A reader still holding a snapshot from before the compaction reads it in full.
    assert names(before_compaction) == [f"r{i:03d}" for i in range(threshold - 1)]


def test_log_is_checkpointed_so_a_new_reader_does_not_replay_every_commit(instance):
    """A catalog written one row at a time for years must open in a new process without
    reading every commit: deltalake checkpoints the log every 100 commits."""
    store = instance.store(RECORD)
    before = len(store.snapshot().read(["id"]))
    for i in range(105):
        store.transact(lambda snapshot, i=i: Change(append=[
            {"id": snapshot.next_id, "uid": f"{i:016d}", "name": f"c{i}", "branch_id": 1}]))
    checkpoint.wait_written()  # written after the commit, on an object store in the background
    fs = instance.location.fs
    last = json.loads(fs.cat_file(f"{store.uri}/_delta_log/_last_checkpoint"))
    assert last["version"] >= 99
    # A fresh handle (as another process has) sees every row.
    fresh = TableStore(instance.location, RECORD)
    assert len(fresh.snapshot().read(["id"])) == before + 105


def test_bulk_commits_write_compressed_files_in_row_groups_duckdb_can_split(instance):
    """Scans parallelise and prune per row group: a bulk commit must not be one huge group,
    and catalog files stay compressed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = instance.store(RECORD)
    n = 300_000
    start = store.snapshot().next_id
    store.transact(lambda snapshot: Change(append=pa.table({
        "id": pa.array(range(start, start + n), pa.int64()),
        "uid": pa.array([f"{i:016d}" for i in range(n)]),
        "name": pa.array([f"bulk {i}" for i in range(n)]),
        "branch_id": pa.array([1] * n, pa.int64())})))
    fs = instance.location.arrow_fs
    path = max(store.snapshot().files, key=lambda f: fs.get_file_info(
        instance.location.arrow_path(f)).size)
    with fs.open_input_file(instance.location.arrow_path(path)) as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == n
    assert meta.num_row_groups >= 3
    assert meta.row_group(0).column(0).compression != "UNCOMPRESSED"
    assert ln.Record.filter(name__startswith="bulk ").count() == n


def test_transact_replans_when_another_writer_commits_first(instance):
    ln.Record(name="seed").save()
    mine = instance.store(RECORD)
    other = TableStore(instance.location, RECORD)  # another handle on the same table
    seen = []

    def row(snapshot, name):
        return {"id": snapshot.next_id, "uid": f"{name:0<16}"[:16], "name": name,
                "branch_id": 1}

    def plan(snapshot):
        seen.append(snapshot.version)
        if len(seen) == 1:  # someone else commits between our read and our commit
            other.transact(lambda s: Change(append=[row(s, "theirs")]))
        new = row(snapshot, "mine")
        return Change(append=[new], result=new["id"])

    my_id = mine.transact(plan).result
    assert seen == [seen[0], seen[0] + 1]  # planned again, on the newer snapshot
    rows = {r["name"]: r["id"] for r in mine.snapshot().read(["id", "name"]).to_pylist()}
    assert rows == {"seed": 1, "theirs": 2, "mine": 3}
    assert my_id == 3


def test_transact_gives_up_after_losing_every_race(instance, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_ATTEMPTS", 3)
    mine = instance.store(RECORD)
    other = TableStore(instance.location, RECORD)

    def plan(snapshot):
        other.transact(lambda s: Change(append=[{"id": s.next_id, "name": "theirs"}]))
        return Change(append=[{"id": snapshot.next_id, "name": "mine"}])

    with pytest.raises(CommitConflict, match="core.record"):
        mine.transact(plan)
    assert names(mine.snapshot()) == ["theirs"] * 3


@pytest.mark.parametrize("n_procs, n_each", [(3, 15)])
def test_concurrent_writers_and_compactions_keep_every_row_once(instance, n_procs, n_each):
    """Enough commits from several processes that compactions run while others append."""
    go = settings.home() / "go"
    code = """
        import time
        ln.connect({root!r})
        while not os.path.exists({go!r}):
            time.sleep(0.01)
        ids = [ln.Record(name=f"{tag}-{{i}}").save().id for i in range({n})]
        print(json.dumps(ids))
    """
    children = [spawn(code.format(root=instance.root, go=str(go), tag=f"p{p}", n=n_each))
                for p in range(n_procs)]
    go.write_text("go")
    reported = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
        reported.extend(json.loads(stdout))
    store = instance.store(RECORD)
    rows = store.snapshot().read(["id", "name"]).to_pylist()
    assert len(rows) == n_procs * n_each
    assert sorted(r["id"] for r in rows) == sorted(reported)
    assert len(set(reported)) == len(reported)
    assert sorted(r["name"] for r in rows) == sorted(
        f"p{p}-{i}" for p in range(n_procs) for i in range(n_each))
    assert len(store.snapshot().files) < compaction.COMPACT_AFTER_FILES


def test_updates_and_deletes_of_100000_scattered_rows_are_one_commit_each(instance):
    # Every other id of 200,000: too many ranges to name one by one, so the commit rewrites
    # the span and must keep the rows in between as they were.
    import pyarrow as pa

    from lamina.catalog import writer

    store = instance.store(RECORD)
    n = 200_000
    store.transact(lambda s: Change(append=pa.table({
        "id": pa.array(range(1, n + 1), pa.int64()),
        "uid": [f"{i:016d}" for i in range(1, n + 1)],
        "name": [f"r{i}" for i in range(1, n + 1)],
        "branch_id": pa.array([1] * n, pa.int64())})))
    odd = list(range(1, n + 1, 2))
    version = store.version()
    assert writer.update_many(instance, RECORD, odd, {"description": "odd"}) == len(odd)
    assert store.version() == version + 1
    rows = store.snapshot().read(["id", "name", "description"]).to_pylist()
    assert len(rows) == n
    assert all(r["name"] == f"r{r['id']}" for r in rows)
    assert all(r["description"] == ("odd" if r["id"] % 2 else None) for r in rows)

    store.transact(lambda s: Change(delete_ids=odd))
    assert store.version() == version + 2
    left = store.snapshot().read(["id", "description"])
    assert sorted(left.column("id").to_pylist()) == list(range(2, n + 1, 2))
    assert set(left.column("description").to_pylist()) == {None}


@pytest.mark.parametrize("change", ["update", "delete"])
def test_a_span_overwrite_keeps_a_change_another_process_commits_inside_the_span(
        instance, monkeypatch, change):
    # Five scattered ids with room for two ranges: the commit names their span (r1..r9) and
    # writes the span's other rows back. Another process loads r4, inside the span, and saves
    # a change to it after the overwrite planned on the older snapshot: on S3 its commit lands
    # before the overwrite's (which must re-plan); on a local root the machine's lock makes
    # it wait and land after (its patch applies to the row the overwrite left).
    from helpers import spawn
    from lamina.catalog import writer

    monkeypatch.setattr(deltalake_commit, "MAX_ID_RUNS", 2)
    ln.save([ln.Record(name=f"r{i}") for i in range(1, 11)])
    ids = {r.name: r.id for r in ln.Record.filter()}
    odd = [ids[f"r{i}"] for i in range(1, 10, 2)]
    other = []

    def other_process_edits_r4():
        if other:
            return
        other.append(spawn(f"""
            ln.connect({instance.root!r})
            record = ln.Record.get(name="r4")
            print("loaded", flush=True)
            record.description = "theirs"
            record.save()
            print("saved", flush=True)
        """))
        assert other[0].stdout.readline().strip() == "loaded"
        if not instance.location.is_local:
            assert other[0].stdout.readline().strip() == "saved"

    transact = TableStore.transact
    plans = []

    def counted(plan):
        return lambda snapshot: (plans.append(snapshot.version), plan(snapshot))[1]

    monkeypatch.setattr(TableStore, "transact", lambda self, plan, before_commit=None:
                        transact(self, counted(plan), other_process_edits_r4))
    if change == "update":
        assert writer.update_many(instance, RECORD, odd, {"description": "odd"}) == len(odd)
    else:
        writer.delete(instance, RECORD, odd)
    monkeypatch.undo()
    stdout, stderr = other[0].communicate(timeout=120)
    assert other[0].returncode == 0, stderr
    # On S3 the overwrite lost the race to the other commit and was planned again on it.
    assert len(plans) == (1 if instance.location.is_local else 2)

    rows = {r["name"]: r["description"] for r in
            instance.store(RECORD).snapshot().read(["name", "description"]).to_pylist()}
    expected = {f"r{i}": "odd" if i % 2 else None for i in range(1, 11)
                if change == "update" or i % 2 == 0}
    expected["r4"] = "theirs"
    assert rows == expected
