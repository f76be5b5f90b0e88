"""Declarative schema of every registry: columns, relations, keys, search fields.

Partitioning: no table is partitioned yet. Catalog tables are written one row per commit by
notebook users; a partition column would multiply the small files every such commit leaves,
and trashed rows are a small fraction that a ``branch_id`` filter prunes from Parquet row-group
statistics anyway. Revisit with the bulk-ingestion benchmark.

Row groups: 16 Ki rows (catalog/deltalake_commit.py, append_commit.py), kept although a row not read
before is read by decoding its row group (engine/row_index.py). Smaller groups make that read
cheaper but every scan dearer: on the guide's 1e6 artifacts with 1,024-row groups one row
cost 2.6 ms of CPU instead of 16 ms, while a filtered top 100 took 353 ms instead of 126, a
feature count 105 instead of 19, and the footer grew from 0.3 to 5 MB
(bench/row_groups_results.json, load 10-16).
"""

from __future__ import annotations

from . import bionty, core
from .spec import Column, ForeignKey, ManyToMany, TableSpec

MODULES: dict[str, tuple[TableSpec, ...]] = {"core": core.TABLES, "bionty": bionty.TABLES}

BY_QUALIFIED: dict[str, TableSpec] = {t.qualified: t for ts in MODULES.values() for t in ts}
BY_MODEL: dict[str, TableSpec] = {t.model: t for t in BY_QUALIFIED.values()}


def get(qualified: str) -> TableSpec:
    return BY_QUALIFIED[qualified]


def reverse_relations(spec: TableSpec) -> dict[str, tuple[TableSpec, ForeignKey | ManyToMany]]:
    """Relations declared on other tables that point at ``spec``, by their related name."""
    found: dict[str, tuple[TableSpec, ForeignKey | ManyToMany]] = {}
    for other in BY_QUALIFIED.values():
        for rel in (*other.foreign_keys, *other.many_to_many):
            if rel.target == spec.qualified and rel.related_name:
                if rel.related_name in found:
                    raise ValueError(f"{spec.model} has two relations named "
                                     f"{rel.related_name!r}: fix the table declarations")
                found[rel.related_name] = (other, rel)
    return found


__all__ = ["Column", "ForeignKey", "ManyToMany", "TableSpec", "MODULES", "BY_QUALIFIED",
           "BY_MODEL", "get", "reverse_relations"]
