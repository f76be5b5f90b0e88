"""Which data files a lookup may skip, from the statistics of the Delta log: a file may be
skipped only when no row of it holds the value. The expected answers come from reading each
data file with pyarrow and comparing its values in Python, never from the statistics."""

from __future__ import annotations

import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

import lamina as ln
from lamina.catalog.delta_log import DeltaLogReader
from lamina.catalog.location import Location

# Long values that share a prefix: deltalake cuts text statistics to 64 characters (and
# raises the cut maximum's last character); NULLs, NaN, unicode and numbers around them.
LONG = "x" * 70
VALUES = {
    "name": [LONG + "a", LONG + "b", LONG, "x" * 64, "é-accent", "b", "a", None, "zz", ""],
    "count": [1, 5, -3, None, 2**40, 0, 7, 7, 9, 10],
    "score": [1.5, float("nan"), -0.0, 2.0, None, 3.25, 1e300, 0.5, 4.0, 4.0],
}
PROBES = {
    "name": [*VALUES["name"][:7], "x" * 63, "x" * 65, LONG + "c", "é", "ea", "0", "zzz",
             "a" + "\U0010ffff", "", "c"],
    "count": [1, 5, -3, 2**40, 0, 7, 9, 10, 6, -4, 11, 2**40 + 1, 3, 1.0, 5.5],
    "score": [1.5, -0.0, 0.0, 2.0, 3.25, 1e300, 0.5, 4.0, float("nan"), 1, 4, -1.0, 5.0],
}
SCHEMA = pa.schema([("name", pa.string()), ("count", pa.int64()), ("score", pa.float64())])


def groups_of_rows() -> list[pa.Table]:
    """One table per data file: single rows, pairs and the whole set (so bounds span
    values), and files whose columns are all NULL."""
    rows = [{c: VALUES[c][i] for c in VALUES} for i in range(len(VALUES["name"]))]
    groups = [[r] for r in rows] + [rows[i:i + 2] for i in range(0, len(rows), 2)] + [rows]
    groups.append([{"name": None, "count": None, "score": None}] * 2)
    return [pa.Table.from_pylist(g, schema=SCHEMA) for g in groups]


def holds(table: pa.Table, column: str, value) -> bool:
    """Whether a row of ``table`` equals ``value`` in ``column`` as SQL's ``=`` does (DuckDB
    counts NaN equal to NaN)."""
    for found in table.column(column).to_pylist():
        if found is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            if isinstance(found, float) and math.isnan(found):
                return True
        elif found == value:
            return True
    return False


def written_by_deltalake(folder: str) -> str:
    for group in groups_of_rows():
        write_deltalake(folder, group, mode="append")
    return folder


def written_by_lamina(folder: str) -> str:
    """The same files committed by lamina's own append path (the store's one-row saves)."""
    from lamina.catalog import append_commit

    write_deltalake(folder, SCHEMA.empty_table(), mode="append")
    location = Location.of(folder)
    for version, group in enumerate(groups_of_rows(), start=1):
        append_commit.commit_append(location, folder, version, group, {})
    return folder


@pytest.fixture(params=["deltalake", "lamina"])
def table_folder(request, tmp_path) -> str:
    folder = str(tmp_path / "table")
    os.makedirs(folder)
    write = written_by_deltalake if request.param == "deltalake" else written_by_lamina
    return write(folder)


def test_a_file_holding_the_value_is_never_skipped(table_folder):
    from lamina.catalog.file_stats import files_that_may_match

    state = DeltaLogReader(Location.of(table_folder), table_folder).load()
    files = [f.uri for f in state.files.values()]
    stats = {f.uri: f.stats for f in state.files.values() if f.stats is not None}
    assert len(stats) == len(files)  # both writers state statistics for every file
    contents = {uri: pq.read_table(uri) for uri in files}
    skipped_any = False
    for column, probes in PROBES.items():
        for value in probes:
            kept = set(files_that_may_match(files, stats, {column: value}, SCHEMA))
            holding = {uri for uri, table in contents.items() if holds(table, column, value)}
            assert holding <= kept, (column, value)
            skipped_any |= len(kept) < len(files)
    assert skipped_any


def test_a_one_row_file_is_kept_for_its_own_value_only(table_folder):
    """Single saves write one row per file: a lookup by a value of the file's row keeps that
    file, and one of a value no row holds keeps none of them."""
    from lamina.catalog.file_stats import files_that_may_match

    state = DeltaLogReader(Location.of(table_folder), table_folder).load()
    one_row = {f.uri: pq.read_table(f.uri) for f in state.files.values()
               if pq.read_metadata(f.uri).num_rows == 1}
    stats = {f.uri: f.stats for f in state.files.values()}
    for uri, table in one_row.items():
        value = table.column("count").to_pylist()[0]
        if value is None:
            continue
        kept = files_that_may_match(list(one_row), stats, {"count": value}, SCHEMA)
        assert kept == [u for u, t in one_row.items() if holds(t, "count", value)]
    assert files_that_may_match(list(one_row), stats, {"count": 6}, SCHEMA) == []


def test_values_of_another_kind_than_the_column_rule_out_nothing(table_folder):
    from lamina.catalog.file_stats import files_that_may_match

    state = DeltaLogReader(Location.of(table_folder), table_folder).load()
    files = [f.uri for f in state.files.values()]
    stats = {f.uri: f.stats for f in state.files.values()}
    # text against a number column, a number against a text column, a column the schema
    # does not have: every file is kept (the query, not the statistics, decides)
    for column, value in [("count", "7"), ("name", 7), ("absent", "a"), ("count", True)]:
        assert files_that_may_match(files, stats, {column: value}, SCHEMA) == files


def test_a_file_without_statistics_is_kept(tmp_path):
    from lamina.catalog.file_stats import FileStats, files_that_may_match

    assert FileStats.of_action({"path": "a.parquet", "size": 1}) is None
    files = ["a.parquet", "b.parquet"]
    stats = {"b.parquet": FileStats.of_action(
        {"stats": '{"numRecords":1,"minValues":{"name":"q"},"maxValues":{"name":"q"},'
                  '"nullCount":{"name":0}}'})}
    assert files_that_may_match(files, stats, {"name": "a"}, SCHEMA) == ["a.parquet"]


# ---- through the API, on the local root and on S3 ----------------------------------------
def test_lookups_on_a_registry_grown_by_single_saves_equal_the_saved_rows(root):
    """get()/filter().one_or_none() by name, by id, and with names no row has (between,
    before and after the saved ones, prefixes of them) answer as the saved rows say."""
    ln.init(storage=root)
    names = ["alpha", "alphabet", "beta", LONG, LONG + "b", "é-accent", "zeta"]
    saved = {}
    for name in names:
        record = ln.Record(name=name)
        record.save()
        saved[name] = record.id
    ln.Record(name="described", description="only one has a description").save()
    from helpers import reset_process_state

    reset_process_state()
    ln.connect(root)
    for name in [*names, "alph", "alpha0", "a", "zzz", "", LONG[:-1], LONG + "c", "é"]:
        found = ln.Record.filter(name=name).one_or_none()
        assert (found.id if found else None) == saved.get(name), name
    for name, record_id in saved.items():
        assert ln.Record.get(id=record_id).name == name
    assert ln.Record.get(description="only one has a description").name == "described"
    assert ln.Record.filter(description="no such text").one_or_none() is None


def test_a_file_holding_one_of_the_ids_is_never_skipped(tmp_path):
    """Id lists (a page's labels) keep each file holding one of them; files of single saves
    whose id is not asked are skipped."""
    import random

    from lamina.catalog import append_commit
    from lamina.catalog.file_stats import files_that_may_hold_ids

    folder = str(tmp_path / "ids")
    os.makedirs(folder)
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    write_deltalake(folder, schema.empty_table(), mode="append")
    groups = [[1, 2, 3, 40], [5], [6], [7, 9], [12], [None], [30, 31]]
    for version, ids in enumerate(groups, start=1):
        rows = pa.table({"id": pa.array(ids, pa.int64()), "name": [str(i) for i in ids]})
        append_commit.commit_append(Location.of(folder), folder, version, rows, {})
    state = DeltaLogReader(Location.of(folder), folder).load()
    files = [f.uri for f in state.files.values()]
    stats = {f.uri: f.stats for f in state.files.values()}
    held = {uri: set(pq.read_table(uri).column("id").to_pylist()) - {None} for uri in files}
    rng = random.Random(7)
    skipped_any = False
    for _ in range(200):
        asked = rng.sample(range(0, 45), rng.randint(1, 6))
        kept = files_that_may_hold_ids(files, stats, asked)
        assert {u for u, ids in held.items() if ids & set(asked)} <= set(kept), asked
        skipped_any |= len(kept) < len(files)
    assert skipped_any
    assert files_that_may_hold_ids(files, stats, [6]) == [
        u for u in files if held[u] == {6} or (held[u] and min(held[u]) <= 6 <= max(held[u]))]
