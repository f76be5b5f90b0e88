"""The first rows of a query by id: a display's newest 100 rows, ``first()``, a slice.

Ids grow with every commit and row groups are written in id order, so the rows of a window
of ids are a few row groups that DuckDB finds from their min/max statistics; the newest rows
are also held in memory (Session.newest_rows, Session.held_rows). The winning ids are found
first wherever they can be (no filter, a relation's list index, a statement of ids only) and
their rows taken from memory or read by id, instead of a statement that sorts and
materialises every shown column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .filter_tree import Q
from .planner import Compiler

if TYPE_CHECKING:
    from .queryset import QuerySet

# Ids a first read of the newest rows covers at least (see first_rows).
NEWEST_WINDOW = 1024
# A relation filter with another condition checks it on the list index's candidates when
# they are at most this many; more, and the id window does.
CANDIDATES_CHECKED = 65_536
# A full read takes its rows by id when they are at most this many; more, and one statement
# reading them all costs less than a list of their ids (7,024 rows of
# ``schemas__in=``: 59 ms as a statement, 79 ms by id at 1e5 artifacts, load ~4).
ROWS_BY_ID = 4096
# The ids of the candidate rows meeting a condition (Session.count_among's answer).
_IDS_MET = "coalesce(list(t.id), []::BIGINT[])"


def first_rows(qs: QuerySet, columns, descending: bool, limit: int, offset: int
               ) -> pa.Table:
    """The first ``limit`` rows by id, reading only the newest (or oldest) ids first.

    Why: ids grow with every commit and row groups are written in id order, so the rows
    of a window of ids are a few row groups that DuckDB finds from their min/max
    statistics. A Top-N over the whole table instead reads every row group's display
    columns (~25 ms at 1e5 rows) and, in descending order over ascending ids, replaces
    its heap on nearly every row. The window grows until it holds ``limit`` rows
    or the whole table, by what the rows it found say it needs; rows outside it are all
    further along the order, so its first rows are the query's (rows committed meanwhile
    have larger ids: in the window). The first window of a descending read is the
    session's copy of the newest rows, when it keeps one (Session.newest_rows).

    Where the winning ids can be known first (no filter, a relation's list index, a
    statement asking for ids only), their rows come from the rows the session holds
    (Session.held_rows) rather than from a statement materialising every column."""
    session = qs._session()
    order = ("-id",) if descending else ("id",)
    span = session.id_range(qs.spec)
    if span is None:
        return qs._run(*qs._compile(columns=columns, order_by=order, limit=limit,
                                    offset=offset))
    low, high = span
    needed = limit + offset
    held = session.held_rows(qs.spec) if descending else None
    if held is not None and not qs.q:
        shown = held.newest_main(needed)
        if shown is not None:
            return held.take(shown[offset:], columns or held.table.column_names)
    if held is not None and held.low is None:  # the whole registry is held
        shown = _ids(qs, order, limit, offset, in_memory=True)
        return held.take(shown, columns or held.table.column_names)
    compiler = qs._compiler()
    if qs.q:  # the list tests and other conditions _candidate_ids needs
        qs._compile(compiler=compiler)
    width = max(NEWEST_WINDOW, needed)
    newest = session.newest_rows(qs.spec) if descending else None
    if newest is not None and qs.q:
        # A filter keeps a fraction of the rows: one statement over the whole copy, in
        # memory, rather than a small window first and then, often, the copy.
        width = max(width, high - newest[1])
    candidates = qs._candidate_ids(compiler)
    if candidates is not None:
        ordered = candidates[::-1] if descending else candidates
        if not compiler.other_conditions:
            # The list index says exactly which rows match: show the first of them.
            return _rows_by_id(qs, ordered[offset:needed], columns, held)
        if len(candidates) <= CANDIDATES_CHECKED:
            shown = _ids_among(qs, ordered, needed, order, newest)
            return _rows_by_id(qs, shown[offset:], columns, held)
        # The window must hold the ``needed`` newest (oldest) candidates at least.
        edge = int(candidates[-needed] if descending else candidates[needed - 1])
        width = max(width, high - edge + 1 if descending else edge - low + 1)
    while True:
        bound = ((">", high - width) if descending else ("<", low + width))
        whole = high - width < low if descending else low + width > high
        in_memory = newest is not None and high - width >= newest[1]
        if in_memory and held is not None:
            shown = _ids(qs, order, limit, offset, in_memory=True, id_bound=bound,
                         rows_from=newest[0])
            table = held.take(shown, columns or held.table.column_names)
        else:
            table = qs._run(*qs._compile(
                columns=columns, order_by=order, limit=limit, offset=offset,
                id_bound=bound if in_memory or not whole else None,
                rows_from=newest[0] if in_memory else None))
        if whole or table.num_rows >= limit:
            return table
        # Widen to what the rows found so far say the limit needs, twice over.
        found = table.num_rows + (offset if table.num_rows else 0)
        growth = 2 * (limit + offset) / found if found else 16
        wider = int(width * min(max(growth, 2), 64))
        # The whole copy of the newest rows is tried before the files.
        if newest is not None and width < high - newest[1] < wider:
            wider = high - newest[1]
        width = wider


def all_rows(qs: QuerySet, columns, descending: bool, offset: int) -> pa.Table | None:
    """Every row of a relation filter (``records=r``, with or without other conditions) by
    id, from the list index's candidates: those meeting the other conditions found among
    the candidates' kept columns (Session.count_among), their rows then taken by id. None
    when the query has no list test, the candidates are more than CANDIDATES_CHECKED, the
    rows more than ROWS_BY_ID, or the session leaves the conditions to the whole statement.

    Why: the whole statement decodes every row's list and every shown column of every row
    group for a few hundred rows (21-31 ms at 1e5 artifacts for 251 and 645 rows)."""
    compiler = qs._compiler()
    qs._compile(compiler=compiler)
    candidates = qs._candidate_ids(compiler)
    if candidates is None or len(candidates) > CANDIDATES_CHECKED or (
            not compiler.other_conditions and len(candidates) > ROWS_BY_ID):
        return None
    if compiler.other_conditions and len(candidates):
        found = qs._count_among(candidates, compiler, answer=_IDS_MET)
        if found is None:
            return None
        candidates = np.sort(np.asarray(found, dtype=np.int64))
    ordered = (candidates[::-1] if descending else candidates)[offset:]
    if len(ordered) > ROWS_BY_ID:
        return None
    if not len(ordered):
        return _no_rows(qs, columns)
    held = qs._session().held_rows(qs.spec) if descending else None
    return _rows_by_id(qs, ordered, columns, held)


def top_rows(qs: QuerySet, columns: list[str], order: tuple, limit: int, offset: int
             ) -> pa.Table:
    """The first ``limit`` rows in an order other than by id (``order_by("-key")``): their
    ids from the sort column the session keeps (unfiltered queries) or by a statement
    reading only the sort columns and the conditions', then their rows by id (from the rows
    the session holds, or read by id once per version). More than ROWS_BY_ID rows: one
    statement.

    Why: one statement sorting the whole table carries every shown column through its
    Top-N: ``order_by("-key")`` at 1e5 artifacts took 38.8 ms, 24.4 ms as a statement of ids
    then rows, 8 ms from the kept column (bench/README.md, peer bench A/B)."""
    if limit > ROWS_BY_ID:
        return qs._run(*qs._compile(columns=columns, order_by=order, limit=limit,
                                    offset=offset))
    ids = _top_ids_kept(qs, order, limit, offset)
    if ids is None:
        ids = _ids(qs, order, limit, offset)
    if not len(ids):
        return _no_rows(qs, columns)
    held = qs._session().held_rows(qs.spec)
    names = Compiler(qs.spec).column_names(columns)
    if held is not None and held.holds(ids):
        return held.take(ids, names)
    return qs._session().rows_by_id(qs.spec, ids, names)


def _ids(qs: QuerySet, order: tuple, limit: int, offset: int, in_memory: bool = False,
         **bounds) -> np.ndarray:
    """The ids of the query's rows in ``order``, cut by ``limit`` and ``offset``: one
    statement reading only the columns the conditions need; ``bounds`` as _compile's.
    ``in_memory``: the statement reads rows held in memory, and every matching id is
    fetched and sorted here. Why: over a 16,384-row table in memory, DuckDB's Top-N of
    ids cost 3-4 ms of CPU where the filter alone took 0.7-1 ms (1e5 artifacts)."""
    if not in_memory:
        sql, params, specs = qs._compile(columns=["id"], order_by=order, limit=limit,
                                         offset=offset, **bounds)
        return np.asarray(qs._run(sql, params, specs).column("id"), dtype=np.int64)
    compiler = qs._compiler()
    sql, params = compiler.select(qs.q, columns=["id"], distinct=qs._distinct, **bounds)
    ids = np.sort(np.asarray(qs._run(sql, params, compiler.specs).column("id"),
                             dtype=np.int64))
    return (ids[::-1] if order[0].startswith("-") else ids)[offset:offset + limit]


def _ids_among(qs: QuerySet, candidates: np.ndarray, count: int, order: tuple,
               newest: tuple[str, int] | None) -> np.ndarray:
    """The first ``count`` ids of ``candidates`` (in ``order``) whose rows pass the query:
    among the newest rows in memory first, then, if too few pass there, among the others
    in the files, in ranges of ids holding enough candidates for what passed so far.

    Why: a relation filter with another condition (``records=r, suffix=".h5ad"``)
    matches few rows spread over the table; a window of ids wide enough to hold them
    read every row group's display columns (20-30 ms at 1e5 artifacts). These
    statements read the condition columns of the candidates' row groups only, bounded by
    a range of ids rather than the list of candidates (the conditions test the relation
    again): the list, a semi-join, cost more than the row groups it skips (12 vs 7 ms
    over the files at 1e5 artifacts, load 8; 8 ms for 606 candidates in memory)."""
    found = []
    rest = candidates
    passing = 0.5  # the share of candidates passing, until some were checked
    if newest is not None:
        above = candidates[candidates > newest[1]]
        rest = candidates[candidates <= newest[1]]
        if len(above):
            found.append(_ids(qs, order, count, 0, in_memory=True,
                              id_bound=(">", newest[1]), rows_from=newest[0]))
            passing = max(len(found[-1]) / len(above), 1 / 64)
    checked = 0
    while (short := count - sum(len(f) for f in found)) > 0 and checked < len(rest):
        # Enough candidates for what is short, twice over at the share passing so far.
        upto = min(len(rest), checked + int(2 * short / passing) + 1)
        ends = rest[checked], rest[upto - 1]
        sql, params, specs = qs._compile(columns=["id"], order_by=order, limit=short, offset=0,
                                         id_range=(min(ends), max(ends)))
        # Over the files, the answer of a version is kept (Session.arrow_of_versions).
        answer = qs._session().arrow_of_versions(sql, params, specs)
        found.append(np.asarray(answer.column("id"), dtype=np.int64))
        passing = max(passing / 2, 1 / 64) if len(found[-1]) < short else passing
        checked = upto
    return np.concatenate(found) if found else candidates[:0]


def _rows_by_id(qs: QuerySet, ids: np.ndarray, columns, held) -> pa.Table:
    """The rows with ``ids`` (main-branch rows, in id order either way), in that order:
    those the session holds taken from memory, the others read by id."""
    names = columns or (held.table.column_names if held is not None else None)
    if held is not None and held.holds(ids):
        return held.take(ids, names)
    parts = []
    if held is not None:  # held only in descending reads: its ids come first
        parts.append(held.take(ids[ids > held.low], names))
        ids = ids[ids <= held.low]
    if names is None:
        descending = len(ids) > 1 and ids[0] > ids[-1]
        sql, params = Compiler(qs.spec).select(
            Q(), ids=ids.tolist(), order_by=("-id",) if descending else ("id",))
        parts.append(qs._run(sql, params, [qs.spec]))
    else:
        names = Compiler(qs.spec).column_names(names)
        parts.append(qs._session().rows_by_id(qs.spec, ids, names))
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _top_ids_kept(qs: QuerySet, order: tuple, limit: int, offset: int) -> np.ndarray | None:
    """The first ids of an unfiltered query in ``order`` (fields of the registry's own), from
    the columns the session keeps per version (Session.kept_columns); None for a filter, a
    field across a relation, a float field (NaN sorts otherwise in Arrow than in DuckDB), or
    while the session keeps no columns.

    Why: the statement decodes the sort column of every row group on every call (21-25 ms
    for ``-key`` at 1e5 artifacts); a top-k over the kept column costs ~5.5 ms."""
    fields = [term.lstrip("-") for term in order]
    if qs.q or qs._distinct or not all(
            qs.spec.column(f) is not None and (f == "id" or qs.spec.column(f).display)
            for f in fields):
        return None
    kept = qs._session().kept_columns(qs.spec, set(fields) - {"id"})
    if kept is None:
        return None
    table = pa.table({"id": pa.array(kept.ids, pa.int64()),
                      **{f: kept.columns[f] for f in fields if f != "id"}})
    if any(pa.types.is_floating(table.column(f).type) for f in fields):
        return None
    ids = np.asarray(table.column("id"), dtype=np.int64)
    first = _first_of_numbers(table.column(fields[0]), order[0].startswith("-"),
                              limit + offset) if len(order) == 1 else None
    if first is not None:
        return ids[first][offset:]
    keys = [(term.lstrip("-"), "descending" if term.startswith("-") else "ascending")
            for term in order]
    top = pc.select_k_unstable(table, limit + offset, keys)
    # select_k leaves its k rows in order, nulls last either way (ORDER BY ... NULLS LAST).
    return ids[np.asarray(top, dtype=np.int64)][offset:]


def _first_of_numbers(column: pa.ChunkedArray, descending: bool, count: int
                      ) -> np.ndarray | None:
    """The positions of the first ``count`` values of an integer or timestamp column without
    nulls, in order; None for another column. Why: Arrow's top-k keeps a heap that a
    descending order over values rising with the rows replaces on nearly every row
    (``-created_at`` at 1e5 artifacts: 15 ms, against ~1 ms for a partition here)."""
    kind = column.type
    if column.null_count or not (pa.types.is_integer(kind) or pa.types.is_timestamp(kind)
                                 or pa.types.is_boolean(kind)):
        return None
    values = column.to_numpy()
    if values.dtype.kind == "M":  # numpy partitions datetime64 several times slower than int64
        values = values.view(np.int64)
    count = min(count, len(values))
    if not count:
        return np.zeros(0, dtype=np.int64)
    if descending:
        part = np.argpartition(values, len(values) - count)[len(values) - count:]
        return part[np.argsort(values[part], kind="stable")[::-1]]
    part = np.argpartition(values, count - 1)[:count]
    return part[np.argsort(values[part], kind="stable")]


def _no_rows(qs: QuerySet, columns) -> pa.Table:
    """An empty answer with the columns asked (a statement no row group can answer)."""
    return qs._run(*qs._compile(columns=columns, order_by=(), limit=None, offset=0, ids=[]))
