"""The vocabulary in which every registry's table is declared: columns, relations, keys.

Declarations are plain data; nothing here touches storage or SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pyarrow as pa

STR = pa.string()
INT = pa.int64()
FLOAT = pa.float64()
BOOL = pa.bool_()
DATE = pa.date32()
DATETIME = pa.timestamp("us", tz="UTC")
IDS = pa.list_(pa.int64())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool = True
    # Shown by ``to_dataframe()`` and the record repr; list columns of links are not.
    display: bool = True
    # JSON text whose keys can be filtered on (``params__learning_rate__gt=0.01``).
    json: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """``<name>_id`` on this table points at ``target.id``; ``related_name`` is the reverse.

    A related name may contain ``{plural}``, filled with the declaring table's plural, so one
    shared declaration (``created_by``) gives each table its own reverse name."""

    name: str
    target: str
    related_name: str | None = None

    @property
    def column(self) -> str:
        return f"{self.name}_id"


@dataclass(frozen=True)
class ManyToMany:
    """A ``list<int64>`` column ``name`` on the owning row holding ``target`` ids."""

    name: str
    target: str
    related_name: str | None = None


@dataclass(frozen=True)
class TableSpec:
    module: str
    name: str
    model: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    many_to_many: tuple[ManyToMany, ...] = ()
    uid_length: int | None = 16
    # Fields that name a row: lookup() keys and the first search field.
    name_field: str | None = "name"
    search_fields: tuple[str, ...] = ()
    # Tables whose rows are hidden unless a query names the branch (trash, archive).
    has_branch: bool = True
    # Rows can be annotated with feature values (one typed column per feature).
    has_features: bool = False
    # Why: Delta partitioning pays only for large tables; see tables/__init__ for the choice.
    partition_by: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    def __hash__(self) -> int:
        # One table, one (module, name). The generated hash walked every column and its
        # fields: ~2 ms of the ~10 ms CPU of Artifact(file, key=), whose queries put the
        # spec into sets a dozen times.
        return hash((self.module, self.name))

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def view(self) -> str:
        """The DuckDB view name over this table's current snapshot."""
        return self.name if self.module == "core" else f"{self.module}_{self.name}"

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def display_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.display and c.name != "id"]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=True) for c in self.columns])


def record_columns(*names_and_types: tuple[str, pa.DataType]) -> tuple[Column, ...]:
    return tuple(Column(n, t) for n, t in names_and_types)


ID = Column("id", INT, nullable=False)


def table(
    module: str,
    name: str,
    model: str,
    fields: list[tuple[str, pa.DataType]],
    *,
    foreign_keys: tuple[ForeignKey, ...] = (),
    many_to_many: tuple[ManyToMany, ...] = (),
    hidden: tuple[Column, ...] = (),
    **kwargs,
) -> TableSpec:
    """Declare a table: ``fields`` in display order (foreign key columns included),
    then one hidden ``list<int64>`` column per many-to-many relation, then ``hidden``."""
    columns = [ID]
    for fname, ftype in fields:
        columns.append(Column(fname, ftype))
    for m2m in many_to_many:
        columns.append(Column(m2m.name, IDS, display=False))
    columns.extend(hidden)
    plural = name[:-1] + "ies" if re.search(r"[^aeiou]y$", name) else name + "s"
    foreign_keys = tuple(
        replace(fk, related_name=fk.related_name.format(plural=plural)) if fk.related_name else fk
        for fk in foreign_keys)
    return TableSpec(
        module=module,
        name=name,
        model=model,
        columns=tuple(columns),
        foreign_keys=foreign_keys,
        many_to_many=many_to_many,
        **kwargs,
    )
