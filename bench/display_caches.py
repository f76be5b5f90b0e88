#!/usr/bin/env python
"""What the per-version caches of the displays and relation counts cost to build and hold
(issue 11): the copy of the artifact registry's newest rows (Session.newest_rows) and the index
of each list column the guide's filters test (Session.rows_holding, engine/list_index.py).

    python bench/display_caches.py                 # 1e5 and 1e6 artifacts
    python bench/display_caches.py --sizes 1e6

The catalog is bench/guide.py's (built by it, in a child process, in a temporary folder). In
a fresh session after ``ln.connect``, each cache is made by the call that first needs it (a
display, a count) once the version has lasted; then each is dropped and built again on the
same version, timed (wall and process CPU, median of --repeats), with its size: the index's
arrays, and the growth of DuckDB's in-memory tables for the copy. A cache is built once per
table version, by the first display or count after the version has lasted 0.2 s; every later
call of that version reads it. Writes ``display_caches_results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import HERE, load, new_results, use_this_tree, write_results

use_this_tree()

from guide import built_catalog  # noqa: E402


def timed(fn, repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return {"wall_ms": round(statistics.median(walls), 2),
            "cpu_ms": round(statistics.median(cpus), 2), "load": load()}


def in_memory_tables_bytes(con) -> int:
    row = con.execute("SELECT memory_usage_bytes FROM duckdb_memory() "
                      "WHERE tag = 'IN_MEMORY_TABLE'").fetchone()
    return int(row[0]) if row else 0


def run_size(n: int, repeats: int) -> dict:
    import lamina as ln
    from lamina import bionty as bt
    from lamina.engine import session as session_module

    with built_catalog(n, "caches"):
        A = ln.Artifact
        dmso, cd8a = ln.Record.get(name="DMSO"), bt.Gene.get(symbol="CD8A")
        calls = [lambda: A.filter(records=dmso).count(),
                 lambda: A.filter(schemas__genes=cd8a).count(),
                 lambda: A.filter(perturbation="DMSO").count(),
                 lambda: A.filter(records=dmso).to_dataframe()]
        for call in calls:
            call()
        time.sleep(session_module.IN_MEMORY_AFTER_SECONDS + 0.05)
        for call in calls:  # made here, by the calls that need them
            call()
        session = session_module.session_for(ln.current())
        spec = A._spec
        version = session.current_version(spec)
        rows = {"n": n, "links": {}, "indexes": [], "newest_rows": None}
        for column in sorted({key[1] for key in session._caches._list_indexes}):
            def build(column=column):
                session._caches._list_indexes.pop((spec.qualified, column), None)
                return session._caches._list_index(spec, version, column)
            cost = timed(build, repeats)
            index = build()
            links = session.con.execute(
                f'SELECT sum(len("{column}")) FROM "{spec.view}" WHERE branch_id = 1'
            ).fetchone()[0]
            rows["indexes"].append({"column": column, "links": int(links or 0),
                                    "bytes": index.nbytes, **cost})
        table = session._newest[spec.qualified][1]

        def copy():
            session.con.execute(f'DROP TABLE IF EXISTS "{table}"')
            session._newest.pop(spec.qualified, None)
            before = in_memory_tables_bytes(session.con)
            session.newest_rows(spec)
            return in_memory_tables_bytes(session.con) - before
        cost = timed(copy, repeats)
        rows["newest_rows"] = {"ids": session_module.NEWEST_IN_MEMORY_IDS, "bytes": copy(),
                               **cost}
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=os.path.join(HERE, "display_caches_results.json"))
    args = parser.parse_args()
    results = new_results(sizes=[])
    print("| n | cache | links / ids | build wall | build CPU | memory | load |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        found = run_size(int(float(size)), args.repeats)
        results["sizes"].append(found)
        for index in found["indexes"]:
            print(f"| {found['n']:,} | list index `{index['column']}` | {index['links']:,} | "
                  f"{index['wall_ms']} ms | {index['cpu_ms']} ms | "
                  f"{index['bytes'] / 2**20:.1f} MiB | {index['load']} |")
        newest = found["newest_rows"]
        print(f"| {found['n']:,} | newest rows copy | {newest['ids']:,} | {newest['wall_ms']} ms | "
              f"{newest['cpu_ms']} ms | {newest['bytes'] / 2**20:.1f} MiB | {newest['load']} |",
              flush=True)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
