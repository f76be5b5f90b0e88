"""``ln.save``: a bulk-ingest batch, one record, or many records with one commit per registry."""

from __future__ import annotations

from ..catalog import writer
from ..catalog.instance import current
from ..errors import ValidationError
from .base import SQLRecord


def save(records, **kwargs):
    """Save a batch from ``from_manifest`` (returns its report), one record, or many records:
    unsaved records of one registry are inserted with one commit per registry. A registry with
    its own bulk save (``_save_many``: bionty terms bring their ontology parents) gets
    ``kwargs``; the others are inserted in bulk, or saved one by one when they have their own
    save or insert rule (artifacts upload files, features check dtypes, ...)."""
    from .ingest import IngestBatch  # Polars: only when ln.save is first used

    if isinstance(records, IngestBatch):
        return records.save()
    if isinstance(records, SQLRecord):
        return records.save()
    records = [r for r in records if r is not None]
    by_model: dict[type, list[SQLRecord]] = {}
    for record in records:
        if not isinstance(record, SQLRecord):
            raise ValidationError(f"ln.save() takes records or a batch, got {record!r}")
        by_model.setdefault(type(record), []).append(record)
    # Registries with their own bulk save first (as bionty terms always were).
    for model, group in sorted(by_model.items(), key=lambda item: not _has_bulk_save(item[0])):
        if _has_bulk_save(model):
            model._save_many(group, **kwargs)
            continue
        plain = model._plan_insert is SQLRecord._plan_insert and model.save is SQLRecord.save
        pending = [r for r in group if plain and r._data.get("id") is None]
        for record in group:
            if not (plain and record._data.get("id") is None):
                record.save()
        if pending:
            _bulk_insert(model, pending)
    return records


def _has_bulk_save(model: type) -> bool:
    return hasattr(model, "_save_many")


def _bulk_insert(model, records: list[SQLRecord]) -> None:
    instance = current()
    for record in records:
        record._fill_defaults(instance)
    rows = writer.insert(instance, model._spec, [dict(r._data) for r in records])
    for record, row in zip(records, rows):
        record._adopt(row)


__all__ = ["save"]
