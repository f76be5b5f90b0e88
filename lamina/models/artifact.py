"""Artifacts: files, folders, DataFrames and AnnData objects with LaminDB's identity rules."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow.compute as pc

from .. import log
from ..catalog import objects, tables, writer
from ..catalog.ids import next_version_uid, version_number
from ..catalog.instance import MAIN_BRANCH_ID, TRASH_BRANCH_ID, current
from ..catalog.location import safe_key
from ..catalog.snapshot import Change, Snapshot
from ..errors import InvalidPath, ValidationError
from ..engine.session import session_for
from .base import SQLRecord
from .features import HasFeatures
from .lineage import output_run, record_input
from .lineage_graph import LineageGraph
from .schema import Schema, annotate_from_dataset

LOADERS = {
    ".parquet": lambda p: __import__("pandas").read_parquet(p),
    ".csv": lambda p: __import__("pandas").read_csv(p),
    ".tsv": lambda p: __import__("pandas").read_csv(p, sep="\t"),
    ".h5ad": lambda p: __import__("anndata").read_h5ad(p),
    ".json": lambda p: __import__("json").loads(Path(p).read_text()),
    ".txt": lambda p: Path(p).read_text(),
}


# Warnings said once per process.


class Artifact(HasFeatures, SQLRecord):
    """A file, folder, DataFrame or AnnData registered in the catalog.

    ``ln.Artifact("reads.fastq.gz", key="raw/reads.fastq.gz").save()`` hashes the file,
    uploads it into the instance's storage and commits a row; the same content registered
    twice returns the existing artifact. ``revises=`` makes a new version of an artifact."""

    _spec = tables.get("core.artifact")
    _versioned = True

    def __init__(self, path: str | os.PathLike, *, key: str | None = None,
                 description: str | None = None, revises: Artifact | None = None,
                 version: str | None = None, version_tag: str | None = None,
                 kind: str | None = None, **fields):
        """Register the local file or folder ``path``. Under the ``key`` of an existing
        artifact, new content becomes that artifact's next version (``revises`` names the
        previous version explicitly); content lamina already has returns that artifact.
        ``version`` (or ``version_tag``) labels the version."""
        if version is not None and version_tag is not None and version != version_tag:
            raise ValidationError(f"version={version!r} and version_tag={version_tag!r} "
                                  "disagree; pass one of them")
        # Fields are type-checked here, before anything is hashed or uploaded.
        super().__init__(description=description, kind=kind,
                         version_tag=version if version is not None else version_tag, **fields)
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidPath(f"Artifact() takes the path of a local file or folder, got {path!r}")
        if isinstance(path, str) and "://" in path and not path.startswith("file://"):
            raise InvalidPath(
                f"{path!r}: only local files and folders can be registered one by one so far")
        local = Path(os.fspath(path).removeprefix("file://")).expanduser()
        if not local.exists():
            raise InvalidPath(f"path {str(local)!r} does not exist")
        if key is not None:
            safe_key(key)
        if revises is not None and not isinstance(revises, Artifact):
            raise ValidationError(f"revises expects an Artifact, got {revises!r}")
        size, hash_, n_files = objects.describe_local(local)
        session = session_for(current())
        # Both lookups see one version of the table: it is checked for new commits once (one
        # LIST on an object store, not two).
        with session.one_view():
            existing = Artifact.filter(hash=hash_).order_by("id").first()
            # The version that check saw: saving re-checks the content only if the table moved
            # on since. Taken before any other query refreshes the view (a later version would
            # cover commits the check did not see: two racing processes then saved the same
            # content).
            object.__setattr__(self, "_hash_checked_at", session.viewed_version(self._spec))
            if existing is None and revises is None and key is not None:
                revises = Artifact.filter(key=key, is_latest=True).order_by("-id").first()
        if existing is not None:
            log.warning(f"returning existing artifact with same hash: {existing!r}")
            object.__setattr__(self, "_data", dict(existing._data))
            object.__setattr__(self, "_saved", dict(existing._data))
            return
        suffix = "" if local.is_dir() else objects.suffix_of(str(local))
        if key is not None and not local.is_dir() and suffix and not key.endswith(suffix):
            raise InvalidPath(f"key {key!r} must end with the file's suffix {suffix!r}")
        data = self._data
        data.update(key=key, suffix=suffix, size=size, hash=hash_, n_files=n_files)
        object.__setattr__(self, "_local_path", local)
        object.__setattr__(self, "_revises", revises)

    # ---- constructors for in-memory objects -----------------------------------------------
    @classmethod
    def from_dataframe(cls, df, *, key: str | None = None, description: str | None = None,
                       **kwargs) -> Artifact:
        """An artifact of a pandas DataFrame, stored as Parquet; ``schema=`` validates the
        columns against a Schema first and annotates the artifact with its features."""
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            raise ValidationError(f"from_dataframe expects a pandas DataFrame, got {type(df).__name__}")
        return cls._from_object(df, ".parquet", df.to_parquet, "DataFrame", len(df), key,
                                description, kwargs)

    @classmethod
    def from_anndata(cls, adata, *, key: str | None = None, description: str | None = None,
                     **kwargs) -> Artifact:
        """An artifact of an AnnData object, stored as ``.h5ad``; ``schema=`` as for
        :meth:`from_dataframe`."""
        import anndata as ad

        if not isinstance(adata, ad.AnnData):
            raise ValidationError(f"from_anndata expects an AnnData, got {type(adata).__name__}")
        return cls._from_object(adata, ".h5ad", adata.write_h5ad, "AnnData", adata.n_obs, key,
                                description, kwargs)

    @classmethod
    def _from_object(cls, obj, suffix, write, otype, n_observations, key, description, kwargs):
        """Validate against ``schema`` (if given), write to a scratch file, register that."""
        schema = kwargs.get("schema")
        _validate(schema, obj)
        tmp = _scratch_file(suffix)
        write(tmp)
        artifact = cls(tmp, key=key, description=description, kind="dataset", **kwargs)
        if artifact._data.get("id") is None:
            artifact._data.update(otype=otype, n_observations=n_observations)
            object.__setattr__(artifact, "_curation", (schema, obj))
        return artifact

    # ---- bulk ingestion (lamina/models/ingest/) ------------------------------------------
    @classmethod
    def from_manifest(cls, manifest, **kwargs):
        """A lazy batch of artifacts, one per row of ``manifest``; ``ln.save(batch)`` writes it
        in a few commits and returns a report.

        The manifest is a pandas/Polars DataFrame, an Arrow table, or a Parquet/CSV file (local
        or ``s3://``) with one row per file: a ``path`` column (required), an optional ``key``
        column, optional artifact fields (``description``, ``kind``, ``version_tag``, ...) and
        one column per registered Feature holding that file's value. Local files are copied
        into the default storage; files already under a registered storage root are linked in
        place. ``create_labels=True`` creates missing labels of categorical features;
        ``on_error="skip"`` saves the valid rows and reports the others. See
        ``lamina.models.ingest.from_manifest`` for every option."""
        from .ingest import from_manifest

        if isinstance(manifest, (str, os.PathLike)):
            text = os.fspath(manifest)
            if "://" not in text and not Path(text).expanduser().exists():
                raise InvalidPath(f"manifest {text!r} does not exist; pass the path of a Parquet "
                                  "or CSV file, or a DataFrame")
        return from_manifest(manifest, **kwargs)

    @classmethod
    def from_dir(cls, path_or_uri, **kwargs):
        """A batch (as :meth:`from_manifest`) of every file under a local folder or an
        ``s3://`` prefix; ``key_prefix=`` sets the keys of copied files."""
        from .ingest import from_dir

        return from_dir(path_or_uri, **kwargs)

    # ---- saving ------------------------------------------------------------------------
    def save(self) -> Artifact:
        if self._data.get("id") is not None:
            return super().save()
        instance = current()
        self._fill_defaults(instance)
        data = self._data
        revises = self.__dict__.get("_revises")
        if revises is not None:
            data["uid"] = self._version_uid(revises)
        data["storage_id"] = instance.storage_id
        location = instance.writable_location(instance.storage_id)
        run = output_run()
        if run is not None and data.get("run_id") is None:
            data["run_id"] = run._lamina_id()
        while True:
            object_key = objects.object_key(data["uid"], data["suffix"])
            # The object is uploaded before the row is committed (on an object store while
            # the row's data file is written): a row never points at a missing object.
            # A version's uid is predictable, so its object must not replace another's.
            uploaded = None
            try:
                uploaded = objects.start_upload(location, self._local_path, object_key,
                                                exclusive=revises is not None)
                result = writer.transact(instance, self._spec, self._plan_insert,
                                         before_commit=uploaded).result
            except FileExistsError:  # this version's object exists: nothing was committed
                data["uid"] = next_version_uid(data["uid"], [data["uid"][-4:]])
                continue
            except _VersionTaken as taken:
                # A row holds this version (its object is gone): ours, uploaded exclusively,
                # goes; upload again as the next version.
                if _upload_succeeded(uploaded):
                    objects.remove(location, object_key)
                data["uid"] = taken.uid
                continue
            except BaseException:
                # No row points at the upload unless the commit went through (and only the
                # housekeeping after it failed): then keep it, else leave no orphan object.
                if (_upload_succeeded(uploaded)
                        and not _committed(instance, self._spec, data["uid"])):
                    objects.remove(location, object_key)
                raise
            break
        created = result["uid"] == data["uid"]
        if not created and _upload_succeeded(uploaded):  # the same content was saved first
            objects.remove(location, object_key)
        data.update(result)
        object.__setattr__(self, "_saved", dict(data))
        schema, dataset = self.__dict__.get("_curation") or (None, None)
        if schema is not None and created:
            annotate_from_dataset(self, schema, dataset)
        return self

    def _version_uid(self, revises: Artifact) -> str:
        stem = revises.uid[:-4]
        taken = Artifact.filter(uid__startswith=stem).to_arrow(columns=["uid"])
        return next_version_uid(revises.uid, [u[-4:] for u in taken.column("uid").to_pylist()])

    def _plan_insert(self, snapshot: Snapshot) -> Change:
        data = self._data
        if snapshot.version != self.__dict__.get("_hash_checked_at"):
            same = snapshot.read(filter=(pc.field("hash") == data["hash"])
                                 & (pc.field("branch_id") == MAIN_BRANCH_ID))
            if same.num_rows:
                return Change(result=min(same.to_pylist(), key=lambda r: r["id"]))
        row = dict(data, id=snapshot.next_id)
        revises = self.__dict__.get("_revises")
        if revises is None:
            return Change(append=[row], result=row)
        stem = data["uid"][:-4]
        # Versions are numbered when saving starts; one saved meanwhile (or in the trash,
        # which queries do not see) may hold that number or a higher one already. The new
        # version becomes the latest, so it must also be the highest.
        versions = snapshot.read(filter=pc.starts_with(pc.field("uid"), stem)).to_pylist()
        taken = [v["uid"] for v in versions]
        if any(version_number(u) >= version_number(data["uid"]) for u in taken):
            raise _VersionTaken(next_version_uid(data["uid"], [u[-4:] for u in taken]))
        previous = [v for v in versions if v["is_latest"]]
        for old in previous:
            old["is_latest"] = False
        if row.get("key") is None:
            row["key"] = revises.key
        return Change(replace=[*previous, row], result=row)

    def delete(self, permanent: bool | None = None) -> None:
        """Move to the trash; ``permanent=True`` removes the row and then its file."""
        record_id = self._lamina_id()
        storage_id = self._data.get("storage_id")
        key = objects.object_key(self.uid, self.suffix or "")
        removes_file = storage_id is not None and (
            permanent or self._data.get("branch_id") == TRASH_BRANCH_ID)
        # Refused before the row goes when the file may not be deleted (linked storage).
        location = current().writable_location(storage_id) if removes_file else None
        super().delete(permanent=permanent)
        if self.__dict__.get("_deleted") and location is not None:
            # After the row is gone, so no row points at nothing.
            objects.remove(location, key)
            log.info(f"deleted artifact {record_id} and its file")

    # ---- lineage -----------------------------------------------------------------------
    def view_lineage(self) -> LineageGraph:
        """Where this artifact came from: the run that saved it, the run's transform and input
        artifacts, and theirs in turn. Shown as a tree in a terminal, as a picture in Jupyter."""
        return LineageGraph(self)

    # ---- data access -------------------------------------------------------------------
    @property
    def _location(self):
        return current().storage_location(self._data.get("storage_id"))

    @property
    def path(self) -> str:
        linked = self._data.get("_real_key")  # a file registered in place (bulk ingestion)
        return self._location.join(linked or objects.object_key(self.uid, self.suffix or ""))

    def cache(self) -> str:
        """A local path to the artifact's file (downloaded once from object stores)."""
        instance = current()
        record_input(self)
        location = self._location
        if location.is_local:
            return self.path
        target = objects.cache_dir() / instance.uid / f"{self.uid}{self.suffix or ''}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(objects.partial_name(str(target)))
            location.fs.get(self.path, str(tmp), recursive=bool(self.n_files))
            os.replace(tmp, target)
        return str(target)

    def load(self):
        """The artifact in memory: DataFrame for Parquet/CSV, AnnData for h5ad, ..."""
        loader = LOADERS.get(self.suffix or "")
        if loader is None:
            raise ValidationError(
                f"no in-memory loader for suffix {self.suffix!r}; use .cache() for a path "
                f"(loaders: {', '.join(LOADERS)})")
        return loader(self.cache())

    def open(self, engine: str = "pyarrow"):
        """Stream a Parquet artifact without loading it: a pyarrow Dataset, a Polars LazyFrame
        or a DuckDB relation."""
        if self.suffix != ".parquet":
            raise ValidationError(f"open() streams Parquet artifacts; this one is {self.suffix!r}")
        instance = current()
        record_input(self)
        location = self._location
        if engine == "pyarrow":
            import pyarrow.dataset as ds

            if location.is_local:
                return ds.dataset(self.path)
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            return ds.dataset(self.path.split("://", 1)[1],
                              filesystem=PyFileSystem(FSSpecHandler(location.fs)))
        if engine == "polars":
            import polars as pl

            options = location.delta_options
            return pl.scan_parquet(self.path, storage_options=options)
        if engine == "duckdb":
            return session_for(instance).objects_connection().read_parquet(self.path)
        raise ValidationError(f"unknown engine {engine!r}; use 'pyarrow', 'polars' or 'duckdb'")


def _validate(schema, data) -> None:
    if schema is None:
        return
    if not isinstance(schema, Schema):
        raise ValidationError(f"schema expects a Schema record, got {schema!r}")
    schema.validate(data)


def _scratch_file(suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lamina-"))
    return folder / f"data{suffix}"


class _VersionTaken(Exception):
    """The planned version uid is taken; ``uid`` is the next free one."""

    def __init__(self, uid: str):
        super().__init__(uid)
        self.uid = uid


def _upload_succeeded(uploaded) -> bool:
    """Wait for an upload (removing its object while it runs would leave the object behind);
    whether the object at its key is ours. An exclusive upload that found the key taken
    must leave that object alone."""
    if uploaded is None:
        return False
    try:
        uploaded()
    except Exception:
        return False
    return True


def _committed(instance, spec, uid: str) -> bool:
    """Whether a row with ``uid`` is in the table; True when that cannot be told."""
    try:
        return instance.store(spec).snapshot().read(["id"], pc.field("uid") == uid).num_rows > 0
    except Exception:
        return True
