#!/usr/bin/env python
"""What one 100,000-row chunk of bulk ingest costs to encode as a Delta data file, with the
store's writer settings and with a dictionary on every column (the settings before
``append_commit.PLAIN_TEXT_COLUMNS``), alternating run by run so both see the same load.

    python bench/ingest_encoding.py [--rows 100000] [--repeats 7]

The rows are real: ``bench/ingest.py``'s manifest ingested into a fresh catalog, then the
artifact table's data file read back. Prints a table (wall and CPU seconds per write, file
size) and writes the raw timings to ``ingest_encoding_results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from _common import HERE, new_results, use_this_tree, write_results

use_this_tree()


def artifact_rows(workdir: str, n: int):
    """The artifact rows ``bench/ingest.py``'s manifest of ``n`` rows becomes."""
    import ingest as ingest_bench
    import pyarrow.parquet as pq

    import lamina as ln

    os.environ["LAMINA_HOME"] = os.path.join(workdir, "home")
    root = os.path.join(workdir, "root")
    manifest = os.path.join(workdir, "manifest.parquet")
    ingest_bench.write_manifest(manifest, n, os.path.realpath(root))
    ln.init(storage=root)
    ingest_bench.register_world()
    ln.save(ln.Artifact.from_manifest(manifest, progress=False, chunk_size=n))
    files = ln.current().store(ln.Artifact._spec).snapshot().files
    return pq.read_table(files[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=os.path.join(HERE, "ingest_encoding_results.json"))
    args = parser.parse_args()
    from deltalake import WriterProperties, write_deltalake

    from lamina.catalog.deltalake_commit import WRITER_PROPERTIES

    workdir = tempfile.mkdtemp(prefix="lamina-bench-encoding-")
    try:
        rows = artifact_rows(workdir, args.rows)
        settings = {
            "store (no dictionary on uid, key, hash, _real_key)": WRITER_PROPERTIES,
            "dictionary on every column (before)": WriterProperties(
                max_row_group_size=16_384, compression="SNAPPY"),
        }
        results = new_results(rows=rows.num_rows, columns=rows.num_columns)
        runs: dict[str, list] = {name: [] for name in settings}
        for _ in range(args.repeats):
            for name, properties in settings.items():
                target = os.path.join(workdir, "table")
                shutil.rmtree(target, ignore_errors=True)
                cpu0, t0 = time.process_time(), time.perf_counter()
                write_deltalake(target, rows, writer_properties=properties)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                size = sum(os.path.getsize(os.path.join(target, f)) for f in os.listdir(target)
                           if f.endswith(".parquet"))
                runs[name].append({"wall_s": wall, "cpu_s": cpu, "bytes": size})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{rows.num_rows:,} artifact rows, {rows.num_columns} columns; {args.repeats} writes "
          "each, alternating\n")
    print("| writer settings | median wall | min wall | median CPU | file size |")
    print("| --- | --- | --- | --- | --- |")
    for name, found in runs.items():
        walls = [r["wall_s"] for r in found]
        cpus = [r["cpu_s"] for r in found]
        print(f"| {name} | {statistics.median(walls):.3f} s | {min(walls):.3f} s | "
              f"{statistics.median(cpus):.3f} s | {found[0]['bytes'] / 1e6:.2f} MB |")
    results["runs"] = runs
    write_results(results, args.json)


if __name__ == "__main__":
    main()
