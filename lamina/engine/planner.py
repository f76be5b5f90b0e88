"""Filters, ``Q`` trees and orderings → one DuckDB SQL statement with bound parameters (the
statement of ``to_dataframe(include=...)`` is built in includes.py, on a :class:`Compiler`).

Names are resolved against the declarative tables in ``catalog/tables``; the conditions of one
``filter()`` call on a many-valued relation are first gathered per related row
(same_related_row.py). A condition on the rows
related through a list column on the queried registry is resolved to the related ids first
(``Compiler._related_ids``); otherwise a relation hop becomes a semi-join subquery (relations.py),
so a row of the queried registry is never repeated by a join:

- foreign key ``a.fk_id IN (SELECT id FROM target WHERE ...)``
- reverse foreign key ``a.id IN (SELECT fk_id FROM source WHERE ...)``
- many-to-many on our list column ``a.id IN (SELECT id FROM (SELECT id, unnest(ids) ...) WHERE
  v IN (SELECT id FROM target WHERE ...))``
- many-to-many on their list column ``a.id IN (SELECT unnest(ids) FROM source WHERE ...)``
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import pyarrow as pa

from ..catalog.instance import MAIN_BRANCH_ID
from ..catalog.tables import TableSpec
from ..errors import FieldError, did_you_mean, unknown_field
from .features import (FEATURE_ID_PATH, FeatureResolver, contains_any, feature_condition,
                       has_subquery, is_feature_path, json_condition, split_lookup)
from .filter_tree import SEP, Q
from .lookups import LOOKUPS, ListTest, SubQuery, compare, tests_null
from .relations import Hop, field_names, on_target, relations
from .same_related_row import SameRelatedRow, one_related_row

# The lookup of a uid stem in equalities(): all versions of one artifact.
STEM_LOOKUP = "uid__startswith"
_FEATURE_COLUMN = re.compile(r"^f_[0-9]+$")


@dataclass
class Compiler:
    """Compiles conditions on one registry; collects the registries a statement reads."""

    spec: TableSpec
    # Resolves names that are features rather than fields; None compiles fields only.
    features: FeatureResolver | None = None
    # False when compiling only to validate (filter()): related ids are not looked up then,
    # so building a QuerySet runs no query.
    resolve_related: bool = True
    specs: set = field(default_factory=set)
    # Of the last select(): its conditions that test a list column against ids (ListTest),
    # and whether it has others too (see QuerySet._candidate_ids).
    list_tests: list = field(default_factory=list)
    other_conditions: bool = False
    # Of the last select() too, compiled in the same pass: its condition without those
    # ListTest conjuncts and without the branch, ``(sql, params)``: what rows already known to
    # pass the list tests, on the main branch, must still meet. The queried row is ``t``;
    # :func:`row_columns` names the columns it reads.
    beside_list_tests: tuple[str, list] = ("", [])
    _aliases: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self):
        self.specs.add(self.spec)

    def alias(self) -> str:
        return f"t{next(self._aliases)}"

    # ---- conditions --------------------------------------------------------------------
    def where(self, q: Q, alias: str = "t", spec: TableSpec | None = None
              ) -> tuple[str, list]:
        """The condition ``q`` on the row ``alias`` of ``spec`` (the compiled registry's)."""
        return self._where(q, alias, spec or self.spec, top=False)[0]

    def _where(self, q: Q, alias: str, spec: TableSpec, top: bool
               ) -> tuple[tuple[str, list], tuple[str, list]]:
        """where(), and the same condition without its ListTest conjuncts. ``top``: ``q`` is
        (a conjunct of) the statement's condition; its ListTest conjuncts are collected in
        ``list_tests`` (not ``top``: the two conditions are the same)."""
        parts, params, beside_parts, beside_params = [], [], [], []
        children = q.children
        if top and children and (q.connector != Q.AND or q.negated):
            self.other_conditions = True
            top = False
        if q.connector == Q.AND and not q.chained:
            children = one_related_row(spec, children)
        for child in children:
            if isinstance(child, Q):
                (sql, p), (beside, beside_p) = self._where(child, alias, spec, top)
            else:
                compiled = self._leaf(child, spec, alias)
                (sql, p), (beside, beside_p) = compiled, compiled
                if top:
                    if isinstance(compiled, ListTest):
                        self.list_tests.append(compiled)
                        beside = ""
                    elif sql:
                        self.other_conditions = True
            if sql:
                parts.append(f"({sql})")
                params.extend(p)
            if beside:
                beside_parts.append(f"({beside})")
                beside_params.extend(beside_p)
        whole = (_joined(q, parts), params)
        return whole, ((_joined(q, beside_parts), beside_params) if top else whole)

    def _leaf(self, child, spec: TableSpec, alias: str) -> tuple[str, list]:
        """A condition, or the conditions on one related row (SameRelatedRow)."""
        if not isinstance(child, SameRelatedRow):
            return self.condition(spec, child[0], child[1], alias)
        self.specs.add(child.hop.target)
        resolved = self._related_ids(child.hop, alias, lambda inner: inner.where(
            child.conditions, "l", child.hop.target))
        if resolved is not None:
            return resolved
        inner_alias = self.alias()
        sql, params = self.where(child.conditions, inner_alias, child.hop.target)
        return child.hop.semi_join(alias, inner_alias, sql), params

    def condition(self, spec: TableSpec, path: str, value, alias: str) -> tuple[str, list]:
        parts = path.split(SEP)
        head, rest = parts[0], parts[1:]
        column = spec.column(head)
        if column is not None and column.json and rest:
            keys, lookup = split_lookup(rest)
            return json_condition(f"{alias}.{column.name}", keys, lookup, value, path)
        if column is not None and column.display or head == "id":
            return self._field_condition(spec, column or spec.column("id"), rest, value, alias,
                                         path)
        hop = relations(spec).get(head)
        if hop is None:
            if spec.has_features and self.features is not None:
                return self._feature_condition(spec, head, rest, value, alias, path)
            raise unknown_field(head, spec.model, field_names(spec))
        self.specs.add(hop.target)
        value = _as_value(value, self)
        direct_form = not rest or (len(rest) == 1 and rest[0] in LOOKUPS)
        lookup = rest[0] if rest else "exact"
        if direct_form and not has_subquery(value):
            direct = hop.ids_condition(alias, lookup, value, path)
            if direct is not None:
                return direct
        rest = on_target(rest)
        if not tests_null(rest, value):
            resolved = self._related_ids(hop, alias, lambda inner: inner.condition(
                hop.target, SEP.join(rest), value, "l"), _subquery_specs(value))
            if resolved is not None:
                return resolved
        if direct_form:
            direct = hop.ids_condition(alias, lookup, value, path)
            if direct is not None:
                return direct
        inner_alias = self.alias()
        inner_sql, inner_params = self.condition(hop.target, SEP.join(rest), value, inner_alias)
        sql = hop.semi_join(alias, inner_alias, inner_sql)
        if tests_null(rest, value):
            # Django joins the relation LEFT OUTER here: a row with no related row matches too.
            sql = f"({sql} OR {hop.none_related(alias)})"
        return sql, inner_params

    def _related_ids(self, hop: Hop, alias: str, compile_inner, reads=()
                     ) -> tuple[str, list] | None:
        """A condition on the rows related through ``hop`` (``records__name="DMSO"``,
        ``schemas__genes__symbol="CD8A"``, ``schemas__in=qs``) as a test of the list column
        against the related ids, looked up first: ``compile_inner(compiler)`` gives the
        condition on the related registry (alias ``l``). Only for a list column on the queried
        registry, when the compiler can query (a feature resolver is there); the ids are kept
        per version of every registry the lookup reads.

        Why: the related registries are small (and served from memory, session.py), while a
        semi-join unnests every list of the queried registry: at 1e5 artifacts the count of
        ``schemas__genes__symbol="CD8A"`` took 27-72 ms as a semi-join, and tests constants
        the way ``records=r`` does once the ids are known."""
        if hop.kind != "m2m" or self.features is None or not self.resolve_related:
            return None
        label_ids = self.features.label_ids
        if label_ids is None:
            return None
        inner = Compiler(hop.target, features=self.features)
        sql, params = compile_inner(inner)
        ids = label_ids(hop.target, sql or "true", params, {*inner.specs, *reads})
        return contains_any(f"{alias}.{hop.column}", ids, hop.column, hop.source.view)

    def _feature_condition(self, spec, head, rest, value, alias, path) -> tuple[str, list]:
        features = self.features
        if is_feature_path(head):
            feature = features.by_id(int(head[len(FEATURE_ID_PATH):]))
            if feature is None:
                raise FieldError(f"feature id {head[len(FEATURE_ID_PATH):]} does not exist")
        else:
            found = features.by_name(head)
            if not found:
                raise unknown_field(head, f"{spec.model} (neither a field nor a feature)",
                                    [*field_names(spec), *features.names()])
            if len(found) > 1:
                raise FieldError(
                    f"feature name {head!r} is ambiguous: {len(found)} features have it "
                    f"(ids {[f.id for f in found]}); filter with the Feature object instead, "
                    f"e.g. ln.Feature.get(id=...) == value")
            feature = found[0]
        self.specs.add(spec)
        value = _as_value(value, self)
        label_ids = features.label_ids
        if feature.dtype.label_spec is not None and (label_ids is None or has_subquery(value)):
            # The statement reads the label table (else the labels are resolved to ids now,
            # on its latest version, and the statement need not point its view).
            self.specs.add(feature.dtype.label_spec)
        return feature_condition(feature, rest, value, alias, path,
                                 features.has_column(spec, feature), label_ids, spec.view)

    def _field_condition(self, spec, column, rest, value, alias, path) -> tuple[str, list]:
        return compare(f"{alias}.{column.name}", column.type, rest, _as_value(value, self), path,
                       f"{spec.model}.{column.name}")

    def equalities(self, q: Q) -> dict | None:
        """``{column: value}`` when ``q`` only asks columns of this registry to equal non-null
        text, integers or booleans (``get(name=...)``, ``get(uid)``, ``get(key=...)`` with
        ``is_latest=True``), with the default branch added as the statement would add it; what
        an index of a registry's rows can answer. A versioned registry's uid stem (the uid
        less its 4-character version suffix: ``get(uid[:16])``) comes as
        ``{STEM_LOOKUP: stem}``. None for anything else."""
        found: dict = {}
        stem_length = (self.spec.uid_length - 4 if self.spec.uid_length
                       and self.spec.column("is_latest") else None)

        def plain(node: Q) -> bool:
            if node.negated or node.connector != Q.AND:
                return False
            for child in node.children:
                if isinstance(child, Q):
                    if not plain(child):
                        return False
                    continue
                path, value = child
                if path == STEM_LOOKUP and isinstance(value, str) and len(value) == stem_length:
                    if found.setdefault(path, value) != value:
                        return False
                    continue
                name, _, lookup = path.partition(SEP)
                column = self.spec.column(name)
                if lookup not in ("", "exact") or column is None or column.json or not (
                        column.display or name == "id") or not _same_kind(value, column.type):
                    return False
                if found.setdefault(name, value) != value:
                    return False
            return True

        if not q or not plain(q):
            return None
        if self.spec.has_branch:
            found.setdefault("branch_id", MAIN_BRANCH_ID)
        return found

    def mentions_branch(self, q: Q) -> bool:
        return any(p.split(SEP)[0] in ("branch", "branch_id") for p in q.paths())

    # ---- statements --------------------------------------------------------------------
    def select(self, q: Q, *, columns: list[str] | None = None, order_by=(), limit=None,
               offset=None, distinct=False, id_bound: tuple[str, int] | None = None,
               rows_from: str | None = None, ids: list[int] | None = None,
               id_range: tuple[int, int] | None = None) -> tuple[str, list]:
        """``id_bound``, e.g. ``(">", 99000)``: only rows whose id is beyond it (see
        id_order.py); ``id_range``: only rows whose id is within it; ``rows_from``: a table
        of the session holding those rows of the registry's current version
        (Session.newest_rows), read instead of its view; ``ids``: only the rows with these
        ids."""
        self.list_tests, self.other_conditions = [], False
        (where, params), self.beside_list_tests = self._where(q, "t", self.spec, top=True)
        conditions = [where] if where else []
        if id_bound is not None:
            operator, bound = id_bound
            if operator not in ("<", ">"):
                raise ValueError(f"id_bound takes '<' or '>', got {operator!r}")
            conditions.insert(0, f"t.id {operator} {int(bound)}")
        if id_range is not None:
            conditions.insert(0, f"t.id BETWEEN {int(id_range[0])} AND {int(id_range[1])}")
        if ids is not None:
            conditions.insert(0, id_list_condition("t"))
            params = [*id_list_params(ids), *params]
        if self.spec.has_branch and not self.mentions_branch(q):
            conditions.insert(0, f"t.branch_id = {MAIN_BRANCH_ID}")
        cols = ", ".join(f"t.{c}" for c in self.column_names(columns)) if columns else "t.*"
        source = rows_from or self.spec.view
        sql = f'SELECT {"DISTINCT " if distinct else ""}{cols} FROM "{source}" t'
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if order_by:
            order_sql = [self.order_term(term) for term in order_by]
            sql += " ORDER BY " + ", ".join(order_sql)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
        return sql, params

    def column_names(self, columns) -> list[str]:
        """``columns`` if each names a column of the registry (a field, or a feature's
        ``f_<id>`` column); otherwise an error naming the ones that do not."""
        names = {c.name for c in self.spec.columns}
        bad = [c for c in columns if not isinstance(c, str)
               or not (c in names or (self.spec.has_features and _FEATURE_COLUMN.match(c)))]
        if bad:
            hint = did_you_mean(bad[0], names) if isinstance(bad[0], str) else ""
            raise FieldError(f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} "
                             f"not {'a column' if len(bad) == 1 else 'columns'} of "
                             f"{self.spec.model}{hint}")
        return list(columns)

    def order_term(self, term: str) -> str:
        if not isinstance(term, str) or not term.strip("-"):
            raise FieldError(f"order_by takes field names like 'key' or '-created_at', got {term!r}")
        descending = term.startswith("-")
        path = term.lstrip("-")
        expr = self.value_expression(self.spec, path.split(SEP), "t", path)
        return f"{expr} {'DESC' if descending else 'ASC'} NULLS LAST"

    def value_expression(self, spec: TableSpec, parts: list[str], alias: str, path: str) -> str:
        """SQL for a single-valued path (a field, or a field across foreign keys)."""
        head, rest = parts[0], parts[1:]
        column = spec.column(head)
        if column is not None and (column.display or head == "id") and not rest:
            return f"{alias}.{column.name}"
        hop = relations(spec).get(head)
        if column is not None and column.display:
            raise FieldError(f"{path!r}: {spec.model}.{head} is a field, not a relation")
        if hop is None:
            raise unknown_field(head, spec.model, field_names(spec))
        if hop.kind != "fk":
            raise FieldError(f"{path!r} has many values per {self.spec.model}; order by a field "
                             "or a foreign key's field")
        self.specs.add(hop.target)
        inner = self.alias()
        expr = self.value_expression(hop.target, rest or ["id"], inner, path)
        return (f'(SELECT {expr} FROM "{hop.target.view}" {inner} '
                f"WHERE {inner}.id = {alias}.{hop.column})")


# The compiler writes every column of the queried row as ``t.<column>`` (subqueries take
# other aliases: t1, _u, l, ...) and binds every value, so these are the columns it reads.
_ROW_COLUMN = re.compile(r"(?<![\w.\"])t\.(\w+)")


def _joined(q: Q, parts: list[str]) -> str:
    """``parts`` (each in parentheses) joined by ``q``'s connector, negated if ``q`` is."""
    sql = f" {q.connector} ".join(parts)
    if q.negated and sql:
        # NULL-safe: a row whose field is NULL does not equal the value, so NOT keeps it.
        # (Same truth table as NOT coalesce(x, false); DuckDB evaluates it ~20 % faster.)
        sql = f"({sql}) IS NOT TRUE"
    return sql


def row_columns(condition: str) -> set[str]:
    """The columns of the queried row that a condition compiled by :class:`Compiler` reads."""
    return set(_ROW_COLUMN.findall(condition))


def id_list_condition(alias: str) -> str:
    """True for the rows of ``alias`` whose id is in a bound list, with the list's lowest and
    highest id bound first (:func:`id_list_params`): the bounds let DuckDB skip every row group
    outside them by its statistics, the list alone would not."""
    return f"{alias}.id BETWEEN ? AND ? AND {alias}.id IN (SELECT unnest(?::BIGINT[]))"


def id_list_params(ids: list[int]) -> list:
    ids = [int(i) for i in ids]
    return [min(ids), max(ids), ids] if ids else [0, -1, []]


def _same_kind(value, arrow_type: pa.DataType) -> bool:
    """Whether ``value`` is compared with a column of ``arrow_type`` as Python compares it:
    text with text, integers with integers, booleans with booleans."""
    if isinstance(value, bool):
        return pa.types.is_boolean(arrow_type)
    if isinstance(value, int):
        return pa.types.is_integer(arrow_type)
    return isinstance(value, str) and pa.types.is_string(arrow_type)


def _subquery_specs(value) -> set:
    """The registries the QuerySets inside a filter value read."""
    if isinstance(value, SubQuery):
        return set(value.specs)
    if isinstance(value, (list, tuple)):
        return {s for v in value for s in _subquery_specs(v)}
    return set()


def _as_value(value, compiler: Compiler):
    """Records become their ids, QuerySets become id subqueries; other values pass through."""
    record_id = getattr(value, "_lamina_id", None)
    if record_id is not None:
        return record_id()
    as_subquery = getattr(value, "_as_id_subquery", None)
    if as_subquery is not None:
        sub = as_subquery()
        compiler.specs.update(sub.specs)
        return sub
    if isinstance(value, (list, tuple, set)):
        return [_as_value(v, compiler) for v in value]
    return value


__all__ = ["Compiler", "STEM_LOOKUP", "id_list_condition", "id_list_params", "row_columns"]
