"""Rows of one registry version held in this process as an Arrow table, to show by id.

Why: a display's rows are the newest of a registry, and the session already keeps those in
DuckDB's memory (Session.newest_rows, or a small registry copied whole). Asking DuckDB for
them still costs a statement that sorts and materialises every display column: 2-4 ms of a
4-6 ms display, even for a 31-row registry. Once the winning ids are known (from no filter
at all, from a list index, or from a statement that returns ids only) taking their rows
from an Arrow table costs ~0.1 ms. A version never changes, so the table is right until the
version moves (the session keeps one per version).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..catalog.instance import MAIN_BRANCH_ID


class HeldRows:
    """Every row of a registry version whose id is above ``low`` (all rows when ``low`` is
    None), in id order."""

    def __init__(self, table: pa.Table, low: int | None):
        # One chunk per column: a take from many chunks concatenates them first (5 ms for
        # the 33 columns of a features display from 16,384 rows).
        self.table = (table.sort_by("id") if table.num_rows else table).combine_chunks()
        self.ids = np.asarray(self.table.column("id").to_numpy(), dtype=np.int64)
        self.low = low
        if "branch_id" in self.table.column_names:
            branch = self.table.column("branch_id").to_numpy(zero_copy_only=False)
            self._main_ids = self.ids[branch == MAIN_BRANCH_ID]
        else:
            self._main_ids = self.ids

    def holds(self, ids: np.ndarray) -> bool:
        """Whether every row with one of ``ids`` would be here (the ids need not exist)."""
        return self.low is None or len(ids) == 0 or int(np.min(ids)) > self.low

    def newest_main(self, count: int) -> np.ndarray | None:
        """The ids of the ``count`` newest rows on the main branch, newest first; None when
        fewer are held and older ones may exist outside."""
        if len(self._main_ids) < count and self.low is not None:
            return None
        return self._main_ids[::-1][:count]

    def has(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` have a row here."""
        positions = np.searchsorted(self.ids, ids)
        inside = positions < len(self.ids)
        found = np.zeros(len(ids), dtype=bool)
        found[inside] = self.ids[positions[inside]] == ids[inside]
        return found

    def take(self, ids: np.ndarray, columns: list[str]) -> pa.Table:
        """The rows with ``ids`` (held, see holds), in that order, with ``columns``; an id
        no row has is left out."""
        ids = np.asarray(ids, dtype=np.int64)
        positions = np.searchsorted(self.ids, ids)[self.has(ids)]
        return self.table.select(columns).take(pa.array(positions, pa.int64()))
