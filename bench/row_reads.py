#!/usr/bin/env python
"""What reading one row of a registry file by position costs, by reader and by page layout
(issue 11: ``get`` of a row not read before): the guide's artifact table, its largest data file
as lamina wrote it, read at random positions by pyarrow (the whole row group, footer kept: the
row index before), by polars (a sliced scan of the 256-row block holding the row: the row index
now; of the one row; of the id column only, what a scan costs before it decodes anything), by
DuckDB (``file_row_number`` = the position, footer cache on), and the footer's parse alone.
Then the table rewritten by deltalake with smaller data pages (1,024 rows) and a 32 KiB
dictionary limit (unique text falls back to plain pages), to see whether polars skipping pages
pays for what DuckDB's scans lose.

    python bench/row_reads.py                  # 1e5 and 1e6 artifacts
    python bench/row_reads.py --sizes 1e5

The catalog is built as ``bench/guide.py`` builds it. p50 of >= 15 runs, wall and process
CPU (the machine is shared: CPU is what a read costs; polars' worker threads are in it). Raw
results: ``bench/row_reads_results.json``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from _common import load, run_sizes, use_this_tree, write_results

use_this_tree()

from guide import built_catalog, measure  # noqa: E402
from row_groups import DISPLAY  # noqa: E402

BLOCK = 256
LAYOUTS = {
    "as written (16 Ki-row groups, default pages)": {},
    "1,024-row pages, 32 KiB dictionaries": {"data_page_row_count_limit": 1024,
                                             "dictionary_page_size_limit": 32 * 1024},
}


def readers(path: str) -> dict:
    """CPU and wall of each way of reading one row of ``path`` at random positions."""
    import duckdb
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    starts = np.cumsum([0] + [metadata.row_group(g).num_rows
                              for g in range(metadata.num_row_groups)])
    positions = iter(np.random.default_rng(7).integers(0, metadata.num_rows, 100_000).tolist())

    def pyarrow_group():
        position = next(positions)
        group = int(np.searchsorted(starts, position, side="right") - 1)
        table = pq.ParquetFile(path, metadata=metadata).read_row_group(group, use_threads=False)
        return table.slice(position - int(starts[group]), 1).to_pylist()

    def polars_rows(rows: int, columns=None):
        def read():
            position = next(positions)
            first = position - position % rows
            scan = pl.scan_parquet(path, glob=False, hive_partitioning=False)
            if columns:
                scan = scan.select(columns)
            return scan.slice(first, rows).collect().row(position - first, named=True)
        return read

    con = duckdb.connect(config={"threads": 1})
    con.execute("SET parquet_metadata_cache = true")
    sql = (f"SELECT * FROM read_parquet('{path}', file_row_number = true) "
           "WHERE file_row_number = ?")
    found = {
        f"polars, the {BLOCK}-row block": measure(polars_rows(BLOCK)),
        "polars, the one row": measure(polars_rows(1)),
        "polars, the id column only": measure(polars_rows(1, ["id"])),
        "pyarrow, the row group (footer kept)": measure(pyarrow_group),
        "DuckDB, file_row_number = position": measure(
            lambda: con.execute(sql, [next(positions)]).fetchall()),
        "footer parse (pyarrow)": measure(lambda: pq.read_metadata(path)),
    }
    con.close()
    return {"rows": metadata.num_rows, "row_groups": metadata.num_row_groups,
            "footer_bytes": metadata.serialized_size, "bytes": os.path.getsize(path),
            "reads": found, "load": load()}


def scans(files: list[str]) -> dict:
    """Raw DuckDB over ``files``: what a layout does to the queries people run."""
    import duckdb

    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    con.execute("SET late_materialization_max_rows = 1000")
    listed = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet([{listed}])")
    queries = {
        "top 100 by id of suffix='.h5ad', display columns":
            f"SELECT {', '.join(DISPLAY)} FROM t WHERE suffix = '.h5ad' "
            "ORDER BY id DESC LIMIT 100",
        "count of f_4 > 0.5 (a feature)": "SELECT count(*) FROM t WHERE f_4 > 0.5",
        "get by key (a point query)": "SELECT * FROM t WHERE key = 'atlas/cells_7.h5ad'",
    }
    found = {name: measure(lambda sql=sql: con.execute(sql).fetchall())
             for name, sql in queries.items()}
    con.close()
    return found


def run_size(n: int) -> dict:
    from deltalake import WriterProperties, write_deltalake

    import lamina as ln
    from lamina.catalog.deltalake_commit import WRITER_PROPERTIES

    with built_catalog(n, "rowreads") as built:
        snapshot = ln.current().store(ln.Artifact._spec).snapshot()
        rows = snapshot.read().sort_by("id")
        written = max((snapshot.location.arrow_path(f) for f in snapshot.files),
                      key=os.path.getsize)
        results = [{"layout": "as lamina wrote it (largest file)", **readers(written),
                    "scans": scans([snapshot.location.arrow_path(f) for f in snapshot.files])}]
    print(f"  n={n:,} as written: {summary(results[-1])}", file=sys.stderr, flush=True)
    work = tempfile.mkdtemp(prefix="lamina-rowreads-")
    try:
        for name, options in LAYOUTS.items():
            folder = os.path.join(work, str(len(results)))
            write_deltalake(folder, rows, writer_properties=WriterProperties(
                max_row_group_size=16_384, compression="SNAPPY", **options))
            files = [os.path.join(folder, f) for f in os.listdir(folder)
                     if f.endswith(".parquet")]
            results.append({"layout": name, "writer": options or repr(WRITER_PROPERTIES),
                            **readers(max(files, key=os.path.getsize)), "scans": scans(files)})
            print(f"  n={n:,} {name}: {summary(results[-1])}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "build": built, "layouts": results}


def summary(row: dict) -> str:
    return ", ".join(f"{k} {v['cpu_p50_ms']:.2f}" for k, v in
                     [*row["reads"].items(), *row["scans"].items()]) + f" ms cpu, load {row['load']}"


def main() -> None:
    results, path = run_sizes(__doc__, "row_reads_results.json", run_size)
    print("| n | layout | rows / groups / footer of the file | read (CPU p50) | ms | load |\n"
          "|---|---|---|---|---|---|")
    for size in results["sizes"]:
        for row in size["layouts"]:
            shape = (f"{row['rows']:,} / {row['row_groups']} / "
                     f"{row['footer_bytes'] / 1024:.0f} KiB")
            for name, value in [*row["reads"].items(), *row["scans"].items()]:
                print(f"| {size['n']:,} | {row['layout']} | {shape} | {name} | "
                      f"{value['cpu_p50_ms']:.2f} | {row['load']} |")
    write_results(results, path)


if __name__ == "__main__":
    main()
