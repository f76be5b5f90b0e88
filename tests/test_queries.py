"""Enough query to use the registries: get() by id, uid, uid prefix and field, its errors,
filter(), and to_dataframe() (indexed by id, newest first, limited)."""

from __future__ import annotations

import pytest

import lamina as ln

ARTIFACT_COLUMNS = [
    "uid", "key", "description", "suffix", "kind", "otype", "size", "hash", "n_files",
    "n_observations", "version_tag", "is_latest", "is_locked", "created_at", "branch_id",
    "created_on_id", "space_id", "storage_id", "run_id", "schema_id", "created_by_id",
]


@pytest.fixture
def three(instance, tmp_path):
    """Two .txt artifacts and one .csv, saved in this order."""
    specs = [("notes/a.txt", b"alpha", "first"), ("notes/b.txt", b"beta", "second"),
             ("tables/c.csv", b"c\n1\n", "third")]
    saved = []
    for key, content, description in specs:
        path = tmp_path / key.replace("/", "_")
        path.write_bytes(content)
        saved.append(ln.Artifact(path, key=key, description=description).save())
    return saved


def test_get_by_id_uid_prefix_and_field(three):
    a, b, c = three
    assert ln.Artifact.get(a.id).uid == a.uid
    assert ln.Artifact.get(b.uid).id == b.id
    assert ln.Artifact.get(c.uid[:12]).id == c.id
    assert ln.Artifact.get(key="notes/b.txt").id == b.id
    assert ln.Artifact.get(description="third", suffix=".csv").id == c.id
    # get() on a QuerySet narrows within it.
    assert ln.Artifact.filter(suffix=".txt").get(key="notes/a.txt").id == a.id


def test_get_errors(three):
    a, _, c = three
    with pytest.raises(ln.DoesNotExist, match="notes/zzz"):
        ln.Artifact.get(key="notes/zzz")
    with pytest.raises(ln.DoesNotExist):
        ln.Artifact.get(10_000)
    with pytest.raises(ln.DoesNotExist):
        ln.Artifact.get("zzzzzzzzzzzzzzzzzzzz")
    with pytest.raises(ln.MultipleResultsFound):
        ln.Artifact.get(suffix=".txt")
    with pytest.raises(ln.DoesNotExist):  # the csv is not a .txt
        ln.Artifact.filter(suffix=".txt").get(c.id)
    # Both are lookup errors, as in Django.
    assert issubclass(ln.DoesNotExist, LookupError)
    assert issubclass(ln.MultipleResultsFound, LookupError)
    with pytest.raises(ln.ValidationError):
        ln.Artifact.get(3.5)
    a.delete()
    with pytest.raises(ln.DoesNotExist):  # trashed rows are hidden from get() too
        ln.Artifact.get(a.uid)


def test_filter(three):
    a, b, c = three
    assert {x.id for x in ln.Artifact.filter(suffix=".txt")} == {a.id, b.id}
    assert [x.id for x in ln.Artifact.filter(suffix=".csv")] == [c.id]
    assert ln.Artifact.filter(suffix=".json").count() == 0
    assert not ln.Artifact.filter(suffix=".json").exists()
    assert {x.id for x in ln.Artifact.filter(key__startswith="notes/")} == {a.id, b.id}
    assert [x.id for x in ln.Artifact.filter(suffix=".txt").filter(description="second")] == [
        b.id]
    assert ln.Artifact.filter(suffix=".txt").count() == len(ln.Artifact.filter(suffix=".txt"))
    assert ln.Artifact.filter(suffix=".txt").first().id == a.id  # by id when unordered


def test_to_dataframe_indexed_by_id_newest_first(three):
    a, b, c = three
    df = ln.Artifact.to_dataframe()
    assert df.index.name == "id"
    assert list(df.index) == [c.id, b.id, a.id]
    assert list(df.columns) == ARTIFACT_COLUMNS
    assert list(df["key"]) == ["tables/c.csv", "notes/b.txt", "notes/a.txt"]
    assert list(ln.Artifact.to_dataframe(limit=2).index) == [c.id, b.id]
    assert list(ln.Artifact.filter(suffix=".txt").to_dataframe().index) == [b.id, a.id]
    assert list(ln.Artifact.filter(suffix=".txt").order_by("id").to_dataframe().index) == [
        a.id, b.id]
    assert ln.Artifact.filter(suffix=".json").to_dataframe().empty


def test_to_dataframe_default_limit_is_100(local_root):
    ln.init(storage=local_root)
    records = [ln.Record(name=f"r{i:03d}").save() for i in range(105)]
    df = ln.Record.to_dataframe()
    assert len(df) == 100
    assert list(df.index) == [r.id for r in reversed(records)][:100]
    assert len(ln.Record.to_dataframe(limit=None)) == 105
    assert ln.Record.filter().count() == 105


def test_other_registries_are_queryable(instance):
    users = ln.User.to_dataframe()
    assert list(users["handle"]) == ["testuser1"]
    assert list(users["name"]) == ["Test User1"]
    storages = ln.Storage.to_dataframe()
    assert list(storages["root"]) == [instance.root]
    assert list(storages.index) == [instance.storage_id]
