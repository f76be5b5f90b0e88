"""The QuerySet users hold: laziness, iteration, slicing, ordering, results in every format,
deletion, the default branch filter; displays (view, lookup, reprs) and ``ln.sql``."""

from __future__ import annotations

import contextlib
import io
import re

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import lamina as ln
from lamina.engine import id_order
from lamina.engine import session as lamina_session

import query_catalog as qc
from helpers import statements_of, wait_until_lasted

# Fixtures of the generated catalog (module-scoped build, per-test connection).
fresh = qc.fresh
oracle = qc.oracle
world = qc.world

RECORD_REPR_FIELDS = ["uid", "is_type", "name", "description", "reference", "reference_type",
                      "extra_data", "branch_id", "created_on_id", "space_id", "created_by_id",
                      "type_id", "schema_id", "run_id", "created_at", "is_locked"]
ARTIFACT_REPR_FIELDS = ["uid", "key", "description", "suffix", "kind", "otype", "size", "hash",
                        "n_files", "n_observations", "branch_id", "created_on_id", "space_id",
                        "storage_id", "run_id", "schema_id", "created_by_id", "created_at",
                        "is_locked", "version_tag", "is_latest"]


def ids(qs) -> list[int]:
    return [record.id for record in qs]


@pytest.fixture
def sql_calls(monkeypatch) -> list:
    """Every query statement the sessions run (feature metadata reads aside)."""
    return statements_of(monkeypatch, "arrow")


# ---- laziness ----------------------------------------------------------------------------

def test_building_a_queryset_runs_no_query(oracle, sql_calls):
    qs = (ln.Artifact.filter(suffix=".csv").filter(records__name="DMSO")
          .exclude(size=None).order_by("-size", "created_by__name").distinct()[2:10])
    ln.Artifact.filter(records__in=ln.Record.filter(name="IFNG"))
    assert sql_calls == []
    [a.id for a in qs]
    # the ids of the records named DMSO are looked up first, then the artifacts are read
    assert len(sql_calls) == 2 and 'FROM "record"' in sql_calls[0]
    assert 'FROM "artifact"' in sql_calls[1]


def test_queryset_evaluates_at_use_not_at_definition(fresh):
    csv = ln.Artifact.filter(suffix=".csv")
    before = fresh.ids(ln.Artifact, suffix=".csv")
    assert len(before) >= 2 and ids(csv) == before
    gone = ln.Artifact.get(before[0])
    gone.delete()
    assert ids(csv) == before[1:]
    assert csv.count() == len(before) - 1
    # A record changed after the QuerySet was defined shows its new values.
    moved = ln.Artifact.get(before[1])
    moved.suffix = ".tsv"
    moved.save()
    assert ids(csv) == before[2:]
    assert ids(ln.Artifact.filter(suffix=".tsv")) == [before[1]]


# ---- iteration, len, indexing ------------------------------------------------------------

def test_iteration_is_by_id_unless_ordered(oracle):
    expected = oracle.ids(ln.Artifact, suffix=".h5ad")
    qs = ln.Artifact.filter(suffix=".h5ad")
    assert ids(qs) == expected == ids(qs.to_list()) == ids(qs.all())
    assert all(isinstance(a, ln.Artifact) for a in qs)
    assert len(qs) == qs.count() == len(expected)
    assert qs.exists() and bool(qs)
    assert not ln.Artifact.filter(key="no such key").exists()
    assert not ln.Artifact.filter(key="no such key")
    assert len(ln.Artifact.filter(key="no such key")) == 0


def test_indexing_and_slicing(oracle):
    expected = oracle.ids(ln.Artifact, size__gt=100)
    qs = ln.Artifact.filter(size__gt=100)
    assert qs[0].id == expected[0] and qs[7].id == expected[7]
    assert ids(qs[2:5]) == expected[2:5]
    assert ids(qs[:3]) == expected[:3]
    assert ids(qs[len(expected) - 2:]) == expected[-2:]
    assert ids(qs[4:][:3]) == expected[4:7]
    assert ids(qs[2:8][1:3]) == expected[3:5]
    assert ids(qs[3:3]) == [] and len(qs[3:3]) == 0
    assert len(qs[:5]) == qs[:5].count() == 5
    assert qs[10:20][0].id == expected[10]
    by_size = ln.Artifact.filter(size__gt=100).order_by("-size", "id")
    sizes = oracle.table(ln.Artifact)
    expected_by_size = sorted(expected, key=lambda i: (-sizes[i]["size"], i))
    assert ids(by_size[:4]) == expected_by_size[:4]
    assert by_size[1].id == expected_by_size[1]
    with pytest.raises(IndexError):
        qs[len(expected)]
    with pytest.raises(IndexError):
        qs[-1]
    with pytest.raises(ValueError):
        qs[::2]
    with pytest.raises(TypeError):
        qs["a"]


def test_first_last_one_one_or_none_get(oracle):
    expected = oracle.ids(ln.Artifact, suffix=".jpg")
    qs = ln.Artifact.filter(suffix=".jpg")
    assert qs.first().id == expected[0] and qs.last().id == expected[-1]
    by_key = qs.order_by("-key")
    keys = sorted((oracle.table(ln.Artifact)[i]["key"] for i in expected), key=lambda k: (
        k is None, k))
    assert by_key.last().key == min(k for k in keys if k is not None)
    assert ln.Artifact.filter(key="none such").first() is None
    assert ln.Artifact.filter(key="none such").last() is None
    one_id = expected[0]
    assert ln.Artifact.filter(id=one_id).one().id == one_id
    assert ln.Artifact.filter(id=one_id).one_or_none().id == one_id
    assert ln.Artifact.filter(key="none such").one_or_none() is None
    with pytest.raises(ln.DoesNotExist):
        ln.Artifact.filter(key="none such").one()
    with pytest.raises(ln.MultipleResultsFound):
        qs.one()
    with pytest.raises(ln.MultipleResultsFound):
        qs.one_or_none()
    artifact = ln.Artifact.get(one_id)
    assert ln.Artifact.get(artifact.uid) == artifact == qs.get(id=one_id)
    latest = ln.Artifact.filter(is_latest=True).first()
    assert ln.Artifact.get(latest.uid[:16]) == latest  # the uid without its version
    with pytest.raises(ln.DoesNotExist):
        ln.Artifact.get(key="none such")


# ---- ordering ----------------------------------------------------------------------------

def _order(oracle, ids_, key, reverse=False):
    """Sort like lamina's ORDER BY: NULLs last in both directions, then by id."""
    rows = oracle.table(ln.Artifact)
    present = sorted((i for i in ids_ if key(rows[i]) is not None),
                     key=lambda i: key(rows[i]), reverse=reverse)
    return present + [i for i in ids_ if key(rows[i]) is None]


def test_order_by(oracle):
    visible = oracle.ids(ln.Artifact)
    rows = oracle.table(ln.Artifact)
    A = ln.Artifact
    assert ids(A.filter().order_by("created_at")) == _order(oracle, visible,
                                                            lambda r: r["created_at"])
    assert ids(A.filter().order_by("-created_at")) == _order(
        oracle, visible, lambda r: r["created_at"], reverse=True)
    assert ids(A.filter().order_by("key", "id")) == sorted(
        visible, key=lambda i: (rows[i]["key"] is None, rows[i]["key"] or "", i))
    with_key = sorted((i for i in visible if rows[i]["key"] is not None),
                      key=lambda i: rows[i]["key"], reverse=True)  # stable: ids stay ascending
    assert ids(A.filter().order_by("-key", "id")) == with_key + [
        i for i in visible if rows[i]["key"] is None]
    # NULL sizes come last both ways.
    assert [a.size for a in A.filter().order_by("size")][-1] is None
    assert [a.size for a in A.filter().order_by("-size")][-1] is None
    sizes = [a.size for a in A.filter(size__isnull=False).order_by("-size")]
    assert sizes == sorted(sizes, reverse=True)
    # Across a foreign key; the ordering of a later order_by() replaces the earlier one.
    users = oracle.rows["core.user"]
    by_user = ids(A.filter().order_by("created_by__name", "-id"))
    assert by_user == sorted(visible, key=lambda i: (
        users[rows[i]["created_by_id"]]["name"] is None,
        users[rows[i]["created_by_id"]]["name"] or "", -i))
    assert ids(A.filter().order_by("size").order_by("-id")) == visible[::-1]
    # Ordered iteration, to_dataframe and slices agree.
    ordered = A.filter(suffix=".csv").order_by("-created_at")
    frame = ordered.to_dataframe()
    assert list(frame.index) == ids(ordered) == _order(
        oracle, oracle.ids(A, suffix=".csv"), lambda r: r["created_at"], reverse=True)


def test_distinct(oracle):
    qs = ln.Artifact.filter(records__name__icontains="e").distinct()
    expected = oracle.ids(ln.Artifact, records__name__icontains="e")
    assert ids(qs) == expected and qs.count() == len(expected)
    suffixes = ln.Artifact.filter().distinct().to_arrow(columns=["suffix"])
    assert len(suffixes) == len({r["suffix"] for r in oracle.table(ln.Artifact).values()
                                 if r["branch_id"] == 1})


# ---- results in every format -------------------------------------------------------------

def test_to_dataframe_defaults_and_limit(oracle):
    visible = oracle.ids(ln.Artifact)
    df = ln.Artifact.to_dataframe()
    assert df.index.name == "id"
    assert list(df.index) == visible[::-1][:100]  # newest first, 100 rows by default
    assert list(df.columns) == ln.Artifact._spec.display_columns
    assert list(ln.Artifact.filter().to_dataframe(limit=5).index) == visible[::-1][:5]
    assert len(ln.Artifact.filter().to_dataframe(limit=None)) == len(visible)
    # A slice keeps the order it was taken in (by id when none was given).
    assert list(ln.Artifact.filter()[:3].to_dataframe().index) == visible[:3]
    assert list(ln.Artifact.filter().order_by("-id")[:3].to_dataframe().index) == (
        visible[::-1][:3])
    empty = ln.Artifact.filter(key="none such").to_dataframe()
    assert empty.empty and list(empty.columns) == ln.Artifact._spec.display_columns


def test_first_and_last_of_an_equality_filter_take_one_statement(oracle, monkeypatch,
                                                                  sql_calls):
    """``filter(hash=...).first()`` is how a new artifact checks its content: selective, so no
    id window that would widen through the table to find nothing."""
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", 3)  # a window would have to widen
    A = ln.Artifact
    rows = oracle.rows["core.artifact"]
    for conditions in [{"key": rows[min(rows)]["key"]}, {"hash": rows[max(rows)]["hash"]},
                       {"key": rows[max(rows)]["key"], "is_latest": True},
                       {"key": "none such"}, {"suffix": ".csv", "hash": "none such"}]:
        expected = oracle.ids(A, **conditions)
        sql_calls.clear()
        first, last = A.filter(**conditions).first(), A.filter(**conditions).last()
        assert (first.id if first else None) == (expected[0] if expected else None)
        assert (last.id if last else None) == (expected[-1] if expected else None)
        assert len(sql_calls) <= 2, (conditions, sql_calls)  # none from a copy in memory


@pytest.mark.parametrize("window", [3, 40, 100_000])
def test_rows_by_id_read_the_newest_ids_first_and_widen(oracle, monkeypatch, sql_calls,
                                                         window):
    """The first rows by id come from a window of the newest (or oldest) ids that grows until
    it holds enough rows: the answer is the one a whole-table sort gives, for any window."""
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", window)
    A = ln.Artifact
    for conditions in [{}, {"suffix": ".csv"}, {"records__name": "DMSO"}, {"key": "none such"},
                       {"size__gt": 100, "suffix__in": [".h5ad", ".jpg"]}]:
        expected = oracle.ids(A, **conditions)
        qs = A.filter(**conditions)
        assert list(qs.to_dataframe().index) == expected[::-1][:100], conditions
        assert list(qs.to_dataframe(limit=7).index) == expected[::-1][:7]
        assert ids(qs[2:9]) == expected[2:9]
        assert ids(qs.order_by("-id")[5:12]) == expected[::-1][5:12]
        first, last = qs.first(), qs.last()
        assert (first.id if first else None) == (expected[0] if expected else None)
        assert (last.id if last else None) == (expected[-1] if expected else None)
    # Read from the files (a new session: nothing copied into memory yet), a small window is
    # widened (several statements); a window past the table is one.
    monkeypatch.setattr(lamina_session, "_sessions", {})
    sql_calls.clear()
    shown = A.filter(suffix=".csv").to_dataframe()
    assert list(shown.index) == oracle.ids(A, suffix=".csv")[::-1][:100]
    assert (len(sql_calls) > 1) == (window < 100)


def _same(shown, stored) -> bool:
    """A displayed value equals the stored one (a missing value shows as None or NaN)."""
    if stored is None:
        return shown is None or shown != shown
    return shown == stored


RELATION_DISPLAYS = [  # (conditions of each chained filter() call)
    [{"records__name": "Experiment 1"}],
    [{"suffix": ".h5ad"}, {"records__name": "DMSO"}],
    [{"records__name": "DMSO", "size__gt": 100}],
    [{"records__name__in": ["IFNG", "Control"], "key__contains": "/"}],
    [{"ulabels__name": "good"}, {"suffix__in": [".csv", ".jpg"]}],
    [{"records__name": "no such record"}],
    [{}],
]


@pytest.mark.parametrize("held", ["whole registry", "newest 8 ids", "newest 64 ids"])
def test_displays_of_relation_filters_show_the_oracles_rows_wherever_they_are_held(
        oracle, monkeypatch, held):
    """Displays (relation filters alone, with other conditions, chained, and no filter) take
    the rows the session holds in memory when it can and read the others by id from the
    files: at every limit, the rows and each shown value are the oracle's, however few of
    the newest rows are held, and again when the rows read by id are served a second time."""
    if held != "whole registry":
        monkeypatch.setattr(lamina_session, "IN_MEMORY_VALUES", 1)
        monkeypatch.setattr(lamina_session, "NEWEST_IN_MEMORY_IDS", int(held.split()[1]))
    monkeypatch.setattr(lamina_session, "_sessions", {})
    A = ln.Artifact
    A.filter(suffix=".h5ad").count()
    wait_until_lasted()  # the copies are made
    rows = oracle.table(A)
    for calls in RELATION_DISPLAYS:
        q = ln.Q.chain(*[ln.Q(**c) for c in calls]) if len(calls) > 1 else ln.Q(**calls[0])
        expected = oracle.ids(A, q)[::-1]
        for limit in (1, 3, 40, 100):
            for again in range(2):
                qs = A.all()
                for conditions in calls:
                    qs = qs.filter(**conditions)
                frame = qs.to_dataframe(limit=limit)
                assert list(frame.index) == expected[:limit], (calls, limit, again)
                for i in frame.index:
                    for column in ("uid", "key", "suffix", "size", "description", "created_at"):
                        assert _same(frame.loc[i, column], rows[i][column]), (calls, i, column)
    session = lamina_session.session_for(ln.current())
    assert (session.held_rows(A._spec).low is None) == (held == "whole registry")


def test_displays_read_the_shown_columns_only_for_rows_not_held(oracle, monkeypatch,
                                                                sql_calls):
    """Once the winning ids are known, the rows held in memory are shown without a statement:
    a display with no filter runs none, a filter one asking for ids; the rows of a relation
    filter (alone, or sparse with another condition) outside the newest ones are read from
    the files by id, and the older ids passing the other condition found there, once per
    version."""
    monkeypatch.setattr(lamina_session, "IN_MEMORY_VALUES", 1)
    monkeypatch.setattr(lamina_session, "NEWEST_IN_MEMORY_IDS", 64)
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", 16)
    monkeypatch.setattr(lamina_session, "_sessions", {})
    A = ln.Artifact
    A.filter(records__name="DMSO").count()
    wait_until_lasted()

    def artifact_statements(call) -> list[str]:
        sql_calls.clear()
        call()
        return [sql for sql in sql_calls if '"artifact"' in sql or '"_newest_artifact"' in sql]

    A.to_dataframe(limit=5)  # the newest rows are copied
    assert artifact_statements(lambda: A.to_dataframe(limit=5)) == []
    # The list index gives the rows: those outside the newest are read by id, once.
    relation = artifact_statements(lambda: A.filter(records__name="DMSO").to_dataframe())
    assert not any("records" in sql for sql in relation)
    assert artifact_statements(lambda: A.filter(records__name="DMSO").to_dataframe()) == []
    filtered = artifact_statements(lambda: A.filter(suffix=".csv").to_dataframe(limit=2))
    assert len(filtered) == 1 and filtered[0].startswith("SELECT t.id FROM")
    sparse = A.filter(records__name="IFNG", size__gt=100)
    expected = oracle.ids(A, records__name="IFNG", size__gt=100)[::-1][:100]
    first = artifact_statements(lambda: sparse.to_dataframe())
    assert any(not sql.startswith("SELECT t.id FROM") for sql in first)  # rows read by id
    # Shown again at the same version: only the newest rows in memory are asked for ids (the
    # files' answer of this version is kept).
    again = artifact_statements(lambda: sparse.to_dataframe())
    assert again and all(sql.startswith('SELECT t.id FROM "_newest_artifact"') for sql in again)
    assert list(sparse.to_dataframe().index) == expected


def test_to_dataframe_include(oracle):
    rows, records = oracle.table(ln.Artifact), oracle.rows["core.record"]
    users, ulabels = oracle.rows["core.user"], oracle.rows["core.ulabel"]
    qs = ln.Artifact.filter(suffix__in=[".h5ad", ".csv"])
    expected = oracle.ids(ln.Artifact, suffix__in=[".h5ad", ".csv"])[::-1][:30]
    df = qs.to_dataframe(include=["created_by__handle", "records__name", "ulabels__name",
                                  "storage__root"], limit=30)
    assert list(df.index) == expected
    assert list(df.columns) == ["uid", "key", "created_by__handle", "records__name",
                                "ulabels__name", "storage__root"]
    for i in expected:
        row = rows[i]
        assert df.loc[i, "created_by__handle"] == users[row["created_by_id"]]["handle"]
        assert df.loc[i, "records__name"] == (
            {records[r]["name"] for r in row["records"]} if row["records"] else {None})
        assert df.loc[i, "ulabels__name"] == (
            {ulabels[u]["name"] for u in row["ulabels"]} if row["ulabels"] else {None})
    assert any(len(v) > 1 for v in df["records__name"])
    one = ln.Storage.filter(root="s3://bucket-a/data").to_dataframe(
        include="artifacts__suffix")
    assert one.iloc[0]["artifacts__suffix"] == {
        r["suffix"] for r in rows.values() if r["storage_id"] == 2}
    with pytest.raises(ln.FieldError, match="did you mean 'records'"):
        qs.to_dataframe(include="recods__name")


def test_to_polars_and_to_arrow(oracle):
    expected = oracle.ids(ln.Artifact, suffix=".parquet")
    qs = ln.Artifact.filter(suffix=".parquet")
    table = qs.to_arrow()
    assert isinstance(table, pa.Table) and table["id"].to_pylist() == expected
    assert {"id", "suffix", "records"} <= set(table.column_names)
    assert qs.to_arrow(columns=["id", "key"]).column_names == ["id", "key"]
    frame = qs.to_polars()
    assert isinstance(frame, pl.DataFrame) and frame["id"].to_list() == expected
    assert frame.columns == ["id", *ln.Artifact._spec.display_columns]
    assert set(frame["suffix"].to_list()) == {".parquet"}
    assert qs.order_by("-id").to_polars(columns=["id"])["id"].to_list() == expected[::-1]


def test_to_sql_and_explain(oracle):
    qs = ln.Artifact.filter(suffix=".h5ad", size__gt=10_000, records__name="DMSO")
    sql, params = qs.to_sql()
    assert sql.lstrip().upper().startswith("SELECT")
    assert sql.count("?") == len(params)
    # records__name is resolved to the ids of the records of that name before the statement
    dmso = sorted(i for i, r in oracle.rows["core.record"].items() if r["name"] == "DMSO")
    assert len(dmso) > 2  # more than two ids: bound as one list parameter
    assert sorted(map(str, params)) == sorted(["10000", ".h5ad", str(dmso)])
    assert ".h5ad" not in sql and "DMSO" not in sql
    # The statement shown is the one that runs: executed by hand it gives the same rows.
    by_hand = ln.sql(sql, params)
    assert list(by_hand["id"]) == ids(qs)
    plan = qs.explain()
    # DuckDB's plan: a Parquet read, or a scan of the registry's copy in memory
    assert isinstance(plan, str) and ("READ_PARQUET" in plan.upper() or "SCAN" in plan.upper())


# ---- deletion and the default branch filter ----------------------------------------------

def test_delete_moves_to_trash_and_branch_queries_see_it(fresh):
    csv = ln.Artifact.filter(suffix=".csv")
    expected = fresh.ids(ln.Artifact, suffix=".csv")
    trashed_before = fresh.ids(ln.Artifact, branch_id=-1)
    assert csv.delete() == len(expected) > 0
    assert ids(csv) == [] and csv.count() == 0
    in_trash = ids(ln.Artifact.filter(branch_id=-1).order_by("id"))
    assert in_trash == sorted(trashed_before + expected)
    assert ids(ln.Artifact.filter(branch__name="trash").order_by("id")) == in_trash
    assert ids(ln.Artifact.filter(suffix=".csv", branch_id=-1)) == sorted(
        set(expected) | set(fresh.ids(ln.Artifact, suffix=".csv", branch_id=-1)))
    # Rows are in the table still (ln.sql sees every branch).
    assert len(ln.sql("SELECT id FROM artifact")) == 40
    records = ln.Record.filter(name="DMSO")
    n = records.count()
    assert records.delete() == n and ln.Record.filter(name="DMSO").count() == 0


def test_default_filter_hides_trash_and_archive_unless_branch_is_named(oracle):
    rows = oracle.table(ln.Artifact)
    every = sorted(rows)
    main = [i for i in every if rows[i]["branch_id"] == 1]
    A = ln.Artifact
    assert ids(A.filter()) == main and A.filter().count() == len(main) < len(every)
    assert ids(A.filter(branch_id=-1)) == [i for i in every if rows[i]["branch_id"] == -1]
    assert ids(A.filter(branch_id__in=[-1, 0, 1])) == every
    assert ids(A.filter(branch__name__in=["archive", "main"])) == [
        i for i in every if rows[i]["branch_id"] in (0, 1)]
    # Naming the branch anywhere in the query lifts the default, also under NOT and OR.
    assert ids(A.exclude(branch_id=-1)) == [i for i in every if rows[i]["branch_id"] != -1]
    mixed = ln.Q(branch_id=0) | ln.Q(suffix=".jpg")
    assert ids(A.filter(mixed)) == oracle.ids(A, mixed)
    assert ids(ln.Storage.filter()) == oracle.ids(ln.Storage)
    assert len(ids(ln.Storage.filter())) < len(oracle.rows["core.storage"])


# ---- display -----------------------------------------------------------------------------

def _fields_of(text: str) -> list[str]:
    return re.findall(r"(?:\(|, )(\w+)=", text)


def test_record_reprs_have_the_seed_shape(oracle):
    record = ln.Record.get(name="Perturbation")
    text = repr(record)
    assert text.startswith("Record(uid='") and text.endswith(")")
    assert _fields_of(text) == RECORD_REPR_FIELDS
    assert "name='Perturbation'" in text and "is_type=True" in text
    assert re.search(r"created_at=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    artifact = ln.Artifact.filter(key__isnull=False).first()
    assert _fields_of(repr(artifact)) == ARTIFACT_REPR_FIELDS
    assert f"key={artifact.key!r}" in repr(artifact)
    user = ln.User.get(handle="alice")
    assert repr(user).startswith("User(uid='alice001', handle='alice', name='Alice Smith'")


def test_queryset_repr(oracle):
    expected = oracle.ids(ln.Artifact, suffix=".h5ad", size__gt=30_000)
    assert 0 < len(expected) <= 20
    text = repr(ln.Artifact.filter(suffix=".h5ad", size__gt=30_000))
    assert text.startswith(f"<ArtifactQuerySet ({len(expected)} rows) [Artifact(uid=")
    assert text.endswith(")]>")
    uids = re.findall(r"Artifact\(uid='(\w+)'", text)
    assert uids == [oracle.table(ln.Artifact)[i]["uid"] for i in expected]
    assert repr(ln.Artifact.filter(key="none such")) == "<ArtifactQuerySet (0 rows) []>"
    long = repr(ln.Artifact.filter())
    assert long.count("Artifact(uid=") == 20 and long.endswith(", ...]>")
    # Past 20 rows the repr still says how many match.
    assert long.startswith(f"<ArtifactQuerySet ({len(oracle.ids(ln.Artifact))} rows) [")
    assert repr(ln.Record.filter(name="IFNG")).startswith("<RecordQuerySet (")


def test_lookup(oracle):
    records = ln.Record.lookup()
    visible = [r for r in oracle.rows["core.record"].values() if r["branch_id"] == 1]
    names = {r["name"] for r in visible if r["name"] is not None}
    assert set(records.dict()) == names
    first_of = {}
    for r in sorted(visible, key=lambda r: r["id"]):
        first_of.setdefault(r["name"], r["id"])
    assert all(records.dict()[n].id == first_of[n] for n in names)
    # Attribute-safe keys: lower case, non-alphanumerics to "_".
    if "Experiment 1" in names:
        assert records.experiment_1.name == "Experiment 1"
    assert records.perturbation.name == "Perturbation"
    from lamina.models.base import to_attribute

    for name in names:  # "Control" and "control" share one attribute: the first saved wins
        assert to_attribute(getattr(records, to_attribute(name)).name) == to_attribute(name)
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", key) for key in dir(records))
    with pytest.raises(AttributeError, match=r"did you mean 'perturbation'"):
        records.perturbaton
    labels = ln.ULabel.lookup()
    assert labels.qc_pass.name == "qc:pass" and labels.pending_review.name == "pending review"
    uids = ln.ULabel.lookup(return_field="uid")
    assert uids.qc_pass == oracle.rows["core.ulabel"][labels.qc_pass.id]["uid"]
    assert uids.dict()["qc:pass"] == uids.qc_pass
    assert set(ln.User.lookup().dict()) == {u["handle"] for u in oracle.rows["core.user"].values()}
    assert ln.User.lookup().alice.name == "Alice Smith"
    by_root = ln.Storage.lookup(field="root", return_field="type")
    assert by_root.dict()["gs://bucket-b"] == "gs"
    with pytest.raises(ln.FieldError, match="did you mean 'name'"):
        ln.Record.lookup(field="nme")
    assert ln.Record.lookup()["Perturbation"] == records.perturbation
    assert "Lookup of" in repr(records)


def test_to_attribute_keys():
    from lamina.models.base import to_attribute

    assert to_attribute("Experiment 1") == "experiment_1"
    assert to_attribute("CD8-positive, alpha-beta T cell") == "cd8_positive_alpha_beta_t_cell"
    assert to_attribute("3' UTR") == "_3_utr"
    assert to_attribute("class") == "_class"
    assert to_attribute("  ") == "_"
    assert to_attribute("Zellen über") == "zellen_über"


def test_view_lists_registries_with_row_limits(oracle, caplog):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), caplog.at_level("INFO", logger="lamina"):
        ln.view(limit=3)
    text = out.getvalue()
    assert text.startswith("****************\n* module: core *\n****************\n")
    # Non-empty registries, alphabetically; bookkeeping ones (User, Space, Branch) hidden.
    shown = [line for line in text.splitlines() if re.fullmatch(r"[A-Z]\w+", line)]
    assert shown == ["Artifact", "Feature", "Record", "Schema", "Storage", "ULabel"]
    blocks = re.split(r"^(?:Artifact|Feature|Record|Schema|Storage|ULabel)$", text, flags=re.M)
    artifact_block = blocks[1]
    newest = oracle.ids(ln.Artifact)[::-1][:3]
    row_ids = [int(m) for m in re.findall(r"^(\d+)\s", artifact_block, flags=re.M)]
    assert row_ids[:3] == newest and len(set(row_ids)) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "! truncated query result to limit=3 Artifact objects" in warnings
    for model in (ln.Artifact, ln.Feature, ln.Record, ln.Schema, ln.Storage, ln.ULabel):
        truncated = f"! truncated query result to limit=3 {model.__name__} objects" in warnings
        assert truncated == (len(oracle.ids(model)) > 3), model


# ---- ln.sql ------------------------------------------------------------------------------

def test_sql_returns_pandas_or_polars(oracle):
    frame = ln.sql("SELECT id, suffix FROM artifact WHERE suffix = ? ORDER BY id", [".h5ad"])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["id"]) == sorted(i for i, r in oracle.table(ln.Artifact).items()
                                       if r["suffix"] == ".h5ad")
    frame = ln.sql("SELECT count(*) AS n FROM artifact a JOIN \"user\" u "
                   "ON a.created_by_id = u.id WHERE u.handle = 'alice'", polars=True)
    assert isinstance(frame, pl.DataFrame)
    assert frame["n"][0] == sum(r["created_by_id"] == 2
                                for r in oracle.table(ln.Artifact).values())
    explained = ln.sql("EXPLAIN SELECT * FROM record")
    assert len(explained) == 1


@pytest.mark.parametrize("statement", [
    "DROP VIEW artifact", "DROP TABLE artifact", "DELETE FROM artifact",
    "UPDATE artifact SET key = 'x'", "INSERT INTO artifact (id) VALUES (1000)",
    "CREATE TABLE t AS SELECT 1", "COPY artifact TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/other.db'", "SET threads = 1", "SELECT 1; DROP VIEW artifact",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/out.csv'", "EXPLAIN ANALYZE DROP VIEW artifact",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
])
def test_sql_refuses_anything_but_select(oracle, tmp_path, statement):
    count = ln.Artifact.filter().count()
    with pytest.raises(ln.ValidationError, match="read-only|exactly one statement"):
        ln.sql(statement.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert ln.Artifact.filter().count() == count
    assert len(ln.sql("SELECT id FROM artifact")) == qc.N_ARTIFACTS
