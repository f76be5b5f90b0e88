#!/usr/bin/env python
"""Feature benchmark: feature filters and ``to_dataframe(include="features")`` at 1e5 and 1e6
artifacts, each against the same question in hand-written SQL on raw DuckDB.

    python bench/features.py                    # 1e5 and 1e6: ~1 min (+ ~10 s to build)
    python bench/features.py --sizes 100000     # one size
    python bench/features.py --quick            # 1e4 rows, few repeats: a smoke run
    python bench/features.py --rebuild          # build the catalogs again

The catalogs are cached under ``/tmp/lamina-bench-features/n<size>`` (``--cache``), so reruns
only measure. Each catalog holds ``n`` artifacts annotated with 10 features of mixed dtypes
(categorical on Record and bionty.CellType, float, int, date, dict, bool, str), registered with
``ln.Feature(...).save()`` and written with one bulk ``TableStore.transact`` per 100,000 rows,
filling the feature columns ``f_<id>`` and the many-to-many lists (``records``, ``cell_types``)
the way ``artifact.features.add_values`` does.

Every query is timed warm, as users call it (``ln.Artifact.filter(...)`` built and run inside
the timer), alternating with the same question asked of raw DuckDB over the same Parquet files
(the file list of the artifact and label tables from ``deltalake.DeltaTable(uri).file_uris()``),
with the same DuckDB settings (copied from lamina's session). The raw SQL names the
``f_<id>`` columns and resolves label names with a scalar subquery, as a DuckDB expert would
write it. ``ratio`` = lamina p50 ÷ raw p50. Before timing, each lamina answer
is checked against the raw answer (counts equal, the ids of the rows equal, the feature values
shown equal): a figure whose answer is wrong is not printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import date, datetime, timezone

import numpy as np

TARGET_P50_MS = 50.0
TARGET_RATIO = 2.0
BATCH = 100_000
FORMAT = 3  # bump when the generated catalog changes, so cached catalogs are rebuilt

N_PERTURBATIONS = 50
N_DONORS = 30
CELL_TYPES = ["T cell", "B cell", "monocyte", "natural killer cell", "dendritic cell",
              "macrophage", "neutrophil", "erythrocyte", "platelet", "mast cell",
              "CD8-positive, alpha-beta T cell", "CD4-positive, alpha-beta T cell",
              "regulatory T cell", "plasma cell", "hematopoietic stem cell", "basophil",
              "eosinophil", "fibroblast", "endothelial cell", "epithelial cell"]
NOTES = ["great", "ok", "needs review", "pilot run", "repeat of earlier study", "failed QC",
         "from collaborator", "low viability", "high quality", "rerun"]
FEATURES = {  # name -> dtype, as users register them
    "perturbation": "cat[Record]", "cell_type": "cat[bionty.CellType]", "temperature": "float",
    "n_cells": "int", "date_of_study": "date", "study_metadata": "dict", "is_control": "bool",
    "study_note": "str", "donor": "cat[Record]", "batch": "str",
}


# ---- small helpers -------------------------------------------------------------------------
def p50(xs):
    return statistics.median(xs)


def p90(xs):
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


class CheckFailed(RuntimeError):
    pass


def check(condition: bool, message: str):
    if not condition:
        raise CheckFailed(message)


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict:
    info = {"cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        info["ram_gib"] = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import deltalake
    import duckdb
    import pyarrow

    import lamina

    info["versions"] = (f"python {platform.python_version()}, lamina {lamina.__version__}, "
                        f"duckdb {duckdb.__version__}, deltalake {deltalake.__version__}, "
                        f"pyarrow {pyarrow.__version__}")
    return info


# ---- building the catalog ------------------------------------------------------------------
def _uids(rng, n: int, length: int, suffix: str = ""):
    import pyarrow as pa

    from lamina.catalog.ids import BASE62

    alphabet = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    body = alphabet[rng.integers(0, 62, size=(n, length))]
    if suffix:
        body = np.hstack([body, np.tile(np.frombuffer(suffix.encode(), np.uint8), (n, 1))])
    width = body.shape[1]
    offsets = pa.array(np.arange(0, width * (n + 1), width, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(body.tobytes()))


def _picks(rng, n: int, pool: np.ndarray, lo: int, hi: int, null_frac: float):
    """Per row ``lo``..``hi`` distinct ids from ``pool`` (none for ``null_frac`` of the rows):
    (sizes, flat ids). A random start and a stride that never wraps onto an earlier pick."""
    m = len(pool)
    sizes = rng.integers(lo, hi + 1, size=n)
    sizes[rng.random(n) < null_frac] = 0
    strides = np.array([s for s in range(1, m) if all((k * s) % m for k in range(1, hi))])
    start = rng.integers(0, m, size=n)
    stride = strides[rng.integers(0, len(strides), size=n)]
    row = np.repeat(np.arange(n), sizes)
    k = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return sizes, pool[(start[row] + k * stride[row]) % m]


def _lists(*parts):
    """One list<int64> column from per-row concatenation of (sizes, ids) parts; a row with
    no ids is NULL (as the per-row API leaves an unannotated feature)."""
    import pyarrow as pa

    sizes = sum(p[0] for p in parts)
    n = len(sizes)
    order = np.concatenate([np.repeat(np.arange(n), p[0]) * len(parts) + j
                            for j, p in enumerate(parts)])
    flat = np.concatenate([p[1] for p in parts])[np.argsort(order, kind="stable")]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int64()),
                                    mask=pa.array(sizes == 0))


def artifact_batch(rng, n: int, first_id: int, ctx: dict, schema, features: dict):
    """``n`` artifact rows with ids from ``first_id``, annotated with the 10 features."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    null = lambda frac: rng.random(n) < frac  # noqa: E731

    pert = _picks(rng, n, ctx["perturbations"], 1, 3, 0.10)
    donor = _picks(rng, n, ctx["donors"], 1, 1, 0.05)
    cells = _lists(_picks(rng, n, ctx["cell_types"], 1, 1, 0.05))
    temperature = np.round(rng.uniform(15.0, 30.0, n), 1)
    n_cells = rng.integers(100, 100_000, n)
    days = rng.integers(0, (date(2025, 12, 31) - date(2020, 1, 1)).days + 1, n)
    dates = (np.datetime64("2020-01-01") + days.astype("timedelta64[D]"))
    d1 = rng.integers(100, 1000, n)
    d2 = rng.integers(0, 6, n)
    has3 = rng.random(n) < 0.5
    meta = [json.dumps({"detail1": str(a), "detail2": int(b), **({"detail3": "x"} if c else {})},
                       sort_keys=True) for a, b, c in zip(d1, d2, has3)]
    notes = np.array(NOTES, dtype=object)[rng.integers(0, len(NOTES), n)]
    batches = pc.binary_join_element_wise(
        "batch-", pc.cast(pa.array(rng.integers(0, 200, n)), pa.string()), "")

    f = {name: features[name].column for name in FEATURES}
    values = {
        f["perturbation"]: _lists(pert),
        f["cell_type"]: cells,
        f["temperature"]: pa.array(temperature, mask=null(0.05)),
        f["n_cells"]: pa.array(n_cells, type=pa.int64(), mask=null(0.05)),
        f["date_of_study"]: pa.array(dates, type=pa.date32(), mask=null(0.05)),
        f["study_metadata"]: pa.array(meta, type=pa.string(), mask=null(0.10)),
        f["is_control"]: pa.array(rng.random(n) < 0.1, mask=null(0.05)),
        f["study_note"]: pa.array(notes, type=pa.string(), mask=null(0.30)),
        f["donor"]: _lists(donor),
        f["batch"]: pa.array(batches.to_pylist(), type=pa.string(), mask=null(0.05)),
    }
    zeros = pa.array(np.zeros(n, dtype=np.int64))
    given = {
        "id": pa.array(ids),
        "uid": _uids(rng, n, 16, "0000"),
        "key": pc.binary_join_element_wise("bench/", pc.cast(pa.array(ids), pa.string()),
                                           ".parquet", ""),
        "suffix": pa.array([".parquet"]).take(zeros),
        "kind": pa.array(["dataset"]).take(zeros),
        "otype": pa.array(["DataFrame"]).take(zeros),
        "size": pa.array(rng.integers(1_000, 10_000_000, n), type=pa.int64()),
        "hash": _uids(rng, n, 22),
        "n_observations": pa.array(n_cells, type=pa.int64()),
        "is_latest": pa.array(np.ones(n, dtype=bool)),
        "is_locked": pa.array(np.zeros(n, dtype=bool)),
        "created_at": pa.array([ctx["now"]], type=schema.field("created_at").type).take(zeros),
        "branch_id": pa.array(np.ones(n, dtype=np.int64)),
        "created_on_id": pa.array(np.ones(n, dtype=np.int64)),
        "space_id": pa.array(np.ones(n, dtype=np.int64)),
        "storage_id": pa.array(np.full(n, ctx["storage_id"], dtype=np.int64)),
        "created_by_id": pa.array(np.full(n, ctx["user_id"], dtype=np.int64)),
        # The many-to-many lists that add_values keeps in step with categorical features.
        "records": _lists(pert, donor),
        "cell_types": cells,
    }
    arrays, fields = [], []
    for field in schema:
        arrays.append(given[field.name] if field.name in given else pa.nulls(n, field.type))
        fields.append(field)
    for column, array in values.items():
        arrays.append(array)
        fields.append(pa.field(column, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def build(root: str, n: int, seed: int = 0) -> float:
    """Create the catalog at ``root``; returns the build time in seconds."""
    import lamina as ln
    from lamina import bionty as bt
    from lamina.catalog.snapshot import Change

    t0 = time.perf_counter()
    inst = ln.init(storage=root, modules=["bionty"])
    # Labels: a few famous names among generated ones, as users register them (one save each).
    perts = ["DMSO", "IFNG", "TNF", "IL6", "LPS"] + [f"compound-{i:03d}"
                                                    for i in range(N_PERTURBATIONS - 5)]
    pert_ids = np.array([ln.Record(name=p).save().id for p in perts], dtype=np.int64)
    donor_ids = np.array([ln.Record(name=f"donor-{i:02d}").save().id for i in range(N_DONORS)],
                         dtype=np.int64)
    cell_ids = np.array([bt.CellType(name=c).save().id for c in CELL_TYPES], dtype=np.int64)
    features = {name: ln.Feature(name=name, dtype=dtype).save()._info()
                for name, dtype in FEATURES.items()}
    ctx = {"perturbations": pert_ids, "donors": donor_ids, "cell_types": cell_ids,
           "now": datetime.now(timezone.utc),
           "storage_id": ln.Storage.filter().first().id, "user_id": inst.user_id}
    store = inst.store(ln.Artifact._spec)
    base_schema = ln.Artifact._spec.arrow_schema()
    new_columns = {info.column: info.dtype.arrow for info in features.values()}
    rng = np.random.default_rng(seed)
    t_labels = time.perf_counter() - t0
    written = 0
    while written < n:
        size = min(BATCH, n - written)
        store.transact(lambda snap: Change(
            append=artifact_batch(rng, size, snap.next_id, ctx, base_schema, features),
            new_columns=new_columns))
        written += size
        log(f"  built {written:,}/{n:,} artifacts ({time.perf_counter() - t0:.1f} s)")
    total = time.perf_counter() - t0
    log(f"  labels + features {t_labels:.1f} s, artifact rows {total - t_labels:.1f} s")
    return total


def open_catalog(cache: str, n: int, rebuild: bool) -> dict:
    """Connect to the cached catalog of ``n`` artifacts, building it first if needed."""
    import lamina as ln

    root = os.path.join(cache, f"n{n}")
    marker = os.path.join(root, "bench-built.json")
    meta = None
    if not rebuild and os.path.exists(marker):
        with open(marker) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT or meta.get("n") != n:
            meta = None
    if meta is None:
        shutil.rmtree(root, ignore_errors=True)
        log(f"building a catalog of {n:,} artifacts at {root}")
        seconds = build(root, n)
        meta = {"format": FORMAT, "n": n, "build_s": round(seconds, 2)}
        with open(marker, "w") as f:
            json.dump(meta, f)
        meta["cached"] = False
    else:
        ln.connect(root)
        meta["cached"] = True
    meta["root"] = root
    return meta


# ---- the questions ---------------------------------------------------------------------------
class Question:
    """One filter asked of lamina (``make`` builds the QuerySet) and of raw DuckDB (``where``
    is the hand-written condition on the artifact view ``a``; ``{name}`` is the column of the
    feature ``name``)."""

    def __init__(self, label: str, make, where: str):
        self.label, self.make, self.where = label, make, where


def questions(ln, F) -> list[Question]:
    """``F``: the Feature records by name (for Feature predicates)."""
    from lamina import Q

    # The raw SQL is what a DuckDB expert writes: list_contains of the label's id (a scalar
    # subquery; names are unique here), not list_has_any(col, (SELECT list(id) ...)), which
    # hashes every row's list and is 3-5x slower (see the Features section of bench/README.md).
    in_dmso = "list_contains(a.{perturbation}, (SELECT id FROM record WHERE name = 'DMSO'))"
    return [
        Question('perturbation="DMSO"', lambda: ln.Artifact.filter(perturbation="DMSO"), in_dmso),
        Question('perturbation__in=["DMSO", "IFNG"]',
                 lambda: ln.Artifact.filter(perturbation__in=["DMSO", "IFNG"]),
                 in_dmso + " OR list_contains(a.{perturbation}, "
                 "(SELECT id FROM record WHERE name = 'IFNG'))"),
        Question("temperature__gt=21.5", lambda: ln.Artifact.filter(temperature__gt=21.5),
                 "a.{temperature} > 21.5"),
        Question("date_of_study__gte=date(2025, 1, 1)",
                 lambda: ln.Artifact.filter(date_of_study__gte=date(2025, 1, 1)),
                 "a.{date_of_study} >= DATE '2025-01-01'"),
        Question('study_metadata__detail1="123"',
                 lambda: ln.Artifact.filter(study_metadata__detail1="123"),
                 "a.{study_metadata} ->> '$.detail1' = '123'"),
        Question("study_metadata__detail2__gt=1",
                 lambda: ln.Artifact.filter(study_metadata__detail2__gt=1),
                 "CAST(a.{study_metadata} ->> '$.detail2' AS DOUBLE) > 1"),
        Question("perturbation__isnull=False",
                 lambda: ln.Artifact.filter(perturbation__isnull=False),
                 "len(a.{perturbation}) > 0"),
        Question('Feature: perturbation == "DMSO"',
                 lambda: ln.Artifact.filter(F["perturbation"] == "DMSO"), in_dmso),
        Question("Feature: temperature > 21.5",
                 lambda: ln.Artifact.filter(F["temperature"] > 21.5), "a.{temperature} > 21.5"),
        Question('cell_type="T cell" (bionty)', lambda: ln.Artifact.filter(cell_type="T cell"),
                 "list_contains(a.{cell_type}, (SELECT id FROM bionty_celltype "
                 "WHERE name = 'T cell'))"),
        Question('mix: Q(perturbation="DMSO") | Q(temperature__gt=29.5), '
                 'suffix=".parquet", ~Q(is_control=True)',
                 lambda: ln.Artifact.filter(Q(perturbation="DMSO") | Q(temperature__gt=29.5),
                                            ~Q(is_control=True), suffix=".parquet"),
                 "(" + in_dmso + " OR a.{temperature} > 29.5) AND a.suffix = '.parquet' "
                 "AND NOT coalesce(a.{is_control}, false)"),
    ]


class Raw:
    """Raw DuckDB over the same Parquet files: one view per table from the Delta file list."""

    # DuckDB settings lamina's session may change; raw DuckDB runs with the same values.
    SETTINGS = ("threads", "parquet_metadata_cache", "late_materialization_max_rows",
                "TimeZone")

    def __init__(self, root: str, columns: dict[str, str]):
        import duckdb
        from deltalake import DeltaTable

        import lamina as ln
        from lamina.engine.session import session_for

        lamina_con = session_for(ln.current()).con
        self.con = duckdb.connect()
        self.settings = {}
        for name in self.SETTINGS:
            value = lamina_con.execute(f"SELECT current_setting('{name}')").fetchone()[0]
            self.con.execute(f"SET {name} = '{value}'")
            self.settings[name] = value
        self.columns = columns  # feature name -> f_<id>
        for view, path in (("artifact", "core/artifact"), ("record", "core/record"),
                           ("bionty_celltype", "bionty/celltype")):
            files = DeltaTable(os.path.join(root, ".lamina/catalog", path)).file_uris()
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listed}])")

    def sql(self, text: str) -> str:
        return text.format(**self.columns)

    def count(self, where: str) -> int:
        return self.con.execute(self.sql(
            f"SELECT count(*) FROM artifact a WHERE a.branch_id = 1 AND ({where})")).fetchone()[0]

    def frame(self, where: str, columns: list[str], limit: int = 100):
        cols = ", ".join(f"a.{c}" for c in columns)
        sql = self.sql(f"SELECT {cols} FROM artifact a WHERE a.branch_id = 1 AND ({where}) "
                       f"ORDER BY a.id DESC LIMIT {limit}")
        return self.con.execute(sql).to_arrow_table().to_pandas().set_index("id")

    def features_frame(self, where: str, features: list, limit: int = 100):
        """The page of 100 newest rows with one column per feature, label ids turned into
        names in SQL, shaped as lamina shows them (one name, or a set of names)."""
        import pandas as pd

        picked = []
        for f in features:
            if f.dtype.is_categorical:
                view = f.dtype.label_spec.view
                picked.append(f"(SELECT list(l.name) FROM {view} l "
                              f"WHERE list_contains(p.{f.column}, l.id)) AS \"{f.name}\"")
            else:
                picked.append(f'p.{f.column} AS "{f.name}"')
        sql = self.sql(
            f"WITH p AS (SELECT * FROM artifact a WHERE a.branch_id = 1 AND ({where}) "
            f"ORDER BY a.id DESC LIMIT {limit}) "
            f"SELECT p.id, p.uid, p.key, {', '.join(picked)} FROM p ORDER BY p.id DESC")
        frame = self.con.execute(sql).to_arrow_table().to_pandas().set_index("id")
        for f in features:
            column = frame[f.name]
            if f.dtype.is_categorical:
                frame[f.name] = [None if v is None or len(v) == 0 else
                                 (v[0] if len(v) == 1 else set(v)) for v in column]
            elif f.dtype.kind == "dict":
                frame[f.name] = [None if v is None else json.loads(v) for v in column]
            elif f.dtype.kind in ("date", "datetime"):
                frame[f.name] = pd.to_datetime(column)
        return frame


def _same(a, b) -> bool:
    import pandas as pd

    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    if a is None or (isinstance(a, float) and np.isnan(a)) or a is pd.NaT:
        return b is None or (isinstance(b, float) and np.isnan(b)) or b is pd.NaT
    return a == b


def check_frames(label: str, lam, raw, columns: list[str]) -> None:
    check(list(lam.index) == list(raw.index),
          f"{label}: lamina rows {list(lam.index)[:5]}... != raw {list(raw.index)[:5]}...")
    for column in columns:
        check(column in lam.columns, f"{label}: lamina has no column {column!r}")
        bad = [(i, x, y) for i, x, y in zip(lam.index, lam[column], raw[column])
               if not _same(x, y)]
        check(not bad, f"{label}: column {column!r} differs, e.g. {bad[:2]}")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(pairs, repeats: int, warmup: int) -> dict:
    """Time each (name, lamina_fn, raw_fn) ``repeats`` times, lamina and raw alternating."""
    for _ in range(warmup):
        for _, lam, raw in pairs:
            lam()
            raw()
    times = {name: ([], []) for name, _, _ in pairs}
    for _ in range(repeats):
        for name, lam, raw in pairs:
            times[name][0].append(timed(lam)[0])
            times[name][1].append(timed(raw)[0])
    return times


def bench_size(cache: str, n: int, repeats: int, warmup: int, rebuild: bool) -> tuple[dict, list]:
    import lamina as ln

    meta = open_catalog(cache, n, rebuild)
    total = ln.Artifact.filter().count()
    check(total == n, f"catalog at {meta['root']} has {total} artifacts, expected {n}")
    F = {f.name: f for f in ln.Feature.filter(is_type=False)}
    check(set(F) == set(FEATURES), f"features {sorted(F)} != {sorted(FEATURES)}")
    raw = Raw(meta["root"], {name: f"f_{f.id}" for name, f in F.items()})
    display = ["id", *ln.Artifact._spec.display_columns]
    infos = {name: f._info() for name, f in F.items()}
    shown = [infos[name] for name in FEATURES
             if not infos[name].dtype.is_categorical
             or infos[name].dtype.label_spec.qualified in ("core.record", "core.ulabel")]

    rows, pairs = [], []
    for q in questions(ln, F):
        # Answers first: the lamina answer must equal the raw one.
        n_lam, n_raw = q.make().count(), raw.count(q.where)
        check(n_lam == n_raw, f"{q.label}: lamina counts {n_lam}, raw {n_raw}")
        check(0 < n_raw < n or q.label.startswith("perturbation__isnull"),
              f"{q.label}: {n_raw} rows match; the question should be selective")
        lam_frame, raw_frame = q.make().to_dataframe(), raw.frame(q.where, display)
        check_frames(q.label, lam_frame, raw_frame, display[1:])
        pairs.append(((q.label, "count()"), lambda q=q: q.make().count(),
                      lambda q=q: raw.count(q.where)))
        pairs.append(((q.label, "to_dataframe()"), lambda q=q: q.make().to_dataframe(),
                      lambda q=q: raw.frame(q.where, display)))
        rows.append((q.label, n_raw))
    for label, make, where in (
            ("all artifacts", lambda: ln.Artifact.filter(), "true"),
            ('perturbation="DMSO"', lambda: ln.Artifact.filter(perturbation="DMSO"),
             "list_contains(a.{perturbation}, (SELECT id FROM record WHERE name = 'DMSO'))")):
        lam_frame = make().to_dataframe(include="features")
        raw_frame = raw.features_frame(where, shown)
        check_frames(f"{label} include=features", lam_frame, raw_frame,
                     ["uid", "key", *[f.name for f in shown]])
        pairs.append(((label, 'to_dataframe(include="features")'),
                      lambda make=make: make().to_dataframe(include="features"),
                      lambda where=where: raw.features_frame(where, shown)))
    log(f"measuring {len(pairs)} figures at {n:,} artifacts ({repeats} repeats each); "
        f"DuckDB settings of both: {raw.settings}")
    times = measure(pairs, repeats, warmup)
    meta["matches"] = dict(rows)
    return meta, times


def table(n: int, meta: dict, times: dict) -> str:
    lines = [f"#### {n:,} artifacts (build {meta['build_s']:.1f} s"
             f"{', cached' if meta.get('cached') else ''})", "",
             "| question | call | rows matched | lamina p50 | p90 | min | raw p50 | p90 | min "
             "| ratio | ≤ 50 ms, ≤ 2× |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for (label, call), (lam, raw) in times.items():
        lp50, rp50 = p50(lam) * 1e3, p50(raw) * 1e3
        ratio = lp50 / rp50
        ok = "yes" if lp50 <= TARGET_P50_MS and ratio <= TARGET_RATIO else "**no**"
        matched = meta["matches"].get(label)
        shown = label.replace("|", "\\|")  # a pipe inside a Markdown table cell
        lines.append(f"| `{shown}` | `{call}` | {'' if matched is None else f'{matched:,}'} "
                     f"| {lp50:.1f} ms | {p90(lam) * 1e3:.1f} | {min(lam) * 1e3:.1f} "
                     f"| {rp50:.1f} ms | {p90(raw) * 1e3:.1f} | {min(raw) * 1e3:.1f} "
                     f"| {ratio:.2f} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/lamina-bench-features")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1e4 artifacts, 5 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.warmup = [10_000], 5, 1
    # Settings of the bench's own (user, current instance) stay inside the cache folder.
    os.environ["LAMINA_HOME"] = os.path.join(args.cache, "home")
    import lamina.log  # noqa: F401  (installs the handler)

    logging.getLogger("lamina").setLevel(logging.ERROR)
    info = machine()
    load_before = os.getloadavg()
    out = [f"machine: {info.get('cpu', '?')}, {info['cores']} cores, {info.get('ram_gib')} GiB; "
           f"{info['versions']}",
           f"command: python bench/features.py {' '.join(argv or sys.argv[1:])}".rstrip(),
           f"warm latency, {args.repeats} repeats after {args.warmup} warm-up; ratio = lamina "
           "p50 ÷ raw DuckDB p50 on the same files", ""]
    for n in args.sizes:
        meta, times = bench_size(args.cache, n, args.repeats, args.warmup, args.rebuild)
        out += [table(n, meta, times), ""]
        print("\n".join(out[-2:]), flush=True)
    load_after = os.getloadavg()
    out[2] += (f"; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
               f"({info['cores']} cores: above that, other processes shared the CPU)")
    print("\n".join(out[:4]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
