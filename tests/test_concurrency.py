"""Several processes writing one root at once, and a process killed in the middle of saving:
nothing lost, ids unique, no row pointing at a missing object."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import lamina as ln
from lamina.catalog import settings

from helpers import every_root, exists, objects_under, python, spawn

# Each child waits for the go file, then saves ``n`` artifacts of its own content and prints
# one JSON line {"uid", "id"} per save.
def writer(root: str, tag: str, n: int, go: str, content: str = "{tag}-{i}",
           key: str = "{tag}/{i}.txt") -> str:
    return f"""
        import tempfile, time
        ln.connect({root!r})
        while not os.path.exists({go!r}):
            time.sleep(0.01)
        folder = tempfile.mkdtemp()
        for i in range({n}):
            tag = {tag!r}
            path = os.path.join(folder, f"{{i}}.txt")
            with open(path, "w") as f:
                f.write(f"{content}")
            artifact = ln.Artifact(path, key=f"{key}").save()
            print(json.dumps({{"uid": artifact.uid, "id": artifact.id}}), flush=True)
    """


def run_together(codes: list[str], go) -> list[list[dict]]:
    children = [spawn(code) for code in codes]
    go.write_text("go")
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
        outputs.append([json.loads(line) for line in stdout.splitlines()])
    return outputs


def assert_no_row_without_object(root: str):
    for row in ln.Artifact.filter().to_arrow(columns=["uid", "suffix", "n_files"]).to_pylist():
        path = f"{root}/.lamina/objects/{row['uid']}{row['suffix'] or ''}"
        assert exists(root, path), f"row {row['uid']} points at missing {path}"


@every_root
@pytest.mark.parametrize("n_procs, n_each", [(3, 6)])
def test_processes_saving_at_once_lose_nothing(instance, n_procs, n_each):
    root = instance.root
    go = settings.home() / "go"
    outputs = run_together(
        [writer(root, f"p{p}", n_each, str(go)) for p in range(n_procs)], go)

    reported = [row for output in outputs for row in output]
    assert len(reported) == n_procs * n_each
    rows = ln.Artifact.filter().to_arrow(columns=["id", "uid", "key"]).to_pylist()
    assert len(rows) == n_procs * n_each
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert {(r["uid"], r["id"]) for r in rows} == {(r["uid"], r["id"]) for r in reported}
    assert {r["key"] for r in rows} == {f"p{p}/{i}.txt" for p in range(n_procs)
                                        for i in range(n_each)}
    assert_no_row_without_object(root)
    assert len(objects_under(root)) == n_procs * n_each


@every_root
def test_processes_saving_the_same_content_make_one_artifact(instance):
    """Each process saves the same bytes: de-duplication holds across racing writers, and
    the losers' uploads are removed."""
    root = instance.root
    go = settings.home() / "go"
    outputs = run_together(
        [writer(root, f"p{p}", 3, str(go), content="shared-{i}", key="shared/{i}.txt")
         for p in range(3)], go)
    rows = ln.Artifact.filter().to_arrow(columns=["id", "uid", "key"]).to_pylist()
    assert len(rows) == 3
    by_key = {r["key"]: r["id"] for r in rows}
    for output in outputs:
        assert [r["id"] for r in output] == [by_key[f"shared/{i}.txt"] for i in range(3)]
    assert sorted(objects_under(root)) == sorted(f"{r['uid']}.txt" for r in rows)


@every_root
def test_processes_revising_one_artifact_make_distinct_versions(instance, tmp_path):
    """Versions made at the same time from one artifact get distinct uids, and exactly one
    of them is the latest."""
    path = tmp_path / "v.txt"
    path.write_text("version 0")
    v0 = ln.Artifact(path, key="v.txt").save()
    go = settings.home() / "go"
    code = """
        import tempfile, time
        ln.connect({root!r})
        base = ln.Artifact.get({uid!r})
        while not os.path.exists({go!r}):
            time.sleep(0.01)
        path = os.path.join(tempfile.mkdtemp(), "v.txt")
        open(path, "w").write("version from {tag}")
        artifact = ln.Artifact(path, revises=base).save()
        print(json.dumps({{"uid": artifact.uid, "id": artifact.id}}), flush=True)
    """
    run_together([code.format(root=instance.root, uid=v0.uid, go=str(go), tag=f"p{p}")
                  for p in range(3)], go)
    rows = ln.Artifact.filter().to_arrow(columns=["uid", "is_latest"]).to_pylist()
    uids = [r["uid"] for r in rows]
    assert len(rows) == 4 and len(set(uids)) == 4
    assert {u[:16] for u in uids} == {v0.uid[:16]}
    assert [r["uid"] for r in rows if r["is_latest"]] == [max(uids, key=lambda u: u[16:])]


def test_killed_while_saving_leaves_a_consistent_catalog(instance):
    """SIGKILL a process in the middle of saving many artifacts: the catalog opens, every row
    has its object, and writing continues where it stopped."""
    root = instance.root
    go = settings.home() / "go"
    go.write_text("go")
    child = spawn(writer(root, "victim", 500, str(go)))
    seen = 0
    # Let it commit a few, then kill it wherever it is (uploading, committing, compacting).
    while seen < 4:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        seen += 1
    time.sleep(0.05 * (seen % 3))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    # A new process opens and queries the catalog ...
    out = python(f"""
        ln.connect({root!r})
        print(ln.Artifact.filter().count())
    """).stdout.split()
    count = int(out[0])
    assert count >= seen
    # ... every row has its object, and saving goes on with fresh unique ids.
    assert ln.Artifact.filter().count() == count
    assert_no_row_without_object(root)
    after = python(f"""
        import tempfile
        ln.connect({root!r})
        path = os.path.join(tempfile.mkdtemp(), "after.txt")
        open(path, "w").write("after the crash")
        print(ln.Artifact(path, key="after.txt").save().id)
    """).stdout.split()
    ids = ln.Artifact.filter().to_arrow(columns=["id"])["id"].to_pylist()
    assert len(ids) == count + 1 and len(set(ids)) == len(ids)
    assert int(after[0]) == max(ids)
