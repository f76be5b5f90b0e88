#!/usr/bin/env python
"""Bulk ingestion benchmark (issue 7), every figure measured in one run on this machine.

    python bench/ingest.py                 # (a)-(e) at 1e5 and 1e6 rows
    python bench/ingest.py --quick         # a smoke run: 1e4 rows, 1e3 files/objects
    python bench/ingest.py --sizes 100000  # (a) at one size only

(a) catalog-side throughput: a Parquet manifest of ``n`` rows, 10 features of mixed dtypes
    (categorical with 1-3 labels on Record, a Record-typed donor, a ULabel cell type, float,
    int, date, datetime, dict (a struct column), bool, str), whose hash and size are known
    (files linked in place under the storage root), from ``ln.Artifact.from_manifest`` to
    committed and queryable (a feature-filtered ``count()`` that agrees with the manifest).
    Each size runs in a fresh child process in a fresh catalog.
(b) the same rows through the per-artifact API (``ln.Artifact(path).save()`` +
    ``artifact.features.add_values``) on a sample, the baseline of the ratio.
(c) hashing + copying 1e4 small local files into managed storage: files/s and MB/s.
(d) registering 1e4 existing objects on the loopback S3 server (moto) with
    ``ln.Artifact.from_dir("s3://...")``: objects/s, and every HTTP request the server saw
    (moto's request recorder), by method.
(e) peak memory (``ru_maxrss`` of the child process of (a)) at each size.

Prints a Markdown table (stdout) and writes it as JSON next to the script (``--json``).
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

import numpy as np
from _common import machine

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_ROWS_PER_S = 100_000
TARGET_RATIO = 1_000
TARGET_PEAK_GIB = 2.0

PERTURBATIONS = ["DMSO", "IFNG", "TNF", "IL6", "LPS"] + [f"compound-{i:03d}" for i in range(45)]
DONORS = [f"donor-{i:02d}" for i in range(30)]
CELL_TYPES = ["T cell", "B cell", "monocyte", "natural killer cell", "dendritic cell",
              "macrophage", "neutrophil", "erythrocyte", "platelet", "mast cell"]
NOTES = ["great", "ok", "needs review", "pilot run", "repeat", "failed QC", "low viability"]
FEATURES = {"perturbation": "cat[Record]", "donor": "cat[Record[Donor]]",
            "cell_type": "cat[ULabel]", "temperature": "float", "n_cells": "int",
            "date_of_study": "date", "measured_at": "datetime", "study_metadata": "dict",
            "is_control": "bool", "study_note": "str"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the manifest -------------------------------------------------------------------------------
def _lists(rng, n: int, pool: list[str], lo: int, hi: int, null_frac: float):
    import pyarrow as pa

    sizes = rng.integers(lo, hi + 1, size=n)
    sizes[rng.random(n) < null_frac] = 0
    # Distinct picks per row: a random start and stride 1 modulo the pool.
    start = rng.integers(0, len(pool), size=n)
    row = np.repeat(np.arange(n), sizes)
    k = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    flat = pa.array(np.array(pool, dtype=object)[(start[row] + k) % len(pool)], pa.string())
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(sizes == 0))


def manifest_table(n: int, root: str, seed: int = 0, first: int = 0):
    """``n`` rows: files linked in place under ``root`` with known size and hash, and the 10
    features, as users would export them from a metadata table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed + first)
    idx = pa.array(np.arange(first, first + n, dtype=np.int64))
    names = pc.binary_join_element_wise("atlas/cells_", pc.cast(idx, pa.string()), ".h5ad", "")
    paths = pc.binary_join_element_wise(root + "/", names, "")
    # Known hashes: 22 url-safe base64 characters, as LaminDB's hash rule prints them.
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                             dtype=np.uint8)
    body = alphabet[rng.integers(0, 64, size=(n, 22))]
    offsets = pa.array(np.arange(0, 22 * (n + 1), 22, dtype=np.int32))
    hash_array = pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(body.tobytes()))
    null = lambda frac: rng.random(n) < frac  # noqa: E731
    days = rng.integers(0, 2000, n)
    dates = np.datetime64("2020-01-01") + days.astype("timedelta64[D]")
    seconds = rng.integers(0, 86400 * 365, n)
    stamps = (np.datetime64("2024-01-01T00:00:00", "us")
              + (seconds * 1_000_000).astype("timedelta64[us]"))
    meta = pa.StructArray.from_arrays(
        [pa.array(rng.integers(0, 20, n)), pc.cast(pa.array(rng.integers(100, 999, n)), pa.string()),
         pa.array(rng.random(n) < 0.5)],
        names=["batch", "lane", "paired"], mask=pa.array(null(0.1)))
    return pa.table({
        "path": paths,
        "key": names,
        "size": pa.array(rng.integers(1_000, 50_000_000, n), pa.int64()),
        "hash": hash_array,
        "perturbation": _lists(rng, n, PERTURBATIONS, 1, 3, 0.05),
        "donor": pa.array(np.array(DONORS, dtype=object)[rng.integers(0, len(DONORS), n)],
                          pa.string(), mask=null(0.05)),
        "cell_type": _lists(rng, n, CELL_TYPES, 1, 2, 0.05),
        "temperature": pa.array(np.round(rng.uniform(15, 30, n), 2), mask=null(0.05)),
        "n_cells": pa.array(rng.integers(100, 100_000, n), pa.int64(), mask=null(0.05)),
        "date_of_study": pa.array(dates, pa.date32(), mask=null(0.05)),
        "measured_at": pa.array(stamps, pa.timestamp("us", tz="UTC"), mask=null(0.05)),
        "study_metadata": meta,
        "is_control": pa.array(rng.random(n) < 0.1, mask=null(0.05)),
        "study_note": pa.array(np.array(NOTES, dtype=object)[rng.integers(0, len(NOTES), n)],
                               pa.string(), mask=null(0.3)),
    })


def write_manifest(path: str, n: int, root: str, chunk: int = 250_000) -> None:
    import pyarrow.parquet as pq

    writer = None
    for first in range(0, n, chunk):
        table = manifest_table(min(chunk, n - first), root, first=first)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    writer.close()


def register_world():
    import lamina as ln

    for name in PERTURBATIONS:
        ln.Record(name=name).save()
    donor_type = ln.Record(name="Donor", is_type=True).save()
    ln.save(ln.Record.from_values(DONORS, create=True, type=donor_type))
    for name in CELL_TYPES:
        ln.ULabel(name=name).save()
    for name, dtype in FEATURES.items():
        if dtype == "cat[Record[Donor]]":
            ln.Feature(name=name, dtype=donor_type).save()
        else:
            ln.Feature(name=name, dtype=dtype).save()


# ---- (a) + (e): one size in a child process ----------------------------------------------------------
def child_catalog(n: int, workdir: str) -> dict:
    """Runs in a fresh process: a new catalog, then the manifest (written to disk by the
    parent) ingested and queried; peak memory is this process's."""
    import pyarrow.parquet as pq

    import lamina as ln

    root = os.path.join(workdir, "root")
    ln.init(storage=root)
    register_world()
    manifest = os.path.join(workdir, "manifest.parquet")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    report = ln.save(ln.Artifact.from_manifest(manifest, progress=False))
    t_saved = time.perf_counter()
    count = ln.Artifact.filter(perturbation="DMSO", temperature__gt=20).count()
    t_queryable = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    # The answer agrees with the manifest.
    table = pq.read_table(manifest, columns=["perturbation", "temperature"])
    import polars as pl

    frame = pl.from_arrow(table)
    expected = frame.filter(pl.col("perturbation").list.contains("DMSO")
                            & (pl.col("temperature") > 20)).height
    assert count == expected, (count, expected)
    assert report.new == n and report.failed == 0
    files = len(ln.current().store(ln.Artifact._spec).snapshot().files)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"n": n, "seconds": t_queryable - t0, "save_s": t_saved - t0, "cpu_s": cpu,
            "query_s": t_queryable - t_saved, "rows_per_s": n / (t_queryable - t0),
            "peak_rss_mib": peak / 1024, "rss_before_mib": rss_before / 1024,
            "timings": {k: round(v, 3) for k, v in report.timings.items()},
            "chunks": report.chunks, "files": files}


def run_catalog(n: int) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"lamina-bench-ingest-{n}-")
    try:
        # The child creates its instance at <workdir>/root; the manifest names files there.
        write_manifest(os.path.join(workdir, "manifest.parquet"), n,
                       os.path.join(os.path.realpath(workdir), "root"))
        env = dict(os.environ, LAMINA_HOME=os.path.join(workdir, "home"))
        out = subprocess.run([sys.executable, __file__, "--child", str(n), workdir], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"child for n={n} failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- (b): the per-artifact API on a sample --------------------------------------------------------------
def per_artifact(sample: int) -> dict:
    import pyarrow as pa

    import lamina as ln
    from lamina.catalog import instance as inst_module

    workdir = tempfile.mkdtemp(prefix="lamina-bench-api-")
    try:
        os.environ["LAMINA_HOME"] = os.path.join(workdir, "home")
        inst_module.disconnect()
        ln.init(storage=os.path.join(workdir, "root"))
        register_world()
        table = manifest_table(sample, "unused", seed=1)
        rows = table.to_pylist()
        files = []
        for i in range(sample):
            path = os.path.join(workdir, "files", f"cells_{i}.h5ad")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(os.urandom(64))
            files.append(path)
        t0 = time.perf_counter()
        for path, row in zip(files, rows):
            artifact = ln.Artifact(path, key=row["key"]).save()
            values = {}
            for name in FEATURES:
                value = row[name]
                if value is None:
                    continue
                if name == "study_metadata":
                    value = {k: v for k, v in value.items() if v is not None}
                values[name] = value
            artifact.features.add_values(values)
        seconds = time.perf_counter() - t0
        assert ln.Artifact.filter().count() == sample
        del pa
        return {"n": sample, "seconds": seconds, "rows_per_s": sample / seconds}
    finally:
        inst_module.disconnect()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- (c): hashing + copying small local files --------------------------------------------------------------
def local_files(n: int, size: int) -> dict:
    import lamina as ln
    from lamina.catalog import instance as inst_module

    workdir = tempfile.mkdtemp(prefix="lamina-bench-files-")
    try:
        os.environ["LAMINA_HOME"] = os.path.join(workdir, "home")
        inst_module.disconnect()
        ln.init(storage=os.path.join(workdir, "root"))
        folder = os.path.join(workdir, "files")
        os.makedirs(folder)
        rng = np.random.default_rng(0)
        blob = rng.integers(0, 256, size=size * 2, dtype=np.uint8).tobytes()
        for i in range(n):
            with open(os.path.join(folder, f"f{i:05d}.bin"), "wb") as f:
                f.write(i.to_bytes(8, "little") + blob[i % size: i % size + size - 8])
        os.sync()
        t0 = time.perf_counter()
        report = ln.save(ln.Artifact.from_dir(folder, progress=False))
        seconds = time.perf_counter() - t0
        assert report.new == n and report.copied == n
        stored = len(os.listdir(os.path.join(workdir, "root", ".lamina", "objects")))
        assert stored == n
        mb = n * size / 1e6
        return {"n": n, "size": size, "seconds": seconds, "files_per_s": n / seconds,
                "mb_per_s": mb / seconds,
                "timings": {k: round(v, 3) for k, v in report.timings.items()}}
    finally:
        inst_module.disconnect()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- (d): registering existing objects on the loopback S3 server ---------------------------------------------
def s3_objects(n: int) -> dict:
    import urllib.request

    import s3fs

    import lamina as ln
    from lamina import testing
    from lamina.catalog import instance as inst_module

    workdir = tempfile.mkdtemp(prefix="lamina-bench-s3-")
    recording = os.path.join(workdir, "moto_recording")
    os.environ["MOTO_RECORDER_FILEPATH"] = recording
    try:
        with testing.s3_server() as endpoint:
            os.environ["LAMINA_HOME"] = os.path.join(workdir, "home")
            inst_module.disconnect()
            testing.create_bucket("atlas")
            fs = s3fs.S3FileSystem(endpoint_url=endpoint)
            root = "s3://atlas/catalog"
            ln.init(storage=root)
            objects = {f"atlas/catalog/raw/obj_{i:05d}.h5ad": os.urandom(128) for i in range(n)}
            for start in range(0, n, 1000):
                fs.pipe(dict(list(objects.items())[start:start + 1000]))
            inst_module.disconnect()
            ln.connect(root)  # a fresh process state: nothing cached

            def recorder(action):
                req = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}",
                                             method="POST")
                urllib.request.urlopen(req).read()

            recorder("reset-recording")
            recorder("start-recording")
            t0 = time.perf_counter()
            batch = ln.Artifact.from_dir(f"{root}/raw", progress=False)  # lists the prefix
            t_listed = time.perf_counter()
            report = ln.save(batch)
            seconds = time.perf_counter() - t0
            recorder("stop-recording")
            assert report.new == n and report.linked == n
            methods: dict[str, int] = {}
            gets_of_objects = 0
            with open(recording) as f:
                for line in f:
                    entry = json.loads(line)
                    methods[entry["method"]] = methods.get(entry["method"], 0) + 1
                    url = entry["url"]
                    if entry["method"] == "GET" and "/raw/obj_" in url and "list-type" not in url:
                        gets_of_objects += 1
            assert gets_of_objects == 0, "an object was downloaded"
            count = ln.Artifact.filter(suffix=".h5ad").count()
            assert count == n
            return {"n": n, "seconds": seconds, "objects_per_s": n / seconds,
                    "listing_s": t_listed - t0,
                    "requests": sum(methods.values()), "by_method": methods,
                    "object_reads": gets_of_objects,
                    "timings": {k: round(v, 3) for k, v in report.timings.items()}}
    finally:
        os.environ.pop("MOTO_RECORDER_FILEPATH", None)
        inst_module.disconnect()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the table ----------------------------------------------------------------------------------------
def table(results: dict) -> str:
    lines = ["| measure | value | target |", "| --- | --- | --- |"]
    for r in results["catalog"]:
        lines.append(f"| (a) catalog-side, {r['n']:,} rows, manifest → committed + queryable | "
                     f"{r['seconds']:.2f} s = **{r['rows_per_s']:,.0f} rows/s** "
                     f"({r['chunks']} commit{'s' if r['chunks'] != 1 else ''}; save {r['save_s']:.2f} s, first query "
                     f"{r['query_s']:.2f} s; CPU {r['cpu_s']:.1f} s) | "
                     f"≥ {TARGET_ROWS_PER_S:,} rows/s at 1e6 |")
    api = results["api"]
    lines.append(f"| (b) per-artifact API (`Artifact(path).save()` + `features.add_values`), "
                 f"sample of {api['n']} | {api['rows_per_s']:.1f} rows/s "
                 f"({1000 * api['seconds'] / api['n']:.0f} ms/artifact) | baseline |")
    top = results["catalog"][-1]
    ratio = top["rows_per_s"] / api["rows_per_s"]
    lines.append(f"| ratio (a) at {top['n']:,} ÷ (b) | **{ratio:,.0f}×** | ≥ {TARGET_RATIO:,}× |")
    c = results["files"]
    lines.append(f"| (c) hash + copy {c['n']:,} local files of {c['size'] // 1024} KiB | "
                 f"{c['files_per_s']:,.0f} files/s, {c['mb_per_s']:.0f} MB/s "
                 f"(hash {c['timings'].get('hash', 0):.2f} s, copy "
                 f"{c['timings'].get('upload', 0):.2f} s) | |")
    d = results["s3"]
    by = ", ".join(f"{k} {v}" for k, v in sorted(d["by_method"].items()))
    lines.append(f"| (d) register {d['n']:,} existing objects on loopback S3 (`from_dir`) | "
                 f"{d['objects_per_s']:,.0f} objects/s ({d['seconds']:.2f} s, of which listing "
                 f"the prefix {d['listing_s']:.2f} s); **{d['requests']} requests** ({by}); "
                 f"{d['object_reads']} object reads | no object read |")
    for r in results["catalog"]:
        lines.append(f"| (e) peak memory (RSS) of the {r['n']:,}-row run | "
                     f"**{r['peak_rss_mib'] / 1024:.2f} GiB** | ≤ {TARGET_PEAK_GIB} GiB at 1e6 |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child_catalog(int(sys.argv[2]), sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sample", type=int, default=50, help="rows through the per-artifact API")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--file-size", type=int, default=16 * 1024)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=os.path.join(HERE, "ingest_results.json"))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.sample, args.files, args.objects = [10_000], 10, 1_000, 1_000
    import logging

    logging.getLogger("lamina").setLevel(logging.ERROR)
    results: dict = {"machine": machine(), "catalog": []}
    for n in args.sizes:
        log(f"(a) catalog-side ingestion of {n:,} rows ...")
        results["catalog"].append(run_catalog(n))
        log(f"    {results['catalog'][-1]}")
    log(f"(b) per-artifact API on {args.sample} rows ...")
    results["api"] = per_artifact(args.sample)
    log(f"    {results['api']}")
    log(f"(c) hashing + copying {args.files:,} local files ...")
    results["files"] = local_files(args.files, args.file_size)
    log(f"    {results['files']}")
    log(f"(d) registering {args.objects:,} objects on loopback S3 ...")
    results["s3"] = s3_objects(args.objects)
    log(f"    {results['s3']}")
    results["load_average"] = os.getloadavg()
    print(f"machine: {results['machine']}; load average at the end "
          f"{', '.join(f'{x:.1f}' for x in results['load_average'])}\n")
    print(table(results))
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
