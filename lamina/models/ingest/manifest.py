"""Reading a manifest: pandas, Polars (eager or lazy), Arrow, or a Parquet/CSV file (local or
on an object store) as chunks of Arrow tables; and the manifest of a folder or prefix."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from ...catalog.location import Location
from ...catalog.objects import hash_from_listing
from ...errors import ValidationError


class Source:
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
        # Arrow's threads decode the next batch while this one is validated (the manifest is
        # read on a native filesystem, so no IO thread calls back into Python); one batch
        # ahead keeps memory bounded.
        for batch in dataset.to_batches(batch_size=size, use_threads=True, batch_readahead=1,
                                        fragment_readahead=1):
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
