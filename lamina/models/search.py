"""``Registry.search()``: the ranked rows of a registry, as a QuerySet that keeps the ranking.

    ln.Artifact.search("iris").to_dataframe()   # the matching rows, best first, indexed by id,
                                                 # with score, match (why) and matched (what)
    ln.Record.search("experiment")               # shows the ranking: name, score, match
    ln.Record.search("experiment").scores         # the same as a DataFrame
    ln.Record.search("experiment").first()        # the best match as a record

Ranking itself happens in :mod:`lamina.search`; this module only turns its answer into records.
"""

from __future__ import annotations

import pandas as pd

from ..catalog.instance import current
from ..engine.filter_tree import Q
from ..engine.frames import plain_text
from ..engine.queryset import DEFAULT_DATAFRAME_LIMIT, REPR_LIMIT, Model, QuerySet
from ..engine.session import session_for
from ..search import search_registry

# The ranking's columns that say why a row matched, appended to ``to_dataframe()``.
EXPLAINED = ("score", "match", "matched")


def search_records(model: type[Model], string: str, *, field=None, limit: int | None = 20,
                   case_sensitive: bool = False) -> SearchResult:
    ranking = search_registry(session_for(current()), model._spec, string, field=field,
                              limit=limit, case_sensitive=case_sensitive)
    return SearchResult(model, ranking, string)


class SearchResult(QuerySet):
    """The rows a search found, best first.

    A QuerySet over exactly those rows whose default order is the ranking: ``to_dataframe()``,
    ``to_list()``, iteration, ``first()``, indexing and slicing follow it; ``filter()`` narrows
    the rows and keeps it; an explicit ``order_by()`` replaces it. ``scores`` is the ranking
    itself: the searched fields, ``score`` (100 = exact name) and ``match`` (the tier).
    """

    def __init__(self, model, ranking: pd.DataFrame, string: str = "", q: Q | None = None,
                 order_by: tuple = (), limit: int | None = None, offset: int = 0,
                 distinct: bool = False, base: Q | None = None):
        self._ranking = ranking
        self._string = string
        self._base = base if base is not None else Q(id__in=[int(i) for i in ranking.index])
        super().__init__(model, self._base if q is None else q, order_by=order_by, limit=limit,
                         offset=offset, distinct=distinct)

    def _clone(self, **changes) -> QuerySet:
        state = {"q": self.q, "order_by": self._order_by, "limit": self._limit,
                 "offset": self._offset, "distinct": self._distinct}
        state.update(changes)
        return SearchResult(self.model, self._ranking, self._string, base=self._base, **state)

    @property
    def ranked_ids(self) -> list[int]:
        return [int(i) for i in self._ranking.index]

    # ---- the ranking order ---------------------------------------------------------------
    def _ranked(self) -> bool:
        return not self._order_by

    def _present_ids(self) -> list[int]:
        """Ranked ids still in this (possibly filtered) result, in ranking order."""
        if self.q is self._base:
            present = set(self.ranked_ids)
        else:
            present = set(QuerySet(self.model, self.q).to_arrow(["id"])["id"].to_pylist())
        ids = [i for i in self.ranked_ids if i in present]
        end = None if self._limit is None else self._offset + self._limit
        return ids[self._offset:end]

    @property
    def scores(self) -> pd.DataFrame:
        """The ranking of the rows in this result: searched fields, ``score``, ``match``."""
        return plain_text(self._ranking.loc[self._present_ids()])

    def to_dataframe(self, include=None, features=False,
                     limit: int | None = DEFAULT_DATAFRAME_LIMIT) -> pd.DataFrame:
        """The rows in ranking order, indexed by id, with the registry's columns (as
        ``QuerySet.to_dataframe``) and, last, why each row matched: ``score``, ``match`` and
        ``matched`` (see :attr:`scores`)."""
        if not self._ranked():
            frame = super().to_dataframe(include=include, features=features, limit=limit)
        else:
            ids = self._present_ids()[:limit]
            plain = QuerySet(self.model, Q(id__in=ids))
            frame = plain.to_dataframe(include=include, features=features, limit=None)
            frame = frame.loc[[i for i in ids if i in frame.index]]
        why = self._ranking[[c for c in EXPLAINED if c in self._ranking.columns]]
        return frame.drop(columns=[c for c in why.columns if c in frame.columns]).join(why)

    df = to_dataframe

    def _records(self, limit=None, offset=None, order_by=None) -> list[Model]:
        if order_by is not None or not self._ranked():
            return super()._records(limit=limit, offset=offset, order_by=order_by)
        ids = self._present_ids()
        start = offset or 0
        ids = ids[start:None if limit is None else start + limit]
        by_id = {r.id: r for r in QuerySet(self.model, Q(id__in=ids))._records()}
        return [by_id[i] for i in ids if i in by_id]

    def last(self) -> Model | None:
        if not self._ranked():
            return super().last()
        ids = self._present_ids()
        return QuerySet(self.model, Q(id=ids[-1])).first() if ids else None

    def __getitem__(self, item):
        if not self._ranked():
            return super().__getitem__(item)
        if isinstance(item, slice):
            if item.step not in (None, 1) or (item.start or 0) < 0 or (item.stop or 0) < 0:
                raise ValueError("search result slices take non-negative start and stop, no step")
            start = item.start or 0
            limit = None if item.stop is None else max(item.stop - start, 0)
            if self._limit is not None:
                remaining = max(self._limit - start, 0)
                limit = remaining if limit is None else min(limit, remaining)
            return self._clone(offset=self._offset + start, limit=limit)
        if not isinstance(item, int):
            raise TypeError(f"indices must be integers or slices, not {type(item).__name__}")
        if item < 0:
            raise IndexError("negative indexing is not supported on a search result")
        found = self._records(offset=item, limit=1)
        if not found:
            raise IndexError(f"search result index {item} out of range")
        return found[0]

    def __repr__(self) -> str:
        ranking = self.scores
        head = f"{self.spec.model}.search({self._string!r}): {len(ranking)} match(es)"
        if ranking.empty:
            return head
        return head + "\n" + ranking.head(REPR_LIMIT).to_string()

    def _repr_html_(self) -> str:
        return self.scores.head(REPR_LIMIT)._repr_html_()
