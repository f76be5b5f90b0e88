#!/usr/bin/env python
"""The commit path of one save: a one-row append through ``write_deltalake`` against lamina's
own commit (``lamina/catalog/append_commit.py``: pyarrow writes the Parquet file, the Delta log
entry is put-if-absent), and a whole ``Artifact(file, key=).save()``, on a local root and on
the moto S3 root.

    python bench/commit_path.py            # ~1 minute
    python bench/commit_path.py --n 200

Wall and CPU time per call (the machine may be shared: CPU time is what the call itself costs),
and on S3 the requests the server saw per call (moto's recorder; they do not depend on load).
Every table is checked afterwards with deltalake alone: all rows present, ids distinct.
Raw results: ``bench/commit_path_results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
# The lamina beside this script, not the one the interpreter has installed: run from a
# worktree, it measured the main checkout's editable install.
sys.path.insert(0, os.path.dirname(HERE))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def recorder(action: str) -> bytes:
    base = os.environ["AWS_ENDPOINT_URL"] + "/moto-api/recorder/"
    method = "GET" if action == "download-recording" else "POST"
    request = urllib.request.Request(base + action, data=None if method == "GET" else b"",
                                     method=method)
    return urllib.request.urlopen(request).read()


def timed(fn, n: int, s3: bool) -> dict:
    """p50 wall / CPU ms of ``fn(i)`` over ``n`` calls (after 5 untimed), and requests per
    call on S3."""
    for i in range(5):
        fn(-1 - i)
    walls, cpus = [], []
    if s3:
        recorder("reset-recording")
        recorder("start-recording")
    for i in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn(i)
        walls.append((time.perf_counter() - w) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    out = {"n": n, "wall_p50_ms": statistics.median(walls), "cpu_p50_ms": statistics.median(cpus),
           "wall_p90_ms": statistics.quantiles(walls, n=10)[8]}
    if s3:
        recorder("stop-recording")
        lines = [json.loads(x) for x in recorder("download-recording").decode().splitlines()
                 if x.strip()]
        by_method: dict = {}
        for line in lines:
            by_method[line["method"]] = by_method.get(line["method"], 0) + 1
        out["requests_per_call"] = {m: k / n for m, k in sorted(by_method.items())}
    return out


def one_row_commits(root: str, n: int, s3: bool) -> dict:
    import pyarrow as pa
    from deltalake import (CommitProperties, DeltaTable, PostCommitHookProperties,
                           WriterProperties, write_deltalake)

    from lamina.catalog import append_commit, tables
    from lamina.catalog.location import Location

    spec = tables.get("core.artifact")
    schema = spec.arrow_schema()
    location = Location.of(root)

    def row(i: int) -> pa.Table:
        values = {name: None for name in schema.names}
        values.update(id=i, uid=f"{abs(i):020d}", key=f"k/{i}.txt", size=10, suffix=".txt",
                      created_at=datetime.now(timezone.utc), branch_id=1)
        return pa.Table.from_pylist([values], schema=schema)

    results = {}
    # deltalake: a held DeltaTable, the store's writer settings, no post-commit hook.
    uri = location.join("bench-write-deltalake")
    DeltaTable.create(uri, schema=schema, storage_options=location.delta_options)
    table = DeltaTable(uri, storage_options=location.delta_options)
    hooks = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    writer = WriterProperties(max_row_group_size=16_384, compression="SNAPPY")
    results["write_deltalake"] = timed(
        lambda i: write_deltalake(table, row(i), mode="append", storage_options=
                                  location.delta_options, writer_properties=writer,
                                  post_commithook_properties=hooks,
                                  commit_properties=CommitProperties(max_commit_retries=0)),
        n, s3)
    check(uri, location, n + 5)

    uri = location.join("bench-append-commit")
    DeltaTable.create(uri, schema=schema, storage_options=location.delta_options)
    version = [0]

    def own(i: int) -> None:
        version[0] += 1
        append_commit.commit_append(location, uri, version[0], row(i), {})

    results["append_commit"] = timed(own, n, s3)
    check(uri, location, n + 5)
    return results


def check(uri: str, location, expected: int) -> None:
    from deltalake import DeltaTable

    ids = DeltaTable(uri, storage_options=location.delta_options).to_pyarrow_table(
        columns=["id"]).column("id").to_pylist()
    if len(ids) != expected or len(set(ids)) != expected:
        raise SystemExit(f"check failed: {len(ids)} rows, {len(set(ids))} ids, {expected} expected")


def artifact_saves(root: str, n: int, s3: bool) -> dict:
    import lamina as ln

    ln.init(storage=root)
    folder = tempfile.mkdtemp()

    def path(i: int) -> str:
        p = os.path.join(folder, f"{i}.txt")
        with open(p, "w") as f:
            f.write(f"content {i} {time.time_ns()}")
        return p

    made = []
    results = {"construct": None, "save": None}
    # Constructing and saving timed apart: the constructor hashes the file and looks up the
    # same content and the latest version under the key (two queries).
    pending = {}

    def construct(i: int) -> None:
        pending[i] = ln.Artifact(path(i), key=f"bench/{i}.txt")

    def save(i: int) -> None:
        made.append(pending.pop(i).save())

    constructs, saves = [], []
    for i in range(-5, n):
        w, c = time.perf_counter(), time.process_time()
        construct(i)
        constructs.append(((time.perf_counter() - w) * 1e3, (time.process_time() - c) * 1e3))
        if s3 and i == n - 1:
            recorder("reset-recording")
            recorder("start-recording")
        w, c = time.perf_counter(), time.process_time()
        save(i)
        saves.append(((time.perf_counter() - w) * 1e3, (time.process_time() - c) * 1e3))
    for name, xs in (("construct", constructs[5:]), ("save", saves[5:])):
        results[name] = {"n": n, "wall_p50_ms": statistics.median(x[0] for x in xs),
                         "cpu_p50_ms": statistics.median(x[1] for x in xs)}
    results["total_wall_p50_ms"] = statistics.median(
        a[0] + b[0] for a, b in zip(constructs[5:], saves[5:]))
    if s3:
        recorder("stop-recording")
        lines = [json.loads(x) for x in recorder("download-recording").decode().splitlines()
                 if x.strip()]
        results["requests_of_the_last_save"] = [(x["method"], x["url"].split("/")[-1][:60])
                                                for x in lines]
    saved = ln.Artifact.filter(key__startswith="bench/").count()
    if saved != n + 5:
        raise SystemExit(f"check failed: {saved} artifacts saved, {n + 5} expected")
    return results


def fresh_process_saves(root: str) -> dict:
    """The requests of the first ``Artifact(file, key=).save()`` (constructing included) in a
    new process connected to ``root``, and of a warm one after it (issue 15's budgets: ≤ 10
    and ≤ 6)."""
    import subprocess

    child = f"""
import json, os, sys, tempfile
sys.path[:0] = [{HERE!r}, {os.path.dirname(HERE)!r}]
import lamina as ln
from commit_path import recorder

def requests_of(call):
    recorder("reset-recording")
    recorder("start-recording")
    call()
    recorder("stop-recording")
    lines = recorder("download-recording").decode().splitlines()
    return [(r["method"], r["url"].split("/", 4)[-1]) for r in map(json.loads, filter(str.strip, lines))]

ln.connect({root!r})
folder = tempfile.mkdtemp()

def save(name):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(name + str(os.getpid()))
    ln.Artifact(path, key="fresh/" + name).save()

first = requests_of(lambda: save("first.txt"))
save("second.txt")
print(json.dumps({{"first": first, "warm": requests_of(lambda: save("third.txt"))}}))
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          check=True)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: {"requests": len(requests), "by_method": {
                m: sum(1 for x in requests if x[0] == m) for m in sorted({x[0] for x in requests})},
                   "log": requests} for name, requests in found.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="timed calls per figure")
    ap.add_argument("--json", default=os.path.join(HERE, "commit_path_results.json"))
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="lamina-commit-bench-")
    os.environ["LAMINA_HOME"] = os.path.join(work, "home")
    os.environ["LAMINA_CACHE_DIR"] = os.path.join(work, "cache")
    os.environ.setdefault("LAMINA_USER_HANDLE", "bench")
    import lamina.log  # noqa: F401
    logging.getLogger("lamina").setLevel(logging.ERROR)
    from lamina.testing import create_bucket, s3_server

    out = {"load_start": load(), "roots": {}}
    print(f"load average at start (1, 5, 15 min): {out['load_start']} (shared machine)")
    local = os.path.join(work, "local")
    os.makedirs(local)
    out["roots"]["local"] = {"one_row_commit": one_row_commits(local, args.n, False),
                             "artifact": artifact_saves(os.path.join(work, "inst"), args.n,
                                                        False)}
    with s3_server():
        create_bucket("commit-bench")
        out["roots"]["s3"] = {
            "one_row_commit": one_row_commits("s3://commit-bench/tables", args.n, True),
            "artifact": artifact_saves("s3://commit-bench/inst", args.n // 2, True),
            "fresh_process": fresh_process_saves("s3://commit-bench/inst")}
    out["load_end"] = load()

    print("\n| root | figure | wall p50 | CPU p50 | requests per call |")
    print("|---|---|---|---|---|")
    for root, figures in out["roots"].items():
        for name in ("write_deltalake", "append_commit"):
            r = figures["one_row_commit"][name]
            requests = ", ".join(f"{m} {k:g}" for m, k in r.get("requests_per_call", {}).items())
            print(f"| {root} | one-row commit, {name} | {r['wall_p50_ms']:.1f} ms | "
                  f"{r['cpu_p50_ms']:.1f} ms | {requests or '—'} |")
        a = figures["artifact"]
        for part in ("construct", "save"):
            print(f"| {root} | `Artifact(file, key=)` {part} | {a[part]['wall_p50_ms']:.1f} ms | "
                  f"{a[part]['cpu_p50_ms']:.1f} ms | "
                  f"{len(a['requests_of_the_last_save']) if part == 'save' and root == 's3' else '—'} |")
    fresh = out["roots"]["s3"]["fresh_process"]
    print(f"\nS3, a new process: first `Artifact(file, key=).save()` "
          f"{fresh['first']['requests']} requests {fresh['first']['by_method']}, "
          f"a warm one {fresh['warm']['requests']} {fresh['warm']['by_method']}")
    print(f"\nload average at end: {out['load_end']}")
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"raw results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
