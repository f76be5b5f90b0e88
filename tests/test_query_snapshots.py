"""What a session keeps per table version (small registries copied into memory, related ids
looked up before the main statement, related rows of shown pages) stays right when another
process commits: every answer below is checked after a real second process saved."""

from __future__ import annotations

import pytest

import lamina as ln
from lamina import bionty as bt
from lamina.engine import id_order, session

from helpers import each_way, new_s3_root, python, s3_requests, wait_until_lasted, write_file


def settled(call):
    """``call()`` made again once the table versions it reads have lasted long enough to be
    served from memory; its second answer."""
    call()
    wait_until_lasted()
    return call()


def test_a_small_registry_is_served_from_memory_and_sees_another_processes_save(instance):
    ln.Record(name="first").save()
    ln.Record(name="second").save()
    assert settled(lambda: ln.Record.get(name="first")).name == "first"
    # The repeated reads are answered without the registry's Parquet files.
    assert "READ_PARQUET" not in ln.Record.filter(name="first").explain().upper()

    python(f"""
        ln.connect({instance.root!r})
        ln.Record(name="third").save()
        record = ln.Record.get(name="first")
        record.name = "first, renamed"
        record.save()
    """)
    def check():
        assert ln.Record.get(name="third").name == "third"
        assert ln.Record.get(name="first, renamed").id == ln.Record.get(name="second").id - 1
        assert ln.Record.filter(name="first").count() == 0

    each_way(check)
    assert sorted(ln.Record.filter().values_list("name", flat=True)) == [
        "first, renamed", "second", "third"]


def test_included_related_fields_follow_another_processes_changes(instance, tmp_path):
    artifact = ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    dmso = ln.Record(name="DMSO").save()
    artifact.records.add(dmso)
    shown = settled(lambda: ln.Artifact.to_dataframe(include=["records__name",
                                                                 "created_by__handle"]))
    assert shown.loc[artifact.id, "records__name"] == {"DMSO"}
    assert shown.loc[artifact.id, "created_by__handle"] == "testuser1"

    python(f"""
        ln.connect({instance.root!r})
        record = ln.Record.get(name="DMSO")
        record.name = "DMSO 0.1%"
        record.save()
        artifact = ln.Artifact.get(key="a.txt")
        artifact.records.add(ln.Record(name="IFNG").save())
    """)
    def check():
        shown = ln.Artifact.to_dataframe(include=["records__name", "created_by__handle"])
        assert shown.loc[artifact.id, "records__name"] == {"DMSO 0.1%", "IFNG"}

    each_way(check)


def test_a_relation_looked_up_through_another_registry_follows_its_changes(root, tmp_path):
    """``schemas__genes__symbol``: the schema ids come from the gene registry's rows too, so
    a change to a gene alone (no schema or artifact commit) changes the answer."""
    instance = ln.init(storage=root, modules="bionty")
    genes = ln.save([bt.Gene(symbol="CD8A"), bt.Gene(symbol="CD4")])
    with_cd8a = ln.Schema([genes[0]], itype="bionty.Gene.symbol", name="cd8a").save()
    with_cd4 = ln.Schema([genes[1]], itype="bionty.Gene.symbol", name="cd4").save()
    first = ln.Artifact(write_file(tmp_path, "1.txt", "1"), key="1.txt").save()
    second = ln.Artifact(write_file(tmp_path, "2.txt", "2"), key="2.txt").save()
    first.schemas.add(with_cd8a)
    second.schemas.add(with_cd4)

    def ids(**conditions) -> list[int]:
        return sorted(ln.Artifact.filter(**conditions).values_list("id", flat=True))

    assert settled(lambda: ids(schemas__genes__symbol="CD8A")) == [first.id]
    assert settled(lambda: ids(schemas__in=ln.Schema.filter(genes__symbol="CD4"))) == [
        second.id]
    assert ln.Artifact.filter(schemas__genes__symbol="CD8A").count() == 1

    python(f"""
        from lamina import bionty as bt
        ln.connect({instance.root!r})
        gene = bt.Gene.get(symbol="CD4")
        gene.symbol = "CD8A"
        gene.save()
    """)
    def check():
        assert ids(schemas__genes__symbol="CD8A") == [first.id, second.id]
        assert ln.Artifact.filter(schemas__genes__symbol="CD8A").count() == 2
        assert ids(schemas__in=ln.Schema.filter(genes__symbol="CD4")) == []

    each_way(check)


def test_get_from_memory_keeps_the_rules_of_the_statement(instance):
    """get() on a registry served from memory answers as the SQL statement does: two matches
    are an error, trashed rows are found only on their branch, values compare exactly."""
    ln.Record(name="twin").save()
    ln.Record(name="twin").save()
    gone = ln.Record(name="gone").save()
    gone.delete()
    kept = ln.Record(name="Kept").save()
    def check():
        with pytest.raises(ln.MultipleResultsFound):
            ln.Record.get(name="twin")
        with pytest.raises(ln.DoesNotExist):
            ln.Record.get(name="gone")
        with pytest.raises(ln.DoesNotExist):
            ln.Record.get(name="kept")
        assert ln.Record.get(name="gone", branch_id=-1).id == gone.id
        assert ln.Record.get(kept.uid).name == "Kept"
        assert ln.Record.get(id=kept.id, name="Kept").uid == kept.uid
        with pytest.raises(ln.DoesNotExist):
            ln.Record.get(id=kept.id, name="twin")

    each_way(check)


def test_on_s3_a_registry_served_from_memory_costs_one_freshness_check_a_query(s3_endpoint):
    """The copy adds no request: once made (by the first statement that reads the registry;
    a lookup by value fetches only the files that may hold its value), a query of the
    registry reads no data file, only the one request that tells whether the table moved (a
    listing of its log after the version seen)."""
    ln.init(storage=new_s3_root())
    ln.save([ln.Record(name=f"r{i}") for i in range(5)])
    ln.Record(name="last").save()
    settled(lambda: (ln.Record.get(name="r3"), ln.Record.filter(name__startswith="r").count()))
    for call in (lambda: ln.Record.get(name="r3"),
                 lambda: ln.Record.filter(name__startswith="r").count()):
        requests = s3_requests(call)
        assert len(requests) == 1 and "/record/_delta_log/" in requests[0][1], requests


def test_displays_from_the_newest_rows_in_memory_follow_another_processes_commits(
        instance, tmp_path, monkeypatch):
    """A registry too large to copy whole keeps its newest rows in memory for displays; after
    another process saves, renames and trashes artifacts, the displays show the new version,
    and a filter matching older rows than the copy holds still finds them. (Sizes scaled
    down: the copy holds 4 ids, the displays show 2 rows.)"""
    monkeypatch.setattr(session, "IN_MEMORY_VALUES", 1)  # nothing is copied whole
    monkeypatch.setattr(session, "NEWEST_IN_MEMORY_IDS", 4)
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", 1)
    keys = ["old/0.txt", "old/1.txt", "new/2.txt", "new/3.txt", "new/4.txt"]
    saved = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=key).save()
             for i, key in enumerate(keys)]
    ids = [a.id for a in saved]

    shown = settled(lambda: ln.Artifact.to_dataframe(limit=2))
    assert list(shown.index) == [ids[4], ids[3]]
    assert session.session_for(instance).newest_rows(ln.Artifact._spec) is not None

    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact.get(key="new/4.txt").delete()
        renamed = ln.Artifact.get(key="new/3.txt")
        renamed.key = "new/3-renamed.txt"
        renamed.save()
        ln.Artifact({str(write_file(tmp_path, "5.txt", "5"))!r}, key="new/5.txt").save()
    """)
    def check():
        frame = ln.Artifact.to_dataframe(limit=2)
        newest = ln.Artifact.get(key="new/5.txt").id
        assert list(frame.index) == [newest, ids[3]]
        assert frame.loc[ids[3], "key"] == "new/3-renamed.txt"
        assert list(ln.Artifact.filter(key__startswith="new/").to_dataframe(limit=2).index) == [
            newest, ids[3]]
        assert list(ln.Artifact.filter(key__startswith="old/").to_dataframe(limit=2).index) == [
            ids[1], ids[0]]
        assert list(ln.Artifact.filter(key__contains="renamed").to_dataframe(limit=2).index) == [
            ids[3]]

    each_way(check)


def test_relation_counts_and_displays_from_list_indexes_follow_another_processes_commits(
        instance, tmp_path):
    """Counts and displays of ``records=``, ``records__name=`` and ``records__in=`` are
    answered from an index of the artifacts' record lists once a version has lasted; after
    another process links, unlinks, trashes and saves, they give the new version's answer."""
    a, b = ln.Record(name="A").save(), ln.Record(name="B").save()
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"{i}.txt").save()
            for i in range(4)]
    arts[0].records.add(a)
    arts[1].records.add(a, b)
    arts[2].records.add(b)

    def shown(**conditions) -> list[int]:
        return list(ln.Artifact.filter(**conditions).to_dataframe().index)

    assert settled(lambda: ln.Artifact.filter(records=a).count()) == 2
    assert settled(lambda: shown(records__name="A")) == [arts[1].id, arts[0].id]
    assert ln.Artifact.filter(records__in=[a, b]).count() == 3
    assert ln.Artifact.filter(records=a).filter(records=b).count() == 1

    python(f"""
        ln.connect({instance.root!r})
        a = ln.Record.get(name="A")
        ln.Artifact.get(key="0.txt").records.remove(a)
        ln.Artifact.get(key="1.txt").delete()
        ln.Artifact.get(key="2.txt").records.add(a)
        new = ln.Artifact({str(write_file(tmp_path, "4.txt", "4"))!r}, key="4.txt").save()
        new.records.add(a)
    """)
    def check():
        newest = ln.Artifact.get(key="4.txt").id
        assert ln.Artifact.filter(records=a).count() == 2
        assert shown(records__name="A") == [newest, arts[2].id]
        assert shown(records=a, key="2.txt") == [arts[2].id]
        assert ln.Artifact.filter(records__in=[a, b]).count() == 2
        assert ln.Artifact.filter(records=a).filter(records=b).count() == 1
        assert shown(records=b) == [arts[2].id]

    each_way(check)


def test_rows_of_relation_displays_read_by_id_follow_another_processes_commits(
        instance, tmp_path, monkeypatch):
    """Rows a relation display reads by id from the files (older than the newest rows held
    in memory) are kept for their version only: after another process renames and unlinks
    old artifacts, the displays show the new values and rows, alone and with another
    condition. (Sizes scaled down: the newest 2 ids are held.)"""
    monkeypatch.setattr(session, "IN_MEMORY_VALUES", 1)
    monkeypatch.setattr(session, "NEWEST_IN_MEMORY_IDS", 2)
    monkeypatch.setattr(id_order, "NEWEST_WINDOW", 1)
    a = ln.Record(name="A").save()
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"old/{i}.txt").save()
            for i in range(6)]
    for artifact in (arts[0], arts[1], arts[2], arts[5]):
        artifact.records.add(a)

    def shown(*calls) -> dict[int, str]:
        qs = ln.Artifact.filter(records=a)
        for conditions in calls:
            qs = qs.filter(**conditions)
        frame = qs.to_dataframe()
        return dict(zip(frame.index, frame["key"]))

    expected = {arts[i].id: f"old/{i}.txt" for i in (5, 2, 1, 0)}
    assert settled(shown) == expected
    assert shown({"key__startswith": "old/"}) == expected
    python(f"""
        ln.connect({instance.root!r})
        renamed = ln.Artifact.get(key="old/0.txt")
        renamed.key = "new/0.txt"
        renamed.save()
        ln.Artifact.get(key="old/1.txt").records.remove(ln.Record.get(name="A"))
    """)
    def check():
        assert shown() == {arts[5].id: "old/5.txt", arts[2].id: "old/2.txt",
                           arts[0].id: "new/0.txt"}
        assert shown({"key__startswith": "old/"}) == {arts[5].id: "old/5.txt",
                                                      arts[2].id: "old/2.txt"}
        assert shown({"key__startswith": "new/"}) == {arts[0].id: "new/0.txt"}

    each_way(check)


def test_counts_from_list_indexes_equal_what_the_links_say(local_root, tmp_path):
    """Counts of relation filters alone, combined, negated, with another condition, or asking
    for no linked record, as an index of the lists or a statement answers them, against what
    the links saved say (computed here, from the links as written)."""
    ln.init(storage=local_root)
    records = ln.save([ln.Record(name=name) for name in "ABCD"])
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"{i}.txt").save()
            for i in range(7)]
    links = {0: "A", 1: "AB", 2: "B", 3: "", 4: "ABC", 5: "C", 6: "A"}
    by_name = {r.name: r for r in records}
    for i, names in links.items():
        if names:
            arts[i].records.add(*[by_name[n] for n in names])
    arts[6].delete()  # trashed: counted on no filter of the main branch
    live = {i: set(n) for i, n in links.items() if i != 6}

    def expected(test) -> int:
        return sum(1 for names in live.values() if test(names))

    def check():
        A, B, C, D = (by_name[n] for n in "ABCD")
        def count(*q, **kw):
            return ln.Artifact.filter(*q, **kw).count()

        assert count(records=A) == expected(lambda s: "A" in s)
        assert count(records=D) == 0
        assert count(records__name="B") == expected(lambda s: "B" in s)
        assert count(records__in=[B, C]) == expected(lambda s: s & {"B", "C"})
        assert count(records__name__in=["A", "C"]) == expected(lambda s: s & {"A", "C"})
        assert ln.Artifact.filter(records=A).filter(records=B).count() == expected(
            lambda s: {"A", "B"} <= s)
        assert count(records=A, key="0.txt") == 1
        assert count(ln.Q(records=A) | ln.Q(records=C)) == expected(lambda s: s & {"A", "C"})
        assert ln.Artifact.filter(records=A).exclude(records=B).count() == expected(
            lambda s: "A" in s and "B" not in s)
        assert count(records__isnull=True) == expected(lambda s: not s)
        assert ln.Artifact.filter(records=A, branch_id=-1).count() == 1

    each_way(check)


def test_full_relation_reads_and_other_orders_follow_another_processes_commits(
        instance, tmp_path):
    """All the rows of a relation filter with another condition (the candidates' kept
    columns, then rows by id) and a display ordered by key (the first ids, then their rows)
    show the new version after another process renames, unlinks, trashes and saves."""
    a = ln.Record(name="A").save()
    arts = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"k{i}.txt").save()
            for i in range(5)]
    for artifact in arts[:4]:
        artifact.records.add(a)

    def full(**conditions) -> dict[int, str]:
        frame = ln.Artifact.filter(records=a, **conditions).to_dataframe(limit=None)
        return dict(zip(frame.index, frame["key"]))

    def by_key() -> list[str]:
        return list(ln.Artifact.filter().order_by("-key").to_dataframe(limit=3)["key"])

    assert settled(lambda: full(key__startswith="k")) == {
        arts[i].id: f"k{i}.txt" for i in (3, 2, 1, 0)}
    assert by_key() == ["k4.txt", "k3.txt", "k2.txt"]
    python(f"""
        ln.connect({instance.root!r})
        renamed = ln.Artifact.get(key="k0.txt")
        renamed.key = "z0.txt"
        renamed.save()
        ln.Artifact.get(key="k1.txt").records.remove(ln.Record.get(name="A"))
        ln.Artifact.get(key="k4.txt").delete()
        new = ln.Artifact({str(write_file(tmp_path, "5.txt", "5"))!r}, key="k5.txt").save()
        new.records.add(ln.Record.get(name="A"))
    """)
    def check():
        newest = ln.Artifact.get(key="k5.txt").id
        assert full(key__startswith="k") == {newest: "k5.txt", arts[3].id: "k3.txt",
                                             arts[2].id: "k2.txt"}
        assert full(key__startswith="z") == {arts[0].id: "z0.txt"}
        assert by_key() == ["z0.txt", "k5.txt", "k3.txt"]

    each_way(check)
