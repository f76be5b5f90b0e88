"""Staging the files: size and existence (one stat per local file, one listing per cloud
folder), hashes (LaminDB's rule; cloud hashes from the listing), uids and the copies into
managed storage."""

from __future__ import annotations

import os
import posixpath
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ...catalog import objects
from ...catalog.ids import BASE62, uid_from_text
from ...catalog.location import Location
from .context import Context
from .report import IngestReport, Issues

# Measured on a 2-core VM: small files hash and copy fastest with few threads (the work is
# mostly system calls under the GIL and one directory's lock); object stores want many
# requests in flight.
HASH_THREADS = 4
LOCAL_COPY_THREADS = 4
UPLOAD_THREADS = 16
# Below this many manifest rows in one cloud "folder", HEAD each object instead of listing.
LIST_MIN_ROWS = 4


def map_in_threads(fn, items, threads: int, chunksize: int = 1) -> list:
    """``list(pool.map(fn, items))`` that stops at once on Ctrl-C: queued work is cancelled
    and the threads still busy are not waited for (a pool's ``with`` block waits for every
    queued item first: 9.7 s for a 100,000-row manifest)."""
    pool = ThreadPoolExecutor(threads)
    try:
        return list(pool.map(fn, items, chunksize=chunksize))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)


def _local_stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    import stat as stat_module

    return st.st_size, stat_module.S_ISDIR(st.st_mode)


def upload_one(location: Location, local: str, key: str, size: int, existing: dict | None) -> bool:
    """Copy ``local`` to ``key`` under ``location`` unless an object of that size is already
    there (uploaded by an interrupted run). True when it was reused."""
    target = location.join(key)
    if location.is_local:
        if os.path.isfile(target) and os.path.getsize(target) == size:
            return True
        if os.path.isfile(local):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = objects.partial_name(target)
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
            return False
    elif existing is not None and existing.get(target.split("://", 1)[1]) == size:
        return True
    objects.upload(location, Path(local), key)  # object stores: a PUT is atomic
    return False


def random_uids(n: int, length: int = 16, suffix: str = "0000") -> pa.Array:
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    alphabet = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    body = alphabet[rng.integers(0, 62, size=(n, length), dtype=np.uint8)]  # 1/8 the bytes
    body = np.hstack([body, np.tile(np.frombuffer(suffix.encode(), np.uint8), (n, 1))])
    width = body.shape[1]
    offsets = pa.array(np.arange(0, width * (n + 1), width, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(body.tobytes()))


def copy_uid(hash_: str, key: str | None, storage_id: int) -> str:
    """The uid of a copied file: the same content, key and storage give the same uid (and so
    the same object key), which lets a rerun find what an interrupted run uploaded."""
    return uid_from_text(f"{hash_}\n{key or ''}\n{storage_id}", 16) + "0000"


class FileStats:
    """Sizes, existence and cloud hashes of a manifest's files; what object stores answered
    is kept for the batch's later passes."""

    def __init__(self, path_column: str):
        self.path_column = path_column
        self._cloud: dict[str, tuple[int, str | None] | None] = {}

    def stat(self, df: pl.DataFrame, issues: Issues) -> pl.DataFrame:
        """Size (and, for cloud objects, hash) of rows that do not carry both; missing files
        become issues. Rows with a given size and hash are trusted and not touched."""
        given_size = pl.col("_field_size") if "_field_size" in df.columns else pl.lit(
            None, dtype=pl.Int64)
        given_hash = pl.col("_field_hash") if "_field_hash" in df.columns else pl.lit(
            None, dtype=pl.String)
        df = df.with_columns(given_size.alias("_size"), given_hash.alias("_hash"),
                             pl.lit(False).alias("_dir"))
        needs = (pl.col("_size").is_null() | pl.col("_hash").is_null()) & pl.col(
            "_path").is_not_null()
        todo = df.filter(needs & pl.col("_local"))
        if todo.height:
            paths = todo["_path"].to_list()
            stats = map_in_threads(_local_stat, paths, HASH_THREADS, chunksize=256)
            found = pl.DataFrame({
                "_row": todo["_row"],
                "_ok": [s is not None for s in stats],
                "_size_st": [None if s is None else s[0] for s in stats],
                "_dir_st": [bool(s and s[1]) for s in stats]},
                schema={"_row": pl.Int64, "_ok": pl.Boolean, "_size_st": pl.Int64,
                        "_dir_st": pl.Boolean})
            df = df.join(found, on="_row", how="left", maintain_order="left")
            issues.add(df, pl.col("_ok") == False, self.path_column,  # noqa: E712
                       pl.format("missing path: {} does not exist", pl.col("_path")))
            df = df.with_columns(
                pl.when(pl.col("_dir_st").fill_null(False)).then(None)
                .otherwise(pl.coalesce("_size", "_size_st")).alias("_size"),
                pl.col("_dir_st").fill_null(False).alias("_dir"),
            ).drop("_ok", "_size_st", "_dir_st")
            df = df.with_columns(pl.when(pl.col("_dir")).then(pl.lit("")).otherwise(
                pl.col("_suffix")).alias("_suffix"))
        cloud = df.filter(needs & ~pl.col("_local") & pl.col("_scheme").is_in(["s3", "gs"])
                          & pl.col("_storage").is_not_null())
        if cloud.height:
            stats = self._cloud_stat(cloud["_path"].to_list())
            found = pl.DataFrame({
                "_row": cloud["_row"],
                "_ok": [s is not None for s in stats],
                "_size_st": [None if s is None else s[0] for s in stats],
                "_hash_st": [None if s is None else s[1] for s in stats]},
                schema={"_row": pl.Int64, "_ok": pl.Boolean, "_size_st": pl.Int64,
                        "_hash_st": pl.String})
            df = df.join(found, on="_row", how="left", maintain_order="left")
            issues.add(df, pl.col("_ok") == False, self.path_column,  # noqa: E712
                       pl.format("missing path: no object {}", pl.col("_path")))
            issues.add(df, (pl.col("_ok") == True) & pl.col("_hash_st").is_null()  # noqa: E712
                       & pl.col("_hash").is_null(), self.path_column,
                       "the object store reports no md5/ETag for it; pass its hash in the "
                       "manifest")
            df = df.with_columns(pl.coalesce("_size", "_size_st").alias("_size"),
                                 pl.coalesce("_hash", "_hash_st").alias("_hash"),
                                 ).drop("_ok", "_size_st", "_hash_st")
        return df

    def _cloud_stat(self, paths: list[str]) -> list:
        """(size, hash) per object from listings: one LIST per 1,000 objects of a folder that
        holds several of them, a HEAD for a lone object; nothing is downloaded."""
        cache = self._cloud
        todo = [p for p in dict.fromkeys(paths) if p not in cache]
        by_parent: dict[str, list[str]] = {}
        for p in todo:
            by_parent.setdefault(posixpath.dirname(p), []).append(p)
        heads = []
        for parent, members in by_parent.items():
            if len(members) < LIST_MIN_ROWS:
                heads.extend(members)
                continue
            fs = Location.of(parent).fs
            try:
                entries = fs.ls(parent, detail=True, refresh=True)
            except FileNotFoundError:
                entries = []
            scheme = parent.split("://", 1)[0]
            listed = {f"{scheme}://{e['name']}": e for e in entries if e.get("type") == "file"}
            for p in members:
                e = listed.get(p)
                cache[p] = None if e is None else (int(e["size"]), objects.hash_from_listing(e))

        def head(p):
            try:
                e = Location.of(p).fs.info(p)
            except FileNotFoundError:
                return p, None
            if e.get("type") != "file":
                return p, None
            return p, (int(e["size"]), objects.hash_from_listing(e))

        if heads:
            for p, stat in map_in_threads(head, heads, UPLOAD_THREADS):
                cache[p] = stat
        return [cache[p] for p in paths]


def hash_files(df: pl.DataFrame, report: IngestReport, bar) -> pl.DataFrame:
    t0 = time.perf_counter()
    todo = df.filter(pl.col("_local") & (pl.col("_hash").is_null() | pl.col("_dir")))
    if todo.height:
        bar.total = (bar.total or 0) + todo.height
        bar.refresh()
        results = []

        def work(p):
            out = objects.describe_local(Path(p))
            bar.update(1)
            return out

        results = map_in_threads(work, todo["_path"].to_list(), HASH_THREADS)
        found = pl.DataFrame({"_row": todo["_row"],
                              "_size_h": [r[0] for r in results],
                              "_hash_h": [r[1] for r in results],
                              "_n_files": [r[2] for r in results]},
                             schema={"_row": pl.Int64, "_size_h": pl.Int64,
                                     "_hash_h": pl.String, "_n_files": pl.Int64})
        df = df.join(found, on="_row", how="left", maintain_order="left").with_columns(
            pl.coalesce("_size_h", "_size").alias("_size"),
            pl.coalesce("_hash", "_hash_h").alias("_hash")).drop("_size_h", "_hash_h")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("_n_files"))
    report.timings["hash"] += time.perf_counter() - t0
    return df


def assign_uids(ctx: Context, df: pl.DataFrame) -> pl.DataFrame:
    linked = df.filter(pl.col("_storage").is_not_null())
    copied = df.filter(pl.col("_storage").is_null())
    parts = []
    if linked.height:
        # -1: under storage= that validation saw before it was registered.
        parts.append(linked.with_columns(
            pl.Series("_uid", random_uids(linked.height)),
            pl.when(pl.col("_storage") == -1).then(pl.lit(ctx.target_id, pl.Int64))
            .otherwise(pl.col("_storage")).alias("_storage_id")))
    if copied.height:
        uids = [copy_uid(h, k, ctx.target_id) for h, k in
                zip(copied["_hash"].to_list(), copied["_key"].to_list())]
        parts.append(copied.with_columns(pl.Series("_uid", uids, dtype=pl.String),
                                         pl.lit(ctx.target_id, dtype=pl.Int64)
                                         .alias("_storage_id")))
    return pl.concat(parts, how="vertical_relaxed").sort("_row")

def upload(ctx: Context, df: pl.DataFrame, report: IngestReport, bar,
            listing: dict | None) -> dict | None:
    t0 = time.perf_counter()
    todo = df.filter(pl.col("_storage").is_null())
    if todo.height:
        location = ctx.instance.writable_location(ctx.target_id)  # linked: refused
        if location.is_local and listing is None:
            objects.remove_stale_partials(location)
            listing = {}
        if not location.is_local and listing is None:
            # One listing of managed storage per save finds uploads of an earlier,
            # interrupted run (uids of copies are deterministic).
            prefix = location.join(objects.OBJECTS_DIR)
            location.fs.invalidate_cache(prefix)
            try:
                listing = {k: int(v.get("size") or 0) for k, v in
                           location.fs.find(prefix, detail=True).items()}
            except FileNotFoundError:
                listing = {}
        bar.total = (bar.total or 0) + todo.height
        bar.refresh()

        def work(row):
            path, uid, suffix, size = row
            reused = upload_one(location, path, objects.object_key(uid, suffix), size,
                                 listing)
            bar.update(1)
            return reused

        rows = list(zip(todo["_path"].to_list(), todo["_uid"].to_list(),
                        todo["_suffix"].to_list(), todo["_size"].to_list()))
        threads = LOCAL_COPY_THREADS if location.is_local else UPLOAD_THREADS
        reused = map_in_threads(work, rows, threads)
        report.reused_uploads += sum(reused)
    report.timings["upload"] += time.perf_counter() - t0
    return listing
