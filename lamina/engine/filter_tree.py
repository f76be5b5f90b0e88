"""``Q``: the boolean tree of filter conditions that ``filter()`` calls build. It holds
names and values only; the planner resolves and compiles it (planner.py).

Importing it loads nothing beyond the standard library, so ``ln.Q`` is cheap."""

from __future__ import annotations

# Between the parts of a condition's name: relation hops, a JSON key, the lookup
# (``records__name__startswith``).
SEP = "__"


class Q:
    """A boolean tree of filter conditions: ``Q(a=1) | ~Q(b__gt=2)``."""

    AND, OR = "AND", "OR"

    def __init__(self, *children, _connector: str = "AND", _negated: bool = False, **conditions):
        for child in children:
            if not isinstance(child, Q):
                raise TypeError(f"positional filter arguments must be Q objects, got {child!r}")
        self.children: tuple = (*children, *sorted(conditions.items()))
        self.connector = _connector
        self.negated = _negated
        # True for the AND of chained filter() calls: each call finds its own related rows.
        self.chained = False

    @classmethod
    def chain(cls, *calls: Q) -> Q:
        """The AND of the conditions of successive ``filter()`` calls. Within one call, the
        conditions on a many-valued relation refer to one related row; across calls they do
        not (Django's rule)."""
        flat = []
        for call in calls:
            flat.extend(call.children if call.chained else [call])
        chained = cls(*flat)
        chained.chained = True
        return chained

    def _combine(self, other: Q, connector: str) -> Q:
        if not isinstance(other, Q):
            return NotImplemented
        return Q(self, other, _connector=connector)

    def __and__(self, other: Q) -> Q:
        return self._combine(other, self.AND)

    def __or__(self, other: Q) -> Q:
        return self._combine(other, self.OR)

    def __invert__(self) -> Q:
        return Q(self, _negated=True)

    def __bool__(self) -> bool:
        return bool(self.children)

    def paths(self):
        for child in self.children:
            if isinstance(child, Q):
                yield from child.paths()
            else:
                yield child[0]

    def __repr__(self) -> str:
        inner = f" {self.connector} ".join(
            repr(c) if isinstance(c, Q) else f"{c[0]}={c[1]!r}" for c in self.children
        )
        return f"{'~' if self.negated else ''}Q({inner})"


__all__ = ["SEP", "Q"]
