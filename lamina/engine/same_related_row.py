"""Django's rule for a many-valued relation: the conditions of one ``filter()`` call on it
must all hold for one related row, while those of chained ``filter()`` calls need not. The
children of an AND node are gathered per relation here, before the planner compiles them."""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.tables import TableSpec
from .filter_tree import SEP, Q
from .lookups import tests_null
from .relations import Hop, on_target, relations


@dataclass(frozen=True)
class SameRelatedRow:
    """Conditions of one ``filter()`` call on a many-valued relation: as in Django, they must
    all hold for the same related row (``records__name="IFNG", records__type__name="Perturbation"``
    asks for one record that is both)."""

    hop: Hop
    conditions: Q


def _flatten_and(children: tuple) -> tuple:
    """``children`` of an AND node with their plain AND sub-trees spliced in: ``Q(a) & Q(b)``
    in one ``filter()`` call is the same call as ``filter(a, b)``."""
    out = []
    for child in children:
        if isinstance(child, Q) and child.connector == Q.AND and not (child.negated
                                                                      or child.chained):
            out.extend(_flatten_and(child.children))
        else:
            out.append(child)
    return tuple(out)


def _shared_head(spec: TableSpec, child) -> str | None:
    """The many-valued relation a child of an AND node is entirely about, if any: a leaf on it,
    or a sub-tree with no negation whose leaves all are on it. Such children of one
    ``filter()`` call refer to one related row. Tests for NULL stay apart: they also match
    rows with no related row at all."""
    if isinstance(child, Q):
        if child.negated or child.chained:
            return None
        heads = {_shared_head(spec, c) for c in child.children}
        return heads.pop() if len(heads) == 1 else None
    head, *rest = child[0].split(SEP)
    column = spec.column(head)
    if column is not None and (column.display or column.json or head == "id"):
        return None
    hop = relations(spec).get(head)
    if hop is None or hop.kind == "fk" or tests_null(rest or ["exact"], child[1]):
        return None
    return head


def _on_related(child):
    """A child about one relation (see :func:`_shared_head`), with paths on the related row."""
    if isinstance(child, Q):
        moved = Q(_connector=child.connector)
        moved.children = tuple(_on_related(c) for c in child.children)
        return moved
    return SEP.join(on_target(child[0].split(SEP)[1:])), child[1]


def one_related_row(spec: TableSpec, children: tuple) -> tuple:
    """``children`` of an AND node of one ``filter()`` call (its plain AND sub-trees spliced
    in), with the children that share a many-valued relation gathered into one
    :class:`SameRelatedRow` each."""
    children = _flatten_and(children)
    heads = [_shared_head(spec, child) for child in children]
    shared = {h for h in heads if h is not None and heads.count(h) > 1}
    if not shared:
        return children
    out, done = [], set()
    for child, head in zip(children, heads):
        if head not in shared:
            out.append(child)
        elif head not in done:
            done.add(head)
            inner = Q()
            inner.children = tuple(_on_related(c) for c, h in zip(children, heads) if h == head)
            out.append(SameRelatedRow(relations(spec)[head], inner))
    return tuple(out)


__all__ = ["SameRelatedRow", "one_related_row"]
