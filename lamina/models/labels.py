"""Label names -> ids: the one resolver behind bulk ingest, ``Record.from_values``, feature
values given as names, and label creation.

A name is resolved within one registry (and, for Records, within one Record type) on the main
branch; when several rows share it the lowest id wins. Creating goes through the write layer
(``writer.insert(..., unique=, scope=)``), so two writers creating the same label meanwhile end
up with one row. Bionty terms are created from their public ontology (the registry's
``from_values``), never from a bare name.
"""

from __future__ import annotations

import pyarrow.compute as pc

from .. import log
from ..catalog import tables, writer
from ..catalog.instance import MAIN_BRANCH_ID, Instance, current
from ..engine.features import FeatureInfo
from ..errors import ValidationError
from .base import model_for


class LabelResolver:
    """Name -> id of one label registry (and Record type). Names are asked for once: ``ids``
    and ``missing`` remember every answer; one read of the registry's snapshot per call."""

    def __init__(self, instance: Instance, spec: tables.TableSpec, type_name: str | None = None,
                 *, type_id: int | None = None, field: str | None = None):
        self.instance = instance
        self.spec = spec
        self.type_name = type_name
        self.field = field or spec.name_field or "name"
        if spec.column(self.field) is None:
            raise ValidationError(f"{spec.model} has no field {self.field!r}")
        self.typed = bool(type_name) or type_id is not None
        self.type_id = type_id
        self.type_error: str | None = None
        self.ids: dict[str, int] = {}
        self.missing: set[str] = set()
        if type_name and type_id is None:
            found = self._snapshot().read(
                ["id"], (pc.field(self.field) == type_name)
                & (pc.field("is_type") == True)).column("id")  # noqa: E712
            if len(found):
                self.type_id = pc.min(found).as_py()
            else:
                self.type_error = (f"{spec.model} type {type_name!r} does not exist; "
                                   f"create it with ln.{spec.model}(name={type_name!r}, "
                                   f"is_type=True).save()")

    @classmethod
    def for_feature(cls, instance: Instance, info: FeatureInfo) -> LabelResolver:
        return cls(instance, info.dtype.label_spec, info.dtype.label_type)

    @property
    def label(self) -> str:
        return self.spec.model + (f"[{self.type_name}]" if self.type_name else "")

    def _snapshot(self):
        return self.instance.store(self.spec).snapshot()

    def _filter(self, names: list[str]) -> pc.Expression:
        cond = pc.field(self.field).isin(names)
        if self.spec.column("branch_id") is not None:
            cond = cond & (pc.field("branch_id") == MAIN_BRANCH_ID)
        if self.typed:
            cond = cond & (pc.field("type_id") == (-1 if self.type_id is None else self.type_id))
        return cond

    def rows(self, names: list[str]) -> dict[str, dict]:
        """The stored row of each name the registry has (one read; the lowest id wins)."""
        if not names or self.type_error is not None:
            return {}
        found = self._snapshot().read(filter=self._filter(names)).sort_by("id").to_pylist()
        by_name: dict[str, dict] = {}
        for row in found:
            by_name.setdefault(row[self.field], row)
        self.ids.update((name, row["id"]) for name, row in by_name.items())
        return by_name

    def lookup(self, names) -> set[str]:
        """Resolve ``names``; return the ones the registry does not have."""
        unknown = [n for n in names if n not in self.ids and n not in self.missing]
        if unknown and self.type_error is None:
            found = self._snapshot().read(["id", self.field], self._filter(unknown))
            if found.num_rows:
                lowest = found.group_by(self.field).aggregate([("id", "min")])
                self.ids.update(zip(lowest.column(self.field).to_pylist(),
                                    lowest.column("id_min").to_pylist()))
        self.missing.update(n for n in unknown if n not in self.ids)
        return {n for n in names if n not in self.ids}

    def create(self) -> int:
        """Create the missing labels in one commit (bionty: validated against its ontology);
        the number created."""
        names = sorted(self.missing)
        if not names:
            return 0
        if self.spec.module == "bionty":
            return self._create_from_ontology(names)
        rows = [{self.field: name, **({"type_id": self.type_id} if self.typed else {})}
                for name in names]
        scope = None
        if self.spec.column("branch_id") is not None:
            scope = pc.field("branch_id") == MAIN_BRANCH_ID
        if self.typed:
            in_type = pc.field("type_id") == self.type_id
            scope = in_type if scope is None else scope & in_type
        stored = writer.insert(self.instance, self.spec, rows, unique=self.field, scope=scope)
        self.ids.update((name, row["id"]) for name, row in zip(names, stored))
        self.missing.clear()
        return len(names)

    def _create_from_ontology(self, names: list[str]) -> int:
        model = model_for(self.spec)
        records = model.from_values(names, field=self.field, mute=True)
        bad = set(getattr(records, "non_validated", []))
        mapper = getattr(records, "synonyms_mapper", {})
        if len(records):
            model._save_many(list(records))
        by_name = {r._data.get(self.field): r._data["id"] for r in records}
        created = []
        for name in names:
            standard = mapper.get(name, name)
            if standard in by_name and by_name[standard] is not None:
                self.ids[name] = by_name[standard]
                created.append(name)
        self.missing = {n for n in names if n not in self.ids} | bad
        return len(created)


def create_labels(instance: Instance, spec: tables.TableSpec, names: list[str],
                  type_id: int | None = None) -> dict[str, int]:
    """Name -> id for ``names`` in a registry with a ``name`` field, adding the missing ones in
    one commit (re-planned if another writer added some of them meanwhile)."""
    resolver = LabelResolver(instance, spec, type_id=type_id)
    resolver.missing.update(names)
    resolver.create()
    return {name: resolver.ids[name] for name in names}


def labels_from_values(model, values, field: str | None = None, *, create: bool = False,
                       type=None) -> list:
    """Records whose ``field`` is one of ``values``, read with one query; with
    ``create=True`` the missing ones are returned as new, unsaved records (``ln.save(records)``
    inserts them with one commit)."""
    spec = model._spec
    type_id = None if type is None else type._lamina_id()
    resolver = LabelResolver(current(), spec, type_id=type_id, field=field)
    if isinstance(values, str):
        values = [values]
    wanted = list(dict.fromkeys(str(v) for v in values if v is not None))
    if not wanted:
        return []
    by_value = resolver.rows(wanted)
    records = [model._from_row(by_value[v]) for v in wanted if v in by_value]
    missing = [v for v in wanted if v not in by_value]
    field = resolver.field
    if missing and create:
        extra = {"type": type} if type is not None else {}
        records.extend(model(**{field: v}, **extra) for v in missing)
    elif missing:
        shown = ", ".join(repr(v) for v in missing[:10]) + (" ..." if len(missing) > 10 else "")
        log.info(f"{len(missing)} value(s) are not in {spec.model}: {shown}; pass create=True "
                 "to create them")
    return records


def label_ids(info: FeatureInfo, names: list[str]) -> list[int]:
    """Ids of the labels a categorical feature value names; a missing name is an error."""
    spec = info.dtype.label_spec
    resolver = LabelResolver.for_feature(current(), info)
    missing = resolver.lookup(names)
    if missing:
        missing = [n for n in dict.fromkeys(names) if n in missing]
        raise ValidationError(
            f"{spec.model} label(s) {missing} of feature {info.name!r} do not exist; "
            f"create them first, e.g. ln.{spec.model}(name={missing[0]!r}).save()"
            if spec.module == "core" else
            f"{spec.model} label(s) {missing} of feature {info.name!r} do not exist")
    return [resolver.ids[n] for n in names]


__all__ = ["LabelResolver", "create_labels", "label_ids", "labels_from_values"]
