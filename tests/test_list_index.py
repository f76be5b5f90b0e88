"""The list index (engine/list_index.py) built from a stream of Arrow batches, as the session
reads a list column from DuckDB, answers what the lists say however the rows are cut into
batches and in whatever order they come."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from lamina.engine.list_index import ListIndex


def lists_of(n: int, seed: int, high: int = 12) -> dict[int, list | None]:
    """Row id -> list of label ids (None: a NULL list; None inside: a NULL element)."""
    rng = random.Random(seed)
    out = {}
    for row in range(1, n + 1):
        kind = rng.random()
        if kind < 0.1:
            out[row] = None
        elif kind < 0.15:
            out[row] = []
        else:
            out[row] = [rng.choice([None, *range(1, high)]) for _ in range(rng.randint(1, 4))]
    return out


def batches(rows: dict[int, list | None], order: list[int], size: int):
    schema = pa.schema([("id", pa.int64()), ("records", pa.list_(pa.int64()))])
    for start in range(0, len(order), size):
        part = order[start:start + size]
        yield pa.record_batch([pa.array(part, pa.int64()),
                               pa.array([rows[r] for r in part], pa.list_(pa.int64()))],
                              schema=schema)


def holding(rows: dict[int, list | None], ids: set[int]) -> list[int]:
    return sorted(r for r, lst in rows.items() if lst and any(x in ids for x in lst))


@pytest.mark.parametrize("size", [1, 7, 1000])
@pytest.mark.parametrize("shuffled", [False, True])
def test_rows_holding_equal_the_lists_however_the_rows_are_batched(size, shuffled):
    rows = lists_of(300, seed=size)
    order = sorted(rows)
    if shuffled:
        random.Random(3).shuffle(order)
    index = ListIndex(batches(rows, order, size))
    for ids in ({1}, {5}, {2, 9}, {11, 3, 4}, {99}):
        assert index.rows_holding(ids).tolist() == holding(rows, ids), ids


def test_batches_whose_ids_go_back_are_put_in_id_order():
    """Each batch in order, but the second starts below the first's last id."""
    rows = {1: [1], 2: [2], 3: [1], 4: [1, 2], 5: [2]}
    index = ListIndex(batches(rows, [3, 4, 5, 1, 2], size=3))
    assert index.rows_holding({1}).tolist() == [1, 3, 4]
    assert index.rows_holding({2}).tolist() == [2, 4, 5]


def test_no_batches_hold_nothing():
    index = ListIndex(iter(()))
    assert index.rows_holding({1}).tolist() == []
    assert index.nbytes == 0


def test_ids_that_fit_in_32_bits_take_8_bytes_per_element():
    rows = lists_of(500, seed=1)
    elements = sum(len(lst) for lst in rows.values() if lst)
    assert ListIndex(batches(rows, sorted(rows), 64)).nbytes == 8 * elements


def test_ids_past_32_bits_are_kept_whole():
    big = 2**40
    rows = {1: [big, 3], 2: [3], big + 5: [big], big + 6: [7]}
    index = ListIndex(batches(rows, sorted(rows), 2))
    assert index.rows_holding({big}).tolist() == [1, big + 5]
    assert index.rows_holding({3}).tolist() == [1, 2]
    assert index.rows_holding({7, 3}).tolist() == [1, 2, big + 6]
    assert np.asarray(index.rows_holding({7})).dtype == np.int64


def test_a_sessions_list_indexes_stay_within_their_byte_cap_and_counts_stay_right(
        local_root, tmp_path, monkeypatch):
    """With a cap of one index's bytes, indexes of several list columns asked in turn
    replace each other (the one just built kept), and every count is what the links say."""
    from helpers import wait_until_lasted, write_file

    import lamina as ln
    from lamina.engine import session as session_module
    from lamina.engine import version_caches

    ln.init(storage=local_root)
    a, b = ln.Record(name="A").save(), ln.Record(name="B").save()
    u = ln.ULabel(name="U").save()
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"{i}.txt").save()
            for i in range(6)]
    for art in arts[:3]:
        art.records.add(a)
    arts[3].records.add(b)
    for art in arts[2:]:
        art.ulabels.add(u)
    caches = session_module.session_for(ln.current())._caches
    assert ln.Artifact.filter(records=a).count() == 3
    wait_until_lasted()  # the version has lasted
    assert ln.Artifact.filter(records=a).count() == 3
    one_index = caches.list_index_bytes
    assert one_index > 0  # the count was answered from an index
    monkeypatch.setattr(version_caches, "LIST_INDEX_BYTES", one_index)
    for _ in range(2):
        assert ln.Artifact.filter(ulabels=u).count() == 4
        assert caches.list_index_bytes <= one_index + 8 * len(arts)
        assert ln.Artifact.filter(records=b).count() == 1
        assert ln.Artifact.filter(records=a, ulabels=u).count() == 1
        assert caches.list_index_bytes <= 2 * one_index


def test_answers_kept_per_index_stay_within_their_byte_cap(monkeypatch):
    from lamina.engine import list_index

    rows = lists_of(400, seed=2)
    index = ListIndex(batches(rows, sorted(rows), 100))
    monkeypatch.setattr(list_index, "KEPT_ANSWER_BYTES", 8 * 60)
    bare = index.nbytes
    for label in range(1, 12):
        assert index.rows_holding({label}).tolist() == holding(rows, {label})
        assert index.nbytes - bare <= 8 * 60
