#!/usr/bin/env python
"""One-row lookups on the guide's catalog (issue 11's ``get()`` row): by key, uid, hash and id,
a row asked again and rows never read before, beside raw DuckDB's point query on the same files;
and what the per-file index costs to build and hold.

    python bench/row_lookups.py                 # 1e5 and 1e6 artifacts
    python bench/row_lookups.py --sizes 1e5

The catalog is built as ``bench/guide.py`` builds it (its ``--build``, in a child process),
then measured in a fresh session after ``ln.connect``. ``first get`` is the first
``get(key=)`` of the session: it indexes the key column of every data file. ``same row``
figures repeat one call (the row is read once, then kept); ``new rows`` ask a different
artifact each call, so each call reads its row from Parquet. p50 of >= 15 runs, wall and
process CPU. Raw results: ``bench/row_lookups_results.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [os.path.dirname(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, os.path.dirname(HERE))

from guide import built_catalog, measure, raw_connection, write_results  # noqa: E402
from ingest import machine  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


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
        for name, call in (("first get(uid) (indexes uid)", lambda: A.get(probe.uid)),
                           ("first filter(hash=).first() (indexes hash)",
                            lambda: A.filter(hash=probe.hash).first())):
            w0, c0 = time.perf_counter(), time.process_time()
            call()
            rows.append({"name": name, "lamina": {
                "p50_ms": (time.perf_counter() - w0) * 1e3,
                "cpu_p50_ms": (time.process_time() - c0) * 1e3, "runs": 1}, "load": load()})
        index_bytes = session_for(ln.current())._row_index.nbytes()
        keys = itertools.cycle([f"atlas/cells_{i}.h5ad" for i in range(11, n, max(n // 5000, 1))])
        ids = itertools.cycle(range(probe.id + 13, probe.id + n - 1, max(n // 5000, 1)))
        cases = [
            ("get(key=), same row", lambda: A.get(key="atlas/cells_7.h5ad")),
            ("get(uid), same row", lambda: A.get(probe.uid)),
            ("get(id), same row", lambda: A.get(probe.id)),
            ("filter(hash=).first(), same row", lambda: A.filter(hash=probe.hash).first()),
            ("get(key=), new rows", lambda: A.get(key=next(keys))),
            ("get(id), new rows", lambda: A.get(next(ids))),
            ("get(uid[:16]) (prefix: a statement)", lambda: A.get(probe.uid[:16])),
        ]
        for name, call in cases:
            rows.append({"name": name, "lamina": measure(call), "load": load()})
            print(f"  n={n:,} {name:45s} {rows[-1]['lamina']['p50_ms']:8.2f} ms "
                  f"(cpu {rows[-1]['lamina']['cpu_p50_ms']:.2f})  load {rows[-1]['load']}",
                  file=sys.stderr, flush=True)
        con = raw_connection(ln)
        sql = "SELECT * FROM artifact WHERE key = ? AND is_latest AND branch_id = 1 LIMIT 2"
        assert con.execute(sql, [probe.key]).to_arrow_table()["id"].to_pylist() == [probe.id]
        raw = measure(lambda: con.execute(sql, [next(keys)]).to_arrow_table().to_pylist())
        rows.append({"name": "raw DuckDB: " + sql, "lamina": raw, "load": load()})
        return {"n": n, "build": built, "index_bytes_key_uid_hash": index_bytes, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6"])
    parser.add_argument("--json", default=os.path.join(HERE, "row_lookups_results.json"))
    args = parser.parse_args()
    results = {"machine": machine(), "load_start": os.getloadavg(), "sizes": []}
    for size in args.sizes:
        results["sizes"].append(run_size(int(float(size))))
    print("| n | call | p50 | CPU p50 | load |\n|---|---|---|---|---|")
    for size in results["sizes"]:
        for row in size["rows"]:
            lam = row["lamina"]
            print(f"| {size['n']:,} | {row['name']} | {lam['p50_ms']:.2f} ms | "
                  f"{lam['cpu_p50_ms']:.2f} ms | {row.get('load', '—')} |")
        print(f"| {size['n']:,} | index of key, uid, hash (bytes held) | "
              f"{size['index_bytes_key_uid_hash'] / 2**20:.1f} MiB | | |")
    write_results(results, args.json)


if __name__ == "__main__":
    main()
