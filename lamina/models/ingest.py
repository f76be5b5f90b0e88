"""Bulk ingestion: register a whole atlas of files with their metadata in a few commits.

    batch = ln.Artifact.from_manifest("manifest.parquet", create_labels=True)
    len(batch); batch.to_dataframe(); batch.validate()
    report = ln.save(batch)          # or batch.save()

A manifest holds one row per file: a ``path`` column, an optional ``key`` column, artifact fields
(``description``, ``kind``, ``otype``, ``n_observations``, ``version_tag``, and ``size`` /
``hash`` when they are already known) and one column per feature. An annotated artifact is one
row of the artifact table (feature values are typed columns ``f_<id>``, label links are list
columns), so a chunk of ``chunk_size`` rows lands in exactly one commit.

How a save runs:

1. **Validate** (pass 1, streaming the manifest chunk by chunk). Everything is checked with
   vectorised Arrow/Polars expressions, never row by row in Python: paths (scheme, inside a
   registered storage root or not, present on disk / in the bucket listing), keys (safe, unique
   in the manifest, ending with the file's suffix), artifact fields and feature values against
   their dtypes. Categorical names are resolved with one read per label registry (only names
   not seen before in this batch are asked for). Each problem is an :class:`Issue` with its row
   (0-based position in the manifest) and column. With ``on_error="raise"`` (the default) a
   single invalid row stops the save before anything is written.
2. **Labels**: with ``create_labels=True`` the missing labels are created first, one commit per
   registry (Records of the feature's Record type; bionty terms through the registry's
   ``from_values``, i.e. validated against the offline ontology), so no artifact row can point
   at a label that is not there.
3. **Per chunk** (pass 2): local files are hashed in parallel threads (LaminDB's hash rule);
   rows whose ``(hash, key)`` is already in the catalog are reported as existing and skipped;
   local files outside every registered storage root are copied into managed storage
   concurrently; files under a registered root (local or ``s3://``) are linked in place, and on
   object stores their size and hash come from the listing (the ETag, LaminDB's rule), so their
   bytes are never read. Then the chunk is one commit through ``TableStore.transact``: ids from
   ``snapshot.next_id``, feature columns declared via ``new_columns``, the many-to-many label
   lists (``records``, ``cell_types``, ...) filled like ``FeatureManager._write`` does.

Resuming: a copied file's uid (and so its object key) is derived from its hash, key and storage,
so a rerun after a crash finds the objects that were uploaded without a row and reuses them
instead of uploading again; committed chunks are found by ``(hash, key)`` and skipped. A chunk
is one Delta commit, so readers see none or all of it, and an interrupted run leaves a valid
catalog.

Identity: a row is *existing* when an artifact with the same hash and the same key (both null
counts as the same) is in the catalog, on any branch (a trashed one counts: restore it).
The same content under another key is a new artifact. A key already used by an artifact of
other content is a new artifact too (bulk ingestion does not create version families).
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .. import log
from ..catalog import objects, tables
from ..catalog.ids import BASE62, new_uid, uid_from_text
from ..catalog.instance import MAIN_BRANCH_ID, Instance, current
from ..catalog.location import Location
from ..catalog.store import Change, Snapshot
from ..engine.features import FeatureInfo
from ..engine.session import session_for
from ..errors import ValidationError
from .base import SQLRecord, model_for

DEFAULT_CHUNK_SIZE = 100_000
# Measured on a 2-core VM: small files hash and copy fastest with few threads (the work is
# mostly system calls under the GIL and one directory's lock); object stores want many
# requests in flight.
HASH_THREADS = 4
LOCAL_COPY_THREADS = 4
UPLOAD_THREADS = 16
# Below this many manifest rows in one cloud "folder", HEAD each object instead of listing.
LIST_MIN_ROWS = 4
PREVIEW_ROWS = 20
# Prepared chunks validation may keep for the save instead of reading the manifest again.
CACHE_MB = 768

# Artifact fields a manifest may set; everything else lamina fills in.
SETTABLE = {"description": pl.String, "kind": pl.String, "otype": pl.String,
            "n_observations": pl.Int64, "version_tag": pl.String, "size": pl.Int64,
            "hash": pl.String}
_BAD_KEY = r"^/|\\|^[A-Za-z][A-Za-z0-9+.\-]*:|(^|/)(\.|\.\.)?(/|$)"
_SCHEME = r"^([A-Za-z][A-Za-z0-9+.\-]*)://"
_M = "manifest:"  # prefix of manifest columns inside a prepared chunk


# ---- reports ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issue:
    """One problem: ``row`` is the 0-based position in the manifest (None: the whole column)."""

    row: int | None
    column: str | None
    reason: str


@dataclass
class IngestReport:
    """What a validation or a save found and did."""

    rows: int = 0
    new: int = 0
    existing: int = 0
    linked: int = 0
    copied: int = 0
    reused_uploads: int = 0
    failed: int = 0
    labels_created: dict = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    chunks: int = 0
    # (first id, last id) of the artifact rows each committed chunk added.
    id_ranges: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def failed_rows(self) -> list[int]:
        return sorted({i.row for i in self.issues if i.row is not None})

    def to_dataframe(self):
        """The issues, one per row and column."""
        import pandas as pd

        return pd.DataFrame([{"row": i.row, "column": i.column, "reason": i.reason}
                             for i in self.issues], columns=["row", "column", "reason"])

    def artifact_ids(self) -> np.ndarray:
        if not self.id_ranges:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in self.id_ranges])

    def __repr__(self) -> str:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        text = (f"IngestReport(rows={self.rows}, new={self.new} (linked={self.linked}, "
                f"copied={self.copied}, reused uploads={self.reused_uploads}), "
                f"existing={self.existing}, failed={self.failed}, chunks={self.chunks}")
        if self.labels_created:
            text += f", labels created={self.labels_created}"
        text += f"; {phases})"
        for issue in self.issues[:10]:
            where = f"row {issue.row}" if issue.row is not None else "manifest"
            text += f"\n  {where}, column {issue.column!r}: {issue.reason}"
        if len(self.issues) > 10:
            text += f"\n  ... {len(self.issues) - 10} more (report.to_dataframe())"
        return text


class IngestError(ValidationError):
    """The manifest has invalid rows; ``.report`` lists every problem."""

    def __init__(self, report: IngestReport):
        self.report = report
        super().__init__(f"the manifest has {len(report.issues)} problem(s) in "
                         f"{report.failed} row(s); nothing was written (pass on_error='skip' "
                         f"to write the valid rows):\n{_issue_lines(report.issues)}")


def _issue_lines(issues: list[Issue], limit: int = 20) -> str:
    lines = [f"  {'row ' + str(i.row) if i.row is not None else 'manifest'}, column "
             f"{i.column!r}: {i.reason}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... {len(issues) - limit} more")
    return "\n".join(lines)


class _Issues:
    """Issues of one chunk, gathered as frames of failing rows (no per-row Python work for the
    rows that pass)."""

    def __init__(self):
        self.frames: list[pl.DataFrame] = []
        self.columns: list[Issue] = []  # problems of a whole column

    def add(self, df: pl.DataFrame, mask, column: str, reason) -> None:
        """Rows of ``df`` where ``mask`` holds; ``reason`` text or an expression giving it."""
        if isinstance(mask, pl.Expr):
            mask = df.select(mask.fill_null(False)).to_series()
        if not mask.any():  # the usual case: an aggregate, no filtered copy of the chunk
            return
        bad = df.filter(mask)
        reason_expr = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
        self.frames.append(bad.select(pl.col("_row").alias("row"), pl.lit(column).alias("column"),
                                      reason_expr.cast(pl.String).alias("reason")))

    def rows(self) -> np.ndarray:
        if not self.frames:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([f["row"].to_numpy() for f in self.frames]))

    def to_list(self) -> list[Issue]:
        found = list(self.columns)
        if self.frames:
            frame = pl.concat(self.frames).sort("row", maintain_order=True)
            found.extend(Issue(r, c, m) for r, c, m in frame.iter_rows())
        return found


# ---- reading a manifest -----------------------------------------------------------------------
class _Source:
    """A manifest read in chunks of Arrow tables: pandas, Polars (eager or lazy), Arrow, or a
    Parquet/CSV file (local or on an object store), streamed without loading it whole."""

    def __init__(self, manifest, chunk_size: int):
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValidationError(f"chunk_size must be positive, got {chunk_size!r}")
        self.manifest = manifest
        self._string_columns: set[str] = set()
        self._length: int | None = None
        self.kind = self._kind(manifest)

    @staticmethod
    def _kind(manifest) -> str:
        if isinstance(manifest, (pa.Table, pa.RecordBatch)):
            return "arrow"
        if isinstance(manifest, pl.DataFrame):
            return "polars"
        if isinstance(manifest, pl.LazyFrame):
            return "lazy"
        if isinstance(manifest, (str, os.PathLike)):
            return "file"
        try:
            import pandas as pd

            if isinstance(manifest, pd.DataFrame):
                return "pandas"
        except ImportError:  # pragma: no cover
            pass
        raise ValidationError(
            f"from_manifest takes a pandas or Polars DataFrame, an Arrow table or the path of a "
            f"Parquet/CSV file, got {type(manifest).__name__}")

    def string_columns(self, names) -> None:
        """Read these CSV columns as text (labels, notes, JSON), not as inferred numbers."""
        self._string_columns = set(names)

    # -- files
    def _dataset(self):
        import pyarrow.dataset as ds
        from pyarrow import csv

        path = os.fspath(self.manifest)
        filesystem = None
        if "://" in path and not path.startswith("file://"):
            location = Location.of(path)
            filesystem, path = location.arrow_fs, location.arrow_path(path)
        else:
            path = path.removeprefix("file://")
        lowered = path.lower()
        if lowered.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
            delimiter = "\t" if ".tsv" in lowered else ","
            types = {name: pa.string() for name in self._string_columns}
            fmt = ds.CsvFileFormat(parse_options=csv.ParseOptions(delimiter=delimiter),
                                   convert_options=csv.ConvertOptions(column_types=types))
            return ds.dataset(path, format=fmt, filesystem=filesystem)
        if lowered.endswith((".parquet", ".pq")) or os.path.isdir(path):
            return ds.dataset(path, format="parquet", filesystem=filesystem)
        raise ValidationError(f"manifest file {self.manifest!s} is neither Parquet nor CSV/TSV")

    @property
    def columns(self) -> list[str]:
        m = self.manifest
        if self.kind == "arrow":
            return list(m.schema.names)
        if self.kind == "polars":
            return list(m.columns)
        if self.kind == "lazy":
            return list(m.collect_schema().names())
        if self.kind == "pandas":
            return [str(c) for c in m.columns]
        return list(self._dataset().schema.names)

    def __len__(self) -> int:
        if self._length is None:
            m = self.manifest
            if self.kind in ("arrow", "polars", "pandas"):
                self._length = len(m) if self.kind != "arrow" else m.num_rows
            elif self.kind == "lazy":
                self._length = int(m.select(pl.len()).collect().item())
            else:
                self._length = int(self._dataset().count_rows())
        return self._length

    def chunks(self, limit: int | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(offset of the first row, rows) for each chunk; at most ``limit`` rows in all."""
        size = self.chunk_size if limit is None else min(self.chunk_size, limit)
        m = self.manifest
        total = None if self.kind == "file" else len(self)
        if limit is not None and total is not None:
            total = min(total, limit)
        if self.kind == "file":
            yield from self._file_chunks(size, limit)
            return
        for start in range(0, total, size):
            n = min(size, total - start)
            if self.kind == "arrow":
                table = m.slice(start, n)
                table = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
            elif self.kind == "polars":
                table = m.slice(start, n).to_arrow()
            elif self.kind == "lazy":
                table = m.slice(start, n).collect().to_arrow()
            else:
                table = _pandas_to_arrow(m.iloc[start:start + n])
            yield start, table

    def _file_chunks(self, size: int, limit: int | None):
        dataset = self._dataset()
        pending, n_pending, offset = [], 0, 0
        for batch in dataset.to_batches(batch_size=size, use_threads=False):
            if limit is not None and offset + n_pending + batch.num_rows > limit:
                batch = batch.slice(0, max(0, limit - offset - n_pending))
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            n_pending += batch.num_rows
            while n_pending >= size:
                table = pa.Table.from_batches(pending)
                yield offset, table.slice(0, size)
                rest = table.slice(size)
                pending, n_pending = rest.to_batches(), rest.num_rows
                offset += size
            if limit is not None and offset + n_pending >= limit:
                break
        if n_pending:
            yield offset, pa.Table.from_batches(pending)


def _pandas_to_arrow(frame) -> pa.Table:
    """A pandas slice as Arrow; a column of mixed Python objects (a label name in one row, a
    list of names in another, a number among strings) is normalised instead of failing."""
    arrays, names = [], []
    for name in frame.columns:
        series = frame[name]
        try:
            array = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            array = _mixed_to_arrow(series.tolist())
        arrays.append(array)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def _mixed_to_arrow(values: list) -> pa.Array:
    def missing(v):
        return v is None or (isinstance(v, float) and v != v)

    present = [v for v in values if not missing(v)]
    if present and all(isinstance(v, (str, list, tuple, set)) for v in present):
        # Labels: one name or several per cell.
        return pa.array([None if missing(v) else ([v] if isinstance(v, str) else
                                                  [str(x) for x in v]) for v in values],
                        type=pa.list_(pa.string()))
    if present and all(isinstance(v, dict) for v in present):
        return pa.array([None if missing(v) else json.dumps(v, sort_keys=True, default=str)
                         for v in values], type=pa.string())
    # Anything else: as text (dicts and lists as JSON), so the dtype check reports the cells
    # that do not parse.
    return pa.array([None if missing(v) else json.dumps(v, sort_keys=True, default=str)
                     if isinstance(v, (dict, list, tuple)) else str(v) for v in values],
                    type=pa.string())


# ---- labels ---------------------------------------------------------------------------------
class _Labels:
    """Name -> id of one label registry (and Record type), asked for only the names not yet
    known; one read of the registry's Delta snapshot per call."""

    def __init__(self, instance: Instance, info: FeatureInfo):
        dtype = info.dtype
        self.instance = instance
        self.spec = dtype.label_spec
        self.type_name = dtype.label_type
        self.field = self.spec.name_field or "name"
        self.ids: dict[str, int] = {}
        self.missing: set[str] = set()
        self.type_id: int | None = None
        self.type_error: str | None = None
        if self.type_name:
            rows = instance.store(self.spec).snapshot().read(
                ["id"], (pc.field(self.field) == self.type_name)
                & (pc.field("is_type") == True)).column("id").to_pylist()  # noqa: E712
            if rows:
                self.type_id = min(rows)
            else:
                self.type_error = (f"{self.spec.model} type {self.type_name!r} does not exist; "
                                   f"create it with ln.{self.spec.model}(name="
                                   f"{self.type_name!r}, is_type=True).save()")

    @property
    def label(self) -> str:
        return self.spec.model + (f"[{self.type_name}]" if self.type_name else "")

    def _filter(self, names: list[str]):
        cond = pc.field(self.field).isin(names)
        if self.spec.column("branch_id") is not None:
            cond = cond & (pc.field("branch_id") == MAIN_BRANCH_ID)
        if self.type_name:
            cond = cond & (pc.field("type_id") == (self.type_id or -1))
        return cond

    def lookup(self, names) -> set[str]:
        """Resolve ``names``; return the ones the registry does not have."""
        unknown = [n for n in names if n not in self.ids and n not in self.missing]
        if unknown and self.type_error is None:
            found = self.instance.store(self.spec).snapshot().read(
                ["id", self.field], self._filter(unknown))
            if found.num_rows:
                frame = pl.from_arrow(found).group_by(self.field).agg(pl.col("id").min())
                self.ids.update(zip(frame[self.field].to_list(), frame["id"].to_list()))
        elif unknown:
            self.missing.update(unknown)
        self.missing.update(n for n in unknown if n not in self.ids)
        return {n for n in names if n not in self.ids}

    def create(self) -> int:
        """Create the missing labels in one commit (bionty: validated against its ontology)."""
        names = sorted(self.missing)
        if not names:
            return 0
        if self.spec.module == "bionty":
            return self._create_bionty(names)
        ids = create_labels(self.instance, self.spec, names, self.type_id)
        self.ids.update(ids)
        self.missing.clear()
        return len(names)

    def _create_bionty(self, names: list[str]) -> int:
        model = model_for(self.spec)
        records = model.from_values(names, field=self.field, mute=True)
        bad = set(getattr(records, "non_validated", []))
        mapper = getattr(records, "synonyms_mapper", {})
        if len(records):
            from .. import bionty

            bionty.save(list(records))
        by_name = {r._data.get(self.field): r._data["id"] for r in records}
        created = []
        for name in names:
            standard = mapper.get(name, name)
            if standard in by_name and by_name[standard] is not None:
                self.ids[name] = by_name[standard]
                created.append(name)
        self.missing = {n for n in names if n not in self.ids} | bad
        return len(created)


def create_labels(instance: Instance, spec, names: list[str], type_id: int | None = None,
                  ) -> dict[str, int]:
    """Name -> id for ``names`` in a registry with a ``name`` field, adding the missing ones in
    one commit (re-planned if another writer added some of them meanwhile)."""
    field_name = spec.name_field or "name"
    now = datetime.now(timezone.utc)

    def plan(snapshot: Snapshot) -> Change:
        cond = pc.field(field_name).isin(names)
        if spec.column("branch_id") is not None:
            cond = cond & (pc.field("branch_id") == MAIN_BRANCH_ID)
        if type_id is not None:
            cond = cond & (pc.field("type_id") == type_id)
        found = snapshot.read(["id", field_name], cond).to_pylist()
        ids: dict[str, int] = {}
        for row in sorted(found, key=lambda r: r["id"]):
            ids.setdefault(row[field_name], row["id"])
        rows, next_id = [], snapshot.next_id
        for name in names:
            if name in ids:
                continue
            row = {c: None for c in spec.column_names}
            row.update({"id": next_id, field_name: name, "created_at": now,
                        "created_by_id": instance.user_id})
            if spec.uid_length:
                row["uid"] = new_uid(spec.uid_length)
            for column, value in (("branch_id", MAIN_BRANCH_ID), ("created_on_id", MAIN_BRANCH_ID),
                                  ("space_id", 1), ("is_locked", False), ("is_type", False),
                                  ("type_id", type_id)):
                if column in row:
                    row[column] = value
            ids[name] = next_id
            next_id += 1
            rows.append(row)
        return Change(append=rows, result=ids)

    change = instance.store(spec).transact(plan)
    return change.result


# ---- files --------------------------------------------------------------------------------
def _b16_to_b64(text: str) -> str | None:
    try:
        return objects._b64(base64.b16decode(text.strip('"'), casefold=True))
    except (ValueError, TypeError):
        return None


def hash_from_listing(info: dict) -> str | None:
    """LaminDB's hash of a cloud object from its listing metadata, without reading it: GCS
    ``md5Hash``; S3 ``ETag`` (an md5 for single-part uploads; for multipart uploads the hash of
    the ETag's digits, LaminDB's ``md5-<parts>``)."""
    if info.get("md5Hash"):
        return info["md5Hash"].strip('"=')[:22]
    etag = info.get("ETag") or info.get("etag")
    if not etag:
        return None
    etag = etag.strip('"')
    return _b16_to_b64(etag.split("-")[0])


def _local_stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    import stat as stat_module

    return st.st_size, stat_module.S_ISDIR(st.st_mode)


_PARTIAL = ".partial-"


def _partial_name(target: str) -> str:
    """A local copy is written under this name and then renamed into place; host and pid
    tell a later run whether its writer is gone."""
    return f"{target}{_PARTIAL}{socket.gethostname()}-{os.getpid()}"


def _upload_one(location: Location, local: str, key: str, size: int, existing: dict | None) -> bool:
    """Copy ``local`` to ``key`` under ``location`` unless an object of that size is already
    there (uploaded by an interrupted run). True when it was reused."""
    target = location.join(key)
    if location.is_local:
        if os.path.isfile(target) and os.path.getsize(target) == size:
            return True
        if os.path.isfile(local):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = _partial_name(target)
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
            return False
    elif existing is not None and existing.get(target.split("://", 1)[1]) == size:
        return True
    objects.upload(location, Path(local), key)  # object stores: a PUT is atomic
    return False


def _remove_stale_partials(location: Location) -> int:
    """Delete half-written copies left by killed runs of this host (their pid is gone)."""
    folder = location.join(objects.OBJECTS_DIR)
    host = socket.gethostname()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        _, sep, owner = entry.name.rpartition(_PARTIAL)
        if not sep:
            continue
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.remove(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                leave=False, dynamic_ncols=True)


def _random_uids(n: int, length: int = 16, suffix: str = "0000") -> pa.Array:
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    alphabet = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    body = alphabet[rng.integers(0, 62, size=(n, length))]
    body = np.hstack([body, np.tile(np.frombuffer(suffix.encode(), np.uint8), (n, 1))])
    width = body.shape[1]
    offsets = pa.array(np.arange(0, width * (n + 1), width, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(body.tobytes()))


def copy_uid(hash_: str, key: str | None, storage_id: int) -> str:
    """The uid of a copied file: the same content, key and storage give the same uid (and so
    the same object key), which lets a rerun find what an interrupted run uploaded."""
    return uid_from_text(f"{hash_}\n{key or ''}\n{storage_id}", 16) + "0000"


# ---- feature values -----------------------------------------------------------------------------
def _is_numeric(dtype) -> bool:
    return dtype.is_numeric()


def _json_struct(col: pl.Expr, dtype: pl.Struct) -> pl.Expr:
    """A struct column as JSON objects (keys sorted, null fields left out), vectorised."""
    parts = []
    for field_ in sorted(dtype.fields, key=lambda f: f.name):
        value = col.struct.field(field_.name)
        # A one-field struct's JSON is {"<name>":<value>}; keep <value>.
        encoded = pl.struct(value.alias("v")).struct.json_encode()
        literal = encoded.str.slice(5).str.strip_suffix("}")
        parts.append(pl.when(value.is_not_null()).then(
            pl.lit(json.dumps(field_.name) + ": ") + literal))
    body = pl.concat_str(parts, separator=", ", ignore_nulls=True) if parts else pl.lit("")
    return pl.when(col.is_null()).then(None).otherwise(pl.lit("{") + body.fill_null("") +
                                                      pl.lit("}"))


def _json_objects_valid(values: pl.Series) -> pl.Series:
    """True where a text cell is a JSON object (checked by DuckDB, vectorised)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("cells", pl.DataFrame({"v": values}).to_arrow())
        table = con.execute(
            "SELECT CASE WHEN v IS NULL THEN NULL WHEN json_valid(v) "
            "THEN json_type(v::JSON) = 'OBJECT' ELSE false END AS ok FROM cells").pl()
    finally:
        con.close()
    return table["ok"]


def _encode(df: pl.DataFrame, name: str, info: FeatureInfo, issues: _Issues) -> pl.Expr | None:
    """The expression giving the stored value of feature ``info`` from manifest column
    ``name``; wrong values are added to ``issues`` (the expression leaves them null)."""
    kind = info.dtype.kind
    col = pl.col(_M + name)
    dtype = df.schema[_M + name]
    where = f"feature {info.name!r} ({info.dtype.text})"
    present = col.is_not_null()

    def wrong(expected: str, result: pl.Expr, extra=None):
        mask = present & result.is_null()
        if extra is not None:
            mask = mask | extra
        issues.add(df, mask, name, pl.format(f"{where} expects {expected}, got {{}}",
                                             col.cast(pl.String, strict=False).fill_null(
                                                 f"a {dtype}")))

    if dtype == pl.Null:
        return pl.lit(None, dtype=_polars_type(info)).alias(info.column)
    if kind in ("float", "num"):
        if dtype == pl.Boolean or not (_is_numeric(dtype) or dtype == pl.String):
            issues.add(df, present, name, f"{where} expects a number, got a {dtype} value")
            return pl.lit(None, dtype=pl.Float64)
        out = col.cast(pl.Float64, strict=False)
        wrong("a number", out)
        return out
    if kind == "int":
        if dtype == pl.Boolean or not (_is_numeric(dtype) or dtype == pl.String):
            issues.add(df, present, name, f"{where} expects an integer, got a {dtype} value")
            return pl.lit(None, dtype=pl.Int64)
        if dtype.is_float():
            fractional = present & ((col != col.floor()) | col.is_nan() | col.is_infinite())
            out = pl.when(fractional).then(None).otherwise(col.cast(pl.Int64, strict=False))
            wrong("an integer", out)
            return out
        out = col.cast(pl.Int64, strict=False)
        wrong("an integer", out)
        return out
    if kind == "bool":
        if dtype == pl.Boolean:
            return col
        if dtype == pl.String:
            out = col.str.to_lowercase().replace_strict(
                {"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
            wrong("True or False", out)
            return out
        issues.add(df, present, name, f"{where} expects True or False, got a {dtype} value")
        return pl.lit(None, dtype=pl.Boolean)
    if kind == "str":
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            return col.cast(pl.String)
        issues.add(df, present, name, f"{where} expects text, got a {dtype} value")
        return pl.lit(None, dtype=pl.String)
    if kind == "date":
        if dtype == pl.Date:
            return col
        if isinstance(dtype, pl.Datetime):
            timed = present & (col.dt.time() != pl.time(0))
            issues.add(df, timed, name, f"{where} expects a date, got a datetime")
            return pl.when(timed).then(None).otherwise(col.dt.date())
        if dtype == pl.String:
            out = col.str.to_date(strict=False)
            wrong("a date (YYYY-MM-DD)", out)
            return out
        issues.add(df, present, name, f"{where} expects a date, got a {dtype} value")
        return pl.lit(None, dtype=pl.Date)
    if kind == "datetime":
        target = pl.Datetime("us", "UTC")
        if isinstance(dtype, pl.Datetime):
            out = (col.dt.replace_time_zone("UTC") if dtype.time_zone is None
                   else col.dt.convert_time_zone("UTC"))
            return out.cast(target)
        if dtype == pl.Date:
            return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        if dtype == pl.String:
            out = col.str.to_datetime(strict=False, time_unit="us", time_zone="UTC")
            wrong("a datetime (ISO 8601)", out)
            return out
        issues.add(df, present, name, f"{where} expects a datetime, got a {dtype} value")
        return pl.lit(None, dtype=target)
    if kind == "dict":
        if isinstance(dtype, pl.Struct):
            return _json_struct(col, dtype)
        if dtype == pl.String:
            valid = _json_objects_valid(df[_M + name])
            bad = df.select(present & ~pl.Series(valid).fill_null(True)).to_series()
            issues.add(df, bad, name, f"{where} expects a dict (a JSON object)")
            return pl.when(pl.Series(bad)).then(None).otherwise(col)
        issues.add(df, present, name, f"{where} expects a dict, got a {dtype} value")
        return pl.lit(None, dtype=pl.String)
    if kind == "list":
        inner = pl.from_arrow(pa.array([], type=info.dtype.arrow.value_type)).dtype
        if isinstance(dtype, pl.List):
            out = col.list.eval(pl.element().cast(inner, strict=False))
            lost = (col.list.eval(pl.element().is_not_null()).list.sum()
                    != out.list.eval(pl.element().is_not_null()).list.sum())
            issues.add(df, present & lost, name, f"{where} expects a list of {inner}")
            return pl.when(present & lost).then(None).otherwise(out)
        issues.add(df, present, name, f"{where} expects a list, got a {dtype} value")
        return pl.lit(None, dtype=pl.List(inner))
    raise ValidationError(f"{where}: unsupported dtype")  # pragma: no cover


def _polars_type(info: FeatureInfo):
    return pl.from_arrow(pa.array([], type=info.dtype.arrow)).dtype


def _label_names(df: pl.DataFrame, name: str, info: FeatureInfo, issues: _Issues) -> pl.Expr:
    """A categorical column as given: one label name per cell (text) or a list of names (in CSV
    a JSON list such as ``["DMSO", "IFNG"]`` becomes a list)."""
    col = pl.col(_M + name)
    dtype = df.schema[_M + name]
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.String)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = col.cast(pl.String)
        listed = text.str.starts_with("[")
        if df.select(listed.any()).item():
            decoded = pl.when(listed).then(text).otherwise(None).str.json_decode(
                pl.List(pl.String))
            return pl.when(listed).then(decoded).otherwise(pl.concat_list(text.str.strip_chars()))
        return text.str.strip_chars()
    if isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Categorical, pl.Null):
        return col.list.eval(pl.element().cast(pl.String))
    issues.add(df, col.is_not_null(), name,
               f"feature {info.name!r} ({info.dtype.text}) takes label names, got a {dtype} value")
    return pl.lit(None, dtype=pl.String)


def _flat_names(series: pl.Series) -> tuple[np.ndarray, pa.Array]:
    """(position of the row, name) for every label name of a categorical column."""
    arr = series.rechunk().to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        parents = pc.list_parent_indices(arr)
        flat = pc.list_flatten(arr)
    elif pa.types.is_null(arr.type):
        return np.zeros(0, np.int64), pa.array([], pa.large_string())
    else:
        parents = pa.array(np.arange(len(arr), dtype=np.int64))
        flat = arr
    if flat.null_count:
        valid = flat.is_valid()
        parents, flat = parents.filter(valid), flat.filter(valid)
    return parents.to_numpy(zero_copy_only=False).astype(np.int64), flat.cast(pa.large_string())


def _list_column(n: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> pa.Array:
    """A ``list<int64>`` column of ``n`` rows from (row position, id) pairs, row by row in the
    order given, each id once per row; a row without ids is null (as the per-row API leaves an
    unannotated feature)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return pa.nulls(n, pa.list_(pa.int64()))
    parents = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if len(parts) > 1:  # sorted runs: a stable sort merges them in linear time
        order = np.argsort(parents, kind="stable")
        parents, ids = parents[order], ids[order]
    key = parents * (1 << 32) + ids
    ordered = np.sort(key)  # rows are runs already: nearly sorted, so this is cheap
    if (ordered[1:] == ordered[:-1]).any():  # a label twice in a row: keep the first
        import pandas as pd

        first = ~pd.Series(key).duplicated().to_numpy()
        parents, ids = parents[first], ids[first]
    counts = np.bincount(parents, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int64()),
                                    mask=pa.array(counts == 0))


def _list_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return (pc.list_parent_indices(array).to_numpy().astype(np.int64),
            pc.list_flatten(array).to_numpy(zero_copy_only=False))


def _encode_labels(n: int, parents: np.ndarray, flat: pa.Array, labels: _Labels) -> pa.Array:
    """Label names -> a ``list<int64>`` column of ids (unknown names are left out)."""
    if not labels.ids or not len(flat):
        return pa.nulls(n, pa.list_(pa.int64()))
    names = pa.array(list(labels.ids), pa.large_string())
    ids = np.fromiter(labels.ids.values(), dtype=np.int64, count=len(labels.ids))
    index = pc.index_in(flat, value_set=names)
    known = index.is_valid()
    if index.null_count:
        parents, index = parents[known.to_numpy(zero_copy_only=False)], index.filter(known)
    return _list_column(n, [(parents, ids[index.to_numpy()])])


# ---- the batch ------------------------------------------------------------------------------
@dataclass
class _Context:
    """What a validation or save of one batch resolved once."""

    instance: Instance
    features: dict[str, FeatureInfo]  # manifest column -> feature
    fields: list[str]  # settable artifact fields present in the manifest
    labels: dict[tuple, _Labels]  # (label table, type) -> resolver
    roots: list[tuple[int | None, str]]  # registered storage roots, longest first
    target_id: int | None  # storage that copies go to (None: not registered yet)
    target_root: str
    column_issues: list[Issue]


class IngestBatch:
    """A manifest ready to be ingested. Nothing is read from the files or written to the
    catalog until :meth:`validate` or :meth:`save`; ``len()`` and :meth:`to_dataframe` only read
    the manifest."""

    def __init__(self, manifest, *, path: str = "path", key: str = "key", features="auto",
                 storage=None, create_labels: bool = False, on_error: str = "raise",
                 chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool | None = None):
        if on_error not in ("raise", "skip"):
            raise ValidationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self._source = _Source(manifest, chunk_size)
        self.path_column = path
        self.key_column = key
        self._features_arg = features
        self._storage_arg = storage
        self.create_labels = bool(create_labels)
        self.on_error = on_error
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self._cloud_stats: dict[str, tuple[int, str | None] | None] = {}
        self._prepared: list[tuple[int, pl.DataFrame]] | None = None
        self._own_files: set[str] = set()  # artifact-table files this save committed
        self._own_unkeyed: set[str] = set()  # hashes of its rows without a key
        self._validated: tuple[IngestReport, np.ndarray] | None = None
        self._ctx: _Context | None = None

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return (f"IngestBatch({len(self)} rows, columns={self._source.columns}, "
                f"create_labels={self.create_labels}, on_error={self.on_error!r})")

    # ---- resolving columns -----------------------------------------------------------------
    def _context(self) -> _Context:
        if self._ctx is not None:
            return self._ctx
        instance = current()
        columns = self._source.columns
        issues: list[Issue] = []
        if self.path_column not in columns:
            issues.append(Issue(None, self.path_column,
                                f"the manifest has no path column {self.path_column!r} "
                                f"(columns: {columns})"))
        rest = [c for c in columns if c not in (self.path_column, self.key_column)]
        fields = [c for c in rest if c in SETTABLE]
        candidates = [c for c in rest if c not in SETTABLE]
        chosen = self._features_arg
        if chosen is None:
            chosen = []
        if chosen == "auto":
            wanted = candidates
        else:
            if isinstance(chosen, str):
                raise ValidationError("features takes 'auto' or a list of feature names")
            wanted = [getattr(f, "name", f) for f in chosen]
            for name in wanted:
                if name not in columns:
                    issues.append(Issue(None, name, f"feature {name!r} is not a column of the "
                                                    "manifest"))
            wanted = [w for w in wanted if w in columns]
        features: dict[str, FeatureInfo] = {}
        if wanted:
            registered = session_for(instance).features()  # main branch, no feature types
            for name in wanted:
                found = registered.by_name(name)
                if not found:
                    artifact_columns = tables.get("core.artifact").column_names
                    hint = (f"; {name!r} is an artifact field lamina sets itself"
                            if name in artifact_columns else "")
                    issues.append(Issue(None, name, f"unknown feature column {name!r}: no "
                                        f"Feature has this name{hint}; register it with "
                                        f"ln.Feature(name={name!r}, dtype=...).save() or leave "
                                        f"it out with features=[...]"))
                elif len(found) > 1:
                    issues.append(Issue(None, name, f"feature name {name!r} is ambiguous "
                                        "(several feature types have it)"))
                else:
                    features[name] = found[0]
        labels: dict[tuple, _Labels] = {}
        for info in features.values():
            if info.dtype.is_categorical:
                k = (info.dtype.label_spec.qualified, info.dtype.label_type)
                if k not in labels:
                    labels[k] = _Labels(instance, info)
        self._source.string_columns(
            [self.path_column, self.key_column, "description", "kind", "otype", "version_tag",
             "hash", *[c for c, i in features.items()
                       if i.dtype.kind in ("str", "dict", "cat")]])
        rows = instance.store(tables.get("core.storage")).snapshot().read(["id", "root"])
        roots = [(r["id"], r["root"]) for r in rows.to_pylist()]
        target_id, target_root = instance.storage_id, instance.storage_location(
            instance.storage_id).root
        if self._storage_arg is not None:
            root = getattr(self._storage_arg, "root", None) or Location.of(
                self._storage_arg).root
            target_root = root
            target_id = next((i for i, r in roots if r == root), None)
            if target_id is None:
                roots.append((None, root))
        roots.sort(key=lambda r: -len(r[1]))
        self._ctx = _Context(instance, features, fields, labels, roots, target_id, target_root,
                             issues)
        return self._ctx

    def _register_target(self, ctx: _Context) -> None:
        """Register ``storage=`` if it is new (at save time: validation writes nothing)."""
        if ctx.target_id is not None:
            return
        ctx.target_id = ctx.instance.register_storage(ctx.target_root)
        ctx.roots = [(ctx.target_id if r == ctx.target_root else i, r) for i, r in ctx.roots]

    # ---- preparing a chunk -------------------------------------------------------------------
    def _prepare(self, ctx: _Context, offset: int, table: pa.Table, seen: dict,
                 issues: _Issues) -> pl.DataFrame:
        """Normalise one chunk: paths, storage, keys, suffixes, fields, feature values
        (categorical ones as lists of names), sizes and cloud hashes; problems go to
        ``issues``."""
        # Manifest columns are renamed ``manifest:<name>``; what is derived starts with ``_``
        # or ``f_``, so no manifest column can shadow it.
        wanted = [c for c in dict.fromkeys((self.path_column, self.key_column, *ctx.fields,
                                            *ctx.features)) if c in table.schema.names]
        table = table.select(wanted).rename_columns([_M + c for c in wanted])
        df = pl.from_arrow(table, rechunk=False) if table.num_rows else pl.DataFrame(
            schema={n: pl.String for n in table.schema.names})
        df = df.with_columns(pl.int_range(offset, offset + df.height, dtype=pl.Int64)
                             .alias("_row"))
        pc_ = self.path_column
        if _M + pc_ not in df.columns:
            return df.clear()
        # -- paths
        path = pl.col(_M + pc_).cast(pl.String, strict=False).str.strip_prefix("file://")
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
        odd = local & (~pl.col("_path").str.starts_with("/")
                       | pl.col("_path").str.contains(r"(^|/)\.\.?(/|$)|//|/$|^~"))
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
        kc = self.key_column
        if _M + kc in df.columns:
            key = pl.col(_M + kc).cast(pl.String, strict=False)
            issues.add(df, pl.col(_M + kc).is_not_null() & key.is_null(), kc,
                       "a key must be text")
        else:
            key = pl.lit(None, dtype=pl.String)
        df = df.with_columns(pl.coalesce(key, pl.col("_rel")).alias("_key"))
        kname = kc if _M + kc in df.columns else pc_
        issues.add(df, pl.col("_key").is_not_null() & (
            (pl.col("_key") == "") | pl.col("_key").str.contains(_BAD_KEY)), kname,
            pl.format("key {} must be a relative path without empty, '.' or '..' segments",
                      pl.col("_key")))
        self._duplicates(df, kname, seen, issues)
        # -- suffix: LaminDB's rule looks at the last two suffixes of the name only, so it runs
        # once per distinct tail (".fastq.gz", ".csv", ...), not once per row.
        base = pl.col("_path").str.extract(r"([^/]*)$", 1).str.strip_chars_start(".")
        df = df.with_columns(base.str.extract(r"((?:\.[^.]*){1,2})$", 1).fill_null("")
                             .alias("_suffix"))
        tails = df["_suffix"].unique().to_list()
        df = df.with_columns(pl.col("_suffix").replace_strict(
            tails, [objects.suffix_of("x" + t) for t in tails], return_dtype=pl.String))
        # -- artifact fields
        for name in ctx.fields:
            target, col, dtype = SETTABLE[name], pl.col(_M + name), df.schema[_M + name]
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
                exprs.append(_label_names(df, name, info, issues).alias(f"_cat_{info.id}"))
            else:
                exprs.append(_encode(df, name, info, issues).alias(info.column))
        if exprs:
            df = df.with_columns(exprs)
        # -- sizes, existence, cloud hashes
        df = self._stat(df, issues)
        suffix_bad = (pl.col("_key").is_not_null() & (pl.col("_suffix") != "")
                      & ~pl.col("_key").str.ends_with(pl.col("_suffix")))
        issues.add(df, suffix_bad, kname, pl.format("key {} must end with the file's suffix {}",
                                                    pl.col("_key"), pl.col("_suffix")))
        # Keep what the save needs (a prepared chunk may be kept until then).
        return df.drop([c for c in df.columns if c.startswith(_M)]
                       + [c for c in ("_field_size", "_field_hash", "_scheme") if c in df.columns])

    def _duplicates(self, df: pl.DataFrame, column: str, seen: dict, issues: _Issues) -> None:
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
            at = np.searchsorted(seen["h1"], h1)
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

    def _stat(self, df: pl.DataFrame, issues: _Issues) -> pl.DataFrame:
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
            with ThreadPoolExecutor(HASH_THREADS) as pool:
                stats = list(pool.map(_local_stat, paths, chunksize=256))
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
        cache = self._cloud_stats
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
                cache[p] = None if e is None else (int(e["size"]), hash_from_listing(e))

        def head(p):
            try:
                e = Location.of(p).fs.info(p)
            except FileNotFoundError:
                return p, None
            if e.get("type") != "file":
                return p, None
            return p, (int(e["size"]), hash_from_listing(e))

        if heads:
            with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
                for p, stat in pool.map(head, heads):
                    cache[p] = stat
        return [cache[p] for p in paths]

    def _label_check(self, ctx: _Context, df: pl.DataFrame, issues: _Issues | None,
                     encode: bool = True) -> pl.DataFrame:
        """Resolve the chunk's label names (one read per registry for the names not seen yet);
        rows naming unknown labels are issues unless labels are to be created. When every
        name is known, the column is encoded to label ids right away (``f_<id>``)."""
        for name, info in ctx.features.items():
            if not info.dtype.is_categorical:
                continue
            labels = ctx.labels[(info.dtype.label_spec.qualified, info.dtype.label_type)]
            column = f"_cat_{info.id}"
            parents, flat = _flat_names(df[column])
            missing = labels.lookup(pc.unique(flat).to_pylist()) if len(flat) else set()
            if missing and issues is not None and not labels.type_error:
                if not self.create_labels:
                    self._unknown_labels(df, name, labels, parents, flat, missing, issues)
            elif missing and issues is not None:
                issues.add(df.with_columns(pl.Series("_has", np.bincount(
                    parents, minlength=df.height) > 0)), pl.col("_has"), name, labels.type_error)
            if encode and (not missing or not self.create_labels):
                df = df.with_columns(pl.from_arrow(
                    _encode_labels(df.height, parents, flat, labels)).alias(info.column)).drop(
                    column)
        return df

    @staticmethod
    def _unknown_labels(df, name, labels, parents, flat, missing, issues,
                        template="unknown {label} label(s) {labels} of feature {feature}; pass "
                                 "create_labels=True to create them") -> None:
        unknown = pc.is_in(flat, value_set=pa.array(sorted(missing), flat.type)).to_numpy(
            zero_copy_only=False)
        rows = df["_row"].to_numpy()[parents[unknown]]
        by_row: dict[int, list[str]] = {}
        for row, label in zip(rows.tolist(), flat.filter(pa.array(unknown)).to_pylist()):
            by_row.setdefault(row, []).append(label)
        issues.frames.append(pl.DataFrame({
            "row": list(by_row), "column": [name] * len(by_row),
            "reason": [template.format(label=labels.label, feature=repr(name),
                                       labels=", ".join(dict.fromkeys(v)))
                       for v in by_row.values()]},
            schema={"row": pl.Int64, "column": pl.String, "reason": pl.String}))

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> IngestReport:
        """Check every row without writing anything: a report of every problem."""
        report, _ = self._validate()
        return report

    def _validate(self) -> tuple[IngestReport, np.ndarray]:
        if self._validated is not None:
            return self._validated
        t0 = time.perf_counter()
        ctx = self._context()
        report = IngestReport(rows=len(self))
        issues_all: list[Issue] = list(ctx.column_issues)
        failed: list[np.ndarray] = []
        if not ctx.column_issues:
            seen: dict = {}
            bar = _progress(len(self), "validating", "row", self.progress)
            # Prepared chunks are kept for the save while they fit in the budget; a larger
            # manifest is prepared again chunk by chunk, so memory stays bounded.
            kept: list | None = []
            kept_bytes = 0
            for offset, table in self._source.chunks():
                issues = _Issues()
                df = self._prepare(ctx, offset, table, seen, issues)
                df = self._label_check(ctx, df, issues)
                issues_all.extend(issues.to_list())
                failed.append(issues.rows())
                bar.update(table.num_rows)
                if kept is not None:
                    kept_bytes += df.estimated_size()
                    kept = kept + [(offset, df)] if kept_bytes <= _cache_budget() else None
                del df, table
            bar.close()
            self._prepared = kept
            if self.create_labels:
                for labels in ctx.labels.values():
                    if labels.missing and labels.spec.module == "bionty":
                        self._bionty_unknown(ctx, labels, issues_all, failed)
        report.issues = issues_all
        failed_rows = np.unique(np.concatenate(failed)) if failed else np.zeros(0, np.int64)
        report.failed = int(len(failed_rows)) if not ctx.column_issues else report.rows
        report.timings["validate"] = time.perf_counter() - t0
        self._validated = (report, failed_rows)
        return self._validated

    def _bionty_unknown(self, ctx, labels: _Labels, issues_all, failed) -> None:
        """With create_labels, bionty names must exist in the ontology: ask it once."""
        model = model_for(labels.spec)
        try:
            result = model.from_values(sorted(labels.missing), field=labels.field, mute=True)
        except Exception as exc:  # noqa: BLE001 - reported per row below
            unknown, reason = set(labels.missing), f"cannot validate against the ontology: {exc}"
        else:
            unknown, reason = set(getattr(result, "non_validated", [])), None
        if not unknown:
            return
        template = (reason or "no " + labels.spec.model + " of the public ontology is "
                    "named {labels} (nor has it as a synonym)")
        for offset, df in self._chunks_for_check(ctx):
            issues = _Issues()
            for name, info in ctx.features.items():
                if info.dtype.is_categorical and info.dtype.label_spec == labels.spec:
                    parents, flat = _flat_names(df[f"_cat_{info.id}"])
                    self._unknown_labels(df, name, labels, parents, flat, unknown, issues,
                                         template)
            issues_all.extend(issues.to_list())
            failed.append(issues.rows())

    def _chunks_for_check(self, ctx):
        """Prepared chunks again: from the cache when validation kept them."""
        if self._prepared is not None:
            yield from self._prepared
            return
        for offset, table in self._source.chunks():
            yield offset, self._prepare(ctx, offset, table, {}, _Issues())

    # ---- preview -----------------------------------------------------------------------------
    def to_dataframe(self, limit: int | None = PREVIEW_ROWS):
        """The first ``limit`` rows as they would be registered (nothing is hashed or
        written): path, key, where the file goes, size and hash when known, fields, feature
        values, and the problems found in each row."""
        import pandas as pd

        ctx = self._context()
        if ctx.column_issues:
            raise ValidationError(_issue_lines(ctx.column_issues))
        frames = []
        for offset, table in self._source.chunks(limit=limit):
            issues = _Issues()
            df = self._prepare(ctx, offset, table, {}, issues)
            df = self._label_check(ctx, df, issues, encode=False)
            problems = (pl.concat(issues.frames).group_by("row").agg(
                pl.col("reason").str.join("; ")) if issues.frames else
                pl.DataFrame(schema={"row": pl.Int64, "reason": pl.String}))
            out = df.select(
                pl.col("_row").alias("row"), pl.col("_path").alias("path"),
                pl.col("_key").alias("key"),
                pl.when(pl.col("_storage").is_not_null()).then(pl.lit("linked"))
                .otherwise(pl.lit("copy")).alias("storage"),
                pl.col("_size").alias("size"), pl.col("_hash").alias("hash"),
                *[pl.col(f"_field_{f}").alias(f) for f in ctx.fields if f not in ("size", "hash")],
                *[pl.col(f"_cat_{i.id}" if i.dtype.is_categorical else i.column).alias(n)
                  for n, i in ctx.features.items()])
            out = out.join(problems.rename({"reason": "issues"}), on="row", how="left",
                           maintain_order="left")
            frames.append(out)
        if not frames:
            return pd.DataFrame()
        return pl.concat(frames, how="vertical_relaxed").to_pandas().set_index("row")

    # ---- saving --------------------------------------------------------------------------------
    def save(self) -> IngestReport:
        """Validate, create missing labels, then hash, copy and commit chunk by chunk."""
        t_start = time.perf_counter()
        validation, failed_rows = self._validate()
        ctx = self._context()
        report = IngestReport(rows=validation.rows, issues=list(validation.issues),
                              failed=validation.failed)
        report.timings["validate"] = validation.timings["validate"]
        if ctx.column_issues or (validation.issues and self.on_error == "raise"):
            raise IngestError(report)
        instance = ctx.instance
        self._register_target(ctx)
        # -- labels first, one commit per registry
        t0 = time.perf_counter()
        if self.create_labels:
            for labels in ctx.labels.values():
                if labels.missing and labels.type_error is None:
                    count = labels.create()
                    if count:
                        report.labels_created[labels.label] = count
        report.timings["labels"] = time.perf_counter() - t0
        for phase in ("hash", "upload", "commit"):
            report.timings[phase] = 0.0
        from .lineage import active_run

        run = active_run()
        if run is None:
            log.warning("no run & transform got linked, call `ln.track()` & re-run")
        run_id = None if run is None else run._lamina_id()
        store = instance.store(tables.get("core.artifact"))
        now = datetime.now(timezone.utc)
        bars = {name: _progress(0, name, unit, self.progress)
                for name, unit in (("hashing", "file"), ("uploading", "file"),
                                   ("committing", "row"))}
        # Rows to commit are known after validation: that bar has an ETA.
        bars["committing"].total = max(0, validation.rows - validation.failed)
        listing: dict | None = None
        try:
            for df in self._chunks_to_save(ctx, failed_rows, report):
                if df.height == 0:
                    continue
                df = self._hash(df, report, bars["hashing"])
                before = df.height
                df = self._existing(store, df, report)
                bars["committing"].update(before - df.height)  # existing rows are done too
                if df.height == 0:
                    continue
                df = self._assign_uids(ctx, df)
                listing = self._upload(ctx, df, report, bars["uploading"], listing)
                self._commit(ctx, store, df, report, run_id, now, bars["committing"])
        finally:
            for bar in bars.values():
                bar.close()
        report.timings["total"] = time.perf_counter() - t_start
        log.info(f"ingested {report.new} new artifacts ({report.linked} linked, "
                 f"{report.copied} copied), {report.existing} existing, {report.failed} failed")
        return report

    def _chunks_to_save(self, ctx: _Context, failed_rows: np.ndarray, report: IngestReport):
        """The valid rows of each chunk: kept from validation, or prepared again (then a file
        that vanished since is reported and skipped)."""
        prepared, self._prepared = self._prepared, None  # each chunk is freed once written
        if prepared is not None:
            while prepared:
                offset, df = prepared.pop(0)
                yield _without(df, failed_rows)
            return
        seen: dict = {}
        known_bad = set(failed_rows.tolist())
        for offset, table in self._source.chunks():
            issues = _Issues()
            df = self._prepare(ctx, offset, table, seen, issues)
            df = self._label_check(ctx, df, None)
            fresh = [i for i in issues.to_list() if i.row not in known_bad]
            if fresh:
                report.issues.extend(fresh)
                report.failed += len({i.row for i in fresh})
            yield _without(df, np.union1d(issues.rows(), failed_rows))

    def _hash(self, df: pl.DataFrame, report: IngestReport, bar) -> pl.DataFrame:
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

            with ThreadPoolExecutor(HASH_THREADS) as pool:
                results = list(pool.map(work, todo["_path"].to_list()))
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

    def _existing(self, store, df: pl.DataFrame, report: IngestReport) -> pl.DataFrame:
        """Drop rows whose (hash, key) is in the catalog or earlier in this chunk."""
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
        if found.height:
            df = df.join(found, on=["_hash", "_key"], how="anti", nulls_equal=True)
        report.existing += n_dup + n_earlier + found.height
        self._checked_version = snapshot.version
        report.timings["commit"] += time.perf_counter() - t0
        return df

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

    def _assign_uids(self, ctx: _Context, df: pl.DataFrame) -> pl.DataFrame:
        linked = df.filter(pl.col("_storage").is_not_null())
        copied = df.filter(pl.col("_storage").is_null())
        parts = []
        if linked.height:
            # -1: under storage= that validation saw before it was registered.
            parts.append(linked.with_columns(
                pl.Series("_uid", _random_uids(linked.height)),
                pl.when(pl.col("_storage") == -1).then(pl.lit(ctx.target_id, pl.Int64))
                .otherwise(pl.col("_storage")).alias("_storage_id")))
        if copied.height:
            uids = [copy_uid(h, k, ctx.target_id) for h, k in
                    zip(copied["_hash"].to_list(), copied["_key"].to_list())]
            parts.append(copied.with_columns(pl.Series("_uid", uids, dtype=pl.String),
                                             pl.lit(ctx.target_id, dtype=pl.Int64)
                                             .alias("_storage_id")))
        return pl.concat(parts, how="vertical_relaxed").sort("_row")

    def _upload(self, ctx: _Context, df: pl.DataFrame, report: IngestReport, bar,
                listing: dict | None) -> dict | None:
        t0 = time.perf_counter()
        todo = df.filter(pl.col("_storage").is_null())
        if todo.height:
            location = ctx.instance.writable_location(ctx.target_id)  # linked: refused
            if location.is_local and listing is None:
                _remove_stale_partials(location)
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
                reused = _upload_one(location, path, objects.object_key(uid, suffix), size,
                                     listing)
                bar.update(1)
                return reused

            rows = list(zip(todo["_path"].to_list(), todo["_uid"].to_list(),
                            todo["_suffix"].to_list(), todo["_size"].to_list()))
            threads = LOCAL_COPY_THREADS if location.is_local else UPLOAD_THREADS
            with ThreadPoolExecutor(threads) as pool:
                reused = list(pool.map(work, rows))
            report.reused_uploads += sum(reused)
        report.timings["upload"] += time.perf_counter() - t0
        return listing

    def _commit(self, ctx: _Context, store, df: pl.DataFrame, report: IngestReport,
                run_id, now, bar) -> None:
        t0 = time.perf_counter()
        table, new_columns = self._rows(ctx, df, run_id, now)
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

        change = store.transact(plan)
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

    def _rows(self, ctx: _Context, df: pl.DataFrame, run_id, now) -> tuple[pa.Table, dict]:
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
            pl.lit(True).alias("is_latest"), pl.lit(False).alias("is_locked"),
            pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("created_at"),
            pl.lit(MAIN_BRANCH_ID, pl.Int64).alias("branch_id"),
            pl.lit(MAIN_BRANCH_ID, pl.Int64).alias("created_on_id"),
            pl.lit(1, pl.Int64).alias("space_id"),
            pl.col("_storage_id").alias("storage_id"),
            pl.lit(run_id, pl.Int64).alias("run_id"),
            pl.lit(ctx.instance.user_id, pl.Int64).alias("created_by_id"),
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
                parents, flat = _flat_names(df[f"_cat_{info.id}"])
                lists[info.column] = _encode_labels(df.height, parents, flat, labels)
            for m2m in spec.many_to_many:
                if m2m.target == info.dtype.label_spec.qualified:
                    links.setdefault(m2m.name, []).append(info.column)
        out = df.select(*base, *plain).to_arrow()
        for column, array in lists.items():
            out = out.append_column(column, _as_list_int64(array))
        for link, columns in links.items():
            merged = _list_column(df.height, [_list_parts(lists[c]) for c in columns])
            out = out.append_column(link, merged)
        return out, new_columns


def _as_list_int64(array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == pa.list_(pa.int64()) else array.cast(pa.list_(pa.int64()))


def _without(df: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    if not len(rows):
        return df
    return df.filter(~pl.col("_row").is_in(pl.Series(rows, dtype=pl.Int64).implode()))


def _cache_budget() -> int:
    """Bytes of prepared chunks validation may keep for the save (``LAMINA_INGEST_CACHE_MB``)."""
    return int(float(os.environ.get("LAMINA_INGEST_CACHE_MB", CACHE_MB)) * 2**20)


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


# ---- public constructors -------------------------------------------------------------------------
def from_manifest(manifest, *, path: str = "path", key: str = "key", features="auto",
                  storage=None, create_labels: bool = False, on_error: str = "raise",
                  chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool | None = None,
                  ) -> IngestBatch:
    """A lazy batch of artifacts, one per manifest row; ``ln.save(batch)`` writes it.

    ``manifest``: a pandas or Polars DataFrame (or LazyFrame), an Arrow table, or the path of a
    Parquet/CSV file (local or ``s3://``), streamed in chunks of ``chunk_size`` rows.
    ``path``/``key``: the names of the path and key columns. ``features``: ``"auto"`` maps
    every other column that is not an artifact field to the registered Feature of that name
    (an unknown column is an error naming it); a list picks the feature columns (the others
    are ignored). ``storage``: the root files are copied into (default: the instance's default
    storage); files under it or under any registered root are linked in place.
    ``create_labels``: create missing labels first, one commit per registry.
    ``on_error``: ``"raise"`` writes nothing when a row is invalid; ``"skip"`` writes the valid
    rows and reports the others. ``progress``: progress bars (default: when stderr is a
    terminal).
    """
    return IngestBatch(manifest, path=path, key=key, features=features, storage=storage,
                       create_labels=create_labels, on_error=on_error, chunk_size=chunk_size,
                       progress=progress)


def manifest_of_dir(path_or_uri) -> pl.DataFrame:
    """The manifest of every file under a local folder or an object-store prefix: ``path``,
    and for object stores ``size`` and ``hash`` from the listing (nothing is downloaded)."""
    text = os.fspath(path_or_uri)
    if "://" in text and not text.startswith("file://"):
        location = Location.of(text)
        scheme = location.type
        location.fs.invalidate_cache(location.root)
        entries = location.fs.find(location.root, detail=True)
        rows = [(f"{scheme}://{name}", int(e.get("size") or 0), hash_from_listing(e))
                for name, e in entries.items()
                if e.get("type", "file") == "file" and "/.lamina/" not in f"/{name}"
                and not name.endswith("/")]
        rows.sort()
        return pl.DataFrame(rows, schema={"path": pl.String, "size": pl.Int64,
                                          "hash": pl.String}, orient="row")
    folder = os.path.abspath(os.path.expanduser(text.removeprefix("file://")))
    if not os.path.isdir(folder):
        raise ValidationError(f"{folder} is not a folder")
    found = []
    for current_dir, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".lamina")
        found.extend(os.path.join(current_dir, f) for f in sorted(files))
    return pl.DataFrame({"path": found}, schema={"path": pl.String})


def from_dir(path_or_uri, *, key_prefix: str | None = None, **kwargs) -> IngestBatch:
    """A batch of every file under a local folder or an ``s3://`` / ``gs://`` prefix.

    Files under a registered storage root are linked in place with their path relative to
    the root as key; other local files are copied into managed storage with the key
    ``<key_prefix or folder name>/<path inside the folder>``.
    """
    manifest = manifest_of_dir(path_or_uri)
    text = os.fspath(path_or_uri)
    is_cloud = "://" in text and not text.startswith("file://")
    if not is_cloud and manifest.height:
        folder = os.path.abspath(os.path.expanduser(text.removeprefix("file://")))
        instance = current()
        roots = instance.store(tables.get("core.storage")).snapshot().read(
            ["root"]).column("root").to_pylist()
        under_root = any(folder == r or folder.startswith(r.rstrip("/") + "/") for r in roots
                         if "://" not in r)
        if not under_root:
            prefix = key_prefix if key_prefix is not None else os.path.basename(folder)
            manifest = manifest.with_columns(
                (pl.lit(prefix.rstrip("/") + "/" if prefix else "")
                 + pl.col("path").str.slice(len(folder) + 1)).alias("key"))
    return from_manifest(manifest, **kwargs)


# ---- ln.save -------------------------------------------------------------------------------------
def save(records, **kwargs):
    """Save a batch from ``from_manifest`` (returns its report), one record, or many records:
    unsaved records of one registry are inserted with one commit per registry."""
    if isinstance(records, IngestBatch):
        return records.save()
    if isinstance(records, SQLRecord):
        return records.save()
    records = [r for r in records if r is not None]
    from ..bionty.models import BioRecord

    bio = [r for r in records if isinstance(r, BioRecord)]
    if bio:
        from .. import bionty

        bionty.save(bio, **kwargs)
    by_model: dict[type, list[SQLRecord]] = {}
    for record in records:
        if isinstance(record, BioRecord):
            continue
        if not isinstance(record, SQLRecord):
            raise ValidationError(f"ln.save() takes records or a batch, got {record!r}")
        by_model.setdefault(type(record), []).append(record)
    for model, group in by_model.items():
        # Registries without their own save or insert rule are inserted in bulk; the others
        # (artifacts upload files, features check dtypes, ...) save one by one.
        plain = model._plan_insert is SQLRecord._plan_insert and model.save is SQLRecord.save
        pending = [r for r in group if plain and r._data.get("id") is None]
        for record in group:
            if not (plain and record._data.get("id") is None):
                record.save()
        if pending:
            _bulk_insert(model, pending)
    return records


def _bulk_insert(model, records: list[SQLRecord]) -> None:
    instance = current()
    for record in records:
        record._fill_defaults(instance)

    def plan(snapshot: Snapshot) -> Change:
        rows = [dict(r._data, id=snapshot.next_id + i) for i, r in enumerate(records)]
        return Change(append=rows, result=rows)

    rows = instance.store(model._spec).transact(plan).result
    for record, row in zip(records, rows):
        record._data.update(row)
        object.__setattr__(record, "_saved", dict(record._data))


def labels_from_values(model, values, field: str | None = None, *, create: bool = False,
                       type=None) -> list:
    """Records whose ``field`` is one of ``values``, read with one query; with
    ``create=True`` the missing ones are returned as new, unsaved records (``ln.save(records)``
    inserts them with one commit)."""
    spec = model._spec
    field = field or spec.name_field or "name"
    if spec.column(field) is None:
        raise ValidationError(f"{spec.model} has no field {field!r}")
    if isinstance(values, str):
        values = [values]
    wanted = [v for v in dict.fromkeys(str(v) for v in values if v is not None)]
    if not wanted:
        return []
    cond = pc.field(field).isin(wanted)
    if spec.column("branch_id") is not None:
        cond = cond & (pc.field("branch_id") == MAIN_BRANCH_ID)
    type_id = None
    if type is not None:
        type_id = type._lamina_id()
        cond = cond & (pc.field("type_id") == type_id)
    rows = current().store(spec).snapshot().read(filter=cond).to_pylist()
    by_value: dict = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        by_value.setdefault(row[field], row)
    records = [model._from_row(by_value[v]) for v in wanted if v in by_value]
    missing = [v for v in wanted if v not in by_value]
    if missing and create:
        extra = {"type": type} if type is not None else {}
        records.extend(model(**{field: v}, **extra) for v in missing)
    elif missing:
        shown = ", ".join(repr(v) for v in missing[:10]) + (" ..." if len(missing) > 10 else "")
        log.info(f"{len(missing)} value(s) are not in {spec.model}: {shown}; pass create=True "
                 "to create them")
    return records


__all__ = ["IngestBatch", "IngestError", "IngestReport", "Issue", "from_manifest", "from_dir",
           "manifest_of_dir", "save", "labels_from_values", "create_labels", "hash_from_listing"]
