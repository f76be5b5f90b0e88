"""Compaction merges small files only with files of like size, while another process writes.

One process saves records one row at a time while another compacts the table over and over;
a large file committed before stays as it is. What is checked is read from the Delta log's
own JSON commits and the Parquet files they name (fsspec and pyarrow, not lamina's readers):
no row lost or doubled, no id given twice, the large file never removed, and compactions
committed between the writer's saves."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from lamina.catalog import tables
from lamina.catalog.snapshot import Change

from helpers import filesystem, spawn

RECORD = tables.get("core.record")
# One file of ~1.9 MB: below the size under which files count as small (16 MB), yet far more
# than twice all the one-row files (~4.4 KB each) together, so it must never be merged.
N_BULK = 100_000
N_SAVES = 40


def log_commits(root: str, table_uri: str) -> list[list[dict]]:
    """The actions of every commit of the table, by version, from its ``_delta_log``."""
    fs = filesystem(root)
    paths = sorted(fs.glob(f"{table_uri}/_delta_log/*.json"))
    versions = [int(p.rsplit("/", 1)[-1].split(".")[0]) for p in paths]
    assert versions == list(range(len(paths)))  # every commit still there, none skipped
    return [[json.loads(line) for line in fs.cat_file(p).decode().splitlines() if line]
            for p in paths]


def operation(commit: list[dict]) -> str | None:
    return next((a["commitInfo"].get("operation") for a in commit if "commitInfo" in a), None)


def test_compaction_beside_a_writer_merges_only_files_of_like_size(instance, tmp_path):
    store = instance.store(RECORD)
    store.transact(lambda s: Change(append=pa.table({
        "id": pa.array(range(s.next_id, s.next_id + N_BULK), pa.int64()),
        "uid": pa.array([f"bulk{i:012d}" for i in range(N_BULK)]),
        "name": pa.array([f"bulk {i}" for i in range(N_BULK)]),
        "branch_id": pa.array([1] * N_BULK, pa.int64())})))
    bulk_version = store.version()
    done = tmp_path / "writer-done"

    compactor = spawn(f"""
        import time
        from lamina.catalog import tables
        store = ln.connect({instance.root!r}).store(tables.get("core.record"))
        print("ready", flush=True)
        committed = 0
        while not os.path.exists({str(done)!r}):
            committed += bool(store.compact())
            time.sleep(0.05)  # pace the rounds; what is checked is counted, not timed
        committed += bool(store.compact())  # the small files the writer left last
        print(json.dumps(committed))
    """)
    assert compactor.stdout.readline().strip() == "ready", compactor.stderr.read()
    writer = spawn(f"""
        ln.connect({instance.root!r})
        ids = [ln.Record(name=f"w{{i}}").save().id for i in range({N_SAVES})]
        print(json.dumps(ids))
    """)
    stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr
    saved_ids = json.loads(stdout)
    done.write_text("done")
    stdout, stderr = compactor.communicate(timeout=300)
    assert compactor.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1]) >= 1

    commits = log_commits(instance.root, store.uri)
    (large,) = [a["add"]["path"] for a in commits[bulk_version] if "add" in a]
    removed = [a["remove"]["path"] for c in commits for a in c if "remove" in a]
    assert large not in removed
    assert len(removed) == len(set(removed))  # no file merged twice

    # The writer's commits and the compactions between them.
    later = list(enumerate(commits))[bulk_version + 1:]
    saves = [v for v, c in later if operation(c) != "OPTIMIZE"]
    merges = [v for v, c in later if operation(c) == "OPTIMIZE"]
    assert len(saves) >= N_SAVES
    assert any(saves[0] < v < saves[-1] for v in merges)

    live: set[str] = set()
    for commit in commits:
        live |= {a["add"]["path"] for a in commit if "add" in a}
        live -= {a["remove"]["path"] for a in commit if "remove" in a}
    # The large file, and one file holding every row saved one at a time: the last compaction
    # merges them all, since 40 rows make a file of ~6 KB, within twice one one-row file.
    assert large in live
    assert len(live) == 2

    fs = filesystem(instance.root)
    rows = pa.concat_tables([pq.read_table(fs.open(f"{store.uri}/{path}"),
                                           columns=["id", "name"]) for path in sorted(live)])
    ids, names = rows.column("id").to_pylist(), rows.column("name").to_pylist()
    assert len(ids) == len(set(ids)) == N_BULK + N_SAVES
    written = Counter(n for n in names if not n.startswith("bulk "))
    assert written == Counter(f"w{i}" for i in range(N_SAVES))
    id_of = {n: i for i, n in zip(ids, names)}
    assert [id_of[f"w{i}"] for i in range(N_SAVES)] == saved_ids
    assert min(saved_ids) > max(i for i, n in zip(ids, names) if n.startswith("bulk "))
