#!/usr/bin/env python
"""Foundation benchmark: init, one-row save latency, commit throughput — local root and S3.

    python bench/foundation.py                 # defaults: a few minutes on 2 cores
    python bench/foundation.py --quick         # small sizes, for a smoke run
    python bench/foundation.py --no-s3         # local root only

Every figure has a baseline measured in the same run on the same storage, and the ratio
lamina ÷ baseline as a *cost* (time ÷ time, or baseline rate ÷ lamina rate), so > 1 always means
lamina is slower by that factor. Baselines are the bare storage format: ``deltalake`` writes of
the same rows to a plain Delta table, with no catalog logic. The S3 root is ``moto_server`` on
127.0.0.1 (``lamina.testing.s3_server``), started by this script.

Every measurement is checked afterwards: rows counted through lamina's query API (ids distinct),
artifact objects present with the right size, baseline tables counted with deltalake. A failed
check aborts the run: a figure that did not really happen is not printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field

# Seed system's figures (shared/design.md, "What the seed system measures on this machine").
SEED_SAVE_P50_MS = 25.0
SEED_BULK_RECORDS_PER_S = 450.0
BUCKET = "lamina-bench"
# Measure the lamina of the tree this script is in, not an installed one; or that of the tree
# latency_ab.py names in LAMINA_BENCH_TREE. Spawned writer processes import this module again,
# so the choice holds for them too (a sys.path set by the parent alone was undone here, and the
# "before" runs of an A/B measured the tree after).
sys.path.insert(0, os.environ.get("LAMINA_BENCH_TREE")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- small helpers -------------------------------------------------------------------------
def p50(xs):
    return statistics.median(xs)


def p90(xs):
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def quiet_lamina():
    # The "no run & transform got linked" warning on every save is noise here (and costs a
    # stderr write); errors still show.
    import lamina.log  # noqa: F401  (installs the handler)

    logging.getLogger("lamina").setLevel(logging.ERROR)


class CheckFailed(RuntimeError):
    pass


def check(condition: bool, message: str):
    if not condition:
        raise CheckFailed(message)


@dataclass
class Row:
    section: str
    figure: str
    lamina: float
    baseline: float | None
    kind: str  # "ms", "s", "rate"
    unit: str = ""
    seed: str = ""
    note: str = ""

    def cost_ratio(self) -> float | None:
        if self.baseline is None or not self.lamina or not self.baseline:
            return None
        if self.kind == "rate":
            return self.baseline / self.lamina
        return self.lamina / self.baseline


def fmt(value: float | None, kind: str, unit: str = "") -> str:
    if value is None:
        return "—"
    if kind == "ms":
        return f"{value * 1e3:,.1f} ms" if value < 10 else f"{value * 1e3:,.0f} ms"
    if kind == "s":
        return f"{value:,.2f} s"
    if value >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:,.1f} {unit}".strip()


# ---- machine ---------------------------------------------------------------------------------
def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def wait_idle(limit_s: float, cores: int) -> None:
    """Wait (up to ``limit_s``) until the 1-minute load is below half the cores."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] > cores / 2 and time.monotonic() < deadline:
        time.sleep(5)


def machine() -> dict:
    import lamina

    info = {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "lamina": os.path.dirname(lamina.__file__)}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor() or "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    tmp = os.path.realpath(tempfile.gettempdir())
    try:
        best = ("", "?")
        with open("/proc/mounts") as f:
            for line in f:
                _, mnt, fstype, *_ = line.split()
                if (tmp + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[0]):
                    best = (mnt, fstype)
        info["tmp_fs"] = f"{tmp} on {best[0]} ({best[1]})"
    except OSError:
        info["tmp_fs"] = tmp
    import deltalake
    import duckdb
    import pyarrow

    import lamina

    info["versions"] = (f"python {platform.python_version()}, lamina {lamina.__version__}, "
                        f"deltalake {deltalake.__version__}, pyarrow {pyarrow.__version__}, "
                        f"duckdb {duckdb.__version__}")
    info["kernel"] = platform.release()
    return info


# ---- storage targets ----------------------------------------------------------------------------
@dataclass
class Target:
    """Where one run of a figure writes: a local folder or a prefix in the loopback bucket."""

    name: str  # "local" / "s3"
    base: str  # a folder or s3://bucket
    n: int = field(default=0)

    def fresh(self, label: str) -> str:
        self.n += 1
        if self.name == "local":
            path = os.path.join(self.base, f"{label}-{self.n}")
            os.makedirs(path)
            return path
        return f"{self.base}/{label}-{self.n}"

    def location(self, uri: str):
        from lamina.catalog.location import Location

        return Location.of(uri)


def arrow_rows(spec, rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=spec.arrow_schema())


def now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def artifact_row(i: int) -> dict:
    return {"id": i, "uid": f"{i:016d}0000", "key": f"bench/file-{i:04d}.txt", "suffix": ".txt",
            "size": 1024, "hash": f"{i:022d}", "is_latest": True, "is_locked": False,
            "created_at": now(), "branch_id": 1, "created_on_id": 1, "space_id": 1,
            "storage_id": 1, "created_by_id": 1}


def record_row(i: int, prefix: str = "raw") -> dict:
    return {"id": i, "uid": f"{i:016d}", "name": f"{prefix}-{i}", "is_type": False,
            "is_locked": False, "created_at": now(), "branch_id": 1, "created_on_id": 1,
            "space_id": 1, "created_by_id": 1}


def delta_count(uri: str, options) -> int:
    from deltalake import DeltaTable

    dt = DeltaTable(uri, storage_options=options)
    return dt.to_pyarrow_dataset().to_table(columns=["id"], use_threads=False).num_rows


# ---- 1. init --------------------------------------------------------------------------------------
def bench_init(target: Target, repeats: int) -> list[Row]:
    import lamina as ln
    from deltalake import write_deltalake

    from lamina.catalog import tables

    def raw_init(root: str):
        """The storage format's minimum for the same instance: metadata file created exclusively,
        the four bootstrap tables written with their rows in one commit each."""
        loc = target.location(root)
        opts = loc.delta_options
        with loc.fs.open(loc.join(".lamina/instance.json"), "xb") as f:
            f.write(b'{"uid": "raw"}')
        t = now()
        content = {
            "core.user": [{"id": 1, "uid": "u", "handle": "h", "name": "n", "created_at": t}],
            "core.branch": [{"id": i, "uid": str(i), "name": n, "created_at": t,
                             "created_by_id": 1} for i, n in ((1, "main"), (0, "archive"),
                                                              (-1, "trash"))],
            "core.space": [{"id": 1, "uid": "A" * 12, "name": "all", "created_at": t}],
            "core.storage": [{"id": 1, "uid": "s", "root": root, "type": loc.type,
                              "created_at": t, "branch_id": 1}],
        }
        for qualified, rows in content.items():
            spec = tables.get(qualified)
            write_deltalake(loc.join(".lamina/catalog", spec.module, spec.name),
                            arrow_rows(spec, rows), storage_options=opts)

    lamina_t, raw_t = [], []
    for i in range(repeats + 1):  # the first of each is a warm-up
        root = target.fresh("init")
        t0 = time.perf_counter()
        inst = ln.init(storage=root)
        dt = time.perf_counter() - t0
        check(ln.Storage.filter(root=inst.root).count() == 1, f"init {root}: no storage row")
        check(ln.Branch.filter().count() == 3, f"init {root}: branches missing")
        raw_root = target.fresh("init-raw")
        t0 = time.perf_counter()
        raw_init(raw_root)
        rt = time.perf_counter() - t0
        check(delta_count(target.location(raw_root).join(".lamina/catalog/core/branch"),
                          target.location(raw_root).delta_options) == 3, "raw init: branches")
        if i:
            lamina_t.append(dt)
            raw_t.append(rt)
    return [Row("1 init", f"`ln.init` time, {target.name} root (median of {repeats})",
                p50(lamina_t), p50(raw_t), "ms", seed="—",
                note="baseline: instance.json + 4 bootstrap Delta tables, one write each")]


# ---- 2. one-row artifact save latency ---------------------------------------------------------------
class Breakdown:
    """Exclusive wall time per instrumented function (nested calls are subtracted)."""

    def __init__(self):
        self.acc: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[list] = []
        self.undo: list = []

    def wrap(self, owner, attr: str, label: str):
        original = getattr(owner, attr)
        me = self

        def wrapper(*args, **kwargs):
            frame = [0.0]
            me.stack.append(frame)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                me.stack.pop()
                me.acc[label] = me.acc.get(label, 0.0) + elapsed - frame[0]
                me.calls[label] = me.calls.get(label, 0) + 1
                if me.stack:
                    me.stack[-1][0] += elapsed

        setattr(owner, attr, wrapper)
        self.undo.append((owner, attr, original))

    def restore(self):
        for owner, attr, original in reversed(self.undo):
            setattr(owner, attr, original)
        self.undo.clear()


def instrument() -> Breakdown:
    import deltalake

    from lamina.catalog import deltalake_commit, objects, snapshot, store
    from lamina.engine import session

    b = Breakdown()
    b.wrap(objects, "describe_local", "hash the local file")
    b.wrap(objects, "upload", "upload the object (fsspec put)")
    b.wrap(deltalake.DeltaTable, "update_incremental", "read the Delta log (update_incremental)")
    b.wrap(deltalake.DeltaTable, "__init__", "open a Delta table (DeltaTable())")
    b.wrap(deltalake_commit, "write_deltalake", "Delta commit (write_deltalake)")
    b.wrap(store.append_commit, "write_data_file", "data file of an append (pyarrow, PUT)")
    b.wrap(store.append_commit, "put_log_entry", "Delta log entry (put-if-absent)")
    b.wrap(snapshot.Snapshot, "read", "dup-hash check in the plan (Snapshot.read)")
    b.wrap(snapshot.Snapshot, "of_table", "snapshot metadata (add actions, schema)")
    b.wrap(store.TableStore, "compact", "compaction (every 32 files)")
    b.wrap(session.Session, "_create_view", "DuckDB view refresh (CREATE VIEW)")
    b.wrap(session.Session, "arrow", "DuckDB query (Artifact() dup-hash lookup)")
    return b


def bench_save(target: Target, n: int, warmup: int, breakdown_n: int) -> tuple[list[Row], list]:
    import numpy as np
    from deltalake import DeltaTable, write_deltalake

    import lamina as ln
    from lamina.catalog import tables

    root = target.fresh("save")
    inst = ln.init(storage=root)
    loc = target.location(root)
    fs = inst.location.fs
    files_dir = tempfile.mkdtemp(prefix="lamina-bench-files-")
    rng = np.random.default_rng(0)
    total = warmup + n + breakdown_n
    paths = []
    for i in range(total):
        p = os.path.join(files_dir, f"file-{i:04d}.txt")
        with open(p, "wb") as f:
            f.write(rng.bytes(1024))  # 1 KiB, distinct content: no save is a dedup hit
        paths.append(p)

    # Baseline: one write_deltalake append of a one-row artifact table, same storage, held
    # handle. Lamina and baseline alternate one operation at a time, so a change in the
    # machine's load during the run hits both alike.
    spec = tables.get("core.artifact")
    uri = loc.join("baseline-save")
    write_deltalake(uri, arrow_rows(spec, [artifact_row(0)]), storage_options=loc.delta_options)
    handle = DeltaTable(uri, storage_options=loc.delta_options)

    saved, lat, raw = [], [], []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        a = ln.Artifact(paths[i], key=f"bench/file-{i:04d}.txt").save()
        dt = time.perf_counter() - t0
        saved.append(a)
        row = arrow_rows(spec, [artifact_row(i + 1)])
        t0 = time.perf_counter()
        write_deltalake(handle, row, mode="append")
        rt = time.perf_counter() - t0
        if i >= warmup:
            lat.append(dt)
            raw.append(rt)

    # Where the time goes: the same save, instrumented (a separate run; wrappers cost µs).
    parts = []
    if breakdown_n:
        b = instrument()
        t0 = time.perf_counter()
        try:
            for i in range(warmup + n, total):
                saved.append(ln.Artifact(paths[i], key=f"bench/file-{i:04d}.txt").save())
        finally:
            b.restore()
        wall = time.perf_counter() - t0
        covered = sum(b.acc.values())
        parts = [(label, b.acc[label] / breakdown_n, b.calls[label] / breakdown_n)
                 for label in sorted(b.acc, key=b.acc.get, reverse=True)]
        parts.append(("other (Python: records, planning, Arrow conversion, ...)",
                      (wall - covered) / breakdown_n, None))
        parts.insert(0, ("total per save (instrumented)", wall / breakdown_n, None))

    # Honesty: every save is a row, every row's object exists with its size.
    check(len({a.id for a in saved}) == total, "artifact ids not distinct")
    check(ln.Artifact.filter(key__startswith="bench/").count() == total,
          f"expected {total} artifact rows")
    with contextlib.suppress(Exception):
        fs.invalidate_cache()
    for a in saved:
        check(fs.size(a.path) == 1024, f"object of {a.uid} missing or wrong size at {a.path}")
    check(delta_count(uri, loc.delta_options) == warmup + n + 1, "baseline save rows")

    # Components of the floor: an object PUT, a log read when nothing changed.
    puts, logs = [], []
    for i in range(n):
        key = loc.join(f"baseline-objects/{i}.txt")
        t0 = time.perf_counter()
        fs.put_file(paths[i], key)
        puts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        handle.update_incremental()
        logs.append(time.perf_counter() - t0)
    shutil.rmtree(files_dir, ignore_errors=True)

    where = target.name
    rows = [
        Row("2 save", f"`Artifact(file, key=).save()` p50, {where} (n={n})", p50(lat), p50(raw),
            "ms", seed=f"~{SEED_SAVE_P50_MS:.0f} ms",
            note="baseline: write_deltalake append of one artifact row (held DeltaTable)"),
        Row("2 save", f"`Artifact(file, key=).save()` p90, {where} (n={n})", p90(lat), p90(raw),
            "ms", seed="—"),
    ]
    floor = {"put": p50(puts), "log": p50(logs), "append": p50(raw)}
    return rows, [(where, parts, floor)]


# ---- 3a. sequential record saves ---------------------------------------------------------------
def bench_records(target: Target, m: int, warmup: int) -> list[Row]:
    from deltalake import DeltaTable, write_deltalake

    import lamina as ln
    from lamina.catalog import tables

    root = target.fresh("records")
    ln.init(storage=root)
    spec = tables.get("core.record")
    loc = target.location(root)
    uri = loc.join("baseline-records")
    write_deltalake(uri, arrow_rows(spec, [record_row(0)]), storage_options=loc.delta_options)
    handle = DeltaTable(uri, storage_options=loc.delta_options)
    lam = raw = 0.0
    for i in range(warmup + m):  # alternating, as for artifacts
        name = f"warm-{i}" if i < warmup else f"seq-{i - warmup}"
        t0 = time.perf_counter()
        ln.Record(name=name).save()
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_deltalake(handle, arrow_rows(spec, [record_row(i + 1)]), mode="append")
        rt = time.perf_counter() - t0
        if i >= warmup:
            lam += dt
            raw += rt
    check(ln.Record.filter(name__startswith="seq-").count() == m, f"expected {m} seq records")
    ids = ln.Record.filter().to_arrow(columns=["id"]).column("id").to_pylist()
    check(len(ids) == len(set(ids)) == m + warmup, "record ids not distinct")
    check(delta_count(uri, loc.delta_options) == warmup + m + 1, "baseline record rows")
    return [Row("3a sequential", f"sequential `Record(name=).save()`, {target.name} (m={m})",
                m / lam, m / raw, "rate", "commits/s",
                seed="—", note="baseline: write_deltalake append of one record row")]


# ---- 3b. bulk append through TableStore.transact ------------------------------------------------
def record_batch(n: int, user_id: int):
    """``n`` Record rows in the table's own schema; ``id`` is filled in by the plan."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from lamina.catalog import tables
    from lamina.catalog.ids import BASE62

    spec = tables.get("core.record")
    schema = spec.arrow_schema()
    rng = np.random.default_rng(n)
    alphabet = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    uid_bytes = alphabet[rng.integers(0, 62, size=(n, 16))].tobytes()
    offsets = pa.array(np.arange(0, 16 * (n + 1), 16, dtype=np.int32))
    uids = pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(uid_bytes))
    names = pc.binary_join_element_wise("bulk-", pc.cast(pa.array(np.arange(n)), pa.string()), "")
    given = {
        "id": pa.array(np.zeros(n, dtype=np.int64)), "uid": uids, "name": names,
        "is_type": pa.array(np.zeros(n, dtype=bool)),
        "is_locked": pa.array(np.zeros(n, dtype=bool)),
        "created_at": pa.array([now()] * 1, type=schema.field("created_at").type).take(
            pa.array(np.zeros(n, dtype=np.int64))),
        "branch_id": pa.array(np.ones(n, dtype=np.int64)),
        "created_on_id": pa.array(np.ones(n, dtype=np.int64)),
        "space_id": pa.array(np.ones(n, dtype=np.int64)),
        "created_by_id": pa.array(np.full(n, user_id, dtype=np.int64)),
    }
    columns = [given[f.name] if f.name in given else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def with_ids(table, first_id: int):
    import numpy as np
    import pyarrow as pa

    ids = pa.array(np.arange(first_id, first_id + table.num_rows, dtype=np.int64))
    return table.set_column(0, table.schema.field(0), ids)


def bench_bulk(target: Target, sizes: list[int], repeats: dict[int, int]) -> list[Row]:
    from deltalake import DeltaTable, write_deltalake

    import lamina as ln
    from lamina.catalog.snapshot import Change

    root = target.fresh("bulk")
    inst = ln.init(storage=root)
    store = inst.store(ln.Record._spec)
    loc = target.location(root)
    uri = loc.join("baseline-bulk")
    appended = 0
    raw_appended = 0

    def append(table):
        return store.transact(lambda snap: Change(append=with_ids(table, snap.next_id),
                                                  result=snap.next_id))

    # Warm-up both paths (first Parquet write of the process, table creation).
    warm = record_batch(10_000, inst.user_id)
    append(warm)
    appended += warm.num_rows
    write_deltalake(uri, with_ids(warm, 1), storage_options=loc.delta_options)
    raw_appended += warm.num_rows
    dt_ = DeltaTable(uri, storage_options=loc.delta_options)

    rows = []
    for n in sizes:
        batch = record_batch(n, inst.user_id)
        lam, raw = [], []
        for _ in range(repeats.get(n, 1)):
            t0 = time.perf_counter()
            first = append(batch).result
            lam.append(time.perf_counter() - t0)
            check(first == appended + 1, f"bulk ids start at {first}, expected {appended + 1}")
            appended += n
            shaped = with_ids(batch, raw_appended + 1)  # the same rows, ids filled in
            t0 = time.perf_counter()
            write_deltalake(dt_, shaped, mode="append")
            raw.append(time.perf_counter() - t0)
            raw_appended += n
        rows.append(Row("3b bulk", f"bulk append of {n:,} Record rows, {target.name} "
                        f"(median of {len(lam)})", n / p50(lam), n / p50(raw), "rate", "rows/s",
                        seed=f"~{SEED_BULK_RECORDS_PER_S:.0f} rows/s (bulk `ln.save`)",
                        note=f"lamina {p50(lam):.2f} s vs raw {p50(raw):.2f} s per batch"))
    stats = ln.sql("SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, "
                   "max(id) AS hi FROM record").iloc[0]
    check(int(stats["n"]) == int(stats["d"]) == appended and int(stats["lo"]) == 1
          and int(stats["hi"]) == appended, f"bulk rows {dict(stats)} != {appended}")
    check(delta_count(uri, loc.delta_options) == raw_appended, "baseline bulk rows")
    return rows


# ---- 3c. concurrent writer processes -----------------------------------------------------------------
def _writer(kind: str, uri: str, who: int, k: int, barrier, results, env: dict):
    """One writer process: K one-row commits after everybody is ready."""
    os.environ.update(env)
    attempts = {"n": 0, "conflicts": 0, "yields": 0}
    latencies: list[float] = []
    try:
        if kind == "lamina":
            import lamina as ln
            from lamina.catalog import store

            tree = os.environ.get("LAMINA_BENCH_TREE")
            check(not tree or ln.__file__.startswith(tree),
                  f"writer measures {ln.__file__}, not the tree {tree}")

            quiet_lamina()
            original = store.TableStore._commit

            def counting(self, *args, **kwargs):
                attempts["n"] += 1
                try:
                    return original(self, *args, **kwargs)
                except (store.CommitFailedError, store.append_commit.LostRace):
                    attempts["conflicts"] += 1
                    raise
                except store.turns.TurnTaken:  # waited for a writer holding the turn
                    attempts["yields"] += 1
                    raise

            store.TableStore._commit = counting
            ln.connect(uri)
            ln.Record(name=f"warm-{who}").save()
            barrier.wait()
            t0 = time.time()
            for i in range(k):
                started = time.perf_counter()
                ln.Record(name=f"conc-{who}-{i}").save()
                latencies.append(time.perf_counter() - started)
            t1 = time.time()
        else:
            from deltalake import DeltaTable, write_deltalake
            from deltalake.exceptions import CommitFailedError

            from lamina.catalog import tables
            from lamina.catalog.location import Location

            spec = tables.get("core.record")
            dt_ = DeltaTable(uri, storage_options=Location.of(uri).delta_options)

            def one(i):
                while True:
                    attempts["n"] += 1
                    try:
                        write_deltalake(dt_, arrow_rows(spec, [record_row(i)]), mode="append")
                        return
                    except CommitFailedError:
                        attempts["conflicts"] += 1
                        dt_.update_incremental()

            one(who * 1_000_000)
            barrier.wait()
            t0 = time.time()
            for i in range(k):
                one(who * 1_000_000 + i + 1)
            t1 = time.time()
        results.put((who, t0, t1, attempts["n"], attempts["conflicts"], None, latencies,
                     attempts["yields"]))
    except BaseException as exc:  # report, do not hang the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put((who, 0, 0, 0, 0, repr(exc), [], 0))


def run_writers(kind: str, uri: str, p: int, k: int, latencies: list | None = None,
                yields: list | None = None) -> tuple[float, int, int]:
    """Run ``p`` writer processes of ``k`` saves each; their commits/s, commit attempts and
    lost races (and, into ``latencies``, every save's seconds; into ``yields``, the attempts
    that gave way to a writer holding the table's turn)."""
    ctx = mp.get_context("spawn")  # no fork of a process holding tokio/DuckDB threads
    barrier = ctx.Barrier(p)
    results = ctx.Queue()
    env = {k_: v for k_, v in os.environ.items() if k_.startswith(("AWS_", "LAMINA_"))}
    procs = [ctx.Process(target=_writer, args=(kind, uri, w, k, barrier, results, env))
             for w in range(p)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    errors = [g[5] for g in got if g[5]]
    check(not errors, f"{kind} writer failed: {errors}")
    start = min(g[1] for g in got)
    end = max(g[2] for g in got)
    attempts = sum(g[3] for g in got)
    conflicts = sum(g[4] for g in got)
    if latencies is not None:
        latencies.extend(x for g in got for x in g[6])
    if yields is not None:
        yields.append(sum(g[7] for g in got))
    return p * k / (end - start), attempts, conflicts


def bench_concurrent(target: Target, writers: list[int], k: int) -> list[Row]:
    from deltalake import write_deltalake

    import lamina as ln
    from lamina.catalog import tables

    rows = []
    for p in writers:
        root = target.fresh(f"conc{p}")
        ln.init(storage=root)
        ln.Record(name="parent").save()  # the table exists before the race starts
        rate, attempts, conflicts = run_writers("lamina", root, p, k)
        # Nothing lost: every commit of every writer is a row, ids distinct.
        got = ln.Record.filter(name__startswith="conc-").to_arrow(columns=["id", "name"])
        names = set(got.column("name").to_pylist())
        expected = {f"conc-{w}-{i}" for w in range(p) for i in range(k)}
        check(names == expected and got.num_rows == p * k,
              f"{p} writers: {got.num_rows} rows, {len(expected - names)} lost")
        all_ids = ln.Record.filter().to_arrow(columns=["id"]).column("id").to_pylist()
        check(len(all_ids) == len(set(all_ids)) == p * k + p + 1, "concurrent ids not distinct")

        loc = target.location(root)
        uri = loc.join("baseline-conc")
        write_deltalake(uri, arrow_rows(tables.get("core.record"), [record_row(0)]),
                        storage_options=loc.delta_options)
        raw_rate, raw_attempts, raw_conflicts = run_writers("raw", uri, p, k)
        check(delta_count(uri, loc.delta_options) == p * k + p + 1, "baseline concurrent rows")
        rows.append(Row(
            "3c concurrent", f"{p} writer processes × {k} `Record.save()`, {target.name}",
            rate, raw_rate, "rate", "commits/s", seed="—",
            note=(f"all {p * k} rows present, ids distinct; commit attempts lamina "
                  f"{attempts} ({conflicts} lost a race and re-planned), raw {raw_attempts} "
                  f"({raw_conflicts} failed after deltalake's own retries)")))
    return rows


# ---- 3d. save latency under contention -----------------------------------------------------------
def bench_latency(target: Target, p: int, k: int) -> dict:
    """Every save of ``p`` writer processes × ``k`` saves racing on one table: the spread of
    waits is what a user notices (a writer that keeps losing the race waits longest)."""
    import lamina as ln

    root = target.fresh(f"latency{p}")
    ln.init(storage=root)
    ln.Record(name="parent").save()
    latencies: list[float] = []
    yields: list[int] = []
    s3 = root.startswith("s3://")
    if s3:  # every request the server sees during the race (they do not depend on load)
        recorder("reset-recording")
        recorder("start-recording")
    t0 = time.perf_counter()
    rate, attempts, conflicts = run_writers("lamina", root, p, k, latencies, yields)
    wall = time.perf_counter() - t0
    requests, by_kind = {}, {}
    if s3:
        recorder("stop-recording")
        # One JSON object per request; with many clients at once two may share a line.
        text, decoder = recorder("download-recording").decode(), json.JSONDecoder()
        at = _SPACE.match(text).end()
        while at < len(text):
            entry, at = decoder.raw_decode(text, at)
            requests[entry["method"]] = requests.get(entry["method"], 0) + 1
            kind = f"{entry['method']} {request_kind(entry)}"
            by_kind[kind] = by_kind.get(kind, 0) + 1
            at = _SPACE.match(text, at).end()
    names = set(ln.Record.filter(name__startswith="conc-").to_arrow(columns=["name"])
                .column("name").to_pylist())
    check(names == {f"conc-{w}-{i}" for w in range(p) for i in range(k)},
          f"latency run on {target.name}: saves lost")
    xs = sorted(latencies)
    return {"root": target.name, "writers": p, "saves_each": k, "saves": len(xs),
            "p50_s": xs[len(xs) // 2], "p99_s": xs[min(len(xs) - 1, int(len(xs) * 0.99))],
            "max_s": xs[-1], "wall_s": wall, "commits_per_s": rate, "attempts": attempts,
            "lost_races": conflicts, "yields": yields[0], "requests": requests,
            "requests_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "requests_per_save": sum(requests.values()) / len(xs) if requests else None,
            "load": loadavg(), "latencies_s": latencies}


def render_latency(results: list[dict]) -> str:
    out = ["| root | writers × saves | p50 | p99 | max | max / p99 | commits/s | lost races | "
           "yields to the turn | requests per save | load (1, 5, 15 min) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_save = r.get("requests_per_save")
        out.append(f"| {r['root']} | {r['writers']} × {r['saves_each']} | "
                   f"{r['p50_s'] * 1e3:,.0f} ms | {r['p99_s'] * 1e3:,.0f} ms | "
                   f"{r['max_s'] * 1e3:,.0f} ms | {r['max_s'] / r['p99_s']:.2f} | "
                   f"{r['commits_per_s']:.1f} | {r['lost_races']} of {r['attempts']} | "
                   f"{r.get('yields', 0)} | {'—' if per_save is None else f'{per_save:.1f}'} | "
                   f"{r['load']} |")
    return "\n".join(out)


_SPACE = re.compile(r"\s*")


def request_kind(entry: dict) -> str:
    """What a recorded request touched: the table's turn (its queue of tickets; a lease
    object before), a log commit, a checkpoint, a data file, a listing, or something else."""
    path = entry.get("url") or entry.get("path") or ""
    path, _, query = path.partition("?")
    if path.endswith(".lease"):
        return "lease"
    if ".turns/" in path or ".turns/" in urllib.parse.unquote(query):
        return "turn"
    if "list-type" in query or "prefix=" in query:
        return "list"
    if "/_delta_log/" in path:
        return "checkpoint" if "checkpoint" in path else "log"
    if path.endswith(".parquet"):
        return "data file"
    return "other"


def recorder(action: str) -> bytes:
    """moto's request recorder (reset-, start-, stop-, download-recording)."""
    import urllib.request

    method = "GET" if action == "download-recording" else "POST"
    request = urllib.request.Request(
        os.environ["AWS_ENDPOINT_URL"] + "/moto-api/recorder/" + action,
        data=None if method == "GET" else b"", method=method)
    return urllib.request.urlopen(request).read()


# ---- output -------------------------------------------------------------------------------------------
def render(rows: list[Row]) -> str:
    out = ["| # | figure | lamina | baseline | cost ratio | seed system |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.cost_ratio()
        out.append(f"| {r.section} | {r.figure} | {fmt(r.lamina, r.kind, r.unit)} | "
                   f"{fmt(r.baseline, r.kind, r.unit)} | "
                   f"{'—' if ratio is None else f'{ratio:.2f}×'} | {r.seed} |")
    notes = [f"- {r.section}, {r.figure.split(',')[0]}: {r.note}" for r in rows if r.note]
    return "\n".join(out) + "\n\nNotes:\n" + "\n".join(dict.fromkeys(notes))


def render_breakdown(breakdowns) -> str:
    out = []
    for where, parts, floor in breakdowns:
        if not parts:
            continue
        out.append(f"\nWhere one `Artifact(file, key=).save()` spends its time, {where} root "
                   f"(exclusive time, mean per save):\n")
        out.append("| part | ms/save | calls/save |")
        out.append("|---|---|---|")
        for label, seconds, calls in parts:
            out.append(f"| {label} | {seconds * 1e3:.1f} | "
                       f"{'' if calls is None else f'{calls:g}'} |")
        out.append(f"\nFloor components on the same storage (p50): object PUT "
                   f"{floor['put'] * 1e3:.1f} ms, Delta log read with nothing new "
                   f"{floor['log'] * 1e3:.1f} ms, one-row Delta append {floor['append'] * 1e3:.1f}"
                   f" ms → floor of a safe save ≈ {sum(floor.values()) * 1e3:.1f} ms.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-repeats", type=int, default=5)
    ap.add_argument("--saves", type=int, default=50, help="timed artifact saves per root")
    ap.add_argument("--warmup", type=int, default=5, help="untimed saves first")
    ap.add_argument("--breakdown-saves", type=int, default=20,
                    help="extra instrumented saves for the time breakdown (0: skip)")
    ap.add_argument("--record-saves", type=int, default=100, help="sequential Record saves")
    ap.add_argument("--bulk-sizes", default="100000,1000000")
    ap.add_argument("--bulk-repeats", type=int, default=3,
                    help="repeats per bulk size (sizes of 1e6 and above: 1 less, at least 1)")
    ap.add_argument("--bulk-s3", action="store_true", help="also bulk-append on the S3 root")
    ap.add_argument("--writers", default="2,4")
    ap.add_argument("--writer-saves", type=int, default=30, help="K one-row saves per writer")
    ap.add_argument("--latency-writers", type=int, default=8,
                    help="writer processes racing for the save-latency table (0: skip)")
    ap.add_argument("--latency-saves", type=int, default=25, help="saves per racing writer")
    ap.add_argument("--only-latency", action="store_true",
                    help="run only the save-latency table (and init, to warm up)")
    ap.add_argument("--no-s3", action="store_true", help="local root only")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "foundation_results.json"),
                    help="where the raw results go (default: beside this script)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to this long for the 1-minute load to fall below "
                         "half the cores (shared machines)")
    args = ap.parse_args(argv)
    if args.quick:
        args.init_repeats, args.saves, args.warmup, args.breakdown_saves = 2, 10, 2, 5
        args.record_saves, args.bulk_sizes, args.bulk_repeats = 20, "10000", 1
        args.writer_saves = 5

    work = tempfile.mkdtemp(prefix="lamina-bench-")
    os.environ["LAMINA_HOME"] = os.path.join(work, "home")  # never touch the user's settings
    os.environ["LAMINA_CACHE_DIR"] = os.path.join(work, "cache")
    os.environ.pop("LAMINA_INSTANCE", None)
    quiet_lamina()

    info = machine()
    if args.wait_idle:
        wait_idle(args.wait_idle, info["usable_cores"])
    info["load_start"] = loadavg()
    print(f"machine: {info['cores']} cores ({info['usable_cores']} usable), {info.get('cpu')}, "
          f"{info.get('ram_gib')} GiB RAM, kernel {info['kernel']}")
    print(f"         {info['versions']}")
    print(f"         local roots under {info['tmp_fs']}; S3 = moto_server on 127.0.0.1")
    print(f"         load average at start (1, 5, 15 min): {info['load_start']}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}\n", flush=True)

    sizes = [int(float(s)) for s in args.bulk_sizes.split(",") if s]
    repeats = {n: max(1, args.bulk_repeats - (n >= 1_000_000)) for n in sizes}
    writers = [int(w) for w in args.writers.split(",") if w]
    rows: list[Row] = []
    breakdowns: list = []
    started = time.perf_counter()

    with contextlib.ExitStack() as stack:
        targets = [Target("local", os.path.join(work, "local"))]
        os.makedirs(targets[0].base)
        if not args.no_s3:
            from lamina.testing import create_bucket, s3_server

            stack.enter_context(s3_server())
            create_bucket(BUCKET)
            targets.append(Target("s3", f"s3://{BUCKET}"))

        def step(name, fn, *a):
            t0 = time.perf_counter()
            print(f"… {name}", end="", flush=True)
            out = fn(*a)
            print(f" ({time.perf_counter() - t0:.0f} s)", flush=True)
            return out

        latency: list[dict] = []
        for t in targets:
            rows += step(f"init, {t.name}", bench_init, t, args.init_repeats)
        for t in targets if args.latency_writers else ():
            latency.append(step(f"save latency, {args.latency_writers} writers, {t.name}",
                                bench_latency, t, args.latency_writers, args.latency_saves))
        for t in targets if not args.only_latency else ():
            r, b = step(f"artifact saves, {t.name}", bench_save, t, args.saves, args.warmup,
                        args.breakdown_saves)
            rows += r
            breakdowns += b
        for t in targets if not args.only_latency else ():
            rows += step(f"sequential records, {t.name}", bench_records, t, args.record_saves,
                         args.warmup)
        for t in targets if not args.only_latency else ():
            if t.name == "local" or args.bulk_s3:
                rows += step(f"bulk append, {t.name}", bench_bulk, t, sizes, repeats)
        for t in targets if not args.only_latency else ():
            rows += step(f"concurrent writers, {t.name}", bench_concurrent, t, writers,
                         args.writer_saves)

    info["load_end"] = loadavg()
    print(f"\nall checks passed; {time.perf_counter() - started:.0f} s; load average at end: "
          f"{info['load_end']}\n")
    print(render(rows))
    print(render_breakdown(breakdowns))
    if latency:
        print(f"\nSave latency with {args.latency_writers} writer processes racing on one "
              "table (every `Record.save()` of every writer):\n")
        print(render_latency(latency))
    print("\ncost ratio = lamina time ÷ baseline time (for rates: baseline rate ÷ lamina rate); "
          "> 1 means lamina is slower by that factor. Baselines are plain deltalake writes of the "
          "same rows on the same storage, measured in this run.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": [r.__dict__ for r in rows],
                       "breakdowns": breakdowns, "save_latency": latency}, f, indent=2,
                      default=str)
        print(f"\nraw results: {args.json}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
