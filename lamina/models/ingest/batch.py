"""The batch: a manifest's phases in order. Validation streams the manifest (prepare each chunk,
resolve its labels); the save creates the missing labels, then per chunk hashes, drops existing
rows, stages files and commits. Every phase lives in its own module of this package."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import polars as pl

from ... import log
from ...catalog import tables
from ...catalog.instance import current
from ...errors import ValidationError
from ..features import describe_catalog
from .commit import Committer
from .context import Context, register_target, resolve_context
from .labels import check_labels, ontology_unknown
from .manifest import Source, manifest_of_dir
from .prepare import prepare
from .report import IngestError, IngestReport, Issue, Issues, issue_lines
from .staging import FileStats, assign_uids, hash_files, upload

DEFAULT_CHUNK_SIZE = 100_000
PREVIEW_ROWS = 20
# Prepared chunks validation may keep for the save instead of reading the manifest again.
CACHE_MB = 768


class IngestBatch:
    """A manifest ready to be ingested. Nothing is read from the files or written to the
    catalog until :meth:`validate` or :meth:`save`; ``len()`` and :meth:`to_dataframe` only read
    the manifest."""

    def __init__(self, manifest, *, path: str = "path", key: str = "key", features="auto",
                 storage=None, create_labels: bool = False, on_error: str = "raise",
                 chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool | None = None):
        if on_error not in ("raise", "skip"):
            raise ValidationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self._source = Source(manifest, chunk_size)
        self.path_column = path
        self.key_column = key
        self._features_arg = features
        self._storage_arg = storage
        self.create_labels = bool(create_labels)
        self.on_error = on_error
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self._stats = FileStats(path)
        self._prepared: list[tuple[int, pl.DataFrame]] | None = None
        self._committer = Committer()
        self._validated: tuple[IngestReport, np.ndarray] | None = None
        self._ctx: Context | None = None

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return (f"IngestBatch({len(self)} rows, columns={self._source.columns}, "
                f"create_labels={self.create_labels}, on_error={self.on_error!r})")

    def _context(self) -> Context:
        if self._ctx is None:
            self._ctx = resolve_context(self._source, self.path_column, self.key_column,
                                        self._features_arg, self._storage_arg)
        return self._ctx

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

            def labelled(offset, rows, df, issues):
                """A chunk's labels checked: its issues and the chunk kept (in order)."""
                nonlocal kept, kept_bytes
                df = check_labels(ctx, df, issues, self.create_labels)
                issues_all.extend(issues.to_list())
                failed.append(issues.rows())
                bar.update(rows)
                if kept is not None:
                    kept_bytes += df.estimated_size()
                    kept = kept + [(offset, df)] if kept_bytes <= _cache_budget() else None

            # A chunk's labels are checked on a second thread while the next chunk is
            # prepared (both mostly Arrow, NumPy and Polars work outside the GIL), one chunk
            # behind, so issues and kept chunks stay in manifest order.
            # An error of the chunk being checked is raised before one of a later chunk
            # (which becomes its context).
            with ThreadPoolExecutor(1, thread_name_prefix="lamina-labels") as labeller:
                checking = None
                try:
                    for offset, table in self._source.chunks():
                        issues = Issues()
                        df = prepare(ctx, offset, table, seen, issues, self._stats)
                        if checking is not None:
                            checking.result()
                        checking = labeller.submit(labelled, offset, table.num_rows, df,
                                                   issues)
                        del df, table
                finally:
                    if checking is not None:
                        checking.result()
            bar.close()
            self._prepared = kept
            if self.create_labels:
                for labels in ctx.labels.values():
                    if labels.missing and labels.spec.module == "bionty":
                        ontology_unknown(ctx, labels, self._chunks_for_check(ctx), issues_all,
                                         failed)
        report.issues = issues_all
        failed_rows = np.unique(np.concatenate(failed)) if failed else np.zeros(0, np.int64)
        report.failed = int(len(failed_rows)) if not ctx.column_issues else report.rows
        report.timings["validate"] = time.perf_counter() - t0
        self._validated = (report, failed_rows)
        return self._validated

    def _chunks_for_check(self, ctx):
        """Prepared chunks again: from the cache when validation kept them."""
        if self._prepared is not None:
            yield from self._prepared
            return
        for offset, table in self._source.chunks():
            yield offset, prepare(ctx, offset, table, {}, Issues(), self._stats)

    # ---- preview -----------------------------------------------------------------------------
    def to_dataframe(self, limit: int | None = PREVIEW_ROWS):
        """The first ``limit`` rows as they would be registered (nothing is hashed or
        written): path, key, where the file goes, size and hash when known, fields, feature
        values, and the problems found in each row."""
        import pandas as pd

        ctx = self._context()
        if ctx.column_issues:
            raise ValidationError(issue_lines(ctx.column_issues))
        frames = []
        for offset, table in self._source.chunks(limit=limit):
            issues = Issues()
            df = prepare(ctx, offset, table, {}, issues, self._stats)
            df = check_labels(ctx, df, issues, self.create_labels, encode=False)
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
        register_target(ctx)
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
        from ..lineage import output_run

        run = output_run()
        run_id = None if run is None else run._lamina_id()
        store = instance.store(tables.get("core.artifact"))
        now = datetime.now(timezone.utc)
        bars = {name: _progress(0, name, unit, self.progress)
                for name, unit in (("hashing", "file"), ("uploading", "file"),
                                   ("committing", "row"))}
        # Rows to commit are known after validation: that bar has an ETA.
        bars["committing"].total = max(0, validation.rows - validation.failed)
        listing: dict | None = None
        to_commit = bars["committing"].total
        columns_before = frozenset(store.snapshot().schema.names)
        try:
            for df in self._chunks_to_save(ctx, failed_rows, report):
                if df.height == 0:
                    continue
                df = hash_files(df, report, bars["hashing"])
                before = df.height
                df, stored = self._committer.existing(store, df, report)
                self._committer.update_existing(ctx, store, stored, report, now)
                bars["committing"].update(before - df.height)  # existing rows are done too
                if df.height == 0:
                    continue
                df = assign_uids(ctx, df)
                listing = upload(ctx, df, report, bars["uploading"], listing)
                new_before = report.new
                self._committer.commit(ctx, store, df, report, run_id, now,
                                       bars["committing"])
                if not self.progress:  # a log, not a terminal: one line per committed chunk
                    log.info(f"committed chunk {report.chunks}: {report.new - new_before:,} new "
                             f"artifacts; {report.new + report.existing:,} of {to_commit:,} "
                             "rows saved so far")
        except KeyboardInterrupt:
            # One Ctrl-C can arrive twice: Polars raises its own KeyboardInterrupt for a
            # signal that Python then raises again (as on entering the function below), so a
            # second interrupt while saying what was saved is absorbed, as is a user pressing
            # Ctrl-C again. The loop is here, not inside the function: Python handles a
            # pending signal on entering a call.
            while True:
                try:
                    message = _say_interrupted(report)
                    break
                except KeyboardInterrupt:
                    continue
            raise KeyboardInterrupt(message) from None
        finally:
            for bar in bars.values():
                bar.close()
        if {info.column for info in ctx.features.values()} - columns_before:
            describe_catalog(instance)  # feature columns appeared: tell other engines
        report.timings["total"] = time.perf_counter() - t_start
        updated = f" ({report.updated} updated: {report.changed})" if report.updated else ""
        log.info(f"ingested {report.new} new artifacts ({report.linked} linked, "
                 f"{report.copied} copied), {report.existing} existing{updated}, "
                 f"{report.failed} failed")
        return report

    def _chunks_to_save(self, ctx: Context, failed_rows: np.ndarray, report: IngestReport):
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
            issues = Issues()
            df = prepare(ctx, offset, table, seen, issues, self._stats)
            df = check_labels(ctx, df, None, self.create_labels)
            fresh = [i for i in issues.to_list() if i.row not in known_bad]
            if fresh:
                report.issues.extend(fresh)
                report.failed += len({i.row for i in fresh})
            yield _without(df, np.union1d(issues.rows(), failed_rows))


def _without(df: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    if not len(rows):
        return df
    return df.filter(~pl.col("_row").is_in(pl.Series(rows, dtype=pl.Int64).implode()))


def _cache_budget() -> int:
    """Bytes of prepared chunks validation may keep for the save (``LAMINA_INGEST_CACHE_MB``)."""
    return int(float(os.environ.get("LAMINA_INGEST_CACHE_MB", CACHE_MB)) * 2**20)


def _say_interrupted(report: IngestReport) -> str:
    """Log what an interrupted save committed, and return it."""
    message = (f"interrupted: {report.new:,} new artifacts in {report.chunks} committed "
               f"chunk(s) are saved{_id_span(report)}; the chunk in progress was not "
               "committed. Run the same ln.save again to resume: it skips what is saved.")
    log.warning(message)
    return message


def _id_span(report: IngestReport) -> str:
    if not report.id_ranges:
        return ""
    return (f" (ids {min(lo for lo, _ in report.id_ranges)}–"
            f"{max(hi for _, hi in report.id_ranges)})")


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                leave=False, dynamic_ncols=True)



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
