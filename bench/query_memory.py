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
twice: ``first`` right after connecting (the artifact version shown for less than
``IN_MEMORY_AFTER_SECONDS``, so no per-version cache is made and the call runs its plain
statement), and ``kept`` after that wait (the call makes and uses the caches of the version:
held rows, list indexes, kept columns). A last process runs every call one after another, as
guide.py does, and records the high-water mark after each (caches of all calls growing).

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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [os.path.dirname(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, os.path.dirname(HERE))

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


def child(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; its JSON answer."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                         capture_output=True, text=True, env=dict(os.environ))
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
             "| call | baseline | first: peak | first: call's own | kept: peak | "
             "kept: call's own | kept: s |", "|---|---|---|---|---|---|---|"]
    for row in result["calls"]:
        first, kept = row["first"], row["kept"]
        lines.append(f"| `{row['name']}` | {mib(first['rss_before'])} MiB | "
                     f"{mib(first['peak_after'])} MiB | "
                     f"{mib(first['peak_after'] - first['rss_before'])} MiB | "
                     f"{mib(kept['peak_after'])} MiB | "
                     f"{mib(kept['peak_after'] - kept['rss_before'])} MiB | "
                     f"{kept['seconds']} |")
    seq = result["sequence"]
    lines += ["", f"All calls in one process (after connect: {mib(seq['after_connect_peak'])} "
              "MiB):", "", "| after call | peak | RSS |", "|---|---|---|"]
    lines += [f"| `{c['name']}` | {mib(c['peak_after'])} MiB | {mib(c['rss_after'])} MiB |"
              for c in seq["calls"]]
    lines += ["", "Kept by the session after them (MiB): " + json.dumps(
        {cache: {k: mib(v) for k, v in kept.items()} if isinstance(kept, dict) else mib(kept)
         for cache, kept in seq["kept_bytes"].items()})]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e5)
    parser.add_argument("--root", help="a catalog guide.py built (checked: n artifacts)")
    parser.add_argument("--json", default=os.path.join(HERE, "query_memory_results.json"))
    parser.add_argument("--one", nargs=2, metavar=("ROOT", "INDEX"), help=argparse.SUPPRESS)
    parser.add_argument("--all", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--check", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one or args.all or args.check:
        answer = (one_call(args.one[0], int(args.one[1])) if args.one
                  else all_calls(args.all) if args.all else check(args.check))
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
        import lamina as ln
        from lamina import bionty as bt

        ln, bt = connected(root)
        names = [case["name"] for case in guide.cases(ln, bt)]
        results = {"machine": guide.ingest.machine(), "load_start": os.getloadavg(), "n": n,
                   "calls": []}
        for index, name in enumerate(names):
            row = child("--one", root, str(index))
            row["load"] = round(os.getloadavg()[0], 2)
            results["calls"].append(row)
            own = max(row[p]["peak_after"] - row[p]["rss_before"] for p in ("first", "kept"))
            guide.log(f"  {name:55s} own peak {mib(own):8.1f} MiB  load {row['load']}")
        results["sequence"] = child("--all", root)
        print(markdown(results) + "\n", flush=True)
        guide.write_results(results, args.json)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
