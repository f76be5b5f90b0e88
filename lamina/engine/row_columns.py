"""Columns of a registry's rows on the main branch at one table version, kept in id order, and
the rows of some ids taken from them: what ``count()`` of a list test combined with other
conditions evaluates those conditions on (Session.count_among).

Why: ``filter(records=r, size__gt=...).count()`` as one statement decodes every row's list
(7.8 ms at 1e5 artifacts, 34.5 ms at 1e6, 602 ms at 1e7); the list index (list_index.py)
finds the candidates at once (4% of the rows there), and the other conditions then read only
theirs: 2-5 ms at 1e5, 7-11 ms at 1e6 (bench/README.md, "Counts of a relation filter with
other conditions"). Handing the candidates to the whole statement instead, as a bound id list
or a semi-join, cost 9-12 ms of CPU at 1e5, as much as the statement.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# What a registry version's kept columns may take: at 1e7 rows, the ids (int32) and two
# number columns; a column past it is left to the statement.
ROW_COLUMNS_BYTES = 192 * 2**20


class RowColumns:
    """The ids and some columns of one version's main-branch rows, in id order."""

    def __init__(self, version: int):
        self.version = version
        self.ids: np.ndarray | None = None
        self.columns: dict[str, pa.Array] = {}
        # Columns too large to keep within ROW_COLUMNS_BYTES at this version.
        self.refused: set[str] = set()

    @property
    def nbytes(self) -> int:
        ids = 0 if self.ids is None else self.ids.nbytes
        return ids + sum(column.nbytes for column in self.columns.values())

    def to_read(self, columns: set[str]) -> list[str] | None:
        """Which of ``columns`` (besides the ids) are not kept yet; None when one was refused."""
        if self.refused & columns:
            return None
        return sorted(columns - set(self.columns))

    def add(self, read: pa.Table) -> bool:
        """Keep the columns of ``read`` (the rows' ``id``, then other columns), in any row
        order; False, keeping nothing, when they would pass ROW_COLUMNS_BYTES (then refused)
        or its rows are not the rows kept."""
        ids = read.column("id").to_numpy()
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            order = np.argsort(ids, kind="stable")
            read, ids = read.take(pa.array(order)), ids[order]
        if len(ids) and ids[-1] < 2**31:
            ids = ids.astype(np.int32)
        names = read.column_names[1:]
        added = sum(read.column(name).nbytes for name in names)
        if self.nbytes + added + (ids.nbytes if self.ids is None else 0) > ROW_COLUMNS_BYTES:
            self.refused.update(names)
            return False
        if self.ids is None:
            self.ids = ids
        elif not np.array_equal(ids, self.ids):
            return False
        for name in names:
            self.columns[name] = read.column(name).combine_chunks()
        return True

    def rows(self, ids: np.ndarray, columns: set[str]) -> pa.Table | None:
        """The rows with ``ids`` (sorted) as a table of ``id`` and ``columns``; None when one
        of the ids is not a kept row (a list index of another version)."""
        # The kept ids are int32 where they fit, and the asked ids are ids of the same rows.
        wanted = ids.astype(self.ids.dtype)
        positions = np.searchsorted(self.ids, wanted)
        if len(ids) and (positions[-1] >= len(self.ids)
                         or not np.array_equal(self.ids[positions], wanted)):
            return None
        taken = pa.array(positions)
        return pa.table({"id": pa.array(ids, pa.int64()),
                         **{name: self.columns[name].take(taken) for name in sorted(columns)}})
