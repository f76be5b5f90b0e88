"""Managed and linked storage: an instance writes, moves and deletes files only where it is the
manager; another instance's storage is read. And ``ln.view(df)``."""

from __future__ import annotations

import contextlib
import io

import pandas as pd
import pytest

import lamina as ln

from helpers import filesystem, local_only, objects_under, write_file



def test_a_new_storage_is_managed_by_the_current_instance(instance, tmp_path):
    second = str(tmp_path / "storage_2")
    storage = ln.Storage(second).save()
    assert storage.instance_uid == instance.uid
    ln.settings.storage = second
    artifact = ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    assert artifact.storage_id == storage.id
    assert artifact.path.startswith(storage.root + "/")
    assert artifact.load() == "a"


def test_linked_storage_is_read_never_written_or_deleted(root, tmp_path_factory, tmp_path):
    other = ln.init(storage=root)  # another instance, on a local or an S3 root
    shared = ln.Artifact(write_file(tmp_path, "shared.txt", "shared"), key="shared.txt").save()
    mine = ln.init(storage=str(tmp_path_factory.mktemp("mine")))
    linked = ln.Storage(root).save()
    assert linked.instance_uid == other.uid
    # Reading: an artifact row of this catalog that points at the linked storage.
    row = ln.Artifact(write_file(tmp_path, "local.txt", "local"), key="local.txt").save()
    row.storage = linked
    row.save()
    copied = {"uid": shared.uid, "suffix": shared.suffix}
    row._data.update(copied)
    row.save()
    assert ln.Artifact.get(key="local.txt").load() == "shared"
    # Writing there is refused, and says why.
    with pytest.raises(ln.InstanceError, match=f"managed by instance {other.uid}.*linked"):
        ln.settings.storage = root
    assert ln.settings.storage.root == mine.root
    before = objects_under(root)
    with pytest.raises(ln.InstanceError, match="never writes, moves or deletes"):
        ln.Artifact.get(key="local.txt").delete(permanent=True)
    assert ln.Artifact.filter(key="local.txt").count() == 1
    assert objects_under(root) == before
    assert filesystem(root).exists(f"{root}/.lamina/objects/{shared.uid}.txt")


@local_only
def test_a_storage_no_instance_manages_is_linked(instance, tmp_path):
    elsewhere = str(tmp_path / "elsewhere")
    storage = ln.Storage(elsewhere, instance_uid="notmine12345").save()
    with pytest.raises(ln.InstanceError, match="managed by instance notmine12345"):
        ln.settings.storage = elsewhere
    assert storage.instance_uid == "notmine12345"


@local_only
def test_view_of_a_dataframe_shows_its_dtypes(instance, tmp_path):
    ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ln.view(ln.Artifact.to_dataframe())
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["uid", "key"]
    assert lines[1].split()[0] in ("object", "str")  # text columns: pandas 2, pandas 3
    with pytest.raises(TypeError, match="ln.view\\(limit=...\\)"):
        ln.view(7)
    frame = pd.DataFrame({"n": [1, 2]})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ln.view(frame)
    assert [line.split() for line in out.getvalue().splitlines()[:3]] == [
        ["n"], ["int64"], ["0", "1"]]
