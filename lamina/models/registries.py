"""The registries other than Artifact. Each is its table declaration plus what is special to it."""

from __future__ import annotations

import os

from ..catalog import tables
from ..catalog.instance import current
from ..catalog.location import Location
from .base import SQLRecord
from .features import Feature, HasFeatures
from .labels import labels_from_values
from .schema import Schema


class User(SQLRecord):
    """A person who writes to the catalog (one per handle, the same uid everywhere)."""

    _spec = tables.get("core.user")


class Space(SQLRecord):
    _spec = tables.get("core.space")


class Branch(SQLRecord):
    _spec = tables.get("core.branch")


class Storage(SQLRecord):
    """A place artifacts live: a local folder, ``s3://bucket/prefix`` or ``gs://...``.
    Managed storage (``instance_uid`` is this instance) is written to; linked storage, which
    another instance manages, is only read."""

    _spec = tables.get("core.storage")

    def __init__(self, root: str | os.PathLike | None = None, **fields):
        if root is None:
            raise TypeError("Storage() needs a root: a local folder, s3://... or gs://...")
        location = Location.of(root)
        super().__init__(root=location.root, type=location.type, **fields)

    def save(self) -> Storage:
        """Register the storage. This instance manages it unless the root is another
        instance's: then it is linked (its artifacts are read, never written or deleted)."""
        if self._data.get("id") is None and self._data.get("instance_uid") is None:
            self._data["instance_uid"] = current().manager_of(self._data["root"])
        return super().save()

    @property
    def path(self) -> str:
        return self.root


class Transform(SQLRecord):
    """A script, notebook or function whose runs produce artifacts (versioned by source)."""

    _spec = tables.get("core.transform")
    _versioned = True


class Run(HasFeatures, SQLRecord):
    """One execution of a Transform: ``ln.track()`` starts one; inputs and outputs link to it."""

    _spec = tables.get("core.run")


class Collection(SQLRecord):
    """A versioned set of artifacts."""

    _spec = tables.get("core.collection")
    _versioned = True


class Record(HasFeatures, SQLRecord):
    """A label or a row of a typed table: ``ln.Record(name="Experiment 1").save()``."""

    _spec = tables.get("core.record")

    @classmethod
    def from_values(cls, values, field: str = "name", *, create: bool = False, type=None):
        """Records for many values with one query; ``create=True`` adds unsaved records for
        the missing ones, which ``ln.save(records)`` inserts with one commit."""
        return labels_from_values(cls, values, field, create=create, type=type)


class ULabel(SQLRecord):
    """A plain label, as in the seed system."""

    _spec = tables.get("core.ulabel")


class Project(SQLRecord):
    """A project that records and artifacts belong to."""

    _spec = tables.get("core.project")
