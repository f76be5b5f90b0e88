"""An index of one list column (``artifact.records``, a categorical feature's label ids): for
an id the lists hold, the sorted ids of the rows holding it.

Why: a filter on a many-to-many relation or a categorical feature tests every row's list
(``list_contains``), and its count scanned the whole column: 28-40 ms at 1e6 artifacts for
``records=r``, ``schemas__genes__symbol=``, ``perturbation=`` (bench/README.md, "Guide"). The
lists of one table version never change, so the session keeps them once per version
(Session.rows_holding) as two flat arrays (each element, and the row holding it), and the rows
of an id are found once, by one comparison over the elements, then kept: a count becomes a
lookup. Its build cost and size: bench/display_caches.py (bench/README.md, "Guide"). It does not
sort every element up front (a full inverted index): people ask for a few ids per version.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Answers kept per index (each at most one id per row: 8 MB at 1e6 rows).
KEPT_ANSWERS = 64


class ListIndex:
    """The elements of one list column of one table version, and the rows holding them."""

    def __init__(self, row_ids: pa.Array, lists: pa.Array):
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        ids = np.asarray(row_ids.to_numpy() if isinstance(row_ids, pa.Array)
                         else pa.chunked_array(row_ids).to_numpy(), dtype=np.int64)
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
        order = None
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            order = np.argsort(ids, kind="stable")
        # A NULL element is no id (ids are positive).
        held = pc.fill_null(pc.list_flatten(lists), -1).to_numpy()
        rows = np.repeat(ids, lengths)
        if order is not None:
            by_row = np.argsort(rows, kind="stable")
            held, rows = held[by_row], rows[by_row]
        small = len(ids) == 0 or int(ids.max()) < 2**31
        self._held = held.astype(np.int32 if small and held.max(initial=0) < 2**31 else np.int64)
        self._rows = rows.astype(np.int32) if small else rows
        # The answer of each set of ids asked for: a union over several ids is a pass over
        # every element, too much to repeat on every call at 1e6 rows.
        self._found: dict[tuple, np.ndarray] = {}

    def rows_holding(self, ids) -> np.ndarray:
        """The sorted ids of the rows whose list holds any of ``ids``."""
        key = tuple(sorted({int(i) for i in ids}))
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= KEPT_ANSWERS:
                self._found.clear()
            if len(key) == 1:
                found = self._rows[self._held == key[0]].astype(np.int64)
            else:
                found = self._rows[np.isin(self._held, key)].astype(np.int64)
            # A list holding an id twice (or two of the ids) names its row twice.
            if len(found) > 1 and not bool(np.all(found[1:] > found[:-1])):
                found = np.unique(found)
            self._found[key] = found
        return found

    @property
    def nbytes(self) -> int:
        return (self._held.nbytes + self._rows.nbytes
                + sum(found.nbytes for found in self._found.values()))
