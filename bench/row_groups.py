#!/usr/bin/env python
"""What the row-group size of a registry file costs and buys (issue 11: ``get`` of a row not
read before): the guide's artifact table rewritten with row groups of 1,024 to 16,384 rows,
measured on the same rows with raw DuckDB (a filtered top 100 by id, a feature count, a
two-column aggregate over every row), with pyarrow reading the row group of one row (what the
row index does for a row not read before), the footer's size and parse time, and the
deltalake writer's time for the whole table (what bulk ingest pays).

    python bench/row_groups.py                  # 1e5 and 1e6 artifacts
    python bench/row_groups.py --sizes 1e5

The catalog is built as ``bench/guide.py`` builds it. p50 of >= 15 runs, wall and process
CPU (the machine is shared: CPU is what a call costs). Raw results:
``bench/row_groups_results.json``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from _common import load, run_sizes, use_this_tree, write_results

use_this_tree()

from guide import built_catalog, measure  # noqa: E402

ROW_GROUPS = (1024, 2048, 4096, 16_384)
# The columns of the default display, as the guide's bench shows them (a subset is enough to
# weigh a row group: text, numbers, lists).
DISPLAY = ["id", "uid", "key", "description", "suffix", "kind", "size", "hash", "created_at",
           "is_latest", "records", "schemas", "f_4", "f_5", "f_8"]


def run_size(n: int) -> dict:
    import duckdb
    import numpy as np
    import pyarrow.parquet as pq
    from deltalake import WriterProperties, write_deltalake

    import lamina as ln

    with built_catalog(n, "rowgroups") as built:
        rows = ln.current().store(ln.Artifact._spec).snapshot().read().sort_by("id")
    work = tempfile.mkdtemp(prefix="lamina-rowgroups-")
    results = []
    try:
        for size in ROW_GROUPS:
            folder = os.path.join(work, f"delta_{size}")
            w0, c0 = time.perf_counter(), time.process_time()
            write_deltalake(folder, rows, writer_properties=WriterProperties(
                max_row_group_size=size, compression="SNAPPY"))
            write = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
            files = [os.path.join(folder, f) for f in os.listdir(folder)
                     if f.endswith(".parquet")]
            con = duckdb.connect(config={"threads": os.cpu_count() or 2})
            con.execute("SET late_materialization_max_rows = 1000")
            listed = ", ".join(f"'{f}'" for f in files)
            con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet([{listed}])")
            shown = [c for c in DISPLAY if c in rows.column_names]
            queries = {
                "top 100 by id of suffix='.h5ad', display columns":
                    f"SELECT {', '.join(shown)} FROM t WHERE suffix = '.h5ad' "
                    "ORDER BY id DESC LIMIT 100",
                "count of f_4 > 0.5 (a feature)": "SELECT count(*) FROM t WHERE f_4 > 0.5",
                "sum(size), distinct suffixes over all rows":
                    "SELECT sum(size), count(DISTINCT suffix) FROM t",
            }
            row = {"row_group_rows": size, "files": len(files),
                   "bytes": sum(os.path.getsize(f) for f in files), "write": write,
                   "load": load(), "queries": {}}
            for name, sql in queries.items():
                row["queries"][name] = measure(
                    lambda con=con, sql=sql: con.execute(sql).fetchall())
            # One row by position, as the row index reads a row not read before: the row
            # group holding it, every column, footer kept.
            biggest = max(files, key=os.path.getsize)
            metadata = pq.read_metadata(biggest)
            starts = np.cumsum([0] + [metadata.row_group(g).num_rows
                                      for g in range(metadata.num_row_groups)])
            positions = iter(np.random.default_rng(7).integers(0, metadata.num_rows, 10_000))

            def one_row(biggest=biggest, metadata=metadata, starts=starts,
                        positions=positions):
                position = int(next(positions))
                group = int(np.searchsorted(starts, position, side="right") - 1)
                table = pq.ParquetFile(biggest, metadata=metadata).read_row_group(
                    group, use_threads=False)
                return table.slice(position - int(starts[group]), 1).to_pylist()

            row["one row by position (pyarrow)"] = measure(one_row)
            row["footer_bytes"] = metadata.serialized_size
            row["footer parse"] = measure(lambda biggest=biggest: pq.read_metadata(biggest))
            results.append(row)
            print(f"  n={n:,} row groups of {size:,}: write {write['wall_s']:.2f} s, "
                  + ", ".join(f"{k[:18]} {v['cpu_p50_ms']:.2f}"
                              for k, v in row["queries"].items())
                  + f", one row {row['one row by position (pyarrow)']['cpu_p50_ms']:.2f} ms"
                  f" cpu, footer {row['footer_bytes'] / 1024:.0f} KiB  load {row['load']}",
                  file=sys.stderr, flush=True)
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "build": built, "row_groups": results}


def main() -> None:
    results, path = run_sizes(__doc__, "row_groups_results.json", run_size)
    print("| n | rows a group | write (deltalake) | top 100 display | f_4 count | "
          "aggregate | one row by position | footer | load |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for size in results["sizes"]:
        for row in size["row_groups"]:
            q = [v["cpu_p50_ms"] for v in row["queries"].values()]
            print(f"| {size['n']:,} | {row['row_group_rows']:,} | {row['write']['wall_s']:.2f} s "
                  f"| {q[0]:.2f} ms | {q[1]:.2f} ms | {q[2]:.2f} ms | "
                  f"{row['one row by position (pyarrow)']['cpu_p50_ms']:.2f} ms | "
                  f"{row['footer_bytes'] / 1024:.0f} KiB | {row['load']} |")
    write_results(results, path)


if __name__ == "__main__":
    main()
