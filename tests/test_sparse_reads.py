"""Full reads of relation filters (``to_dataframe(limit=None)``, iteration, slices) and displays
in another order than by id (``order_by("-key")``), on the generated catalog: each answer equal
to the oracle's (plain Python over the catalog's rows), whether the rows come from the list
index's candidates or from the whole statement."""

from __future__ import annotations

import pytest

import lamina as ln
from lamina.engine import id_order, row_columns, session, version_caches

import query_catalog as qc
from helpers import wait_until_lasted

# Fixtures of the generated catalog (module-scoped build, per-test connection).
oracle = qc.oracle
world = qc.world

RELATION_FILTERS = [
    {"suffix": ".h5ad"}, {"size__gt": 10_000}, {"key__contains": "a"},
    {"suffix": "no such suffix"}, {"description__isnull": True, "size__lte": 5e5},
]


def answers_of(monkeypatch, name: str) -> list:
    """What ``id_order.<name>`` returns on each call (None: it left the query to the whole
    statement), so a test can tell which path gave its rows."""
    original = getattr(id_order, name)
    answers = []

    def recorded(*args, **kwargs):
        answers.append(original(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(id_order, name, recorded)
    return answers


def hold_few_rows(monkeypatch):
    """Scaled down: the session holds the newest 2 artifacts and keeps 5 rows read by id, so
    that rows are read by id from the files and the kept ones pass their cap."""
    monkeypatch.setattr(session, "IN_MEMORY_VALUES", 1)
    monkeypatch.setattr(session, "NEWEST_IN_MEMORY_IDS", 2)
    monkeypatch.setattr(version_caches, "READ_BY_ID_ROWS", 5)
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", 1)


@pytest.mark.parametrize("conditions", RELATION_FILTERS, ids=lambda c: ",".join(c))
@pytest.mark.parametrize("through", ["candidates", "candidates, few rows held", "statement"])
def test_full_reads_of_a_relation_filter_equal_the_oracle(oracle, monkeypatch, conditions,
                                                          through):
    """Every matching row, in both id orders, with offsets; from the list index's
    candidates (their rows held in memory, or read by id) and (no candidate checked) from
    the whole statement."""
    if through == "statement":
        monkeypatch.setattr(id_order, "CANDIDATES_CHECKED", 0)
    if through == "candidates, few rows held":
        hold_few_rows(monkeypatch)
    experiment = ln.Record.filter(name="Experiment 1").order_by("id").first()
    expected = oracle.ids(ln.Artifact, records=experiment.id, **conditions)
    qs = ln.Artifact.filter(records=experiment, **conditions)
    qs.count()
    wait_until_lasted()
    answers = answers_of(monkeypatch, "all_rows")
    frame = qs.to_dataframe(limit=None)
    from_candidates = answers[0] is not None
    assert from_candidates == (through != "statement")
    assert list(frame.index) == expected[::-1]
    rows = oracle.table(ln.Artifact)
    assert list(frame["key"]) == [rows[i]["key"] for i in expected[::-1]]
    assert [record.id for record in qs] == expected
    assert [record.id for record in qs[2:]] == expected[2:]
    alone = ln.Artifact.filter(records=experiment)
    assert list(alone.to_dataframe(limit=None).index) == oracle.ids(
        ln.Artifact, records=experiment.id)[::-1]


def _ordered(oracle, field: str, descending: bool, **conditions) -> list:
    """The field's values of the matching artifacts in order, NULLs last."""
    rows = oracle.table(ln.Artifact)
    values = [rows[i][field] for i in oracle.ids(ln.Artifact, **conditions)]
    present = sorted((v for v in values if v is not None), reverse=descending)
    return present + [None] * (len(values) - len(present))


@pytest.mark.parametrize("order", ["-key", "key", "-size", "created_at", "-created_at",
                                   "-is_latest"])
@pytest.mark.parametrize("conditions", [{}, {"suffix": ".h5ad"}, {"size__gt": 1e9}],
                         ids=lambda c: ",".join(c) or "all")
@pytest.mark.parametrize("through", ["kept columns", "kept columns, few rows held",
                                     "statement"])
def test_displays_in_another_order_equal_the_oracle(oracle, monkeypatch, order, conditions,
                                                    through):
    """The first rows by another field, and each shown row the row with its id (rows are
    found by id after their order); an unfiltered query's first ids once from the columns
    the session keeps and once (none kept) from a statement."""
    if through == "statement":
        monkeypatch.setattr(row_columns, "ROW_COLUMNS_BYTES", 0)
    if through == "kept columns, few rows held":
        hold_few_rows(monkeypatch)
    ln.Artifact.filter(**conditions).order_by(order).to_dataframe(limit=1)
    wait_until_lasted()
    field = order.lstrip("-")
    expected = _ordered(oracle, field, order.startswith("-"), **conditions)
    rows = oracle.table(ln.Artifact)
    answers = answers_of(monkeypatch, "_top_ids_kept")
    for limit in (100, 7):
        frame = ln.Artifact.filter(**conditions).order_by(order).to_dataframe(limit=limit)
        # An unfiltered query takes its first ids from the kept column; a filter (or no
        # column kept) from a statement.
        assert (answers[-1] is not None) == (not conditions and through != "statement")
        assert [None if v != v else v for v in frame[field]] == expected[:limit]
        for artifact_id, key, size in zip(frame.index, frame["key"], frame["size"]):
            assert (key, size if size == size else None) == (rows[artifact_id]["key"],
                                                             rows[artifact_id]["size"])
    shown = ln.Artifact.filter(**conditions).order_by(order)[3:9]
    assert [getattr(a, field) for a in shown] == expected[3:9]
