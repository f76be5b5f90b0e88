"""Bad input is refused with an error that says what was wrong, before anything is written:
the artifact table's version, its rows and the objects folder stay exactly as they were."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lamina as ln
from lamina.catalog import tables

from helpers import local_only, objects_under, read_bytes, reset_process_state


@pytest.fixture
def saved(instance, tmp_path):
    """One saved artifact, and a function returning what a bad call must not change."""
    path = tmp_path / "good.txt"
    path.write_text("good")
    artifact = ln.Artifact(path, key="good.txt").save()
    store = instance.store(tables.get("core.artifact"))

    def state():
        return (store.version(), store.snapshot().read(["id"]).num_rows,
                objects_under(instance.root))

    return artifact, state


@pytest.fixture
def txt(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("new content")
    return path


@local_only
def test_missing_path(saved, tmp_path):
    _, state = saved
    before = state()
    with pytest.raises(ln.InvalidPath, match="does not exist") as error:
        ln.Artifact(tmp_path / "absent.csv", key="absent.csv")
    assert "absent.csv" in str(error.value)
    with pytest.raises(ln.InvalidPath, match="local file or folder"):
        ln.Artifact(42)
    assert state() == before


@local_only
@pytest.mark.parametrize("call", [
    lambda p: ln.Artifact(p, sufix=".txt"),
    lambda p: ln.Artifact.filter(sufix=".txt"),
    lambda p: ln.Artifact.get(sufix=".txt"),
    lambda p: ln.Artifact.filter().order_by("-sufix"),
])
def test_unknown_field_suggests_the_close_one(saved, txt, call):
    _, state = saved
    before = state()
    with pytest.raises(ln.FieldError, match=r"'sufix'.*did you mean 'suffix'"):
        call(txt)
    assert state() == before


@local_only
def test_unknown_field_on_a_saved_record(saved):
    artifact, state = saved
    before = state()
    with pytest.raises(ln.FieldError, match="did you mean 'description'"):
        artifact.descripton = "typo"
    with pytest.raises(ln.FieldError, match="did you mean 'description'"):
        artifact.descripton  # noqa: B018
    artifact.save()  # nothing changed, nothing written
    assert state() == before


@pytest.mark.parametrize("kwargs, field", [
    ({"description": 123}, "description"),
    ({"version": 1.5}, "version_tag"),
    ({"kind": ["dataset"]}, "kind"),
    ({"is_latest": "yes"}, "is_latest"),
])
def test_wrong_value_type_in_the_constructor(saved, txt, kwargs, field):
    _, state = saved
    before = state()
    with pytest.raises(ln.ValidationError, match=f"Artifact.{field} expects"):
        ln.Artifact(txt, key="new.txt", **kwargs).save()
    assert state() == before


@local_only
def test_wrong_value_type_on_edit_and_in_filters(saved):
    artifact, state = saved
    before = state()
    with pytest.raises(ln.ValidationError, match="size expects a number"):
        artifact.size = "big"
    with pytest.raises(ln.ValidationError, match="description expects a string"):
        artifact.description = 5
    with pytest.raises(ln.ValidationError, match="size expects a number"):
        ln.Artifact.filter(size="big")
    artifact.save()
    assert state() == before
    assert ln.Artifact.get(artifact.id).size == 4


@local_only
@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", "/etc/escape.txt",
                                 "a//b.txt", "./a.txt", "s3://other-bucket/x.txt",
                                 "dir\\x.txt", ""])
def test_keys_that_could_escape_the_root(saved, txt, key):
    _, state = saved
    before = state()
    with pytest.raises(ln.InvalidPath, match="key"):
        ln.Artifact(txt, key=key).save()
    assert state() == before


@local_only
def test_key_must_keep_the_suffix(saved, txt):
    _, state = saved
    before = state()
    with pytest.raises(ln.InvalidPath, match="suffix '.txt'"):
        ln.Artifact(txt, key="new.csv")
    assert state() == before


@local_only
def test_bad_inputs_to_constructors_from_objects(saved):
    _, state = saved
    before = state()
    with pytest.raises(ln.ValidationError, match="DataFrame"):
        ln.Artifact.from_dataframe({"a": [1]}, key="a.parquet")
    with pytest.raises(ln.ValidationError, match="AnnData"):
        ln.Artifact.from_anndata(pd.DataFrame({"a": [1]}), key="a.h5ad")
    with pytest.raises(ln.InvalidPath, match="key"):
        ln.Artifact.from_dataframe(pd.DataFrame({"a": [1]}), key="../a.parquet")
    with pytest.raises(ln.ValidationError, match="revises expects an Artifact"):
        ln.Artifact.from_dataframe(pd.DataFrame({"a": [1]}), key="a.parquet", revises="v1")
    assert state() == before


@local_only
def test_bookkeeping_fields_cannot_be_passed(saved, txt):
    _, state = saved
    before = state()
    with pytest.raises(ln.FieldError, match="set by lamina"):
        ln.Artifact(txt, id=7)
    with pytest.raises(ln.FieldError, match="set by lamina"):
        ln.Record(name="x", created_by_id=99)
    assert state() == before


def test_init_over_another_instance_changes_nothing(saved, monkeypatch):
    artifact, state = saved
    root = ln.current().root
    meta = read_bytes(root, f"{root}/.lamina/instance.json")
    before = state()
    reset_process_state()
    monkeypatch.setenv("LAMINA_USER_HANDLE", "someone-else")
    with pytest.raises(ln.InstanceError, match="already managed by instance testuser1/"):
        ln.init(storage=root, name="mine")
    assert read_bytes(root, f"{root}/.lamina/instance.json") == meta
    monkeypatch.setenv("LAMINA_USER_HANDLE", "testuser1")
    ln.connect(root)
    assert state() == before
    assert json.loads(meta)["uid"] == ln.current().uid
    assert ln.Artifact.get(artifact.uid).key == "good.txt"


def test_unsupported_storage_roots(tmp_path):
    with pytest.raises(ln.InvalidPath, match="unsupported storage root"):
        ln.init(storage="ftp://host/folder")
    with pytest.raises(ln.InvalidPath, match="names no bucket"):
        ln.init(storage="s3://")
    with pytest.raises(ln.InvalidPath, match="empty"):
        ln.init(storage="  ")
    assert list(tmp_path.iterdir()) == []


def test_an_error_whose_text_says_forbidden_is_not_taken_for_a_refused_write(root, tmp_path):
    """A file that went away before its save is reported as such, though its path holds the
    words a refusing store uses."""
    ln.init(storage=root)
    folder = tmp_path / "Forbidden - Access Denied"
    folder.mkdir()
    path = folder / "data.txt"
    path.write_text("hello")
    artifact = ln.Artifact(str(path), key="data.txt")
    path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        artifact.save()
    assert not isinstance(info.value, ln.PermissionDenied)
    assert "Access Denied" in str(info.value)
    assert ln.Artifact.filter().count() == 0
