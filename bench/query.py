"""Query benchmark: the seed guide's queries through lamina vs. hand-written SQL in raw DuckDB.

    python bench/query.py                    # 1e4, 1e5, 1e6 artifacts
    python bench/query.py --sizes 1e4 1e5    # a subset
    python bench/query.py --rebuild          # rebuild the cached catalogs

Catalogs are built with bulk Arrow appends through ``TableStore.transact`` (one commit per table)
and cached under ``$LAMINA_BENCH_DIR`` (default ``/tmp/lamina-bench``), so reruns only measure.

For every query both sides answer the same question in the same process, warm:

- lamina: the whole user call, ``ln.Artifact.filter(...).to_dataframe()`` (default limit, newest
  first), ``.count()``, and for some ``.to_arrow(columns=["id"])`` (every matching id). That
  includes building the QuerySet, compiling, the snapshot check of ``Session.refresh`` and the
  conversion of the result.
- raw: the best SQL written by hand over ``read_parquet([<the table's files>])`` (file lists from
  ``deltalake.DeltaTable(uri).file_uris()``) on a separate DuckDB connection with the same thread
  count and DuckDB settings, fetched as pandas (via Arrow) / a scalar / Arrow. Where a question
  has several hand-written forms (many-to-many links), the fastest per call is the baseline.

Before timing, every raw form is checked to return lamina's ids (first 100 in order, the
count, all ids). Results and their reading: bench/README.md, section "Query".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

CACHE = os.environ.get("LAMINA_BENCH_DIR", "/tmp/lamina-bench")
# Keep the bench's settings file (current instance, user) out of the user's ~/.lamina.
os.environ["LAMINA_HOME"] = os.path.join(CACHE, "home")
os.environ["LAMINA_USER_HANDLE"] = "testuser1"
os.environ["LAMINA_USER_NAME"] = "Test User1"

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

import lamina as ln  # noqa: E402
from lamina import bionty as bt  # noqa: E402
from lamina.catalog import tables  # noqa: E402
from lamina.catalog.snapshot import Change  # noqa: E402
from lamina.engine import session as lamina_session  # noqa: E402

# Bump when the generator changes: cached catalogs of another version are rebuilt.
BUILD_VERSION = 2
SEED = 42
N_USERS = 30
N_RECORDS = 1000
N_HOT_RECORDS = 20
N_GENES = 20_000
N_MARKER_GENES = 50
N_SCHEMAS = 1000
N_GENE_SCHEMAS = 600
EXTRA_STORAGES = ["s3://lamina-bench-raw", "s3://lamina-bench-processed", "gs://lamina-bench-atlas"]

SUFFIXES = {  # suffix: (share, otype, log-size mean, log-size sigma)
    ".h5ad": (0.25, "AnnData", 16.0, 2.0),
    ".parquet": (0.20, "DataFrame", 13.0, 2.5),
    ".fastq.gz": (0.20, None, 19.0, 1.5),
    ".csv": (0.08, "DataFrame", 10.0, 2.5),
    ".jpg": (0.07, None, 11.5, 1.0),
    ".zarr": (0.05, "AnnData", 18.0, 1.5),
    ".txt": (0.05, None, 8.0, 2.0),
    ".bam": (0.05, None, 20.0, 1.0),
    ".json": (0.03, None, 7.0, 1.5),
    ".tiledbsoma": (0.02, "tiledbsoma", 21.0, 1.0),
}
MARKERS = ["CD8A", "CD4", "CD14", "CD38", "CD19", "MS4A1", "CD3E", "CD3D", "NKG7", "GNLY",
           "LYZ", "FCGR3A", "CST3", "PPBP", "IL7R", "CCR7", "S100A4", "FCER1A", "GZMB", "GZMK",
           "PTPRC", "HLA-DRA", "CD74", "CD79A", "CD79B", "ITGAX", "ITGAM", "KLRD1", "KLRB1", "FOXP3",
           "IL2RA", "CTLA4", "PDCD1", "LAG3", "HAVCR2", "TIGIT", "CD68", "CD163", "MRC1", "EPCAM",
           "KRT18", "KRT8", "VIM", "COL1A1", "PECAM1", "CDH5", "ACTA2", "MKI67", "TOP2A", "MALAT1"]
assert len(MARKERS) == N_MARKER_GENES
BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
B64URL = BASE62 + b"-_"
T0 = datetime(2023, 1, 1, tzinfo=timezone.utc)
SPAN_S = 2.5 * 365 * 86400


# ---- generating ------------------------------------------------------------------------------
def rand_strings(rng, n: int, length: int, alphabet: bytes = BASE62, suffix: str = "") -> pa.Array:
    lut = np.frombuffer(alphabet, dtype=np.uint8)
    raw = lut[rng.integers(0, len(alphabet), size=(n, length))]
    arr = pa.array(raw.view(f"S{length}").ravel(), pa.binary(length)).cast(pa.string())
    return pc.binary_join_element_wise(arr, suffix, "") if suffix else arr


def timestamps(seconds: np.ndarray) -> pa.Array:
    micros = (np.int64(T0.timestamp() * 1e6) + (seconds * 1e6).astype(np.int64))
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def list_column(counts: np.ndarray, values: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))


def table_for(spec_name: str, columns: dict) -> pa.Table:
    """An Arrow table with the registry's full schema (absent columns are NULL)."""
    schema = tables.get(spec_name).arrow_schema()
    n = len(next(iter(columns.values())))
    arrays = []
    for field in schema:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value.cast(field.type))
        else:
            arrays.append(pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def bulk_append(spec_name: str, make) -> tuple[int, float]:
    """One commit appending ``make(first_id)`` to a registry; returns (rows, seconds)."""
    spec = tables.get(spec_name)
    rows = {}

    def plan(snapshot):
        table = make(snapshot.next_id)
        rows["n"] = table.num_rows
        return Change(append=table)

    start = time.perf_counter()
    ln.current().store(spec).transact(plan)
    return rows["n"], time.perf_counter() - start


def bookkeeping(rng, n: int, user_ids=None) -> dict:
    seconds = np.sort(rng.uniform(0, SPAN_S, n))
    return {"is_locked": np.zeros(n, bool), "created_at": timestamps(seconds),
            "branch_id": np.ones(n, np.int64), "created_on_id": np.ones(n, np.int64),
            "space_id": np.ones(n, np.int64),
            "created_by_id": np.ones(n, np.int64) if user_ids is None else user_ids}


def user_weights() -> np.ndarray:
    w = 1.0 / np.arange(1, N_USERS + 1) ** 0.8
    return w / w.sum()


def build(n: int, root: str) -> dict:
    rng = np.random.default_rng(SEED)
    timings = {}
    start = time.perf_counter()
    ln.init(storage=root, modules="bionty")
    timings["init"] = time.perf_counter() - start

    # users: the instance user testuser1 exists (id 1); testuser2..10 and 20 others.
    others = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
              "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor",
              "walter", "yara"]
    handles = [f"testuser{i}" for i in range(2, 11)] + others

    def users(first):
        m = len(handles)
        return table_for("core.user", {
            "id": np.arange(first, first + m), "uid": rand_strings(rng, m, 8), "handle": handles,
            "name": [h.replace("testuser", "Test User") for h in handles],
            "created_at": timestamps(np.sort(rng.uniform(0, SPAN_S / 10, m)))})

    timings["user"] = bulk_append("core.user", users)

    def storages(first):
        m = len(EXTRA_STORAGES)
        return table_for("core.storage", {
            "id": np.arange(first, first + m), "uid": rand_strings(rng, m, 12),
            "root": EXTRA_STORAGES, "type": [r.split(":")[0] for r in EXTRA_STORAGES],
            **bookkeeping(rng, m)})

    timings["storage"] = bulk_append("core.storage", storages)

    def records(first):
        names = ([f"Experiment {i}" for i in range(1, 11)]
                 + ["DMSO", "IFNG", "TNF", "IL6", "LPS", "Control", "Treated", "Batch A",
                    "Batch B", "Pilot"]
                 + [f"Experiment {i}" for i in range(11, 201)]
                 + [f"Sample {i}" for i in range(1, N_RECORDS - 210 + 1)])
        assert len(names) == N_RECORDS
        return table_for("core.record", {
            "id": np.arange(first, first + N_RECORDS), "uid": rand_strings(rng, N_RECORDS, 16),
            "name": names, "is_type": np.zeros(N_RECORDS, bool),
            **bookkeeping(rng, N_RECORDS, rng.choice(np.arange(1, N_USERS + 1), N_RECORDS,
                                                      p=user_weights()))})

    timings["record"] = bulk_append("core.record", records)

    def genes(first):
        symbols = MARKERS + [f"GENE{i:05d}" for i in range(N_MARKER_GENES, N_GENES)]
        ensembl = pc.binary_join_element_wise(
            "ENSG", pc.utf8_lpad(pa.array(rng.permutation(N_GENES) + 100_000).cast(pa.string()),
                                 11, "0"), "")
        return table_for("bionty.gene", {
            "id": np.arange(first, first + N_GENES), "uid": rand_strings(rng, N_GENES, 14),
            "symbol": symbols, "ensembl_gene_id": ensembl,
            "biotype": rng.choice(["protein_coding", "lncRNA", "miRNA"], N_GENES,
                                  p=[0.7, 0.25, 0.05]),
            "organism_id": np.ones(N_GENES, np.int64), **bookkeeping(rng, N_GENES)})

    timings["gene"] = bulk_append("bionty.gene", genes)

    def schemas(first):
        # Gene schemas: each marker gene with p=0.2, plus 20-500 other genes.
        counts, values = [], []
        for _ in range(N_GENE_SCHEMAS):
            markers = np.flatnonzero(rng.random(N_MARKER_GENES) < 0.2) + 1
            rest = rng.choice(np.arange(N_MARKER_GENES + 1, N_GENES + 1),
                              int(rng.integers(20, 500)), replace=False)
            members = np.sort(np.concatenate([markers, rest]))
            counts.append(len(members))
            values.append(members)
        counts += [0] * (N_SCHEMAS - N_GENE_SCHEMAS)
        gene_lists = list_column(np.array(counts), np.concatenate(values))
        itype = ["bionty.Gene.ensembl_gene_id"] * N_GENE_SCHEMAS + ["Feature"] * (
            N_SCHEMAS - N_GENE_SCHEMAS)
        n_members = np.array(counts[:N_GENE_SCHEMAS] + list(
            rng.integers(2, 12, N_SCHEMAS - N_GENE_SCHEMAS)))
        return table_for("core.schema", {
            "id": np.arange(first, first + N_SCHEMAS), "uid": rand_strings(rng, N_SCHEMAS, 16),
            "n_members": n_members, "itype": itype, "hash": rand_strings(rng, N_SCHEMAS, 22,
                                                                          B64URL),
            "minimal_set": np.ones(N_SCHEMAS, bool), "ordered_set": np.zeros(N_SCHEMAS, bool),
            "maximal_set": np.zeros(N_SCHEMAS, bool), "flexible": np.zeros(N_SCHEMAS, bool),
            "is_type": np.zeros(N_SCHEMAS, bool), "genes": gene_lists,
            **bookkeeping(rng, N_SCHEMAS)})

    timings["schema"] = bulk_append("core.schema", schemas)

    def artifacts(first):
        ids = np.arange(first, first + n)
        names = list(SUFFIXES)
        shares = np.array([v[0] for v in SUFFIXES.values()])
        which = rng.choice(len(names), n, p=shares / shares.sum())
        suffix = pa.DictionaryArray.from_arrays(pa.array(which, pa.int32()), pa.array(names))
        suffix = suffix.cast(pa.string())
        otypes = [v[1] for v in SUFFIXES.values()]
        otype = pa.array([otypes[i] for i in range(len(names))], pa.string()).take(which)
        kind = pc.if_else(pc.is_null(otype), pa.scalar(None, pa.string()), "dataset")
        mu = np.array([v[2] for v in SUFFIXES.values()])[which]
        sigma = np.array([v[3] for v in SUFFIXES.values()])[which]
        size = np.maximum(rng.lognormal(mu, sigma), 1).astype(np.int64)
        n_obs = pc.if_else(pc.is_null(otype), pa.scalar(None, pa.int64()),
                           pa.array(rng.lognormal(8, 1.5, n).astype(np.int64)))
        projects = pa.array([f"project_{i:02d}" for i in range(40)]).take(
            pa.array(rng.integers(0, 40, n)))
        assays = pa.array(["scrna", "bulk", "atac", "imaging", "spatial", "raw", "processed"]).take(
            pa.array(rng.integers(0, 7, n)))
        number = pc.utf8_lpad(pa.array(ids).cast(pa.string()), 8, "0")
        key = pc.binary_join_element_wise(projects, "/", assays, "/file_", number, suffix, "")
        seconds = np.sort(rng.uniform(0, SPAN_S, n)) + rng.normal(0, 3600, n)
        branch = rng.choice([1, -1, 0], n, p=[0.97, 0.02, 0.01])
        user = rng.choice(np.arange(1, N_USERS + 1), n, p=user_weights())
        storage = rng.choice(np.arange(1, 2 + len(EXTRA_STORAGES)), n, p=[0.4, 0.3, 0.2, 0.1])
        # records: 1-3 distinct per artifact; the first is one of 20 "hot" records half the time.
        n_rec = rng.choice([1, 2, 3], n, p=[0.5, 0.3, 0.2])
        first_rec = np.where(rng.random(n) < 0.5, rng.integers(1, N_HOT_RECORDS + 1, n),
                             rng.integers(1, N_RECORDS + 1, n))
        steps = rng.integers(1, N_RECORDS // 3, (n, 2))
        rec = np.stack([first_rec, first_rec + steps[:, 0],
                        first_rec + steps[:, 0] + steps[:, 1]], axis=1)
        rec = (rec - 1) % N_RECORDS + 1
        rec_values = rec[np.arange(3)[None, :] < n_rec[:, None]]
        # schemas: 1-2 distinct per artifact out of all schemas.
        n_sch = rng.choice([1, 2], n, p=[0.6, 0.4])
        sch = rng.integers(1, N_SCHEMAS + 1, n)
        sch2 = (sch + rng.integers(1, N_SCHEMAS, n) - 1) % N_SCHEMAS + 1
        sch_values = np.stack([sch, sch2], axis=1)[np.arange(2)[None, :] < n_sch[:, None]]
        return table_for("core.artifact", {
            "id": ids, "uid": rand_strings(rng, n, 16, suffix="0000"), "key": key,
            "suffix": suffix, "kind": kind, "otype": otype, "size": size,
            "hash": rand_strings(rng, n, 22, B64URL), "n_observations": n_obs,
            "is_latest": np.ones(n, bool), "is_locked": np.zeros(n, bool),
            "created_at": timestamps(seconds), "branch_id": branch,
            "created_on_id": np.ones(n, np.int64), "space_id": np.ones(n, np.int64),
            "storage_id": storage, "created_by_id": user,
            "records": list_column(n_rec, rec_values), "schemas": list_column(n_sch, sch_values)})

    timings["artifact"] = bulk_append("core.artifact", artifacts)
    timings["total"] = time.perf_counter() - start
    return timings


def catalog_root(n: int) -> str:
    return os.path.join(CACHE, f"artifacts-{n}")


def open_catalog(n: int, rebuild: bool) -> tuple[str, dict]:
    root = catalog_root(n)
    marker = os.path.join(root, ".bench.json")
    if not rebuild and os.path.exists(marker):
        with open(marker) as f:
            info = json.load(f)
        if info.get("build_version") == BUILD_VERSION:
            ln.connect(root)
            return root, info
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    timings = build(n, root)
    info = {"build_version": BUILD_VERSION, "n": n, "timings": timings}
    with open(marker, "w") as f:
        json.dump(info, f)
    return root, info


def layout(root: str) -> str:
    """Files and row groups of the artifact table, as the queries read them."""
    files = DeltaTable(os.path.join(root, ".lamina/catalog/core/artifact")).file_uris()
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
    size = sum(os.path.getsize(f) for f in files)
    return (f"artifact table: {len(files)} Parquet file(s), {sum(groups)} row group(s), "
            f"{size / 2**20:.1f} MiB")


def describe_build(n: int, info: dict, cached: bool) -> str:
    t = info["timings"]
    rows, secs = t["artifact"]
    other = sum(v[0] for k, v in t.items() if isinstance(v, (list, tuple)) and k != "artifact")
    return (f"catalog of {n:,} artifacts {'(cached) ' if cached else ''}built in {t['total']:.1f} s: "
            f"artifacts {rows:,} rows in {secs:.2f} s ({rows / secs:,.0f} rows/s); "
            f"{other:,} rows of users/storages/records/genes/schemas in "
            f"{sum(v[1] for k, v in t.items() if isinstance(v, (list, tuple)) and k != 'artifact'):.2f} s; "
            f"init {t['init']:.2f} s")


# ---- the raw side ----------------------------------------------------------------------------
def raw_connection(root: str) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """A plain DuckDB connection; each registry is ``read_parquet([<its files>])``."""
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET TimeZone = 'UTC'")
    # The same DuckDB settings lamina's session uses (where it has them), so that the ratio
    # measures lamina, not a setting.
    rows = getattr(lamina_session, "LATE_MATERIALIZATION_ROWS", None)
    if rows:
        con.execute(f"SET late_materialization_max_rows = {int(rows)}")
    sources = {}
    for name in ("core/artifact", "core/user", "core/storage", "core/record", "core/schema",
                 "bionty/gene"):
        files = DeltaTable(os.path.join(root, ".lamina/catalog", name)).file_uris()
        quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        sources[name.split("/")[1]] = f"read_parquet([{quoted}])"
    return con, sources


# ---- the queries -----------------------------------------------------------------------------
ARTIFACT_COLS = ", ".join(["id", *tables.get("core.artifact").display_columns])
STORAGE_COLS = ", ".join(["id", *tables.get("core.storage").display_columns])
RECORD_COLS = ", ".join(["id", *tables.get("core.record").display_columns])


@dataclass
class Case:
    name: str
    lamina: object  # () -> QuerySet
    # Hand-written conditions answering the same question ({artifact}, {record}, ... are the
    # tables' read_parquet sources). Each is a where clause, or (where, extra FROM item). The
    # fastest of them for each call is the raw baseline.
    variants: list
    params: list
    registry: str = "artifact"
    order: str = "id DESC"
    ids: bool = False  # also time fetching every matching id


# The hand-written forms of a many-to-many condition, in m2m_variants' order.
RAW_FORMS = ["list_has_any", "unnest semi-join", "list_filter"]


def m2m_variants(column: str, inner: str) -> list:
    """Ways to write "a row whose list ``column`` holds one of the ids ``inner`` selects"."""
    return [
        f"list_has_any(a.{column}, (SELECT list(id) FROM ({inner})))",
        f"a.id IN (SELECT u.id FROM (SELECT id, unnest({column}) AS v FROM {{artifact}}) u "
        f"WHERE u.v IN ({inner}))",
        (f"len(list_filter(a.{column}, x -> list_contains(s.ids, x))) > 0",
         f"(SELECT list(id) AS ids FROM ({inner})) s"),
    ]


def cases(ctx: dict) -> list[Case]:
    A, Q, S, R = ln.Artifact, ln.Q, ln.Storage, ln.Record
    rec, cd8a, key = ctx["experiment_1"], ctx["cd8a"], ctx["key"]
    cd8a_schemas = "SELECT id FROM {schema} WHERE branch_id = 1 AND list_contains(genes, ?)"
    symbol_schemas = ("SELECT id FROM {schema} WHERE list_has_any(genes, "
                      "(SELECT list(id) FROM {gene} WHERE symbol = ?))")
    return [
        Case('filter(suffix=".h5ad")', lambda: A.filter(suffix=".h5ad"),
             ["a.suffix = ?"], [".h5ad"], ids=True),
        Case('filter(created_by__handle__startswith="testuse")',
             lambda: A.filter(created_by__handle__startswith="testuse"),
             ["a.created_by_id IN (SELECT id FROM {user} WHERE starts_with(handle, ?))"],
             ["testuse"], ids=True),
        Case('filter(records__name="Experiment 1")',
             lambda: A.filter(records__name="Experiment 1"),
             m2m_variants("records", "SELECT id FROM {record} WHERE name = ?"),
             ["Experiment 1"], ids=True),
        Case('filter(suffix=".h5ad", records=experiment_1)',
             lambda: A.filter(suffix=".h5ad", records=rec),
             ["a.suffix = ? AND list_contains(a.records, ?)"], [".h5ad", rec.id]),
        Case("filter(records=experiment_1, size__gt=1e4)",
             lambda: A.filter(records=rec, size__gt=1e4),
             ["list_contains(a.records, ?) AND a.size > ?"], [rec.id, 1e4]),
        Case('filter(suffix__in=[".jpg", ".fastq.gz"])',
             lambda: A.filter(suffix__in=[".jpg", ".fastq.gz"]),
             ["a.suffix IN (?, ?)"], [".jpg", ".fastq.gz"]),
        Case("filter(schemas__in=Schema.filter(genes=cd8a))",
             lambda: A.filter(schemas__in=ln.Schema.filter(genes=cd8a)),
             m2m_variants("schemas", cd8a_schemas), [cd8a.id], ids=True),
        Case('filter(schemas__genes__symbol="CD8A")',
             lambda: A.filter(schemas__genes__symbol="CD8A"),
             m2m_variants("schemas", symbol_schemas), ["CD8A"], ids=True),
        Case('filter(Q(suffix=".jpg") | Q(suffix=".fastq.gz"))',
             lambda: A.filter(Q(suffix=".jpg") | Q(suffix=".fastq.gz")),
             ["(a.suffix = ? OR a.suffix = ?)"], [".jpg", ".fastq.gz"]),
        Case('filter(~Q(suffix=".jpg"))', lambda: A.filter(~Q(suffix=".jpg")),
             ["a.suffix IS DISTINCT FROM ?"], [".jpg"], ids=True),
        Case('filter().order_by("-created_at")', lambda: A.filter().order_by("-created_at"),
             [""], [], order="created_at DESC NULLS LAST"),
        Case('filter().order_by("key")', lambda: A.filter().order_by("key"),
             [""], [], order="key ASC NULLS LAST"),
        Case('Storage.filter(artifacts__suffix=".h5ad")',
             lambda: S.filter(artifacts__suffix=".h5ad"),
             ["a.id IN (SELECT storage_id FROM {artifact} WHERE suffix = ?)"], [".h5ad"],
             registry="storage"),
        Case("Record.filter(artifacts__key=<key>)", lambda: R.filter(artifacts__key=key),
             ["a.id IN (SELECT unnest(records) FROM {artifact} WHERE key = ?)"], [key],
             registry="record"),
    ]


def raw_sql(case: Case, variant, sources: dict, kind: str) -> str:
    cols = {"artifact": ARTIFACT_COLS, "storage": STORAGE_COLS, "record": RECORD_COLS}[
        case.registry]
    cols = ", ".join(f"a.{c}" for c in cols.split(", "))
    cond, extra = variant if isinstance(variant, tuple) else (variant, "")
    where = "a.branch_id = 1" + (f" AND {cond}" if cond else "")
    src = f"{sources[case.registry]} a" + (f", {extra}" if extra else "")
    src, where = src.format(**sources), where.format(**sources)
    if kind == "df":
        order = ", ".join(f"a.{t}" for t in case.order.split(", "))
        return f"SELECT {cols} FROM {src} WHERE {where} ORDER BY {order} LIMIT 100"
    if kind == "count":
        return f"SELECT count(*) FROM {src} WHERE {where}"
    return f"SELECT a.id FROM {src} WHERE {where} ORDER BY a.id"


# ---- timing ----------------------------------------------------------------------------------
def measure(fns, min_runs: int = 15, max_seconds: float = 4.0, budget: float = 40.0):
    """Warm timings in ms of each of ``fns``, run interleaved (a, b, a, b, ...) so that a burst
    of load on the machine hits both sides alike. Calls of several seconds get fewer runs
    (at least 5, within about ``budget`` seconds)."""
    start = time.perf_counter()
    for fn in fns:
        fn()  # warm-up: views, Parquet metadata, OS cache
    one_round = time.perf_counter() - start
    if one_round < 1:
        for fn in fns:
            fn()
    runs = max(5, min(min_runs, int(budget / max(one_round, 1e-9))))
    times = [[] for _ in fns]
    gc.collect()
    deadline = time.perf_counter() + max_seconds
    while True:
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
        done = len(times[0])
        if done >= 200 or (done >= runs and time.perf_counter() > deadline) or (
                done >= runs and runs < min_runs):
            return times


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fastest_raw(con, sqls: list[str], params: list, fetch) -> tuple[str, int]:
    """The fastest of equivalent hand-written statements (a few warm runs each, slow ones
    abandoned early); returns it and its index."""
    best, best_ms, best_i = None, float("inf"), 0
    for i, sql in enumerate(sqls):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fetch(con.execute(sql, params))
            times.append((time.perf_counter() - start) * 1000)
            if times[-1] > 5 * best_ms:
                break
        if min(times) < best_ms:
            best, best_ms, best_i = sql, min(times), i
    return best, best_i


FETCH = {"df": lambda r: r.to_arrow_table().to_pandas(), "count": lambda r: r.fetchone(),
         "ids": lambda r: r.to_arrow_table()}


def run_size(n: int, rebuild: bool, runs: int, show_sql: bool = False) -> list[dict]:
    root = catalog_root(n)
    cached = not rebuild and os.path.exists(os.path.join(root, ".bench.json"))
    root, info = open_catalog(n, rebuild)
    print(describe_build(n, info, cached), flush=True)
    print(f"  {layout(root)}", flush=True)
    con, sources = raw_connection(root)
    ctx = {"experiment_1": ln.Record.get(name="Experiment 1"),
           "cd8a": bt.Gene.get(symbol="CD8A"),
           "key": con.execute(f"SELECT key FROM {sources['artifact']} WHERE branch_id = 1 "
                              "ORDER BY id LIMIT 1 OFFSET ?", [n // 2]).fetchone()[0]}
    rows = []
    for case in cases(ctx):
        kinds = ["df", "count"] + (["ids"] if case.ids else [])
        lamina_fns = {"df": lambda: case.lamina().to_dataframe(),
                      "count": lambda: case.lamina().count(),
                      "ids": lambda: case.lamina().to_arrow(columns=["id"])}
        # Same question, same answer: every hand-written variant is checked against lamina.
        got_df = list(case.lamina().to_dataframe().index)
        n_match = case.lamina().count()
        got_ids = case.lamina().to_arrow(columns=["id"]).column("id") if case.ids else None
        for variant in case.variants:
            df = con.execute(raw_sql(case, variant, sources, "df"), case.params).df()
            assert got_df == list(df["id"]), (case.name, variant, got_df[:5], list(df["id"])[:5])
            count = con.execute(raw_sql(case, variant, sources, "count"), case.params)
            assert n_match == count.fetchone()[0], (case.name, variant)
            if case.ids:
                ids = con.execute(raw_sql(case, variant, sources, "ids"), case.params)
                assert got_ids.equals(ids.to_arrow_table().column("id")), (case.name, variant)
        if show_sql:
            sql, params = case.lamina().to_sql()
            print(f"  lamina SQL of {case.name}: {sql}  {params}", file=sys.stderr)
        for kind in kinds:
            sqls = [raw_sql(case, v, sources, kind) for v in case.variants]
            raw_sql_best, which = fastest_raw(con, sqls, case.params, FETCH[kind])
            lam, raw = measure([lamina_fns[kind],
                                lambda: FETCH[kind](con.execute(raw_sql_best, case.params))],
                               min_runs=runs)
            rows.append({"n": n, "query": case.name, "kind": kind, "matches": n_match,
                         "raw_variant": which, "forms": len(sqls), "lamina_p50": pct(lam, 0.5),
                         "lamina_p90": pct(lam, 0.9), "raw_p50": pct(raw, 0.5),
                         "raw_p90": pct(raw, 0.9), "runs": len(lam)})
            r = rows[-1]
            print(f"  {case.name:<55} {kind:<6} lamina {r['lamina_p50']:8.2f} ms  "
                  f"raw {r['raw_p50']:8.2f} ms (variant {which}, {len(lam)} runs)",
                  file=sys.stderr, flush=True)
    con.close()
    return rows


def markdown(n: int, rows: list[dict]) -> str:
    lines = [f"#### {n:,} artifacts", "",
             "| query | call | matches | lamina p50 | lamina p90 | raw p50 | raw p90 | raw form "
             "| ratio |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    call = {"df": "`.to_dataframe()`", "count": "`.count()`", "ids": "`to_arrow(['id'])`"}
    for r in rows:
        ratio = r["lamina_p50"] / r["raw_p50"]
        flag = "" if r["lamina_p50"] <= 50 and ratio <= 2 else " ✗"
        query = r["query"].replace("|", "\\|")
        form = RAW_FORMS[r["raw_variant"]] if r.get("forms", 1) > 1 else "-"
        lines.append(f"| `{query}` | {call[r['kind']]} | {r['matches']:,} | "
                     f"{r['lamina_p50']:.1f} ms | {r['lamina_p90']:.1f} ms | "
                     f"{r['raw_p50']:.1f} ms | {r['raw_p90']:.1f} ms | {form} | {ratio:.2f}×{flag} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1e4", "1e5", "1e6"])
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--runs", type=int, default=15, help="minimum timed runs per call")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--show-sql", action="store_true", help="print lamina's SQL per query")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python "
          f"{platform.python_version()}, duckdb {duckdb.__version__}, lamina {ln.__version__}; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    all_rows = []
    for size in args.sizes:
        n = int(float(size))
        if args.build_only:
            root = catalog_root(n)
            cached = not args.rebuild and os.path.exists(os.path.join(root, ".bench.json"))
            info = open_catalog(n, args.rebuild)[1]
            print(describe_build(n, info, cached), flush=True)
            print(f"  {layout(root)}", flush=True)
            continue
        rows = run_size(n, args.rebuild, args.runs, args.show_sql)
        all_rows += rows
        print()
        print(markdown(n, rows))
        print(f"\n(load average after: {os.getloadavg()[0]:.1f})")
        print(flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_rows, f, indent=1)


if __name__ == "__main__":
    main()
