"""One chunk of a manifest, normalised: paths (scheme, storage root, linked or copied), keys
(safe, unique in the manifest, ending with the file's suffix), artifact fields, feature values
and file sizes; every problem becomes an issue of its row."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow as pa

from ...catalog import objects
from ...catalog.location import UNSAFE_KEY
from .context import MANIFEST, SETTABLE, Context
from .encode import encode
from .labels import label_names
from .report import Issues
from .staging import FileStats

_SCHEME = r"^([A-Za-z][A-Za-z0-9+.\-]*)://"


def prepare(ctx: Context, offset: int, table: pa.Table, seen: dict, issues: Issues,
            stats: FileStats) -> pl.DataFrame:
    """Normalise one chunk: paths, storage, keys, suffixes, fields, feature values
    (categorical ones as lists of names), sizes and cloud hashes; problems go to
    ``issues``."""
    # Manifest columns are renamed ``manifest:<name>``; what is derived starts with ``_``
    # or ``f_``, so no manifest column can shadow it.
    wanted = [c for c in dict.fromkeys((ctx.path_column, ctx.key_column, *ctx.fields,
                                        *ctx.features)) if c in table.schema.names]
    table = table.select(wanted).rename_columns([MANIFEST + c for c in wanted])
    df = pl.from_arrow(table, rechunk=False) if table.num_rows else pl.DataFrame(
        schema={n: pl.String for n in table.schema.names})
    df = df.with_columns(pl.int_range(offset, offset + df.height, dtype=pl.Int64)
                         .alias("_row"))
    pc_ = ctx.path_column
    if MANIFEST + pc_ not in df.columns:
        return df.clear()
    # -- paths
    path = pl.col(MANIFEST + pc_).cast(pl.String, strict=False).str.strip_prefix("file://")
    df = df.with_columns(path.alias("_path"))
    issues.add(df, pl.col("_path").is_null() | (pl.col("_path").str.strip_chars() == ""),
               pc_, "missing path")
    scheme = pl.col("_path").str.extract(_SCHEME, 1).str.to_lowercase()
    df = df.with_columns(scheme.replace("gcs", "gs").alias("_scheme"))
    df = df.with_columns(
        pl.when(pl.col("_scheme").is_in(["s3", "gs"]))
        .then(pl.concat_str([pl.col("_scheme"), pl.lit("://"),
                             pl.col("_path").str.replace(_SCHEME, "")
                             .str.strip_suffix("/")]))
        .otherwise(pl.col("_path")).alias("_path"))
    issues.add(df, pl.col("_scheme").is_not_null() & ~pl.col("_scheme").is_in(["s3", "gs"]),
               pc_, pl.format("unsupported location {}: use a local path, s3:// or gs://",
                              pl.col("_path")))
    local = pl.col("_scheme").is_null() & pl.col("_path").is_not_null()
    # Local paths: absolute and normal; only unusual ones go through os.path.
    # Literal tests (a regex here cost ~2x): relative paths, including "~", ".", "..", do
    # not start with "/"; an absolute one is odd with a "." or ".." segment, "//" or a
    # trailing "/".
    p = pl.col("_path").str
    odd = local & (~p.starts_with("/") | p.contains("/./", literal=True)
                   | p.contains("/../", literal=True) | p.contains("//", literal=True)
                   | p.ends_with("/.") | p.ends_with("/..") | p.ends_with("/"))
    if df.select(odd.any()).item():
        fixed = df.filter(odd)
        normal = [os.path.abspath(os.path.expanduser(p)) for p in fixed["_path"].to_list()]
        df = df.update(pl.DataFrame({"_row": fixed["_row"], "_path": normal}), on="_row")
    df = df.with_columns(local.alias("_local"))
    # -- storage: linked when under a registered root
    storage = pl.lit(None, dtype=pl.Int64)
    rel = pl.lit(None, dtype=pl.String)
    for sid, root in reversed(ctx.roots):  # longest root last, so it wins
        under = pl.col("_path").str.starts_with(root + "/")
        storage = pl.when(under).then(pl.lit(-1 if sid is None else sid)).otherwise(storage)
        rel = pl.when(under).then(pl.col("_path").str.slice(len(root) + 1)).otherwise(rel)
    df = df.with_columns(storage.cast(pl.Int64).alias("_storage"), rel.alias("_rel"))
    issues.add(df, pl.col("_rel").str.starts_with(".lamina/") | (pl.col("_rel") == ".lamina"),
               pc_, "lies inside lamina's own folder .lamina/ of a storage root")
    issues.add(df, pl.col("_scheme").is_in(["s3", "gs"]) & pl.col("_storage").is_null(),
               pc_, pl.format("{} is not under a registered storage root; register its "
                              "bucket or prefix with storage=... (or ln.settings.storage)",
                              pl.col("_path")))
    # -- keys
    kc = ctx.key_column
    if MANIFEST + kc in df.columns:
        key = pl.col(MANIFEST + kc).cast(pl.String, strict=False)
        issues.add(df, pl.col(MANIFEST + kc).is_not_null() & key.is_null(), kc,
                   "a key must be text")
    else:
        key = pl.lit(None, dtype=pl.String)
    df = df.with_columns(pl.coalesce(key, pl.col("_rel")).alias("_key"))
    kname = kc if MANIFEST + kc in df.columns else pc_
    issues.add(df, pl.col("_key").is_not_null() & (
        (pl.col("_key") == "") | pl.col("_key").str.contains(UNSAFE_KEY)), kname,
        pl.format("key {} must be a relative path without empty, '.' or '..' segments "
                  "or control characters", pl.col("_key")))
    _duplicates(df, kname, seen, issues)
    # -- suffix: LaminDB's rule looks at the last two suffixes of the name only, so it runs
    # once per distinct tail (".fastq.gz", ".csv", ...), not once per row.
    base = pl.col("_path").str.split("/").list.last().str.strip_chars_start(".")
    df = df.with_columns(base.str.extract(r"((?:\.[^.]*){1,2})$", 1).fill_null("")
                         .alias("_suffix"))
    tails = df["_suffix"].unique().to_list()
    df = df.with_columns(pl.col("_suffix").replace_strict(
        tails, [objects.suffix_of("x" + t) for t in tails], return_dtype=pl.String))
    # -- artifact fields
    for name in ctx.fields:
        target, col, dtype = SETTABLE[name], pl.col(MANIFEST + name), df.schema[MANIFEST + name]
        out = col.cast(target, strict=False)
        if target == pl.String and dtype not in (pl.String, pl.Null):
            issues.add(df, col.is_not_null(), name,
                       f"artifact field {name!r} takes text, got a {dtype} value")
            out = pl.lit(None, dtype=pl.String)
        elif target == pl.Int64:
            frac = (col.cast(pl.Float64, strict=False) % 1 != 0) if dtype.is_float() else (
                pl.lit(False))
            issues.add(df, col.is_not_null() & (out.is_null() | frac | (out < 0)),
                       name, pl.format(f"artifact field {name!r} takes a non-negative "
                                       "integer, got {}", col.cast(pl.String)))
        df = df.with_columns(out.alias(f"_field_{name}"))
    # -- feature values
    exprs = []
    for name, info in ctx.features.items():
        if info.dtype.is_categorical:
            exprs.append(label_names(df, name, info, issues).alias(f"_cat_{info.id}"))
        else:
            exprs.append(encode(df, name, info, issues).alias(info.column))
    if exprs:
        df = df.with_columns(exprs)
    # -- sizes, existence, cloud hashes
    df = stats.stat(df, issues)
    suffix_bad = (pl.col("_key").is_not_null() & (pl.col("_suffix") != "")
                  & ~pl.col("_key").str.ends_with(pl.col("_suffix")))
    issues.add(df, suffix_bad, kname, pl.format("key {} must end with the file's suffix {}",
                                                pl.col("_key"), pl.col("_suffix")))
    # Keep what the save needs (a prepared chunk may be kept until then).
    return df.drop([c for c in df.columns if c.startswith(MANIFEST)]
                   + [c for c in ("_field_size", "_field_hash", "_scheme") if c in df.columns])

def _duplicates(df: pl.DataFrame, column: str, seen: dict, issues: Issues) -> None:
    """Keys used twice in the manifest (in this chunk or an earlier one): every use after
    the first is an issue naming the row of the first. Earlier chunks' keys are kept as
    two 64-bit hashes and a row number each (24 bytes per row, not the text), sorted."""
    keys = df.select("_row", "_key").filter(pl.col("_key").is_not_null())
    if keys.height == 0:
        return
    keys = keys.with_columns(pl.col("_key").hash(seed=7).alias("_h1"),
                             pl.col("_key").hash(seed=8191).alias("_h2"))
    # The first use in this chunk, and whether an earlier chunk had it.
    keys = keys.with_columns(pl.col("_row").first().over("_key").alias("_first"))
    h1, h2 = keys["_h1"].to_numpy(), keys["_h2"].to_numpy()
    earlier = np.full(len(h1), -1, dtype=np.int64)
    if "h1" in seen and len(seen["h1"]):
        # Probing in sorted order walks the sorted table once (random probes miss the cache).
        probe = np.argsort(h1)
        at = np.empty(len(h1), dtype=np.int64)
        at[probe] = np.searchsorted(seen["h1"], h1[probe])
        inside = at < len(seen["h1"])
        hit = np.zeros(len(h1), dtype=bool)
        hit[inside] = (seen["h1"][at[inside]] == h1[inside]) & (
            seen["h2"][at[inside]] == h2[inside])
        earlier[hit] = seen["rows"][at[hit]]
    keys = keys.with_columns(pl.Series("_earlier", earlier)).with_columns(
        pl.when(pl.col("_earlier") >= 0).then(pl.col("_earlier"))
        .otherwise(pl.col("_first")).alias("_first"))
    issues.add(keys, pl.col("_row") != pl.col("_first"), column,
               pl.format("duplicated key {} (first on row {})", pl.col("_key"),
                         pl.col("_first")))
    new = (keys["_row"] == keys["_first"]).to_numpy()
    rows = keys["_row"].to_numpy()[new]
    h1, h2 = h1[new], h2[new]
    if "h1" in seen:
        h1 = np.concatenate([seen["h1"], h1])
        h2 = np.concatenate([seen["h2"], h2])
        rows = np.concatenate([seen["rows"], rows])
    order = np.argsort(h1, kind="stable")
    seen.update(h1=h1[order], h2=h2[order], rows=rows[order])
