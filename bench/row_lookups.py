#!/usr/bin/env python
"""One-row lookups on the guide's catalog (issue 11's ``get()`` row): by key, uid, hash and id,
a row asked again and rows never read before, beside raw DuckDB's point query on the same files;
what the per-file index costs to build and hold; and one local ``Artifact(file, key=).save()``
after them, repeated (issue 11's save row).

    python bench/row_lookups.py                 # 1e5 and 1e6 artifacts
    python bench/row_lookups.py --sizes 1e5

The catalog is built as ``bench/guide.py`` builds it (its ``--build``, in a child process),
then measured in a fresh session after ``ln.connect``. ``first get`` is the first
``get(key=)`` of the session: it indexes the key column of every data file. ``same row``
figures repeat one call (the row is read once, then kept); ``new rows`` ask a different
artifact each call, each in another row group than the calls before, so each call reads its
row from Parquet (a block of a row group: engine/row_index.py); ``neighbouring new rows`` ask
the artifacts of a listing one by one in its order (the block read for the first serves the
next). The second row read from a data file starts a decoded copy of that file
(engine/row_cache.py) in the background: the bench waits for it and reports when it was ready,
so the new rows after it are served from copies (a later miss); ``copies`` in the results
holds their bytes on disk, the cost of building each timed by itself, and the peak RSS before
and after those timed builds (the pages of the copies the process mapped count in it). p50 of
>= 15 runs, wall and process CPU. Then SAVES saves of a new small file under a new key, one
after another into the same catalog: p50 and mean (the mean carries the compactions every ~32
saves), and the slowest. Raw results: ``bench/row_lookups_results.json``.
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import load, run_sizes, use_this_tree, write_results

use_this_tree()

from guide import built_catalog, measure, raw_connection  # noqa: E402


# Ids between the rows "new rows" ask one after another: more than a row group (16 Ki rows).
ROW_GROUP_STEP = 16_411
# Saves measured one after another: enough to pass the compaction threshold (32 files) three
# times.
SAVES = 100


def saves(ln) -> dict:
    """SAVES warm ``Artifact(file, key=).save()`` calls, wall and CPU per call."""
    folder = tempfile.mkdtemp(prefix="lamina-saves-")
    paths = []
    for i in range(SAVES + 3):
        paths.append(os.path.join(folder, f"{i}.txt"))
        with open(paths[-1], "w") as f:
            f.write(f"saved file {i} of the bench")
    for path in paths[:3]:  # warm: the save path's imports and first index reads
        ln.Artifact(path, key=f"bench/saves/{os.path.basename(path)}").save()
    walls, cpus = [], []
    for path in paths[3:]:
        w0, c0 = time.perf_counter(), time.process_time()
        ln.Artifact(path, key=f"bench/saves/{os.path.basename(path)}").save()
        walls.append((time.perf_counter() - w0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    shutil.rmtree(folder, ignore_errors=True)
    return {"runs": SAVES, "p50_ms": statistics.median(walls),
            "cpu_p50_ms": statistics.median(cpus), "mean_ms": statistics.mean(walls),
            "cpu_mean_ms": statistics.mean(cpus), "max_ms": max(walls), "load": load()}


def resident() -> dict:
    """The process's resident memory now, split as Linux does: anonymous (its own) and
    file-backed (pages of mapped files, such as the copies: shared, and dropped by the kernel
    under pressure)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                found[name] = int(value.split()[0]) * 1024
    return found


def copy_costs(ln, A) -> dict:
    """The decoded copies of the registry's data files (engine/row_cache.py): bytes on disk,
    and what building each costs when timed by itself (into a scratch folder), and the
    process's peak RSS so far (the pages of the copies it mapped count in it)."""
    from lamina.engine import row_cache
    from lamina.engine.row_index import _DataFile

    peak_before_builds = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    folder = row_cache.folder()
    disk = sum(p.stat().st_size for p in folder.glob("*" + row_cache.SUFFIX))
    snapshot = ln.current().store(A._spec).snapshot()
    builds = []
    scratch = tempfile.mkdtemp(prefix="lamina-copy-")
    try:
        for file in snapshot.files:
            data = _DataFile(snapshot, file)
            copy = Path(scratch) / "copy.arrow"  # a build keeps a copy already in place
            copy.unlink(missing_ok=True)
            w0, c0 = time.perf_counter(), time.process_time()
            row_cache.build(copy, data.metadata.num_rows, data.row_groups(), limit=2**62)
            builds.append({"rows": data.metadata.num_rows,
                           "parquet_bytes": data.size,
                           "copy_bytes": copy.stat().st_size,
                           "wall_s": round(time.perf_counter() - w0, 3),
                           "cpu_s": round(time.process_time() - c0, 3), "load": load()})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"disk_bytes": disk, "builds": builds, "peak_rss_bytes": peak_before_builds,
            "rss_now_bytes": resident(),
            "peak_rss_after_timed_builds_bytes":
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_size(n: int) -> dict:
    import lamina as ln
    from lamina.engine.session import session_for

    with built_catalog(n, "rowget") as built:
        A = ln.Artifact
        w0, c0 = time.perf_counter(), time.process_time()
        probe = A.get(key="atlas/cells_7.h5ad")
        first = {"p50_ms": (time.perf_counter() - w0) * 1e3,
                 "cpu_p50_ms": (time.process_time() - c0) * 1e3, "runs": 1}
        rows = [{"name": "first get(key=) of the session (indexes key)", "lamina": first,
                 "load": load()}]
        # That get read its row from Parquet; a second row of the same file starts the copy
        # of the file in the background; until the copy is in place, rows not read before
        # come from Parquet.
        A.get(key="atlas/cells_8.h5ad")
        cache = session_for(ln.current())._by_value.row_index.row_cache
        cache.wait()
        copy_ready = {"p50_ms": (time.perf_counter() - w0) * 1e3, "runs": 1}
        rows.append({"name": "first get(key=) and a second row of its file, until the copy of the file is built (wall)",
                     "lamina": {**copy_ready, "cpu_p50_ms": None}, "load": load()})
        for name, call in (("first get(uid) (indexes uid)", lambda: A.get(probe.uid)),
                           ("first filter(hash=).first() (indexes hash)",
                            lambda: A.filter(hash=probe.hash).first())):
            w0, c0 = time.perf_counter(), time.process_time()
            call()
            rows.append({"name": name, "lamina": {
                "p50_ms": (time.perf_counter() - w0) * 1e3,
                "cpu_p50_ms": (time.process_time() - c0) * 1e3, "runs": 1}, "load": load()})
        index_bytes = session_for(ln.current())._by_value.row_index.nbytes()
        # New rows: each call a row of another row group than the two calls before (a step
        # longer than a group), so that neither a kept row nor a kept group answers it.
        spread = [(11 + k * (ROW_GROUP_STEP)) % n for k in range(n // ROW_GROUP_STEP * 40)]
        keys = itertools.cycle([f"atlas/cells_{i}.h5ad" for i in spread])
        # Stems of artifacts not read yet, taken from the files (not through the session).
        stored = ln.current().store(A._spec).snapshot().read(columns=["id", "uid"])
        uids, row_ids = stored.column("uid"), stored.column("id")
        stems = itertools.cycle([uids[(i + 5) % n].as_py()[:16] for i in spread])
        ids = itertools.cycle([row_ids[(i + 3) % n].as_py() for i in spread])
        # Neighbouring rows: a listing's artifacts asked one by one in its order.
        listing = iter([f"atlas/cells_{i}.h5ad" for i in range(n // 2, n)])
        cases = [
            ("get(key=), same row", lambda: A.get(key="atlas/cells_7.h5ad")),
            ("get(uid), same row", lambda: A.get(probe.uid)),
            ("get(id), same row", lambda: A.get(probe.id)),
            ("filter(hash=).first(), same row", lambda: A.filter(hash=probe.hash).first()),
            ("get(key=), new rows", lambda: A.get(key=next(keys))),
            ("get(id), new rows", lambda: A.get(next(ids))),
            ("get(uid[:16]) (stem uid: the newest version), same row",
             lambda: A.get(probe.uid[:16])),
            ("get(uid[:16]), new rows", lambda: A.get(next(stems))),
            ("get(key=), neighbouring new rows (a listing in order)",
             lambda: A.get(key=next(listing))),
        ]
        for name, call in cases:
            rows.append({"name": name, "lamina": measure(call), "load": load()})
            print(f"  n={n:,} {name:45s} {rows[-1]['lamina']['p50_ms']:8.2f} ms "
                  f"(cpu {rows[-1]['lamina']['cpu_p50_ms']:.2f})  load {rows[-1]['load']}",
                  file=sys.stderr, flush=True)
        cache.wait()  # copies of the other files the new rows fell in
        copies = copy_costs(ln, A)
        print(f"  n={n:,} copies: {copies}", file=sys.stderr, flush=True)
        con = raw_connection(ln)
        sql = "SELECT * FROM artifact WHERE key = ? AND is_latest AND branch_id = 1 LIMIT 2"
        assert con.execute(sql, [probe.key]).to_arrow_table()["id"].to_pylist() == [probe.id]
        raw = measure(lambda: con.execute(sql, [next(keys)]).to_arrow_table().to_pylist())
        rows.append({"name": "raw DuckDB: " + sql, "lamina": raw, "load": load()})
        con.close()
        saved = saves(ln)
        print(f"  n={n:,} {SAVES} saves: p50 {saved['p50_ms']:.2f} ms (cpu "
              f"{saved['cpu_p50_ms']:.2f}), mean {saved['mean_ms']:.2f} ms, max "
              f"{saved['max_ms']:.0f} ms  load {saved['load']}", file=sys.stderr, flush=True)
        return {"n": n, "build": built, "index_bytes_key_uid_hash": index_bytes, "rows": rows,
                "saves": saved, "copies": copies}


def main() -> None:
    results, path = run_sizes(__doc__, "row_lookups_results.json", run_size)
    print("| n | call | p50 | CPU p50 | load |\n|---|---|---|---|---|")
    for size in results["sizes"]:
        for row in size["rows"]:
            lam = row["lamina"]
            cpu = "—" if lam["cpu_p50_ms"] is None else f"{lam['cpu_p50_ms']:.2f} ms"
            print(f"| {size['n']:,} | {row['name']} | {lam['p50_ms']:.2f} ms | "
                  f"{cpu} | {row.get('load', '—')} |")
        copies = size["copies"]
        print(f"| {size['n']:,} | copies of the artifact files on disk | "
              f"{copies['disk_bytes'] / 2**20:.0f} MiB | | |")
        for built in copies["builds"]:
            print(f"| {size['n']:,} | building the copy of a {built['rows']:,}-row file "
                  f"({built['parquet_bytes'] / 2**20:.1f} MiB Parquet, "
                  f"{built['copy_bytes'] / 2**20:.0f} MiB copy) | {built['wall_s'] * 1e3:.0f} ms | "
                  f"{built['cpu_s'] * 1e3:.0f} ms | {built['load']} |")
        print(f"| {size['n']:,} | peak RSS of the process so far (after the timed builds) | "
              f"{copies['peak_rss_bytes'] / 2**20:.0f} MiB "
              f"({copies['peak_rss_after_timed_builds_bytes'] / 2**20:.0f} MiB) | | |")
        now = copies["rss_now_bytes"]
        print(f"| {size['n']:,} | resident now: anonymous / mapped files | "
              f"{now['RssAnon'] / 2**20:.0f} / {now['RssFile'] / 2**20:.0f} MiB | | |")
        print(f"| {size['n']:,} | index of key, uid, hash and the files' ids (bytes held) | "
              f"{size['index_bytes_key_uid_hash'] / 2**20:.1f} MiB | | |")
        saved = size["saves"]
        print(f"| {size['n']:,} | one `Artifact(file, key=).save()`, p50 of {saved['runs']} | "
              f"{saved['p50_ms']:.2f} ms | {saved['cpu_p50_ms']:.2f} ms | {saved['load']} |")
        print(f"| {size['n']:,} | the same, mean (compactions included); slowest "
              f"{saved['max_ms']:.0f} ms | {saved['mean_ms']:.2f} ms | "
              f"{saved['cpu_mean_ms']:.2f} ms | {saved['load']} |")
    results["peak_rss_end_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak RSS of the process at its end: {results['peak_rss_end_bytes'] / 2**20:.0f} MiB")
    write_results(results, path)


if __name__ == "__main__":
    main()
