"""Two processes are two users: what one saves is never undone by the other's stale copy, ids
are never reused, and nothing is left pointing at a deleted row. Checked on the Delta tables
themselves, read with deltalake, not through lamina's query path."""

from __future__ import annotations

import os
import time

import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

import lamina as ln
from lamina.catalog import settings, store as store_module
from lamina.errors import DoesNotExist, InvalidPath, ValidationError

from helpers import filesystem, local_only, new_s3_root, python, s3_requests, spawn


def stored_rows(root: str, table: str) -> dict[int, dict]:
    """The rows of ``core.<table>`` by id, straight from its Delta table."""
    options = None
    if root.startswith("s3://"):
        options = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
                   "AWS_REGION": os.environ["AWS_REGION"]}
    try:
        delta = DeltaTable(f"{root}/.lamina/catalog/core/{table}", storage_options=options)
    except TableNotFoundError:  # nothing was ever written to it
        return {}
    return {row["id"]: row for row in delta.to_pyarrow_table().to_pylist()}


def saved_file(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_stale_save_keeps_links_and_feature_values_of_another_process(instance, tmp_path):
    ln.Feature(name="temperature", dtype=float).save()
    artifact = ln.Artifact(saved_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    # Another user links a record and annotates a value after we loaded the artifact.
    python(f"""
        ln.connect({instance.root!r})
        artifact = ln.Artifact.get(key="a.txt")
        experiment = ln.Record(name="Experiment 1").save()
        artifact.records.add(experiment)
        artifact.features.add_values({{"temperature": 30.5}})
    """)
    artifact.description = "described by us"
    artifact.save()

    stored = stored_rows(instance.root, "artifact")[artifact.id]
    records = {r["name"]: i for i, r in stored_rows(instance.root, "record").items()}
    features = {r["name"]: i for i, r in stored_rows(instance.root, "feature").items()}
    assert stored["description"] == "described by us"
    assert stored["records"] == [records["Experiment 1"]]
    assert stored[f"f_{features['temperature']}"] == 30.5
    # Our copy now shows what is stored, others' changes included.
    assert artifact.records.to_list()[0].name == "Experiment 1"


def test_two_processes_changing_different_fields_both_keep_their_change(instance):
    record = ln.Record(name="sample", description="first description").save()
    python(f"""
        ln.connect({instance.root!r})
        record = ln.Record.get(name="sample")
        record.description = "their description"
        record.save()
    """)
    record.name = "renamed by us"  # our copy still holds the first description
    record.save()

    stored = stored_rows(instance.root, "record")[record.id]
    assert stored["name"] == "renamed by us"
    assert stored["description"] == "their description"


def test_four_processes_linking_one_artifact_at_once_keep_every_link(instance, tmp_path):
    artifact = ln.Artifact(saved_file(tmp_path, "shared.txt", "shared"), key="shared.txt").save()
    names = [f"label-{p}-{i}" for p in range(4) for i in range(3)]
    label_ids = {record.name: record.id for record in
                 ln.save([ln.Record(name=name) for name in names])}
    go = settings.home() / "go"
    children = [spawn(f"""
        import time
        ln.connect({instance.root!r})
        artifact = ln.Artifact.get(key="shared.txt")
        mine = [ln.Record.get(name=f"label-{p}-{{i}}") for i in range(3)]
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        for record in mine:
            artifact.records.add(record)
    """) for p in range(4)]
    go.write_text("go")
    for child in children:
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr

    stored = stored_rows(instance.root, "artifact")[artifact.id]
    assert sorted(stored["records"]) == sorted(label_ids.values())


def test_ids_are_never_reused_after_the_newest_row_is_deleted(instance):
    first = ln.Record(name="first").save()
    newest = ln.Record(name="newest").save()
    newest_id = newest.id
    # Another process deletes the newest row; the next insert, from either process, gets a
    # fresh id.
    python(f"""
        ln.connect({instance.root!r})
        ln.Record.get(name="newest").delete(permanent=True)
    """)
    assert newest_id not in stored_rows(instance.root, "record")
    out = python(f"""
        ln.connect({instance.root!r})
        print(ln.Record(name="theirs").save().id)
    """).stdout
    theirs = int(out.split()[-1])
    ours = ln.Record(name="ours").save().id
    assert theirs > newest_id and ours > theirs > first.id
    # Compaction rewrites the files; the mark stays.
    instance.store(ln.Record._spec).compact()
    assert ln.Record(name="after compaction").save().id > ours


def test_a_linked_record_cannot_be_deleted_and_the_error_names_the_link(instance, tmp_path):
    artifact = ln.Artifact(saved_file(tmp_path, "linked.txt", "linked"), key="linked.txt").save()
    record = ln.Record(name="Experiment 7").save()
    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact.get(key="linked.txt").records.add(ln.Record.get(name="Experiment 7"))
    """)
    with pytest.raises(ValidationError, match=r"Experiment 7.*Artifact\.records"):
        record.delete(permanent=True)
    assert record.id in stored_rows(instance.root, "record")

    artifact.records.remove(record)
    record.delete(permanent=True)
    assert record.id not in stored_rows(instance.root, "record")
    new = ln.Record(name="Experiment 8").save()
    assert new.id != record.id
    assert stored_rows(instance.root, "artifact")[artifact.id]["records"] in ([], None)


def test_a_record_used_as_a_feature_value_cannot_be_deleted(instance, tmp_path):
    ln.Feature(name="perturbation", dtype=ln.Record).save()
    artifact = ln.Artifact(saved_file(tmp_path, "p.txt", "p"), key="p.txt").save()
    dmso = ln.Record(name="DMSO").save()
    artifact.features.add_values({"perturbation": "DMSO"})
    artifact.records.remove(dmso)  # only the feature value still names it
    with pytest.raises(ValidationError, match=r"DMSO.*Artifact\.f_\d+"):
        dmso.delete(permanent=True)


@local_only
def test_deleting_what_no_longer_exists_says_so_and_names_it(instance, tmp_path):
    artifact = ln.Artifact(saved_file(tmp_path, "gone.txt", "gone"), key="gone.txt").save()
    stale = ln.Artifact.get(key="gone.txt")
    artifact.delete(permanent=True)
    with pytest.raises(DoesNotExist, match=r"Artifact 'gone.txt' \(id \d+\) was deleted"):
        artifact.delete()
    with pytest.raises(DoesNotExist, match=r"Artifact 'gone.txt' \(id \d+\) no longer exists"):
        stale.delete(permanent=True)
    record = ln.Record(name="twice").save()
    record.delete(permanent=True)
    with pytest.raises(DoesNotExist, match="Record 'twice'"):
        record.delete(permanent=True)
    with pytest.raises(DoesNotExist, match="Record 'twice'"):
        record.save()


@local_only
@pytest.mark.parametrize("key", ["evil\x00.txt", "tab\there.txt", "line\nbreak.txt",
                                 "bell\x07.txt", "del\x7f.txt"])
def test_keys_with_control_characters_are_refused_naming_the_key(instance, tmp_path, key):
    path = saved_file(tmp_path, "c.txt", "c")
    with pytest.raises(InvalidPath, match="control character") as info:
        ln.Artifact(path, key=key)
    assert repr(key) in str(info.value)
    assert stored_rows(instance.root, "artifact") == {}


@local_only
def test_moving_to_the_trash_keeps_others_links(instance, tmp_path):
    artifact = ln.Artifact(saved_file(tmp_path, "t.txt", "t"), key="t.txt").save()
    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact.get(key="t.txt").records.add(ln.Record(name="late link").save())
    """)
    artifact.delete()
    stored = stored_rows(instance.root, "artifact")[artifact.id]
    assert stored["branch_id"] == -1 and len(stored["records"]) == 1
    artifact.restore()
    assert stored_rows(instance.root, "artifact")[artifact.id]["branch_id"] == 1


def test_gc_removes_only_orphans_while_another_process_saves(instance, tmp_path):
    root = instance.root
    kept = ln.Artifact(saved_file(tmp_path, "kept.txt", "kept"), key="kept.txt").save()
    fs = filesystem(root)
    objects_dir = f"{root}/.lamina/objects"
    orphan = f"{objects_dir}/{'O' * 16}0000.txt"  # a killed save's upload: no row names it
    partial = f"{objects_dir}/{kept.uid}.txt.partial-elsewhere-1"  # a killed local copy
    fs.pipe_file(orphan, b"orphan")
    fs.pipe_file(partial, b"half")
    grace = 3
    time.sleep(grace + 0.5)

    listed = ln.gc(grace=grace, dry_run=True)
    assert sorted((o.path, o.size) for o in listed.orphans) == sorted([(orphan, 6), (partial, 4)])
    assert fs.exists(orphan) and fs.exists(partial)

    # Another user saves continuously while gc runs again and again.
    go = settings.home() / "go"
    child = spawn(f"""
        import tempfile
        ln.connect({root!r})
        folder = tempfile.mkdtemp()
        open({str(go)!r}, "w").close()
        for i in range(12):
            path = os.path.join(folder, f"{{i}}.txt")
            with open(path, "w") as f:
                f.write(f"concurrent {{i}}")
            ln.Artifact(path, key=f"concurrent/{{i}}.txt").save()
    """)
    while not go.exists():
        time.sleep(0.01)
    removed = []
    while child.poll() is None:
        removed.extend(o.path for o in ln.gc(grace=grace).orphans)
    _, stderr = child.communicate()
    assert child.returncode == 0, stderr
    removed.extend(o.path for o in ln.gc(grace=grace).orphans)

    assert sorted(set(removed)) == sorted([orphan, partial])
    rows = stored_rows(root, "artifact").values()
    assert len(rows) == 13
    for row in rows:
        assert fs.exists(f"{objects_dir}/{row['uid']}{row['suffix']}"), row["key"]
    left = sorted(path.rsplit("/", 1)[-1] for path in fs.ls(objects_dir, detail=False))
    assert left == sorted(f"{row['uid']}{row['suffix']}" for row in rows)


@local_only
def test_gc_from_the_command_line_lists_then_removes(instance, tmp_path):
    orphan = os.path.join(instance.root, ".lamina", "objects", "Z" * 16 + "0000.csv")
    os.makedirs(os.path.dirname(orphan), exist_ok=True)
    with open(orphan, "w") as f:
        f.write("a,b\n")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    listed = python(f"ln.connect({instance.root!r})\n"
                    "from lamina.cli import main\nmain(['gc', '--dry-run'])").stdout
    assert "would remove 1 orphan" in listed and orphan in listed and os.path.exists(orphan)
    done = python(f"ln.connect({instance.root!r})\n"
                  "from lamina.cli import main\nmain(['gc'])").stdout
    assert "removed 1 orphan" in done and not os.path.exists(orphan)


def test_queryset_update_sets_fields_of_every_match_in_one_commit(instance, tmp_path):
    records = ln.save([ln.Record(name=f"batch-{i}") for i in range(5)] + [ln.Record(name="other")])
    linked = ln.Artifact(saved_file(tmp_path, "u.txt", "u"), key="u.txt").save()
    linked.records.add(records[0])
    version = instance.store(ln.Record._spec).version()

    changed = ln.Record.filter(name__startswith="batch-").update(description="bulk edited")

    assert changed == 5
    assert instance.store(ln.Record._spec).version() == version + 1
    stored = stored_rows(instance.root, "record")
    assert {r["name"]: r["description"] for r in stored.values()} == {
        **{f"batch-{i}": "bulk edited" for i in range(5)}, "other": None}
    assert stored_rows(instance.root, "artifact")[linked.id]["records"] == [records[0].id]
    assert ln.Record.filter(name="other").update(description=None) == 0


@local_only
def test_queryset_update_refuses_what_it_cannot_set(instance):
    ln.Record(name="r").save()
    with pytest.raises(ln.FieldError, match="did you mean 'description'"):
        ln.Record.filter().update(descripton="x")
    with pytest.raises(ValidationError, match="Record.name expects"):
        ln.Record.filter().update(name=3)
    with pytest.raises(ln.FieldError, match="holds many records"):
        ln.Artifact.filter().update(records=[])


def test_a_warm_save_on_s3_makes_a_bounded_number_of_requests(s3_endpoint, tmp_path,
                                                              monkeypatch):
    """Each request is a round trip to the bucket; a change that adds one fails here."""
    # A commit skips its freshness check when the lookups confirmed the version within this
    # window: widened, so that the count does not depend on how loaded the machine is.
    monkeypatch.setattr(store_module, "SEEN_LATELY_SECONDS", 60.0)
    ln.init(storage=new_s3_root())
    for i in range(3):
        ln.Artifact(saved_file(tmp_path, f"warm{i}.txt", f"warm {i}"), key=f"w/{i}.txt").save()
    ln.Record(name="warm").save()
    path = saved_file(tmp_path, "new.txt", "new content")

    artifact_save = s3_requests(lambda: ln.Artifact(path, key="new.txt").save())
    record_save = s3_requests(lambda: ln.Record(name="new").save())

    # artifact: the content check's and the key lookup's freshness check (one LIST of the log
    # after the version last seen), then the object, data file, log entry and checkpoint
    # PUTs. The commit plans on the version those lookups confirmed (no request of its own),
    # reads nothing back, and checks for a writer holding the table's turn only when other
    # writers committed lately (none here).
    assert len(artifact_save) <= 6, artifact_save
    assert sum(method == "PUT" for method, _ in artifact_save) == 4, artifact_save
    # record: a freshness check (none when the table was confirmed within the last second),
    # the data file, the log entry and its checkpoint
    assert len(record_save) <= 4, record_save
    assert sum(method == "PUT" for method, _ in record_save) == 3, record_save
    # Neither reads its own commit back (deltalake listed the log and read its entry twice).
    # (A listing of the log after the version last seen is the freshness check, not a read.)
    for method, url in artifact_save + record_save:
        reads_log_entry = method == "GET" and "_delta_log" in url and "list-type=" not in url
        assert not reads_log_entry, (method, url)


def test_a_constraint_another_tool_added_to_a_table_holds_for_lamina_saves(instance):
    ln.Record(name="before").save()
    # Another Delta writer adds a CHECK constraint (writer protocol 3): an append must now be
    # checked against it, which lamina's own append commit does not do; deltalake's does.
    options = None
    if instance.root.startswith("s3://"):
        options = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
                   "AWS_REGION": os.environ["AWS_REGION"]}
    uri = f"{instance.root}/.lamina/catalog/core/record"
    DeltaTable(uri, storage_options=options).alter.add_constraint(
        {"name_not_rejected": "name <> 'rejected'"})

    with pytest.raises(DeltaError, match="failed validation check"):
        ln.Record(name="rejected").save()
    ln.Record(name="after").save()

    assert sorted(r["name"] for r in stored_rows(instance.root, "record").values()) == [
        "after", "before"]


def test_a_link_to_a_record_another_process_deleted_is_refused(instance, tmp_path):
    artifact = ln.Artifact(saved_file(tmp_path, "l.txt", "l"), key="l.txt").save()
    stale = ln.Record(name="short-lived").save()
    python(f"""
        ln.connect({instance.root!r})
        ln.Record.get(name="short-lived").delete(permanent=True)
    """)
    with pytest.raises(DoesNotExist, match=f"Record {stale.id} no longer exist"):
        artifact.records.add(stale)
    assert stored_rows(instance.root, "artifact")[artifact.id]["records"] is None
