"""The commit path below a save: appends and compactions that lamina commits itself are
ordinary Delta commits, a version is committed once, and writers on S3 take the table's turn in
the order they asked for it, through a queue a dead writer cannot block."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import lamina as ln
from lamina.catalog import append_commit, tables, turns, writer
from lamina.catalog.instance import current
from lamina.catalog.location import Location
from lamina.catalog.snapshot import Change

from helpers import filesystem, new_s3_root, python, s3_requests, spawn

RECORD = tables.get("core.record")


def record_table(root: str) -> DeltaTable:
    location = Location.of(root)
    return DeltaTable(location.join(".lamina/catalog/core/record"),
                      storage_options=location.delta_options)


def test_saved_rows_are_delta_commits_any_reader_sees(root):
    ln.init(storage=root)
    saved = [ln.Record(name=name).save() for name in ["a", "b", "c"]]

    table = record_table(root)  # deltalake on its own, not lamina's store
    rows = table.to_pyarrow_table(columns=["id", "name"]).to_pylist()
    assert sorted((r["id"], r["name"]) for r in rows) == sorted((s.id, s.name) for s in saved)
    # Each save added one file whose statistics say what it holds (readers prune by them).
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert sorted((a["num_records"], a["min.id"], a["max.id"]) for a in actions) == \
        sorted((1, s.id, s.id) for s in saved)
    history = table.history()
    writes = [h for h in history if h["operation"] == "WRITE"]
    assert len(writes) == 3
    assert all(h.get("lamina_user") == "testuser1" for h in writes)
    assert [h["version"] for h in history] == list(range(len(history)))[::-1]


def test_a_version_is_committed_once_and_the_loser_leaves_no_file(root):
    ln.init(storage=root)
    ln.Record(name="first").save()
    location = Location.of(root)
    uri = location.join(".lamina/catalog/core/record")
    taken = record_table(root).version()
    fs = filesystem(root)
    files_before = sorted(fs.ls(uri, detail=False))
    rows = pa.Table.from_pylist([{"id": 99, "name": "late"}], schema=pa.schema(
        [("id", pa.int64()), ("name", pa.string())]))

    with pytest.raises(append_commit.LostRace):
        append_commit.commit_append(location, uri, taken, rows, {})

    assert sorted(fs.ls(uri, detail=False)) == files_before
    table = record_table(root)
    assert table.version() == taken
    assert table.to_pyarrow_table(columns=["name"]).column("name").to_pylist() == ["first"]


def test_a_compaction_leaves_a_file_much_larger_than_the_small_ones_it_merges(root):
    """Small saves after a bulk load are merged among themselves; the bulk file is rewritten
    only once they have grown comparable to it."""
    ln.init(storage=root)
    ln.save([ln.Record(name=f"bulk {i}", description="d" * 40) for i in range(5000)])
    bulk = set(record_table(root).file_uris())
    saved = [ln.Record(name=f"r{i}").save() for i in range(4)]
    sizes = {a["path"]: a["size_bytes"] for a in
             pa.table(record_table(root).get_add_actions(flatten=True)).to_pylist()}
    bulk_size = sum(size for path, size in sizes.items() if any(u.endswith(path) for u in bulk))
    assert bulk_size > 2 * (sum(sizes.values()) - bulk_size)  # what the test is about

    merged = current().store(RECORD).compact()

    after = record_table(root)  # read by deltalake alone
    assert merged["numFilesRemoved"] == 4 and merged["numRowsRewritten"] == 4
    assert bulk < set(after.file_uris()) and len(after.file_uris()) == 2
    names = after.to_pyarrow_table(columns=["name"]).column("name").to_pylist()
    assert sorted(names) == sorted([f"bulk {i}" for i in range(5000)]
                                   + [r.name for r in saved])


def test_a_compaction_is_a_delta_commit_that_changes_no_rows(root):
    ln.init(storage=root)
    saved = [ln.Record(name=f"r{i}").save() for i in range(5)]
    before = record_table(root)
    rows_before = sorted(before.to_pyarrow_table(columns=["id", "name"]).to_pylist(),
                         key=lambda r: r["id"])

    merged = current().store(RECORD).compact()

    after = record_table(root)  # read by deltalake alone
    assert merged["numFilesRemoved"] == 5
    assert len(after.file_uris()) == 1
    assert sorted(after.to_pyarrow_table(columns=["id", "name"]).to_pylist(),
                  key=lambda r: r["id"]) == rows_before
    actions = pa.table(after.get_add_actions(flatten=True)).to_pylist()
    assert [(a["num_records"], a["min.id"], a["max.id"]) for a in actions] == \
        [(5, saved[0].id, saved[-1].id)]
    latest = after.history(1)[0]
    assert latest["operation"] == "OPTIMIZE" and latest["lamina_operation"] == "compact"
    # The version before still reads in full (time travel; the old files stay until vacuum).
    before.load_as_version(after.version() - 1)
    assert before.to_pyarrow_table(columns=["name"]).num_rows == 5
    # Streaming readers skip a rearrangement: neither side of it is a data change.
    entry = filesystem(root).cat_file(
        Location.of(root).join(f".lamina/catalog/core/record/_delta_log/{after.version():020d}.json"))
    actions = [json.loads(line) for line in entry.decode().splitlines()]
    changes = [next(iter(a.values()))["dataChange"] for a in actions if "commitInfo" not in a]
    assert len(changes) == 6 and not any(changes)


@pytest.fixture
def queue(s3_endpoint):
    """An instance on the S3 root, and its record table's queue for the turn."""
    location = Location.of(ln.init(storage=new_s3_root()).root)
    return location, turns.TurnQueue(location, turns.queue_uri(location, "core.record"))


def test_a_compaction_on_s3_fetches_each_small_file_with_one_request(queue):
    """It holds the table's turn while it reads: a read through each file's footer first
    cost two requests a file."""
    location, _ = queue
    for i in range(5):
        ln.Record(name=f"r{i}").save()
    store = current().store(RECORD)
    merged = {}

    requests = s3_requests(lambda: merged.update(store.compact()))

    assert merged["numFilesRemoved"] == 5
    reads = [(method, url) for method, url in requests
             if url.split("?")[0].endswith(".parquet") and method != "PUT"]
    assert len(reads) == 5 and {method for method, _ in reads} == {"GET"}
    assert len({url for _, url in reads}) == 5
    assert committed_names(location.root) == [f"r{i}" for i in range(5)]


def test_writers_take_the_turn_one_after_another(queue):
    location, first = queue
    events = []
    ticket = first.acquire()

    def second():
        with turns.TurnQueue(location, first.uri).held():
            events.append("second holds")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)  # the second writer is waiting for the turn meanwhile
    events.append("first releases")
    first.release(ticket)
    thread.join(timeout=30)

    assert events == ["first releases", "second holds"]
    assert first.tickets() == []  # released after use


def test_writers_take_the_turn_in_the_order_they_began_waiting(queue, tmp_path):
    """Five writer processes queue, one after another, while the turn is held; each notes
    when it holds the turn. Before the queue, whoever polled first after a release took the
    turn (one order of 120 would have passed)."""
    location, holder = queue
    held_by = tmp_path / "held_by"
    ticket = holder.acquire()
    waiters = []
    for n in range(5):
        waiter = spawn(f"""
            import time
            from lamina.catalog import turns
            from lamina.catalog.location import Location
            queue = turns.TurnQueue(Location.of({location.root!r}), {holder.uri!r})
            ticket = queue.join()
            print("waiting", flush=True)
            queue.wait_first(ticket)
            with open({str(held_by)!r}, "a") as f:
                f.write("{n} ")
            time.sleep(0.05)
            queue.release(ticket)
        """)
        assert waiter.stdout.readline().strip() == "waiting", waiter.stderr.read()
        waiters.append(waiter)

    holder.release(ticket)
    for waiter in waiters:
        assert waiter.wait(timeout=60) == 0, waiter.stderr.read()

    assert held_by.read_text().split() == ["0", "1", "2", "3", "4"]
    assert holder.tickets() == []


def test_a_stalled_holder_loses_the_turn_and_its_late_release_spares_the_next(
        queue, monkeypatch):
    location, stalled = queue
    monkeypatch.setattr(turns, "TURN_SECONDS", 1.0)
    stalled_ticket = stalled.acquire()

    taker = turns.TurnQueue(location, stalled.uri)
    started = time.monotonic()
    taker_ticket = taker.acquire()  # waits until the stalled ticket was first for 1 s
    assert time.monotonic() - started >= 1.0
    stalled.release(stalled_ticket)  # the stalled writer wakes up and releases its turn

    assert taker.tickets() == [taker_ticket]
    taker.release(taker_ticket)
    assert taker.tickets() == []


def leave_a_dead_writers_ticket(location, queue) -> None:
    """Another process takes the turn of ``queue`` and is killed while holding it."""
    holder = spawn(f"""
        from lamina.catalog import turns
        from lamina.catalog.location import Location
        turns.TurnQueue(Location.of({location.root!r}), {queue.uri!r}).acquire()
        print("held", flush=True)
        import time; time.sleep(600)
    """)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)


def test_a_compaction_does_not_wait_for_the_turn(queue):
    """It merges outside the turn and commits without queueing: a compaction in the queue held
    up every writer behind it for its whole merge."""
    location, turn = queue
    for name in ["a", "b", "c"]:
        ln.Record(name=name).save()
    leave_a_dead_writers_ticket(location, turn)

    merged = {}
    requests = s3_requests(lambda: merged.update(current().store(RECORD).compact()))

    assert merged["numFilesRemoved"] == 3
    assert not [r for r in requests if ".turns" in r[1]]  # never looked at the queue
    assert sorted(r.name for r in ln.Record.filter()) == ["a", "b", "c"]
    assert len(turn.tickets()) == 1  # only a writer queueing behind it removes it


def committed_names(root: str) -> list[str]:
    """The record names in the table, read by deltalake alone."""
    return sorted(record_table(root).to_pyarrow_table(columns=["name"]).column("name")
                  .to_pylist())


def test_a_writer_that_lost_twice_commits_in_the_turn(queue):
    location, turn = queue
    ln.Record(name="first").save()
    store = current().store(RECORD)
    user_id = current().user_id
    attempts = []

    def plan(snapshot):
        row = writer.fill_defaults(RECORD, {"name": "mine", "id": snapshot.next_id}, user_id)
        return Change(append=[row], result=row)

    def before_commit():
        # Another process commits before each of our first two attempts lands: both lose.
        attempts.append(bool(turn.tickets()))
        if len(attempts) <= 2:
            python(f"ln.connect({location.root!r})\n"
                   f"ln.Record(name='other-{len(attempts)}').save()")

    row = store.transact(plan, before_commit).result

    # Racing twice, then in the table's turn; released after the commit.
    assert attempts == [False, False, True]
    assert turn.tickets() == []
    assert committed_names(location.root) == ["first", "mine", "other-1", "other-2"]
    ids = record_table(location.root).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert row["id"] == max(ids) and len(set(ids)) == 4


def test_a_first_attempt_waits_while_another_writer_holds_the_turn(queue):
    location, turn = queue
    ln.Record(name="first").save()
    python(f"ln.connect({location.root!r})\nln.Record(name='other').save()")
    ln.Record.filter().count()  # this process has seen another writer's commit
    ticket = turn.acquire()
    saved = threading.Event()
    thread = threading.Thread(target=lambda: (ln.Record(name="waiting").save(), saved.set()))

    def holders_turn():
        thread.start()
        time.sleep(1.0)  # the waiting save must not commit meanwhile

    while_held = s3_requests(holders_turn)
    names_while_held = committed_names(location.root)
    queued = turn.tickets()
    turn.release(ticket)
    thread.join(timeout=60)

    assert names_while_held == ["first", "other"]
    assert len(queued) == 2 and queued[0] == ticket  # the save queued behind the holder
    # It gave way before uploading its rows (nothing written, nothing to remove), and, next in
    # line, its polls of the queue spread out as the turn lasts: every 20 ms for the first
    # 0.1 s, then a fifth of the time the turn has lasted (at most ~22 in this second; 50 at
    # a steady 20 ms).
    assert not [r for r in while_held if r[0] in ("PUT", "DELETE") and ".parquet" in r[1]]
    assert len([r for r in while_held if r[0] == "GET" and ".turns" in r[1]]) <= 25
    assert saved.is_set()
    assert committed_names(location.root) == ["first", "other", "waiting"]
    assert turn.tickets() == []


def test_a_writer_killed_holding_the_turn_does_not_block_saves(queue, monkeypatch):
    location, turn = queue
    monkeypatch.setattr(turns, "TURN_SECONDS", 1.0)
    ln.Record(name="first").save()
    python(f"ln.connect({location.root!r})\nln.Record(name='other').save()")
    ln.Record.filter().count()  # contended: the next save checks for a turn holder
    leave_a_dead_writers_ticket(location, turn)
    assert len(turn.tickets()) == 1

    ln.Record(name="after").save()  # queues behind the dead writer's ticket until it expires

    assert committed_names(location.root) == ["after", "first", "other"]
    assert turn.tickets() == []  # the dead writer's ticket was removed, ours released
