"""An inverted index of one list column (``artifact.records``, a categorical feature's label
ids): for each id in the lists, the sorted ids of the rows holding it.

Why: a filter on a many-to-many relation or a categorical feature tests every row's list
(``list_contains``), and its count scanned the whole column: 28-40 ms at 1e6 artifacts for
``records=r``, ``schemas__genes__symbol=``, ``perturbation=`` (bench/README.md, "Guide"). The
lists of one table version never change, so the session builds this once per version
(Session.rows_holding) and a count becomes a lookup.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class ListIndex:
    """Rows by the ids their list column holds, of one table version."""

    def __init__(self, row_ids: pa.Array, lists: pa.Array):
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        if isinstance(row_ids, pa.ChunkedArray):
            row_ids = row_ids.combine_chunks()
        flat = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists)
        valid = flat.is_valid()
        held = flat.filter(valid).to_numpy().astype(np.int64)
        rows = row_ids.to_numpy()[parents.filter(valid).to_numpy()].astype(np.int64)
        order = np.lexsort((rows, held))
        held, rows = held[order], rows[order]
        # A list holding an id twice counts its row once.
        first = np.ones(len(held), dtype=bool)
        first[1:] = (held[1:] != held[:-1]) | (rows[1:] != rows[:-1])
        held, rows = held[first], rows[first]
        self._held, starts = np.unique(held, return_index=True)
        self._starts = np.append(starts, len(held))
        self._rows = rows

    def rows_holding(self, ids) -> np.ndarray:
        """The sorted ids of the rows whose list holds any of ``ids``."""
        parts = []
        for held in ids:
            k = int(np.searchsorted(self._held, held))
            if k < len(self._held) and self._held[k] == held:
                parts.append(self._rows[self._starts[k]:self._starts[k + 1]])
        if not parts:
            return np.empty(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))

    @property
    def nbytes(self) -> int:
        return self._held.nbytes + self._starts.nbytes + self._rows.nbytes
