"""The biological registries and what they share: records from public sources, deterministic
uids, bulk saves with ontology parents (written by saving.py), and validate / inspect /
standardize.

A record's uid is derived from its public id (``uid_from_text(ontology_id)``, Ensembl gene id,
UniProt id), so the same term imported twice, in any process or catalog, is the same record: a
save whose uid is already in the table returns that row instead of adding another.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from .. import log
from ..catalog.ids import uid_from_text
from ..catalog.instance import Instance, current
from ..engine.filter_tree import Q
from ..engine.queryset import QuerySet
from ..errors import FieldError, InstanceError, ValidationError, unknown_field
from ..models.base import SQLRecord
from .public import InspectResult, PublicOntology, _clean_values, _report
from .saving import save_group
from .sources import COMMON_NAMES, PublicSource, default_source, find_source

# Organism names the per-organism sources use -> NCBITaxon ids.
ORGANISM_IDS = {name: taxon for taxon, name in COMMON_NAMES.items()}


class RecordList(list):
    """Records returned by ``from_values``; ``.save()`` stores them (and their ontology
    parents) with one commit per registry. ``non_validated`` lists what matched nothing."""

    def __init__(self, records=(), non_validated=(), synonyms_mapper=None):
        super().__init__(records)
        self.non_validated: list[str] = list(non_validated)
        self.synonyms_mapper: dict[str, str] = dict(synonyms_mapper or {})

    def save(self, parents: bool | None = None) -> RecordList:
        save(list(self), parents=parents)
        return self

    def to_dataframe(self) -> pd.DataFrame:
        if not self:
            return pd.DataFrame()
        spec = self[0]._spec
        return pd.DataFrame([{c: r._data.get(c) for c in ("id", *spec.display_columns)}
                             for r in self])

    df = to_dataframe


class BioRecord(SQLRecord):
    """Base of the bionty registries."""

    # The public id a uid is derived from.
    _key_field: ClassVar[str] = "ontology_id"
    # Whether saving a term from its ontology also saves its ancestors (and links parents).
    _save_parents: ClassVar[bool] = True

    # ---- identity --------------------------------------------------------------------------
    def _uid_text(self) -> str:
        data, spec = self._data, self._spec
        key = data.get(self._key_field)
        if key:
            return str(key)
        name = data.get(spec.name_field)
        if not name:
            raise ValidationError(f"a {spec.model} needs a {spec.name_field} or a "
                                  f"{self._key_field}")
        scope = data.get("organism_id") or ""
        return f"{spec.model}:{name}:{scope}"

    def _fill_defaults(self, instance: Instance) -> None:
        if self._data.get("uid") is None:
            self._data["uid"] = uid_from_text(self._uid_text(), self._spec.uid_length)
        super()._fill_defaults(instance)

    # ---- saving ----------------------------------------------------------------------------
    def save(self, parents: bool | None = None) -> BioRecord:
        """Save; a term made from its public source is saved with its ancestors (``parents=
        False`` to skip them) and linked to its parents. Saving a term that is already in the
        registry (same uid) returns that row."""
        if self._data.get("id") is not None:
            return super().save()
        save([self], parents=parents)
        return self

    @classmethod
    def _save_many(cls, records: list[BioRecord], parents: bool | None = None) -> None:
        """``ln.save`` of many terms of this registry: one commit, ontology parents too."""
        save(records, parents=parents)

    # ---- public sources --------------------------------------------------------------------
    @classmethod
    def _source_for(cls, organism=None, source=None) -> PublicSource:
        model = cls._spec.model
        if source is not None:
            if isinstance(source, PublicSource):
                return source
            if isinstance(source, SQLRecord) and source._spec.qualified == "bionty.source":
                return find_source(model, organism=source.organism, name=source.name,
                                   version=source.version)
            if isinstance(source, str):
                return find_source(model, organism=_organism_name(organism), name=source)
            raise ValidationError(f"source must be a bt.Source record, got {source!r}")
        return default_source(model, _organism_name(organism))

    @classmethod
    def public(cls, organism=None, source=None) -> PublicOntology:
        """The whole public source of this registry (latest version; ``organism`` for the
        per-organism ones, ``human`` by default) as a queryable, searchable table."""
        return PublicOntology(cls, cls._source_for(organism, source))

    @classmethod
    def _from_public_row(cls, row: dict, public: PublicOntology) -> BioRecord:
        spec = cls._spec
        fields = {f: row.get(f) for f in public.layout.fields if spec.column(f) is not None}
        record = cls(**fields)
        record._data["uid"] = uid_from_text(str(row[public.layout.key]), spec.uid_length)
        record._public_source = public.source
        record._public_parents = list(row.get("parents") or [])
        if spec.column("organism_id") is not None and public.source.organism != "all":
            record._pending_organism = ORGANISM_IDS.get(public.source.organism,
                                                        public.source.organism)
        return record

    @classmethod
    def _field(cls, field: str | None) -> str:
        spec = cls._spec
        field = field or spec.name_field
        if not isinstance(field, str):
            raise FieldError(f"field must be a field name such as {spec.name_field!r}, "
                             f"got {field!r}")
        if spec.column(field) is None or not spec.column(field).display:
            raise unknown_field(field, spec.model, spec.display_columns)
        return field

    @classmethod
    def from_source(cls, *, organism=None, source=None, mute: bool = False, **field_value):
        """One term from the public source, e.g. ``bt.CellType.from_source(name="T cell")``
        or ``(ontology_id="CL:0000084")``; synonyms find their term. Returns the registry's
        record if the term is saved already, else a new unsaved record."""
        if len(field_value) != 1:
            raise ValidationError(
                f"from_source() takes exactly one field=value, e.g. "
                f"{cls._spec.model}.from_source({cls._spec.name_field}=...), got "
                f"{sorted(field_value) or 'none'}")
        (field, value), = field_value.items()
        field = cls._field(field)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"from_source({field}=...) takes a non-empty string, "
                                  f"got {value!r}")
        public = cls.public(organism, source)
        row = public.get(value, field)
        record = cls._from_public_row(row, public)
        existing = _existing_by_uid(cls, [record._data["uid"]])
        found = existing.get(record._data["uid"])
        if found is not None:
            if not mute:
                log.info(f"returning existing {cls._spec.model} record with same "
                         f"{public.layout.key}: {row[public.layout.key]!r}")
            return found
        if not mute and row.get(field) != value:
            log.info(f"{value!r} is a synonym of {row.get(field)!r} in {public.source}")
        return record

    @classmethod
    def from_values(cls, values, field: str | None = None, *, organism=None, source=None,
                    mute: bool = False) -> RecordList:
        """Records for many values at once: the saved ones from the registry, the others
        built from the public source (synonyms mapped to their term); one query each.
        ``.non_validated`` on the result lists the values that matched nothing."""
        field = cls._field(field)
        values = _clean_values(values)
        if not values:
            return RecordList()
        try:
            public = cls.public(organism, source)
        except ValidationError:
            if source is not None:
                raise
            public = None
        matches = {}
        if public is not None and field in public._all_columns():
            matches = public._match(values, field)
        uid_length = cls._spec.uid_length
        key = public.layout.key if public is not None else None
        uid_of = {v: uid_from_text(str(m.row[key]), uid_length) for v, m in matches.items()}
        unmatched = [v for v in values if v not in matches]
        existing = _existing(cls, list(uid_of.values()), field, unmatched, organism)
        by_uid = {r._data["uid"]: r for r in existing}
        by_field: dict[str, SQLRecord] = {}
        for r in existing:
            by_field.setdefault(r._data.get(field), r)
        records: dict[str, BioRecord] = {}
        non_validated, mapper = [], {}
        for value in values:
            if value in matches:
                uid = uid_of[value]
                match = matches[value]
                record = records.get(uid) or by_uid.get(uid) or cls._from_public_row(
                    match.row, public)
                standard = match.row.get(field)
                if standard != value:
                    mapper[value] = standard
                if match.ambiguous and not mute:
                    log.warning(f"{value!r} matches several terms of {public.source}: "
                                f"{[match.row[key], *match.ambiguous]}; using "
                                f"{match.row[key]!r}")
                records.setdefault(uid, record)
            elif value in by_field:
                record = by_field[value]
                records.setdefault(record._data["uid"], record)
            else:
                non_validated.append(value)
        if not mute:
            _report_from_values(cls, public, field, len(values), mapper, non_validated)
        return RecordList(records.values(), non_validated, mapper)

    # ---- validating against the registry ---------------------------------------------------
    @classmethod
    def _registry_values(cls, field: str, organism=None) -> pd.DataFrame:
        columns = [c for c in dict.fromkeys([field, cls._spec.name_field, "synonyms"])
                   if c and cls._spec.column(c) is not None]
        qs = cls.filter(**_organism_filter(cls, organism))
        return qs.to_arrow(columns=columns).to_pandas()

    @classmethod
    def validate(cls, values, field: str | None = None, *, organism=None,
                 mute: bool = False) -> np.ndarray:
        """A boolean per value: is it the ``field`` of a saved record (exactly)."""
        field = cls._field(field)
        single = isinstance(values, str)
        items = [values] if single else list(values)
        distinct = _clean_values(items)
        found: set = set()
        if distinct:
            qs = cls.filter(**{f"{field}__in": distinct}, **_organism_filter(cls, organism))
            found = set(qs.to_arrow(columns=[field]).column(field).to_pylist())
        result = np.array([(v if isinstance(v, str) else str(v)) in found
                           if v is not None else False for v in items], dtype=bool)
        if not mute and distinct:
            n_bad = len([v for v in distinct if v not in found])
            if n_bad:
                log.warning(f"{n_bad} of {len(distinct)} value(s) are not a {field} of a saved "
                            f"{cls._spec.model}")
        return result

    @classmethod
    def _synonym_map(cls, field: str, return_field: str, organism,
                     case_sensitive: bool) -> dict[str, str]:
        """Saved records: their field values, synonyms and (unless case-sensitive) lower-case
        forms -> the record's ``return_field``."""
        frame = cls._registry_values(field, organism) if return_field == field else \
            cls.filter(**_organism_filter(cls, organism)).to_arrow(
                columns=[c for c in dict.fromkeys([field, return_field, "synonyms"])
                         if cls._spec.column(c) is not None]).to_pandas()
        exact: dict[str, str] = {}
        folded: dict[str, str] = {}
        for row in frame.to_dict("records"):
            target = row.get(return_field)
            if row.get(field) is None or target is None:
                continue
            exact.setdefault(row[field], target)
            folded.setdefault(row[field].lower(), target)
            for synonym in (row.get("synonyms") or "").split("|"):
                if synonym:
                    exact.setdefault(synonym, target)
                    folded.setdefault(synonym.lower(), target)
        return exact if case_sensitive else {**folded, **exact}

    @classmethod
    def inspect(cls, values, field: str | None = None, *, organism=None,
                mute: bool = False) -> InspectResult:
        """Which values are saved records' ``field``; synonyms of saved records are listed in
        ``synonyms_mapper``; values that the public source knows are pointed out."""
        field = cls._field(field)
        values = _clean_values(values)
        validated, non_validated, mapper = [], [], {}
        if values:
            found = set(cls.filter(**{f"{field}__in": values}, **_organism_filter(cls, organism))
                        .to_arrow(columns=[field]).column(field).to_pylist())
            missing = [v for v in values if v not in found]
            synonyms = cls._synonym_map(field, field, organism, False) if missing else {}
            for value in values:
                if value in found:
                    validated.append(value)
                    continue
                non_validated.append(value)
                target = synonyms.get(value, synonyms.get(value.lower()))
                if target is not None:
                    mapper[value] = target
        if not mute:
            _report(f"bionty.{cls._spec.model}", len(values), validated, non_validated, mapper)
            rest = [v for v in non_validated if v not in mapper]
            if rest:
                _hint_public(cls, rest, field, organism)
        return InspectResult(validated, non_validated, mapper)

    @classmethod
    def standardize(cls, values, field: str | None = None, *, return_field: str | None = None,
                    return_mapper: bool = False, case_sensitive: bool = False, organism=None,
                    source=None, public_aware: bool = True):
        """Synonyms (and case variants) → standard ``return_field`` values (default ``field``):
        saved records first, then the public source; unknown values come back unchanged."""
        field = cls._field(field)
        return_field = cls._field(return_field) if return_field else field
        single = isinstance(values, str)
        items = [values] if single else list(values)
        distinct = _clean_values(items)
        mapper: dict[str, str] = {}
        if distinct:
            known = cls._synonym_map(field, return_field, organism, case_sensitive)
            for value in distinct:
                target = known.get(value)
                if target is None and not case_sensitive:
                    target = known.get(value.lower())
                if target is not None and target != value:
                    mapper[value] = target
                elif target is not None:
                    mapper[value] = value
            rest = [v for v in distinct if v not in mapper]
            if rest and public_aware:
                try:
                    public = cls.public(organism, source)
                except ValidationError:
                    public = None
                if public is not None and field in public._all_columns() \
                        and return_field in public._all_columns():
                    mapper.update(public.standardize(rest, field, return_field=return_field,
                                                     return_mapper=True,
                                                     case_sensitive=case_sensitive))
            mapper = {k: v for k, v in mapper.items() if k != v}
        if return_mapper:
            return mapper
        out = [mapper.get(v if isinstance(v, str) else str(v), v) if v is not None else v
               for v in items]
        return out[0] if single else out

    # ---- the hierarchy of saved terms -----------------------------------------------------
    def _walk(self, up: bool) -> QuerySet:
        if self._spec.column("parents") is None:
            raise FieldError(f"{self._spec.model} has no parents")
        start = self._lamina_id()
        rows = type(self).filter().to_arrow(columns=["id", "parents"]).to_pylist()
        edges: dict[int, list[int]] = {}
        for row in rows:
            for parent in row["parents"] or ():
                if up:
                    edges.setdefault(row["id"], []).append(parent)
                else:
                    edges.setdefault(parent, []).append(row["id"])
        seen, todo = set(), list(edges.get(start, ()))
        while todo:
            node = todo.pop()
            if node in seen or node == start:
                continue
            seen.add(node)
            todo.extend(edges.get(node, ()))
        return type(self).filter(id__in=sorted(seen))

    def query_parents(self) -> QuerySet:
        """Every saved ancestor of this record (parents, their parents, ...)."""
        return self._walk(up=True)

    def query_children(self) -> QuerySet:
        """Every saved descendant of this record."""
        return self._walk(up=False)


# ---- bulk save --------------------------------------------------------------------------------
def save(records, parents: bool | None = None) -> list:
    """Save bionty records with one commit per registry: terms from an ontology bring their
    ancestors (unless ``parents=False``) and get their ``parents`` links; terms already saved
    (same uid) are returned as they are."""
    records = [r for r in records if r is not None]
    if not records:
        return records
    instance = current()
    by_model: dict[type, list[BioRecord]] = {}
    for record in records:
        if not isinstance(record, BioRecord):
            raise ValidationError(f"bt.save() takes bionty records, got {record!r}")
        by_model.setdefault(type(record), []).append(record)
    for model, group in by_model.items():
        save_group(instance, model, group, parents)
    return records


# ---- helpers -----------------------------------------------------------------------------------
def _organism_name(organism) -> str | None:
    """``"human"``, an Organism record or an NCBITaxon id -> the organism name sources use."""
    if organism is None:
        return None
    if isinstance(organism, SQLRecord):
        taxon = organism._data.get("ontology_id")
        if taxon in COMMON_NAMES:
            return COMMON_NAMES[taxon]
        return organism._data.get("name")
    if isinstance(organism, str):
        return COMMON_NAMES.get(organism, organism)
    raise ValidationError(f"organism must be a name such as 'human' or a bt.Organism record, "
                          f"got {organism!r}")


def _organism_filter(model: type[BioRecord], organism) -> dict:
    if organism is None or model._spec.column("organism_id") is None:
        return {}
    if isinstance(organism, SQLRecord):
        return {"organism_id": organism._lamina_id()}
    name = _organism_name(organism)
    taxon = ORGANISM_IDS.get(name)
    return {"organism__ontology_id": taxon} if taxon else {"organism__name": name}


def _active_instance() -> Instance | None:
    try:
        return current()
    except InstanceError:
        return None


def _existing_by_uid(model: type[BioRecord], uids: list[str]) -> dict[str, SQLRecord]:
    if not uids or _active_instance() is None:
        return {}
    return {r._data["uid"]: r for r in model.filter(uid__in=uids)}


def _existing(model: type[BioRecord], uids: list[str], field: str, values: list[str],
              organism) -> list[SQLRecord]:
    """Saved records with one of ``uids``, or whose ``field`` is one of ``values``; one query."""
    if (not uids and not values) or _active_instance() is None:
        return []
    query = Q()
    if uids:
        query = Q(uid__in=uids)
    if values:
        by_field = Q(**{f"{field}__in": values}, **_organism_filter(model, organism))
        query = query | by_field if uids else by_field
    return list(model.filter(query))


def _report_from_values(model, public, field, n, mapper, non_validated) -> None:
    where = public.source if public is not None else f"bionty.{model._spec.model}"
    if mapper:
        shown = ", ".join(f"{k!r} → {v!r}" for k, v in list(mapper.items())[:10])
        log.info(f"mapped {len(mapper)} synonym(s) or case variant(s) to the {field} of their "
                 f"term: {shown}")
    if non_validated:
        hints = []
        if public is not None and field in public._all_columns():
            for value in non_validated[:5]:
                close = public.close_matches(value, field=field)
                if close:
                    hints.append(f"{value!r} (close: {close})")
        detail = f"; {', '.join(hints)}" if hints else ""
        log.warning(f"{len(non_validated)} of {n} value(s) match no {field} in {where}: "
                    f"{non_validated[:20]}{detail}")


def _hint_public(model, values, field, organism) -> None:
    try:
        public = model.public(organism)
    except ValidationError:
        return
    if field not in public._all_columns():
        return
    matches = public._match(values, field)
    if matches:
        log.info(f"{len(matches)} of them are in {public.source}: create them with "
                 f"bt.{model._spec.model}.from_values({list(matches)[:10]!r}, "
                 f"field={field!r}).save()")


__all__ = ["BioRecord", "ORGANISM_IDS", "RecordList", "save"]
