"""The commits deltalake makes for the store (catalog/store.py): replaces, deletes, new
columns, bulk appends, and logs the store's own append does not support. Each lands at exactly
the next version or fails (the store re-plans); rows are selected by ranges of ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (ColumnProperties, CommitProperties, DeltaTable, PostCommitHookProperties,
                       WriterProperties, write_deltalake)

from .append_commit import PLAIN_TEXT_COLUMNS
from .snapshot import ID_HIGH_WATER, Change, Snapshot, to_arrow

# A delete or overwrite names up to this many ranges of ids; beyond, it rewrites their span.
MAX_ID_RUNS = 1000
# deltalake's post-commit hook lists the whole log after every commit to decide whether to
# checkpoint (one LIST per save on S3); the store checkpoints itself
# (TableStore._checkpoint_if_due).
_NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
# Row groups of 16 Ki rows: DuckDB parallelises a scan and prunes by min/max statistics per
# row group, and ids grow with every commit, so the display columns of the newest 100 rows
# are one or two row groups (the default to_dataframe() reads those only; with 122,880-row
# groups it decoded every display column of a 1e5 table, ~20 ms). deltalake's default (1 Mi
# rows) leaves one group per file. Snappy, as deltalake's default: WriterProperties without a
# codec writes uncompressed (+65 % bytes). Figures: bench/README.md, "Query". Columns of
# distinct text values are written without a dictionary (append_commit.PLAIN_TEXT_COLUMNS).
WRITER_PROPERTIES = WriterProperties(
    max_row_group_size=16_384, compression="SNAPPY",
    column_properties={name: ColumnProperties(dictionary_enabled=False)
                       for name in PLAIN_TEXT_COLUMNS})


def commit_through_deltalake(table: DeltaTable, snapshot: Snapshot, change: Change,
                             missing: dict, storage_options: dict,
                             commit_properties: Callable[..., CommitProperties],
                             after_id_mark: Callable[[], None]) -> None:
    """Commit ``change`` through deltalake on ``table``, loaded at ``snapshot``'s version.
    ``missing`` columns (name -> type) join the schema; ``commit_properties(operation)`` gives
    each commit's properties; ``after_id_mark`` runs after the commit that raises the id mark
    before a delete of the newest row."""
    schema = snapshot.schema
    for name, arrow_type in missing.items():
        schema = schema.append(pa.field(name, arrow_type))
    evolve = {"schema_mode": "merge"} if missing else {}
    if change.delete_ids:
        if len(change.append) or change.replace:
            raise ValueError("a change either deletes rows or writes them, not both")
        # Deleting the row that holds the highest id takes two commits; dying between
        # them leaves a raised mark and no row deleted.
        mark = int(table.metadata().configuration.get(ID_HIGH_WATER, 0))
        if mark < snapshot.max_id <= max(change.delete_ids):
            table.alter.set_table_properties({ID_HIGH_WATER: str(snapshot.max_id)},
                                             raise_if_not_exists=False,
                                             commit_properties=commit_properties("id mark"),
                                             post_commithook_properties=_NO_HOOKS)
            after_id_mark()
        predicate, others = _id_selection(snapshot, change.delete_ids)
        if others is None or not others.num_rows:
            table.delete(predicate=predicate, commit_properties=commit_properties(),
                         post_commithook_properties=_NO_HOOKS)
        else:  # the span's other rows are written back: still one commit
            write_deltalake(table, others, mode="overwrite", predicate=predicate,
                            commit_properties=commit_properties(),
                            storage_options=storage_options,
                            writer_properties=WRITER_PROPERTIES,
                            post_commithook_properties=_NO_HOOKS)
        return
    if change.replace:
        if len(change.append):
            raise ValueError("a change either replaces rows or appends them, not both")
        rows = to_arrow(change.replace, schema)
        predicate, others = _id_selection(snapshot, [r["id"] for r in change.replace])
        if others is not None:
            rows = pa.concat_tables([rows, to_arrow(others, schema)])
        write_deltalake(table, rows, mode="overwrite", predicate=predicate,
                        commit_properties=commit_properties(), storage_options=storage_options,
                        writer_properties=WRITER_PROPERTIES,
                        post_commithook_properties=_NO_HOOKS, **evolve)
        return
    write_deltalake(table, to_arrow(change.append, schema), mode="append",
                    commit_properties=commit_properties(), storage_options=storage_options,
                    writer_properties=WRITER_PROPERTIES, post_commithook_properties=_NO_HOOKS,
                    **evolve)


def _id_runs(ids) -> list[tuple[int, int]]:
    """``ids`` as sorted ranges (first, last) of consecutive ids. int() makes sure nothing but
    integers reaches a predicate built from them."""
    values = sorted({int(i) for i in ids})
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return [(lo, hi) for lo, hi in runs]


def _runs_predicate(runs: list[tuple[int, int]]) -> str:
    return " OR ".join(f"id = {lo}" if lo == hi else f"(id >= {lo} AND id <= {hi})"
                       for lo, hi in runs)


def _id_selection(snapshot: Snapshot, ids: Sequence[int]) -> tuple[str, pa.Table | None]:
    """A predicate for the rows ``ids`` of a delete or an overwrite, and the snapshot's other
    rows it also selects (None when it selects exactly ``ids``). deltalake parses a long
    ``id IN (...)`` recursively (100,000 ids crashed the process), so the predicate is ranges of
    consecutive ids, or when those are too many, the span from the first to the last id: the
    commit then writes that span's other rows back unchanged."""
    runs = _id_runs(ids)
    if len(runs) <= MAX_ID_RUNS:
        return _runs_predicate(runs), None
    lo, hi = runs[0][0], runs[-1][1]
    span = (pc.field("id") >= lo) & (pc.field("id") <= hi)
    others = snapshot.read(filter=span & ~pc.field("id").isin([int(i) for i in ids]))
    return f"id >= {lo} AND id <= {hi}", others
