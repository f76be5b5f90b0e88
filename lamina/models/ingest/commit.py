"""Committing a chunk: drop the rows the catalog already has (same hash and key), build the
artifact rows and commit them through the write layer (one Delta commit per chunk)."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ...catalog import objects, tables, writer
from ...catalog.snapshot import Change, Snapshot
from .context import Context
from .labels import encode_labels, flat_names, list_column, list_parts
from .report import IngestReport


class Committer:
    """Commits the chunks of one batch; remembers the artifact-table files its commits added
    (and the hashes of its rows without a key), so a later chunk does not check them again."""

    def __init__(self):
        self._own_files: set[str] = set()
        self._own_unkeyed: set[str] = set()
        self._checked_version: int | None = None

    def existing(self, store, df: pl.DataFrame, report: IngestReport
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split off rows whose (hash, key) is in the catalog or earlier in this chunk: the
        new rows, and the ones the catalog already has (their annotations may need an
        update)."""
        t0 = time.perf_counter()
        dup = df.select(pl.struct("_hash", "_key").is_first_distinct().not_()).to_series()
        n_dup = int(dup.sum())
        if n_dup:
            df = df.filter(~dup)
        # Rows without a key that an earlier chunk of this save committed.
        earlier = (pl.col("_key").is_null() & pl.col("_hash").is_in(
            pl.Series(list(self._own_unkeyed), dtype=pl.String).implode()))
        n_earlier = int(df.select(earlier.sum()).item()) if self._own_unkeyed else 0
        if n_earlier:
            df = df.filter(~earlier)
        snapshot = store.snapshot()
        found = _existing_pairs(snapshot, df, self._own_files)
        stored = df.clear()
        if found.height:
            stored = df.join(found, on=["_hash", "_key"], how="semi", nulls_equal=True)
            df = df.join(found, on=["_hash", "_key"], how="anti", nulls_equal=True)
        report.existing += n_dup + n_earlier + found.height
        self._checked_version = snapshot.version
        report.timings["commit"] += time.perf_counter() - t0
        return df, stored

    def update_existing(self, ctx: Context, store, df: pl.DataFrame, report: IngestReport,
                        now) -> None:
        """Bring the annotations of artifacts the catalog already has in line with the
        manifest: the fields and features it has columns for (a value it leaves empty is
        cleared), and the label links those features make. One commit per chunk; counted in
        ``report.updated`` and, per field or feature, in ``report.changed``."""
        fields = [f for f in ctx.fields if f not in ("size", "hash")]
        if df.height == 0 or not (fields or ctx.features):
            return
        t0 = time.perf_counter()
        for column, dtype in (("_uid", pl.String), ("_storage_id", pl.Int64)):
            if column not in df.columns:
                df = df.with_columns(pl.lit(None, dtype).alias(column))
        wanted, new_columns = artifact_rows(ctx, df, None, now)
        names = {name: name for name in fields}
        names.update({info.column: name for name, info in ctx.features.items()})
        links = {}  # link column -> the categorical feature columns that fill it
        for info in ctx.features.values():
            if info.dtype.is_categorical:
                for m2m in tables.get("core.artifact").many_to_many:
                    if m2m.target == info.dtype.label_spec.qualified:
                        links.setdefault(m2m.name, []).append(info.column)
        snapshot = store.snapshot()
        present = [c for c in (*names, *links) if c in snapshot.schema.names]
        stored = snapshot.read(["id", "hash", "key", *present],
                               pc.field("hash").isin(wanted.column("hash").unique()))
        by_pair = {(r["hash"], r["key"]): r for r in stored.to_pylist()}
        patches: dict[int, dict] = {}
        for row in wanted.select(["hash", "key", *names]).to_pylist():
            old = by_pair.get((row["hash"], row["key"]))
            if old is None:
                continue
            patch = {c: row[c] for c in names if _differs(row[c], old.get(c))}
            for link, columns in links.items():
                before = {i for c in columns for i in old.get(c) or ()}
                after = {i for c in columns for i in row[c] or ()}
                if before != after:
                    patch[link] = writer.ListEdit(add=sorted(after), remove=before - after)
            if patch:
                patches[old["id"]] = patch
                for column in patch:
                    if column in names:
                        report.changed[names[column]] = report.changed.get(names[column], 0) + 1
        if patches:
            report.updated += writer.update_rows(ctx.instance, store.spec, patches,
                                                 new_columns=new_columns)
        report.timings["commit"] += time.perf_counter() - t0

    def _remember_own(self, store, planned: dict, rows: pa.Table) -> None:
        """The files this save's commit added, so later chunks do not check their rows again
        (keys are unique in a valid manifest; rows without a key are remembered by hash).
        Only when the next version is exactly ours: a concurrent commit or a compaction in
        between leaves its files to be checked."""
        after = store.snapshot()
        if after.version == planned["version"] + 1:
            before = {_basename(f) for f in planned["files"]}
            self._own_files |= {_basename(f) for f in after.files} - before
        unkeyed = pc.is_null(rows.column("key"))
        if pc.any(unkeyed).as_py():
            self._own_unkeyed.update(rows.column("hash").filter(unkeyed).to_pylist())

    def commit(self, ctx: Context, store, df: pl.DataFrame, report: IngestReport,
               run_id, now, bar) -> None:
        t0 = time.perf_counter()
        table, new_columns = artifact_rows(ctx, df, run_id, now)
        checked = self._checked_version
        planned: dict = {}

        def plan(snapshot: Snapshot) -> Change:
            planned.update(version=snapshot.version, files=snapshot.files)
            rows = table
            dropped = 0
            if snapshot.version != checked:
                pairs = pl.from_arrow(rows.select(["hash", "key"])).rename(
                    {"hash": "_hash", "key": "_key"})
                found = _existing_pairs(snapshot, pairs, self._own_files)
                if found.height:
                    keep = pairs.join(found.with_columns(pl.lit(True).alias("_x")),
                                      on=["_hash", "_key"], how="left",
                                      nulls_equal=True, maintain_order="left")["_x"].is_null()
                    dropped = rows.num_rows - int(keep.sum())
                    rows = rows.filter(pa.array(keep.to_numpy()))
            ids = np.arange(snapshot.next_id, snapshot.next_id + rows.num_rows, dtype=np.int64)
            rows = rows.append_column("id", pa.array(ids))
            return Change(append=rows, new_columns=new_columns,
                          result=(rows, dropped))

        change = writer.transact(ctx.instance, store.spec, plan)
        rows, dropped = change.result if change.result else (table.slice(0, 0), 0)
        if rows.num_rows:
            self._remember_own(store, planned, rows)
        if dropped:
            # Another writer registered the same files meanwhile. Our copy of such a file is
            # not needed, unless that writer's row points at the very same object (a
            # concurrent ingestion derives the same uid for the same file).
            kept = set(rows.column("uid").to_pylist())
            mine = {u: sfx for u, sfx, linked in zip(
                df["_uid"].to_list(), df["_suffix"].to_list(),
                df["_storage"].is_not_null().to_list()) if u not in kept and not linked}
            if mine:
                used = set(store.snapshot().read(["uid"], pc.field("uid").isin(list(mine)))
                           .column("uid").to_pylist())
                location = ctx.instance.storage_location(ctx.target_id)
                for uid, suffix in mine.items():
                    if uid not in used:
                        objects.remove(location, objects.object_key(uid, suffix))
        n = rows.num_rows
        if n:
            ids = rows.column("id")
            report.id_ranges.append((int(pc.min(ids).as_py()), int(pc.max(ids).as_py())))
            n_linked = int(pc.sum(pc.is_valid(rows.column("_real_key"))).as_py() or 0)
            report.linked += n_linked
            report.copied += n - n_linked
        report.new += n
        report.existing += dropped
        report.chunks += 1
        bar.update(df.height)
        report.timings["commit"] += time.perf_counter() - t0


def artifact_rows(ctx: Context, df: pl.DataFrame, run_id, now) -> tuple[pa.Table, dict]:
    """The artifact rows of a chunk (without ids) and the feature columns they add."""
    spec = tables.get("core.artifact")
    fields = {f: pl.col(f"_field_{f}") for f in ctx.fields if f not in ("size", "hash")}
    n_files = pl.col("_n_files") if "_n_files" in df.columns else pl.lit(None, pl.Int64)
    base = [
        pl.col("_uid").alias("uid"), pl.col("_key").alias("key"),
        fields.get("description", pl.lit(None, pl.String)).alias("description"),
        pl.col("_suffix").alias("suffix"),
        fields.get("kind", pl.lit(None, pl.String)).alias("kind"),
        fields.get("otype", pl.lit(None, pl.String)).alias("otype"),
        pl.col("_size").alias("size"), pl.col("_hash").alias("hash"),
        n_files.alias("n_files"),
        fields.get("n_observations", pl.lit(None, pl.Int64)).alias("n_observations"),
        fields.get("version_tag", pl.lit(None, pl.String)).alias("version_tag"),
        *(pl.lit(value, dtype=pl.from_arrow(pa.nulls(0, spec.column(name).type)).dtype)
          .alias(name)
          for name, value in {**writer.bookkeeping(spec, ctx.instance.user_id),
                              "created_at": now}.items()),
        pl.col("_storage_id").alias("storage_id"),
        pl.lit(run_id, pl.Int64).alias("run_id"),
        pl.when(pl.col("_storage").is_not_null()).then(pl.col("_rel"))
        .otherwise(None).alias("_real_key"),
    ]
    new_columns: dict = {"_real_key": pa.string()}
    plain, lists, links = [], {}, {}
    for name, info in ctx.features.items():
        new_columns[info.column] = info.dtype.arrow
        if not info.dtype.is_categorical:
            plain.append(pl.col(info.column))
            continue
        if info.column in df.columns:  # encoded during validation
            lists[info.column] = df[info.column].to_arrow()
        else:  # labels were created after validation: encode now
            labels = ctx.labels[(info.dtype.label_spec.qualified, info.dtype.label_type)]
            parents, flat = flat_names(df[f"_cat_{info.id}"])
            lists[info.column] = encode_labels(df.height, parents, flat, labels)
        for m2m in spec.many_to_many:
            if m2m.target == info.dtype.label_spec.qualified:
                links.setdefault(m2m.name, []).append(info.column)
    out = df.select(*base, *plain).to_arrow()
    for column, array in lists.items():
        out = out.append_column(column, _as_list_int64(array))
    for link, columns in links.items():
        merged = list_column(df.height, [list_parts(lists[c]) for c in columns])
        out = out.append_column(link, merged)
    return out, new_columns


def _differs(new, old) -> bool:
    if isinstance(new, float) and isinstance(old, float) and np.isnan(new) and np.isnan(old):
        return False
    return new != old


def _as_list_int64(array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == pa.list_(pa.int64()) else array.cast(pa.list_(pa.int64()))


def _existing_pairs(snapshot: Snapshot, df: pl.DataFrame,
                    skip_files: set[str] = frozenset()) -> pl.DataFrame:
    """(hash, key) pairs of ``df`` that the artifact table has (on any branch), not looking
    into ``skip_files``."""
    if not snapshot.files or df.height == 0:
        return pl.DataFrame(schema={"_hash": pl.String, "_key": pl.String})
    hashes = df["_hash"].drop_nulls().unique().to_arrow()
    # The hash column alone first: a new atlas matches nothing, so keys are rarely read.
    candidates = _read_except(snapshot, ["hash"], pc.field("hash").isin(hashes), skip_files)
    if candidates.num_rows == 0:
        return pl.DataFrame(schema={"_hash": pl.String, "_key": pl.String})
    found = _read_except(snapshot, ["hash", "key"], pc.field("hash").isin(
        pc.unique(candidates.column("hash"))), skip_files)
    found = pl.from_arrow(found).rename({"hash": "_hash", "key": "_key"}).unique()
    return df.select("_hash", "_key").join(found, on=["_hash", "_key"], how="semi",
                                           nulls_equal=True).unique()


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _read_except(snapshot: Snapshot, columns: list[str], filter, skip: set[str]) -> pa.Table:
    """``snapshot.read`` without the data files named in ``skip`` (Delta file names are
    unique)."""
    files = [f for f in snapshot.files if _basename(f) not in skip]
    return snapshot.read(columns, filter, files=files)
