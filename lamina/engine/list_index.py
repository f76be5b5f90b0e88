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

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Answers kept per index, and the bytes they may take together: an answer holds up to one id
# per row (80 MB at 1e7 rows), so a count alone would let 64 of them take 5 GB.
KEPT_ANSWERS = 64
KEPT_ANSWER_BYTES = 64 * 2**20


class ListIndex:
    """The elements of one list column of one table version, and the rows holding them."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        """From ``batches`` of (row id, list) read one at a time. Why not the whole column at
        once: at 1e7 artifacts the ``records`` column is 338 MiB as Arrow, and flattening it
        in one piece (its copies, the int64 elements, the repeated row ids) took the process
        1.4 GiB above its baseline for an index of 217 MiB (bench/query_memory.py)."""
        held_parts, row_parts = [], []
        previous = None  # the last row id seen, while the rows come in id order
        in_order = True
        for batch in batches:
            ids = np.asarray(batch.column(0).to_numpy(), dtype=np.int64)
            lists = batch.column(1)
            lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
            # A NULL element is no id (ids are positive).
            held = pc.fill_null(pc.list_flatten(lists), -1).to_numpy()
            if len(ids):
                in_order = in_order and (previous is None or ids[0] > previous) and bool(
                    np.all(ids[1:] > ids[:-1]))
                previous = ids[-1]
            held_parts.append(_narrow(held))
            row_parts.append(_narrow(np.repeat(ids, lengths)))
        # Parts of both widths concatenate to int64.
        held = np.concatenate(held_parts) if held_parts else np.empty(0, np.int32)
        del held_parts
        rows = np.concatenate(row_parts) if row_parts else np.empty(0, np.int32)
        del row_parts
        if not in_order:
            by_row = np.argsort(rows, kind="stable")
            held, rows = held[by_row], rows[by_row]
        self._held, self._rows = held, rows
        # The answer of each set of ids asked for: a union over several ids is a pass over
        # every element, too much to repeat on every call at 1e6 rows.
        self._found: dict[tuple, np.ndarray] = {}

    def rows_holding(self, ids) -> np.ndarray:
        """The sorted ids of the rows whose list holds any of ``ids``."""
        key = tuple(sorted({int(i) for i in ids}))
        found = self._found.pop(key, None)
        if found is None:
            if len(key) == 1:
                found = self._rows[self._held == key[0]].astype(np.int64)
            else:
                found = self._rows[np.isin(self._held, key)].astype(np.int64)
            # A list holding an id twice (or two of the ids) names its row twice.
            if len(found) > 1 and not bool(np.all(found[1:] > found[:-1])):
                found = np.unique(found)
        if found.nbytes <= KEPT_ANSWER_BYTES:
            kept = sum(answer.nbytes for answer in self._found.values())
            while self._found and (len(self._found) >= KEPT_ANSWERS
                                   or kept + found.nbytes > KEPT_ANSWER_BYTES):
                kept -= self._found.pop(next(iter(self._found))).nbytes
            self._found[key] = found  # most recently used last
        return found

    @property
    def nbytes(self) -> int:
        return (self._held.nbytes + self._rows.nbytes
                + sum(found.nbytes for found in self._found.values()))


def _narrow(values: np.ndarray) -> np.ndarray:
    """``values`` (ids) as int32 when every one fits: half the memory of the index."""
    if len(values) == 0 or (values.min() >= -2**31 and values.max() < 2**31):
        return values.astype(np.int32)
    return values
