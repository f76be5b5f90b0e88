"""Counts of a relation filter combined with other conditions (``records=r, size__gt=...``):
once a table version has lasted, the rows the list index finds are the only rows the other
conditions are evaluated on. The answers must be those of the whole statement: checked against
the plain-Python oracle (which knows nothing of the planner), before and after the version has
lasted, and after another process commits."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import lamina as ln
from lamina import Q
from lamina.engine import row_columns

import query_catalog as qc
from helpers import each_way, python, statements_of, wait_until_lasted, write_file

oracle = qc.oracle
world = qc.world

A = ln.Artifact
# Each asks a list column (records, ulabels, schemas) for ids AND something else.
COMBINED = [
    {"records__name": "DMSO", "size__gt": 10_000},
    {"records__name": "DMSO", "suffix": ".h5ad"},
    {"records__name__in": ["IFNG", "Control"], "key__startswith": "raw/"},
    {"records__name": "Experiment 1", "n_observations__isnull": True},
    {"records__name": "Experiment 1", "created_at__gte": datetime(2024, 1, 1,
                                                                  tzinfo=timezone.utc)},
    {"records__name": "Experiment 1", "created_at__year": 2024},
    {"records__name": "DMSO", "description__icontains": "cell"},
    {"records__name": "DMSO", "created_by__handle": "alice"},
    {"records__name": "IFNG", "ulabels__name": "good", "kind": "dataset"},
    {"schemas__itype": "Feature", "size__lte": 5202},
    {"records__name": "DMSO", "storage__root__startswith": "s3://"},
]
COMBINED_Q = [
    Q(records__name="DMSO") & (Q(size__lt=10_000) | Q(suffix=".csv")),
    Q(records__name="IFNG") & ~Q(suffix=".h5ad"),
    Q(records__name="Experiment 1") & ~Q(size__gt=5202),
]


def settled_counts(count_calls: list, counts) -> list[int]:
    """``counts()`` once on a version just read, then once the version has lasted (answered
    from the list index and the rows it finds); both answers must agree."""
    first = counts()
    wait_until_lasted()
    counts()
    count_calls.clear()
    second = counts()
    assert first == second
    return second


@pytest.fixture
def count_statements(monkeypatch) -> list:
    """The count statements sessions run over a registry's whole view."""
    return statements_of(monkeypatch, "scalar")


def test_combined_counts_equal_the_oracle_and_read_only_the_listed_rows(oracle,
                                                                         count_statements):
    def counts():
        return ([A.filter(**kw).count() for kw in COMBINED]
                + [A.filter(q).count() for q in COMBINED_Q]
                + [A.filter(records__name="DMSO").exclude(size__gt=10_000).count()])

    got = settled_counts(count_statements, counts)
    expected = ([len(oracle.ids(A, **kw)) for kw in COMBINED]
                + [len(oracle.ids(A, q)) for q in COMBINED_Q]
                + [len(set(oracle.ids(A, records__name="DMSO"))
                       - set(oracle.ids(A, size__gt=10_000)))])
    assert got == expected
    # The other conditions keep some of the listed rows, not all of them.
    assert 0 < expected[0] < len(oracle.ids(A, records__name="DMSO"))
    # Once settled, none of them ran a statement over the whole table.
    assert count_statements == []


def test_a_combined_count_matching_no_listed_row_is_zero(oracle, count_statements):
    nobody = {"records__name": "DMSO", "key": "no such key"}
    assert settled_counts(count_statements, lambda: A.filter(**nobody).count()) == 0
    assert oracle.ids(A, **nobody) == []
    assert count_statements == []


def test_combined_counts_past_the_memory_budget_run_the_statement(oracle, count_statements,
                                                                  monkeypatch):
    """Columns too large to keep are not kept: the count is the statement's, as before."""
    monkeypatch.setattr(row_columns, "ROW_COLUMNS_BYTES", 1)
    kw = {"records__name": "DMSO", "size__gt": 10_000}
    assert settled_counts(count_statements, lambda: A.filter(**kw).count()) == len(
        oracle.ids(A, **kw))
    assert len(count_statements) == 1


def test_combined_counts_follow_another_processes_commits(root, tmp_path):
    """After another process resizes, trashes, links and saves artifacts, a combined count
    gives the new version's answer, from its files and from the rows kept in memory."""
    instance = ln.init(storage=root)
    treated, other = ln.Record(name="treated").save(), ln.Record(name="other").save()
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", "x" * (i + 1)), key=f"{i}.txt").save()
            for i in range(5)]
    for art in arts[:4]:
        art.records.add(treated)
    arts[4].records.add(other)

    def count() -> int:
        return A.filter(records=treated, size__gt=2).count()

    assert count() == 2  # sizes 3 and 4 among the four treated ones
    wait_until_lasted()
    assert count() == count() == 2

    python(f"""
        ln.connect({instance.root!r})
        treated = ln.Record.get(name="treated")
        small = ln.Artifact.get(key="0.txt")
        small.description = "resized"
        small.size = 100
        small.save()
        ln.Artifact.get(key="3.txt").delete()
        ln.Artifact.get(key="4.txt").records.add(treated)
        new = ln.Artifact({str(write_file(tmp_path, "5.txt", "yyyyyy"))!r}, key="5.txt").save()
        new.records.add(treated)
        ln.Artifact({str(write_file(tmp_path, "6.txt", "zzzzzzz"))!r}, key="6.txt").save()
    """)

    def check():
        # 0.txt (now 100), 2.txt (3), 4.txt (5), 5.txt (6); 3.txt is trashed, 6.txt unlinked.
        assert count() == 4
        assert A.filter(records=treated, description="resized").count() == 1

    each_way(check)
