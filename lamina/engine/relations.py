"""How registries relate: every relation name usable on a registry (foreign keys, lists of
ids, and both reversed) and the SQL that tests a row against its related rows."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import pyarrow as pa

from ..catalog import tables
from ..catalog.tables import ForeignKey, ManyToMany, TableSpec
from .lookups import LOOKUPS, In, SubQuery, list_holds_any, list_test


@dataclass(frozen=True)
class Hop:
    """One step along a relation: how rows of ``source`` relate to rows of ``target``."""

    kind: str  # "fk", "reverse_fk", "m2m", "reverse_m2m"
    source: TableSpec
    target: TableSpec
    column: str  # the fk column or list column, on whichever side holds it

    def semi_join(self, alias: str, inner_alias: str, inner_where: str) -> str:
        view = f'"{self.target.view}"'
        where = f" WHERE {inner_where}" if inner_where else ""
        if self.kind == "fk":
            return f"{alias}.{self.column} IN (SELECT {inner_alias}.id FROM {view} {inner_alias}{where})"
        if self.kind == "reverse_fk":
            return (f"{alias}.id IN (SELECT {inner_alias}.{self.column} FROM {view} "
                    f"{inner_alias}{where})")
        if self.kind == "m2m":
            return self.has_any(alias, f"SELECT {inner_alias}.id FROM {view} {inner_alias}{where}")
        return (f"{alias}.id IN (SELECT unnest({inner_alias}.{self.column}) FROM {view} "
                f"{inner_alias}{where})")

    def has_any(self, alias: str, ids_sql: str) -> str:
        return list_holds_any(alias, self.column, self.source.view, ids_sql)

    def none_related(self, alias: str) -> str:
        """True where a row of ``source`` has no related row: what Django's LEFT JOIN finds as
        NULL, so ``schema__isnull=True`` and ``records__name__isnull=True`` include it."""
        view = f'"{self.target.view}"'
        if self.kind == "fk":
            return f"{alias}.{self.column} IS NULL"
        if self.kind == "m2m":
            return f"coalesce(len({alias}.{self.column}), 0) = 0"
        if self.kind == "reverse_fk":
            return (f"{alias}.id NOT IN (SELECT _n.{self.column} FROM {view} _n "
                    f"WHERE _n.{self.column} IS NOT NULL)")
        return (f"{alias}.id NOT IN (SELECT _n.v FROM (SELECT unnest(_l.{self.column}) AS v "
                f"FROM {view} _l) _n WHERE _n.v IS NOT NULL)")

    def ids_condition(self, alias: str, lookup: str, value, where: str) -> tuple[str, list] | None:
        """Compare related ids directly (``created_by=user``, ``records=rec``) without a subquery."""
        if lookup == "isnull" and isinstance(value, bool) and self.kind in ("fk", "m2m"):
            none = self.none_related(alias)
            return (none if value else f"NOT ({none})"), []
        if self.kind == "fk" and lookup in ("exact", "in"):
            return LOOKUPS[lookup](f"{alias}.{self.column}", value, pa.int64(), where).as_sql()
        if self.kind == "m2m" and lookup == "exact" and value is not None:
            return list_test(f"coalesce(list_contains({alias}.{self.column}, ?), false)",
                             [value], self.column, [value])
        if self.kind == "m2m" and lookup == "in":
            lookup_in = In("x", value, pa.int64(), where)
            if isinstance(lookup_in.value, SubQuery):
                sub = lookup_in.value
                return self.has_any(alias, f"SELECT * FROM ({sub.sql})"), sub.params
            values = [v for v in lookup_in.value if v is not None]
            return list_test(self.has_any(alias, "SELECT unnest(?::BIGINT[])"), [values],
                             self.column, values)
        return None


@functools.cache
def relations(spec: TableSpec) -> Mapping[str, Hop]:
    """Every relation name usable in a filter on ``spec``, forward and reverse. Worked out once
    per registry (the declarations never change): every condition of a filter asks."""
    found: dict[str, Hop] = {}
    for fk in spec.foreign_keys:
        found[fk.name] = Hop("fk", spec, tables.get(fk.target), fk.column)
    for m2m in spec.many_to_many:
        found[m2m.name] = Hop("m2m", spec, tables.get(m2m.target), m2m.name)
    for name, (other, rel) in tables.reverse_relations(spec).items():
        if name in found:
            continue
        if isinstance(rel, ForeignKey):
            found[name] = Hop("reverse_fk", spec, other, rel.column)
        elif isinstance(rel, ManyToMany):
            found[name] = Hop("reverse_m2m", spec, other, rel.name)
    return MappingProxyType(found)


def on_target(rest: list[str]) -> list[str]:
    """The path on the related registry: ``records=r`` and ``records__in=[...]`` ask for
    its ``id``."""
    if not rest or (len(rest) == 1 and rest[0] in LOOKUPS):
        return ["id", *rest]
    return rest


def field_names(spec: TableSpec) -> list[str]:
    return [c.name for c in spec.columns if c.display or c.name == "id"] + list(relations(spec))
