"""Saving bionty records in bulk: one commit per registry; a term from an ontology is saved
with its ancestors and linked to its parents, and the Source and Organism rows its foreign keys
point at are registered or imported when first needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow.compute as pc

from ..catalog import tables, writer
from ..catalog.ids import uid_from_text
from ..catalog.instance import Instance
from ..catalog.snapshot import Snapshot
from ..models.base import model_for
from .public import PublicOntology
from .sources import PublicSource, all_sources

if TYPE_CHECKING:
    from .models import BioRecord


def save_group(instance: Instance, model: type[BioRecord], records: list[BioRecord],
               parents: bool | None) -> None:
    """Save the unsaved ``records`` of ``model`` in one commit (see :func:`models.save`)."""
    spec = model._spec
    if parents is None:
        parents = model._save_parents
    pending = [r for r in records if r._data.get("id") is None]
    if not pending:
        return
    _resolve_foreign_keys(instance, pending)
    links: dict[str, list[str]] = {}
    extra: list[BioRecord] = []
    has_parents = spec.column("parents") is not None
    if has_parents:
        by_source: dict[PublicSource, list[BioRecord]] = {}
        for record in pending:
            source = record.__dict__.get("_public_source")
            if source is not None:
                by_source.setdefault(source, []).append(record)
        for source, group in by_source.items():
            public = PublicOntology(model, source)
            key_of = {r._data["uid"]: r._data.get("ontology_id") for r in group}
            if parents:
                ancestors = _ancestor_rows(public, [k for k in key_of.values() if k])
                known = set(key_of.values())
                for row in ancestors:
                    if row["ontology_id"] not in known:
                        known.add(row["ontology_id"])
                        extra.append(model._from_public_row(row, public))
                _resolve_foreign_keys(instance, extra)
            for record in [*group, *extra]:
                links[record._data["uid"]] = [
                    uid_from_text(p, spec.uid_length)
                    for p in record.__dict__.get("_public_parents", ())]
    batch = [*pending, *extra]
    for record in batch:
        record._fill_defaults(instance)
    wanted = list(dict.fromkeys([r._data["uid"] for r in batch] +
                                [p for ps in links.values() for p in ps]))

    def link_parents(new_rows: list[dict], by_uid: dict, snapshot: Snapshot) -> None:
        if not has_parents:
            return
        unknown = [p for p in wanted if p not in by_uid]
        if unknown:
            for row in snapshot.read(["id", "uid"], pc.field("uid").isin(unknown)).to_pylist():
                by_uid.setdefault(row["uid"], row)
        for row in new_rows:
            ids = [by_uid[p]["id"] for p in links.get(row["uid"], ()) if p in by_uid]
            row["parents"] = ids or row.get("parents")

    rows = writer.insert(instance, spec, [dict(r._data) for r in batch], unique="uid",
                         resolve=link_parents)
    for record, row in zip(pending, rows):  # batch starts with the pending records
        object.__setattr__(record, "_data", dict(row))
        object.__setattr__(record, "_saved", dict(row))


def _ancestor_rows(public: PublicOntology, term_ids: list[str]) -> list[dict]:
    """Rows of every ancestor of ``term_ids`` in the source, nearest terms first."""
    if not term_ids:
        return []
    view = public._view
    probe = public._arrow(f"SELECT ontology_id, ancestors FROM {view} t WHERE t.ontology_id IN "
                          f"(SELECT unnest(?::VARCHAR[]))", [term_ids]).to_pylist()
    ids: list[str] = []
    for row in probe:
        if row["ancestors"] is None:
            ids.extend(public.ancestor_ids(row["ontology_id"]))
        else:
            ids.extend(row["ancestors"])
    ids = list(dict.fromkeys(i for i in ids if i not in term_ids))
    if not ids:
        return []
    rows = public._arrow(f"SELECT * FROM {view} t WHERE t.ontology_id IN "
                         f"(SELECT unnest(?::VARCHAR[]))", [ids]).to_pylist()
    order = {i: n for n, i in enumerate(ids)}
    return sorted(rows, key=lambda r: order[r["ontology_id"]])


# ---- sources and organisms as foreign keys -----------------------------------------------------
_source_ids: dict[tuple, dict[str, int]] = {}


def _register_sources(instance: Instance) -> dict[str, int]:
    """Every shipped public source as a Source row (one commit, once per instance); their ids
    by uid."""
    key = (instance.root, instance.uid)
    known = _source_ids.get(key)
    if known is not None:
        return known
    spec = tables.get("bionty.source")
    sources = all_sources()
    rows = [{
        "uid": uid_from_text(source.uid_text, spec.uid_length), "entity": source.entity,
        "organism": source.organism, "name": source.name, "version": source.version,
        "in_db": False, "currently_used": source.currently_used,
        "description": source.description, "url": _source_url(source),
        "source_website": source.source_website} for source in sources]
    stored = writer.insert(instance, spec, rows, unique="uid")
    ids = {row["uid"]: row["id"] for row in stored}
    _source_ids[key] = ids
    return ids


def _source_url(source: PublicSource) -> str | None:
    if source.kind == "genes":
        from .sources import _gene_meta

        return _gene_meta()["organisms"].get(source.organism, {}).get("gtf_url")
    return f"cellxgene-ontology-guide:data/{source.file}"


def _source_id(instance: Instance, source: PublicSource) -> int:
    ids = _register_sources(instance)
    uid = uid_from_text(source.uid_text, tables.get("bionty.source").uid_length)
    if uid not in ids:  # registered by another process under a changed package: register again
        _source_ids.pop((instance.root, instance.uid), None)
        ids = _register_sources(instance)
    return ids[uid]


def _resolve_foreign_keys(instance: Instance, records: list[BioRecord]) -> None:
    organisms: dict[str, int] = {}
    for record in records:
        source = record.__dict__.get("_public_source")
        if source is not None and record._data.get("source_id") is None:
            record._data["source_id"] = _source_id(instance, source)
        taxon = record.__dict__.get("_pending_organism")
        if taxon is not None and record._data.get("organism_id") is None:
            if taxon not in organisms:
                organisms[taxon] = _organism_record(taxon)._lamina_id()
            record._data["organism_id"] = organisms[taxon]


def _organism_record(taxon: str) -> BioRecord:
    """The saved Organism of an NCBITaxon id, imported from NCBITaxon if not saved yet."""
    organism_model = model_for(tables.get("bionty.organism"))
    found = organism_model.filter(ontology_id=taxon).first()
    if found is not None:
        return found
    return organism_model.from_source(ontology_id=taxon, mute=True).save()


__all__ = ["save_group"]
