#!/usr/bin/env python
"""Peak memory of one guide call (issue 11: "peak memory of a query <= 1 GiB" at 1e7 artifacts).

    python bench/query_memory.py --root /path/to/root --n 10000000   # a catalog guide.py built
    python bench/query_memory.py --n 100000                           # build one (guide's builder)

Each call of ``bench/guide.py`` runs in a fresh process: import lamina, ``ln.connect``, the
guide's setup (the few small-registry reads its calls need), then the call. Recorded there:
the process's resident memory just before the call (``VmRSS``, the baseline) and its high-water
mark (``ru_maxrss``) after the call, so the call's own peak is the difference. The high-water
mark is reset to the baseline just before the call (``/proc/self/clear_refs``), so it is the
call's and not that of the import, which peaks above where it settles. Each call runs
twice: ``first`` right after the setup, and ``kept`` after waiting
``IN_MEMORY_AFTER_SECONDS``, so that the version has lasted and the call makes (or uses) the
caches of the version: held rows, list indexes, kept columns. Whether the ``first`` call
already makes them depends on how long connecting and the setup took (the version counts as
shown from the first view made), so the call's peak is the larger of the two. A last process runs every call one after another, as
guide.py does, and records the high-water mark after each (caches of all calls growing), and
what the session keeps then. Last, two statements heavier than any guide call run on a DuckDB
connection set up as lamina's, under DuckDB's default memory_limit and under smaller ones.

Writes ``query_memory_results.json`` beside this script (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from _common import HERE, load, new_results, use_this_tree, write_results

use_this_tree()

import guide  # noqa: E402  (the catalog's builder and the calls)

MIB = 2**20


def rss_now() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_peak() -> int:
    """This process's high-water mark of resident bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> int:
    """Reset this process's high-water mark to its resident bytes now (Linux >= 4.0), and
    return those."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_now()


def connected(root: str):
    import logging

    import lamina as ln
    from lamina import bionty as bt

    ln.connect(root)
    logging.getLogger("lamina").setLevel(logging.WARNING)
    return ln, bt


def one_call(root: str, index: int) -> dict:
    """In this (fresh) process: connect, then call ``index`` of guide.cases, first and kept."""
    from lamina.engine.session import IN_MEMORY_AFTER_SECONDS

    ln, bt = connected(root)
    after_connect = rss_peak()
    case = guide.cases(ln, bt)[index]
    out = {"name": case["name"], "after_connect_peak": after_connect}
    for phase in ("first", "kept"):
        if phase == "kept":
            time.sleep(IN_MEMORY_AFTER_SECONDS + 0.05)
        before, t0 = reset_peak(), time.perf_counter()
        case["call"]()
        out[phase] = {"rss_before": before, "peak_after": rss_peak(), "rss_after": rss_now(),
                      "seconds": round(time.perf_counter() - t0, 3)}
    return out


def all_calls(root: str) -> dict:
    """In this (fresh) process: every call one after another (first, then kept), with the
    high-water mark after each."""
    from lamina.engine.session import IN_MEMORY_AFTER_SECONDS

    ln, bt = connected(root)
    out = {"after_connect_peak": rss_peak(), "calls": []}
    for case in guide.cases(ln, bt):
        case["call"]()
        time.sleep(IN_MEMORY_AFTER_SECONDS + 0.05)
        case["call"]()
        out["calls"].append({"name": case["name"], "peak_after": rss_peak(),
                             "rss_after": rss_now()})
    out["kept_bytes"] = kept_bytes(ln)
    return out


def kept_bytes(ln) -> dict:
    """What the session keeps per version, by cache, in bytes."""
    from lamina.engine.session import session_for

    session = session_for(ln.current())
    caches = session._caches
    return {"list_indexes": {f"{table}.{column}": index.nbytes
                             for (table, column), (_, index) in caches._list_indexes.items()},
            "row_columns": {table: kept.nbytes for table, kept in caches._row_columns.items()},
            "held_rows": {table: held.table.nbytes for table, (_, held) in session._held.items()},
            "read_by_id": sum(held.table.nbytes for _, held in caches._read_by_id.values()),
            # DuckDB's buffer manager on the session's connection: temp tables (newest rows,
            # small registries copied), cached file data, and what operators still hold.
            "duckdb": dict(session.con.execute(
                "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                "WHERE memory_usage_bytes > 0").fetchall())}


# Statements heavier than any guide call, over the artifact table's files, to see what
# DuckDB's memory_limit does to them (lamina.engine.connections.MEMORY_LIMIT).
HEAVY = {"GROUP BY key (1e7 groups), counted":
         "SELECT count(*) FROM (SELECT key, count(*) FROM {src} GROUP BY key)",
         "4 columns of every row ORDER BY key, as Arrow":
         "SELECT id, key, size, created_at FROM {src} ORDER BY key"}


def under_limit(root: str, limit: str) -> dict:
    """In this (fresh) process: HEAVY on a DuckDB connection set up as lamina's, with
    ``memory_limit`` ``limit`` ("default": DuckDB's own), each statement's own peak."""
    import duckdb

    from lamina.engine import connections

    ln, _ = connected(root)
    store = ln.current().store(ln.Artifact._spec)
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    spill = tempfile.mkdtemp(prefix="lamina-query-memory-spill-")
    if limit != "default":
        con.execute(f"SET memory_limit = '{limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
    connections.confine_to_catalog(con, store.location)
    src = connections.parquet_source(store.snapshot().files)
    out = {"limit": limit, "setting": con.execute(
        "SELECT current_setting('memory_limit')").fetchone()[0], "statements": {}}
    for name, sql in HEAVY.items():
        before, t0 = reset_peak(), time.perf_counter()
        try:
            rows = con.execute(sql.format(src=src)).to_arrow_table()
            answer = {"rows": rows.num_rows, "arrow_bytes": rows.nbytes}
            del rows
        except duckdb.Error as exc:
            answer = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        out["statements"][name] = {**answer, "rss_before": before, "peak_after": rss_peak(),
                                   "seconds": round(time.perf_counter() - t0, 2)}
    shutil.rmtree(spill, ignore_errors=True)
    return out


def child(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; its JSON answer."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                         capture_output=True, text=True, env=dict(os.environ), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_root(root: str, n: int) -> None:
    """Refuse a catalog that is not the guide's of ``n`` artifacts (with its schema links)."""
    answer = child("--check", root)
    if answer["artifacts"] != n or not answer["schema_links"]:
        raise SystemExit(f"{root} holds {answer}, not the guide's catalog of {n:,} artifacts")


def check(root: str) -> dict:
    ln, _ = connected(root)
    return {"artifacts": ln.Artifact.filter().count(),
            "schema_links": ln.Artifact.filter(schemas__isnull=False).count() > 0}


def mib(value: int) -> float:
    return round(value / MIB, 1)


def markdown(result: dict) -> str:
    lines = [f"### n = {result['n']:,} artifacts, one call per fresh process", "",
             ("| call | baseline | first: peak | first: call's own | kept: peak | "
              "kept: call's own | kept: s |"), "|---|---|---|---|---|---|---|"]
    for row in result["calls"]:
        first, kept = row["first"], row["kept"]
        lines.append(f"| `{row['name']}` | {mib(first['rss_before'])} MiB | "
                     f"{mib(first['peak_after'])} MiB | "
                     f"{mib(first['peak_after'] - first['rss_before'])} MiB | "
                     f"{mib(kept['peak_after'])} MiB | "
                     f"{mib(kept['peak_after'] - kept['rss_before'])} MiB | "
                     f"{kept['seconds']} |")
    seq = result["sequence"]
    lines += ["", f"All calls in one process (after connect: {mib(seq['after_connect_peak'])} MiB):",
              "", "| after call | peak | RSS |", "|---|---|---|"]
    lines += [f"| `{c['name']}` | {mib(c['peak_after'])} MiB | {mib(c['rss_after'])} MiB |"
              for c in seq["calls"]]
    lines += ["", "Kept by the session after them (MiB): " + json.dumps(
        {cache: {k: mib(v) for k, v in kept.items()} if isinstance(kept, dict) else mib(kept)
         for cache, kept in seq["kept_bytes"].items()})]
    lines += ["", "Heavier statements on a DuckDB connection like lamina's, by memory_limit:", "",
              "| memory_limit | statement | answer | own peak | s |", "|---|---|---|---|---|"]
    for run in result["duckdb_limits"]:
        for name, st in run["statements"].items():
            answer = st.get("error") or f"{st['rows']:,} rows"
            lines.append(f"| {run['limit']} ({run['setting']}) | {name} | {answer} | "
                         f"{mib(st['peak_after'] - st['rss_before'])} MiB | {st['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e5)
    parser.add_argument("--root", help="a catalog guide.py built (checked: n artifacts)")
    parser.add_argument("--json", default=os.path.join(HERE, "query_memory_results.json"))
    parser.add_argument("--one", nargs=2, metavar=("ROOT", "INDEX"), help=argparse.SUPPRESS)
    parser.add_argument("--all", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--check", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--limit", nargs=2, metavar=("ROOT", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one or args.all or args.check or args.limit:
        answer = (one_call(args.one[0], int(args.one[1])) if args.one
                  else all_calls(args.all) if args.all
                  else under_limit(*args.limit) if args.limit else check(args.check))
        print(json.dumps(answer))
        return
    n = int(args.n)
    home = tempfile.mkdtemp(prefix="lamina-query-memory-home-")
    os.environ["LAMINA_HOME"] = home
    os.environ.setdefault("LAMINA_USER_HANDLE", "testuser1")
    workdir = None
    try:
        root = args.root
        if root is None:
            workdir = tempfile.mkdtemp(prefix=f"lamina-query-memory-{n}-")
            guide.log(f"building {n:,} artifacts in {workdir}")
            subprocess.run([sys.executable, os.path.join(HERE, "guide.py"), "--build", str(n),
                            workdir], check=True, capture_output=True, env=dict(os.environ))
            root = os.path.join(workdir, "root")
        check_root(root, n)
        ln, bt = connected(root)
        names = [case["name"] for case in guide.cases(ln, bt)]
        results = new_results(n=n, calls=[])
        for index, name in enumerate(names):
            row = child("--one", root, str(index))
            row["load"] = load()
            results["calls"].append(row)
            own = max(row[p]["peak_after"] - row[p]["rss_before"] for p in ("first", "kept"))
            guide.log(f"  {name:55s} own peak {mib(own):8.1f} MiB  load {row['load']}")
        results["sequence"] = child("--all", root)
        results["duckdb_limits"] = [dict(child("--limit", root, limit),
                                         load=load())
                                    for limit in ("default", "256MiB", "512MiB")]
        print(markdown(results) + "\n", flush=True)
        write_results(results, args.json)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
