"""The SQL of ``to_dataframe(include=...)``: the values along relation paths
(``created_by__name``, ``records__type__name``) for rows given by id. The compiler passed in
collects the registries each statement reads and numbers its aliases."""

from __future__ import annotations

from ..errors import FieldError, unknown_field
from .filter_tree import SEP
from .planner import Compiler, id_list_condition
from .relations import Hop, field_names, relations


def one_hop_field(compiler: Compiler, path: str) -> tuple[Hop, str] | None:
    """``(hop, field)`` when ``path`` is a field one hop along a relation whose column is
    on the compiler's registry (``created_by__name``, ``records__name``): its values for a few rows
    come from their own ``hop.column`` and one lookup of the related rows by id. None for
    any other path (those go through :func:`includes_query`)."""
    parts = path.split(SEP)
    column = compiler.spec.column(parts[0])
    if len(parts) != 2 or column is not None and column.display:
        return None
    hop = relations(compiler.spec).get(parts[0])
    if hop is None or hop.kind not in ("fk", "m2m"):
        return None
    field = hop.target.column(parts[1])
    if field is None or not (field.display or field.name == "id"):
        return None
    compiler.specs.add(hop.target)
    return hop, field.name


def includes_query(compiler: Compiler, paths: list[str]) -> tuple[str, list[bool]]:
    """One statement giving ``(id, v0, v1, ...)`` for the rows whose ids are bound as the
    parameters of :func:`id_list_condition`: ``v<k>`` is the value at ``paths[k]``, or the
    list of values when a hop on it has many (the flags returned say which).

    The rows are read once, only the columns the paths start from, into a CTE that every
    path joins from. Every hop is a LEFT JOIN so rows with nothing related still appear
    (their list holds NULL, as the seed system shows it); many-to-many hops join through
    the unnested list, of the wanted rows only when the list is on them.
    """
    needed, parts, flags = {"id"}, [], []
    for k, path in enumerate(paths):
        body, many, column = _include(compiler, path)
        needed.add(column)
        flags.append(many)
        parts.append((f"i{k}.v AS v{k}", f"LEFT JOIN ({body}) i{k} ON i{k}.id = r.id"))
    # Only the columns the paths start from: DuckDB materialises a CTE used twice, and
    # SELECT * would decode every column of the row groups.
    columns = ", ".join(f"t.{c}" for c in sorted(needed))
    sql = (f'WITH _rows AS (SELECT {columns} FROM "{compiler.spec.view}" t '
           f"WHERE {id_list_condition('t')}) "
           f"SELECT r.id AS id, {', '.join(p[0] for p in parts)} FROM _rows r "
           + " ".join(p[1] for p in parts))
    return sql, flags


def _include(compiler: Compiler, path: str) -> tuple[str, bool, str]:
    """The SELECT of ``(id, v)`` for one path over ``_rows``, whether it has many values,
    and the column of the queried registry it starts from."""
    parts = path.split(SEP)
    spec, alias = compiler.spec, "t"
    joins, many, start = [], False, "id"
    for i, name in enumerate(parts):
        column = spec.column(name)
        last = i == len(parts) - 1
        if column is not None and (column.display or name == "id"):
            if not last:
                raise FieldError(f"{path!r}: {spec.model}.{name} is a field, not a relation")
            value = f"{alias}.{name}"
            if i == 0:
                start = name
            break
        hop = relations(spec).get(name)
        if hop is None:
            raise unknown_field(name, spec.model, field_names(spec))
        if i == 0 and hop.kind in ("fk", "m2m"):
            start = hop.column
        compiler.specs.add(hop.target)
        nxt, link = compiler.alias(), compiler.alias()
        view = f'"{hop.target.view}"'
        if hop.kind == "fk":
            joins.append(f"LEFT JOIN {view} {nxt} ON {nxt}.id = {alias}.{hop.column}")
        elif hop.kind == "reverse_fk":
            many = True
            joins.append(f"LEFT JOIN {view} {nxt} ON {nxt}.{hop.column} = {alias}.id")
        elif hop.kind == "m2m":
            many = True
            source = "_rows" if alias == "t" else f'"{hop.source.view}"'
            joins.append(f"LEFT JOIN (SELECT unnest({alias}_l.{hop.column}) AS dst, {alias}_l.id "
                         f"AS src FROM {source} {alias}_l) {link} ON {link}.src = {alias}.id")
            joins.append(f"LEFT JOIN {view} {nxt} ON {nxt}.id = {link}.dst")
        else:
            many = True
            joins.append(f"LEFT JOIN (SELECT unnest({link}_l.{hop.column}) AS dst, {link}_l.id "
                         f"AS src FROM {view} {link}_l) {link} ON {link}.dst = {alias}.id")
            joins.append(f"LEFT JOIN {view} {nxt} ON {nxt}.id = {link}.src")
        spec, alias = hop.target, nxt
        if last:
            value = f"{alias}.{spec.name_field or 'id'}"
    aggregate = f"list(DISTINCT {value})" if many else f"any_value({value})"
    body = f'SELECT t.id AS id, {aggregate} AS v FROM _rows t {" ".join(joins)} GROUP BY t.id'
    return body, many, start


__all__ = ["includes_query", "one_hop_field"]
