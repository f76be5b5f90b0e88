#!/usr/bin/env python
"""The guide's most-typed calls on a catalog built through ``Artifact.from_manifest`` (issue 11),
next to raw DuckDB on the same files and the seed system's figures.

    python bench/guide.py                  # 1e4 and 1e5 artifacts
    python bench/guide.py --sizes 1e6      # one size

The catalog (fresh per size, in a temporary folder): the 10 features of ``bench/ingest.py``'s
manifest (categorical on Record, Record[Donor] and ULabel, float, int, date, datetime, dict,
bool, str) plus ``cell_type_by_expert`` of dtype ``cat[bionty.CellType]``; 50 marker genes and
40 gene schemas. Artifacts, feature values and their record / label / cell-type links come from
one ``ln.save(ln.Artifact.from_manifest(manifest))``. No public bulk API links artifacts to
schemas, so one commit through the artifact table's store sets every artifact's ``schemas``
list (0-2 schemas each), as the peer bench does: a predicate overwrite of the artifact rows under
the store's lock, at exactly the next version and with the store's writer settings (a
``Change(replace=...)`` of 1e5 rows crashes deltalake with a stack overflow).

Built in a child process; measured in a fresh session after ``ln.connect``. Timed unit:
building the QuerySet plus the call, warm, p50 of >= 15 runs (and >= 1 s), with
the process CPU time beside it (DuckDB runs on 2 threads, so CPU can exceed wall time).
``raw``: hand-written SQL on a separate DuckDB connection over ``read_parquet`` of the same
Delta files, fetched as pandas (display) or a scalar (count); where several hand-written forms
exist the fastest is the baseline. Every raw answer is checked against lamina's first. The seed
system's figures (LaminDB 2.12.1 on SQLite, 1e5 artifacts, quiet machine) are constants read
from ``/work/shared/peer-bench/results/bench_lamindb.json`` when present.
Writes ``guide_results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import HERE, load, new_results, use_this_tree, write_results

# The build runs in a child process, which inherits the choice of lamina.
use_this_tree()

import ingest  # noqa: E402  (the manifest and the labels/features it needs)

SEED_JSON = "/work/shared/peer-bench/results/bench_lamindb.json"
CELL_TYPES = ["T cell", "B cell", "monocyte", "natural killer cell", "dendritic cell",
              "macrophage"]
MARKERS = ["CD8A", "CD4", "CD14", "CD38", "CD19", "MS4A1", "CD3E", "CD3D", "NKG7", "GNLY"] + [
    f"GENE{i:03d}" for i in range(40)]
N_SCHEMAS = 40
INCLUDE_4 = ["created_by__name", "records__name", "cell_types__name", "schemas__itype"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the catalog ------------------------------------------------------------------------------
def build(n: int, workdir: str) -> dict:
    import numpy as np
    import pyarrow as pa

    import pyarrow.compute as pc
    from deltalake import CommitProperties, write_deltalake

    import lamina as ln
    from lamina import bionty as bt
    from lamina.catalog.deltalake_commit import WRITER_PROPERTIES

    root = os.path.join(workdir, "root")
    ln.init(storage=root, modules="bionty")
    ingest.register_world()
    for name in CELL_TYPES:
        bt.CellType(name=name).save()
    ln.Feature(name="cell_type_by_expert", dtype=bt.CellType).save()
    ln.save([bt.Gene(symbol=s) for s in MARKERS])
    genes = list(bt.Gene.filter())
    rng = np.random.default_rng(1)
    schemas = [ln.Schema([genes[j] for j in rng.choice(len(genes), 5, replace=False)],
                         itype="bionty.Gene.symbol", name=f"genes {i}")
               for i in range(N_SCHEMAS)]
    ln.save(schemas)
    manifest = ingest.manifest_table(n, os.path.realpath(root))
    picks = rng.integers(0, len(CELL_TYPES), n)
    manifest = manifest.append_column("cell_type_by_expert", pa.array(
        np.array(CELL_TYPES, dtype=object)[picks], pa.string(), mask=rng.random(n) < 0.2))
    t0 = time.perf_counter()
    report = ln.save(ln.Artifact.from_manifest(manifest, progress=False))
    ingest_s = time.perf_counter() - t0
    assert report.new == n and report.failed == 0, repr(report)
    schema_ids = [s.id for s in ln.Schema.filter()]
    store = ln.current().store(ln.Artifact._spec)
    with store._lock:  # as a commit does: at exactly the next version, with its writer settings
        table = store.ensure()
        rows = store._snapshot_of(table).read().sort_by("id")
        k = rng.integers(0, 3, rows.num_rows)
        links = [sorted(rng.choice(schema_ids, int(c), replace=False).tolist()) or None
                 for c in k]
        field = rows.schema.field("schemas")
        rows = rows.set_column(rows.schema.get_field_index("schemas"), field,
                               pa.array(links, field.type))
        ids = rows.column("id")
        write_deltalake(table, rows, mode="overwrite",
                        predicate=f"id >= {pc.min(ids).as_py()} AND id <= {pc.max(ids).as_py()}",
                        commit_properties=CommitProperties(max_commit_retries=0),
                        writer_properties=WRITER_PROPERTIES,
                        storage_options=store.location.delta_options)
    return {"n": n, "ingest_s": round(ingest_s, 3), "files": len(store.snapshot().files)}


# ---- the calls --------------------------------------------------------------------------------
def cases(ln, bt) -> list[dict]:
    """(name, lamina call, raw SQL forms, seed-system key) for every measured call."""
    dmso = ln.Record.get(name="DMSO")
    cd8a = bt.Gene.get(symbol="CD8A")
    column = {f.name: f"f_{f.id}" for f in ln.Feature.filter()}
    A = ln.Artifact
    display = ", ".join(["id", *A._spec.display_columns])
    visible = "branch_id = 1"

    def top(where: str) -> list[str]:
        """Top 100 by id, plainly and as the two-step form (ids, then their rows)."""
        cond = f"{visible} AND ({where})" if where else visible
        return [f"SELECT {display} FROM artifact WHERE {cond} ORDER BY id DESC LIMIT 100",
                f"SELECT {display} FROM artifact WHERE id IN (SELECT id FROM artifact WHERE "
                f"{cond} ORDER BY id DESC LIMIT 100) ORDER BY id DESC"]

    def count(where: str) -> list[str]:
        return [f"SELECT count(*) FROM artifact WHERE {visible}" + (f" AND ({where})" if where
                                                                     else "")]

    cd8a_schemas = f"SELECT id FROM schema WHERE list_contains(genes, {cd8a.id})"
    filters = [
        ("all", lambda: A.filter(), "", "overview"),
        ("perturbation=DMSO", lambda: A.filter(perturbation="DMSO"),
         f"list_contains({column['perturbation']}, {dmso.id})", "feature_predicate"),
        ("temperature__gt=21.5", lambda: A.filter(temperature__gt=21.5),
         f"{column['temperature']} > 21.5", "feature_float_gt"),
        ("records=dmso, size__gt=1e6", lambda: A.filter(records=dmso, size__gt=1e6),
         f"list_contains(records, {dmso.id}) AND size > 1e6", "gt"),
        ("records__name='DMSO'", lambda: A.filter(records__name="DMSO"),
         f"list_contains(records, {dmso.id})", "suffix_then_records_name"),
        ("schemas__in=Schema.filter(genes=cd8a)",
         lambda: A.filter(schemas__in=ln.Schema.filter(genes=cd8a)),
         f"list_has_any(schemas, (SELECT list(id) FROM ({cd8a_schemas})))", "schemas_in"),
        ("schemas__genes__symbol='CD8A'", lambda: A.filter(schemas__genes__symbol="CD8A"),
         f"list_has_any(schemas, (SELECT list(id) FROM ({cd8a_schemas})))",
         "schemas_genes_symbol"),
    ]
    out = []
    for name, qs, where, seed in filters:
        out.append({"name": f"{name}: to_dataframe()", "call": lambda qs=qs: qs().to_dataframe(),
                    "raw": top(where), "seed": f"{seed}:to_dataframe()", "target": "display"})
        out.append({"name": f"{name}: count()", "call": lambda qs=qs: qs().count(),
                    "raw": count(where), "seed": f"{seed}:count()", "target": "count"})
    out += [
        {"name": "to_dataframe(include=[4 related])",
         "call": lambda: A.to_dataframe(include=INCLUDE_4), "raw": [],
         "seed": f"overview_related:to_dataframe(include={INCLUDE_4!r})", "target": "include"},
        {"name": "to_dataframe(include='features')",
         "call": lambda: A.to_dataframe(include="features"), "raw": [],
         "seed": "overview_features:to_dataframe(include='features')", "target": "include"},
        {"name": "Record.get(name='DMSO')", "call": lambda: ln.Record.get(name="DMSO"),
         "raw": ["SELECT * FROM record WHERE branch_id = 1 AND name = 'DMSO' LIMIT 2"],
         "seed": "record_get:get()", "target": "get"},
        {"name": "Artifact.get(key=...)",
         "call": lambda: A.get(key="atlas/cells_7.h5ad"),
         "raw": ["SELECT * FROM artifact WHERE branch_id = 1 AND key = 'atlas/cells_7.h5ad' "
                 "LIMIT 2"], "seed": None, "target": "get"},
    ]
    return out


# Issue 11's targets at 1e5, 1e6 and 1e7 artifacts (None: the issue sets none at that size).
TARGETS = {"display": (5, 10, 20), "include": (10, 20, None), "get": (1, 2, None),
           "count": (5, 20, 100)}


def measure(fn, min_runs: int = 15, min_seconds: float = 1.0) -> dict:
    fn()
    fn()
    walls, cpus = [], []
    start = time.perf_counter()
    while len(walls) < min_runs or time.perf_counter() - start < min_seconds:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
        if len(walls) >= 200:
            break
    return {"p50_ms": statistics.median(walls), "cpu_p50_ms": statistics.median(cpus),
            "runs": len(walls)}


def raw_connection(ln):
    import duckdb
    from deltalake import DeltaTable

    from lamina.catalog import tables

    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET late_materialization_max_rows = 1000")
    for name in ("core.artifact", "core.record", "core.schema"):
        spec = tables.get(name)
        files = DeltaTable(ln.current().store(spec).uri).file_uris()
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW {spec.view} AS SELECT * FROM read_parquet([{listed}], "
                    "union_by_name = true)")
    return con


@contextlib.contextmanager
def built_catalog(n: int, name: str):
    """The guide's catalog of ``n`` artifacts, connected to: built by a child process in a
    temporary folder (LAMINA_HOME too), which is removed afterwards. Yields what the build
    reports (rows, ingest and build seconds, data files).

    Why a child: measured here after ln.connect, as a user would, since the process that wrote
    1e5 rows holds state (views and stores moved through every commit) that made some calls
    several times slower than in a fresh session."""
    import logging

    import lamina as ln

    workdir = tempfile.mkdtemp(prefix=f"lamina-{name}-{n}-")
    os.environ["LAMINA_HOME"] = os.path.join(workdir, "home")
    os.environ.setdefault("LAMINA_USER_HANDLE", "testuser1")
    try:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, os.path.join(HERE, "guide.py"), "--build", str(n),
                              workdir], capture_output=True, text=True, env=dict(os.environ))
        if out.returncode != 0:
            raise RuntimeError(f"build of n={n} failed:\n{out.stderr[-4000:]}")
        built = json.loads(out.stdout.strip().splitlines()[-1])
        built["build_s"] = round(time.perf_counter() - t0, 1)
        log(f"n={n:,}: built in {built['build_s']} s ({built})")
        ln.connect(os.path.join(workdir, "root"))
        logging.getLogger("lamina").setLevel(logging.WARNING)
        yield built
    finally:
        from lamina.catalog import instance

        instance._current = None
        shutil.rmtree(workdir, ignore_errors=True)


def run_size(n: int, seed: dict) -> dict:
    import lamina as ln
    from lamina import bionty as bt

    with built_catalog(n, "guide") as built:
        # lamina's calls first, all of them, then the raw ones: DuckDB's worker threads of the
        # raw connection stay busy for a while after its queries and would be counted in
        # (and slow down) lamina's calls measured right after.
        rows, answers = [], []
        measured = cases(ln, bt)
        for case in measured:
            answers.append(case["call"]())
            lamina = measure(case["call"])
            seed_ms = seed.get(case["seed"]) if case["seed"] else None
            target = TARGETS[case["target"]][0 if n <= 100_000 else 1 if n <= 1_000_000 else 2]
            rows.append({"name": case["name"], "lamina": lamina, "raw": None,
                         "seed_1e5_ms": seed_ms, "target_ms": target,
                         "load": load()})
            log(f"  {case['name']:55s} lamina {lamina['p50_ms']:8.2f} ms "
                f"(cpu {lamina['cpu_p50_ms']:.2f})  load {rows[-1]['load']}")
        # The high-water mark of this process's memory after lamina's calls (before the raw
        # connection's): the import, the session, its caches and every call's peak.
        peak_rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        log(f"  peak RSS after lamina's calls: {peak_rss_mib:,.1f} MiB")
        con = raw_connection(ln)
        for case, answer, row in zip(measured, answers, rows):
            for sql in case["raw"]:
                got = con.execute(sql)
                if case["target"] == "count":
                    assert got.fetchone()[0] == answer, (case["name"], sql)
                    fn = lambda sql=sql: con.execute(sql).fetchone()  # noqa: E731
                elif case["target"] == "get":
                    assert got.to_arrow_table()["id"].to_pylist() == [answer.id], sql
                    fn = lambda sql=sql: con.execute(sql).to_arrow_table().to_pylist()  # noqa: E731
                else:
                    assert got.df()["id"].tolist() == list(answer.index), (case["name"], sql)
                    fn = lambda sql=sql: con.execute(sql).df()  # noqa: E731
                timed = measure(fn)
                if row["raw"] is None or timed["p50_ms"] < row["raw"]["p50_ms"]:
                    row["raw"] = dict(timed, sql=sql)
            if row["raw"]:
                log(f"  {case['name']:55s} raw {row['raw']['p50_ms']:8.2f} ms")
        return {"n": n, "build": built, "rows": rows, "peak_rss_mib": peak_rss_mib}


def seed_figures() -> dict:
    try:
        with open(SEED_JSON) as f:
            data = json.load(f)
    except OSError:
        return {}
    queries = data["sizes"]["100000"]["queries"]
    return {key: q["p50_ms"] for key, q in queries.items()}


def markdown(result: dict) -> str:
    lines = [f"### n = {result['n']:,} artifacts",
             "", "| call | lamina p50 | lamina CPU | raw DuckDB | ÷ raw | seed system (1e5) | "
             "target | load |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lam, raw = row["lamina"], row["raw"]
        ratio = f"{lam['p50_ms'] / raw['p50_ms']:.1f}×" if raw else "—"
        seed = f"{row['seed_1e5_ms']:.1f} ms" if row["seed_1e5_ms"] else "—"
        lines.append(f"| `{row['name']}` | {lam['p50_ms']:.1f} ms | {lam['cpu_p50_ms']:.1f} ms | "
                     + (f"{raw['p50_ms']:.1f} ms" if raw else "—")
                     + f" | {ratio} | {seed} | "
                     + (f"≤ {row['target_ms']} ms" if row["target_ms"] else "—")
                     + f" | {row['load']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1e4", "1e5"])
    parser.add_argument("--json", default=os.path.join(HERE, "guide_results.json"))
    parser.add_argument("--build", nargs=2, metavar=("N", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(int(args.build[0]), args.build[1])))
        return
    seed = seed_figures()
    results = new_results(sizes=[])
    for size in args.sizes:
        result = run_size(int(float(size)), seed)
        results["sizes"].append(result)
        print(markdown(result) + "\n", flush=True)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
