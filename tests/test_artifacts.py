"""Artifacts: identity (hash, suffix, uid), where saving puts the object, de-duplication,
versions, edits, trash and permanent deletion, and reading the data back on every root.

Expected hashes are computed here with hashlib from LaminDB's rule, not taken from lamina."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lamina as ln
from lamina.catalog import objects
from lamina.catalog.ids import BASE62

from helpers import exists, local_only, objects_under, read_bytes


def b64_22(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


def lamindb_file_hash(data: bytes, chunk: int) -> str:
    if len(data) <= chunk:
        return b64_22(hashlib.md5(data).digest())
    first, last = data[:chunk], data[-chunk:]
    return b64_22(hashlib.sha1(hashlib.sha1(first).digest() + hashlib.sha1(last).digest())
                  .digest())


def lamindb_folder_hash(file_hashes: list[str]) -> str:
    joined = b"".join(hashlib.md5(h.encode()).digest() for h in sorted(file_hashes))
    return b64_22(hashlib.md5(joined).digest())


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ---- identity rules (no instance needed) --------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), chunk=st.integers(min_value=1, max_value=128))
def test_hash_file_follows_lamindb_rule(tmp_path_factory, data, chunk):
    path = tmp_path_factory.mktemp("h") / "blob.bin"
    path.write_bytes(data)
    digest, kind = objects.hash_file(path, chunk_size=chunk)
    assert digest == lamindb_file_hash(data, chunk)
    assert kind == ("md5" if len(data) <= chunk else "sha1-fl")
    assert len(digest) == 22 and "=" not in digest


def test_hash_file_boundary_and_middle_bytes(tmp_path):
    chunk = 16
    at_chunk = write(tmp_path / "a", b"a" * chunk)
    assert objects.hash_file(at_chunk, chunk_size=chunk) == (
        b64_22(hashlib.md5(b"a" * chunk).digest()), "md5")
    # Above the chunk only the first and last chunk count: the middle bytes do not.
    one = write(tmp_path / "one", b"F" * chunk + b"middle-1" + b"L" * chunk)
    two = write(tmp_path / "two", b"F" * chunk + b"middle-2" + b"L" * chunk)
    three = write(tmp_path / "three", b"F" * chunk + b"middle-1" + b"X" * chunk)
    h1, h2, h3 = (objects.hash_file(p, chunk_size=chunk)[0] for p in (one, two, three))
    assert h1 == h2 != h3


@pytest.mark.parametrize("name, suffix", [
    ("reads.fastq.gz", ".fastq.gz"), ("archive.tar.gz", ".tar.gz"), ("table.csv", ".csv"),
    ("table.csv.gz", ".csv.gz"), ("image.ome.zarr", ".ome.zarr"), ("a.b.c.txt", ".txt"),
    ("results.final.gz", ".gz"), ("no_suffix", ""), ("run.1", ""), ("x.anndata.zarr",
                                                                     ".anndata.zarr"),
])
def test_suffix_rule(name, suffix):
    assert objects.suffix_of(name) == suffix


# ---- files -------------------------------------------------------------------------------
def test_file_artifact_fields_and_object_location(instance, tmp_path):
    path = ln.examples.datasets.file_fastq(tmp_path)
    content = path.read_bytes()
    before = datetime.now(timezone.utc)
    artifact = ln.Artifact(path, key="raw/reads.fastq.gz", description="tiny reads").save()
    after = datetime.now(timezone.utc)

    assert artifact.suffix == ".fastq.gz"
    assert artifact.size == len(content)
    assert artifact.hash == b64_22(hashlib.md5(content).digest())
    assert artifact.n_files is None and artifact.kind is None and artifact.otype is None
    assert len(artifact.uid) == 20 and set(artifact.uid) <= set(BASE62)
    assert artifact.uid.endswith("0000") and artifact.is_latest is True
    assert artifact.branch_id == 1 and artifact.storage_id == instance.storage_id
    assert artifact.created_by.handle == "testuser1"
    assert artifact.created_at.tzinfo is not None
    assert before <= artifact.created_at <= after

    expected_path = f"{instance.root}/.lamina/objects/{artifact.uid}.fastq.gz"
    assert artifact.path == expected_path
    assert read_bytes(instance.root, expected_path) == content
    # The row read back from the catalog says the same.
    fresh = ln.Artifact.get(artifact.id)
    assert (fresh.uid, fresh.key, fresh.description, fresh.hash, fresh.size) == (
        artifact.uid, "raw/reads.fastq.gz", "tiny reads", artifact.hash, len(content))


def test_saving_identical_content_returns_the_existing_artifact(instance, tmp_path):
    first = ln.Artifact(write(tmp_path / "a.txt", b"same bytes"), key="a.txt").save()
    again = ln.Artifact(write(tmp_path / "copy" / "b.txt", b"same bytes"), key="b.txt")
    assert again.id == first.id and again.uid == first.uid and again.key == "a.txt"
    assert again.save().id == first.id
    assert ln.Artifact.filter().count() == 1
    assert objects_under(instance.root) == [f"{first.uid}.txt"]


def test_folder_artifact(instance, tmp_path):
    folder = tmp_path / "sample"
    files = {"a.txt": b"alpha", "sub/b.csv": b"x,y\n1,2\n", "sub/deeper/c.bin": bytes(range(40))}
    for rel, content in files.items():
        write(folder / rel, content)
    artifact = ln.Artifact(folder, key="folders/sample").save()

    file_hashes = [b64_22(hashlib.md5(c).digest()) for c in files.values()]
    assert artifact.n_files == 3
    assert artifact.size == sum(len(c) for c in files.values())
    assert artifact.hash == lamindb_folder_hash(file_hashes)
    assert artifact.suffix == ""
    assert objects_under(instance.root) == sorted(f"{artifact.uid}/{rel}" for rel in files)
    cached = Path(artifact.cache())
    assert {str(p.relative_to(cached)): p.read_bytes() for p in cached.rglob("*")
            if p.is_file()} == files
    # Same files, other folder: the same artifact.
    copy = tmp_path / "copy"
    for rel, content in files.items():
        write(copy / rel, content)
    assert ln.Artifact(copy).id == artifact.id


def test_from_dataframe(instance):
    df = pd.DataFrame({"gene": ["CD8A", "CD4", "IL2"], "count": [3, 0, 7]})
    artifact = ln.Artifact.from_dataframe(df, key="tables/counts.parquet",
                                          description="counts").save()
    assert (artifact.kind, artifact.otype, artifact.suffix) == ("dataset", "DataFrame",
                                                                ".parquet")
    assert artifact.n_observations == 3
    assert artifact.path.endswith(f"/.lamina/objects/{artifact.uid}.parquet")
    pd.testing.assert_frame_equal(artifact.load(), df)
    row = ln.Artifact.filter(key="tables/counts.parquet").to_dataframe().iloc[0]
    assert (row["kind"], row["otype"], row["n_observations"]) == ("dataset", "DataFrame", 3)


def test_from_anndata(instance):
    X = np.arange(12, dtype="float32").reshape(4, 3)
    adata = ad.AnnData(X, obs=pd.DataFrame({"cell_type": list("abab")},
                                           index=[f"c{i}" for i in range(4)]))
    artifact = ln.Artifact.from_anndata(adata, key="sc/data.h5ad").save()
    assert (artifact.kind, artifact.otype, artifact.suffix) == ("dataset", "AnnData", ".h5ad")
    assert artifact.n_observations == 4
    loaded = artifact.load()
    np.testing.assert_array_equal(loaded.X, X)
    assert list(loaded.obs["cell_type"]) == list("abab")


def test_revises_makes_a_new_version(instance, tmp_path):
    v1 = ln.Artifact(write(tmp_path / "v1.csv", b"a\n1\n"), key="data/table.csv").save()
    v2 = ln.Artifact(write(tmp_path / "v2.csv", b"a\n2\n"), revises=v1).save()
    v3 = ln.Artifact(write(tmp_path / "v3.csv", b"a\n3\n"), revises=v2).save()

    stem = v1.uid[:16]
    assert [a.uid[:16] for a in (v2, v3)] == [stem, stem]
    assert [a.uid[16:] for a in (v1, v2, v3)] == ["0000", "0001", "0002"]
    assert v3.key == "data/table.csv"  # inherited
    latest = {a.uid: a.is_latest for a in ln.Artifact.filter(uid__startswith=stem)}
    assert latest == {v1.uid: False, v2.uid: False, v3.uid: True}
    # The 16-character stem gets the latest version.
    assert ln.Artifact.get(stem).id == v3.id
    assert ln.Artifact.filter().count() == 3


def test_editing_a_field_updates_the_row(instance, tmp_path):
    artifact = ln.Artifact(write(tmp_path / "x.txt", b"x"), key="x.txt").save()
    other = ln.Artifact(write(tmp_path / "y.txt", b"y"), key="y.txt").save()
    artifact.description = "edited"
    artifact.key = "renamed/x.txt"
    artifact.save()
    fresh = ln.Artifact.get(artifact.id)
    assert (fresh.description, fresh.key) == ("edited", "renamed/x.txt")
    assert fresh.uid == artifact.uid and fresh.hash == artifact.hash
    assert ln.Artifact.get(other.id).description is None
    assert ln.Artifact.filter().count() == 2
    # The object does not move: keys are virtual.
    assert exists(instance.root, artifact.path)


def test_delete_moves_to_trash_then_permanent_delete_removes_row_and_file(instance, tmp_path):
    artifact = ln.Artifact(write(tmp_path / "t.txt", b"to trash"), key="t.txt").save()
    keep = ln.Artifact(write(tmp_path / "k.txt", b"to keep"), key="k.txt").save()
    path = artifact.path

    artifact.delete()
    assert artifact.branch_id == -1
    assert ln.Artifact.get(artifact.id, branch_id=-1).branch_id == -1
    assert [a.id for a in ln.Artifact.filter()] == [keep.id]
    assert ln.Artifact.filter(branch_id=-1).count() == 1
    assert exists(instance.root, path)  # trash keeps the file

    artifact.delete(permanent=True)
    assert ln.Artifact.filter(branch_id=-1).count() == 0
    assert not exists(instance.root, path)
    assert [a.id for a in ln.Artifact.filter()] == [keep.id]
    assert objects_under(instance.root) == [f"{keep.uid}.txt"]


def test_permanent_delete_straight_from_main_and_of_folders(instance, tmp_path):
    folder = tmp_path / "f"
    write(folder / "one.txt", b"1")
    write(folder / "two" / "two.txt", b"2")
    artifact = ln.Artifact(folder, key="f").save()
    assert len(objects_under(instance.root)) == 2
    artifact.delete(permanent=True)
    assert objects_under(instance.root) == []
    assert ln.Artifact.filter(branch_id=-1).count() == 0 and ln.Artifact.filter().count() == 0


def test_trashed_content_can_be_registered_again(instance, tmp_path):
    path = write(tmp_path / "t.txt", b"comes back")
    first = ln.Artifact(path, key="t.txt").save()
    first.delete()
    second = ln.Artifact(path, key="t.txt").save()
    assert second.id != first.id
    assert [a.id for a in ln.Artifact.filter()] == [second.id]


def test_load_cache_and_open_parquet(instance):
    df = pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "c", "d"]})
    artifact = ln.Artifact.from_dataframe(df, key="t.parquet").save()

    cached = artifact.cache()
    assert os.path.isfile(cached)
    assert Path(cached).read_bytes() == read_bytes(instance.root, artifact.path)
    if instance.location.is_local:
        assert cached == artifact.path
    else:
        assert cached.startswith(os.environ["LAMINA_CACHE_DIR"])
        assert artifact.cache() == cached  # downloaded once

    pd.testing.assert_frame_equal(artifact.load(), df)
    assert artifact.open().to_table().to_pandas().equals(df)
    assert artifact.open("polars").collect().to_pandas().equals(df)
    assert artifact.open("duckdb").order("x").df().equals(df)
    # Streaming reads push down projections and filters.
    lazy = artifact.open("polars").filter(pl.col("x") > 2).select("y")
    assert lazy.collect()["y"].to_list() == ["c", "d"]
    assert artifact.open("duckdb").filter("x > 2").project("y").fetchall() == [("c",), ("d",)]


def test_load_csv_and_text(instance, tmp_path):
    csv = ln.Artifact(write(tmp_path / "t.csv", b"a,b\n1,x\n2,y\n"), key="t.csv").save()
    assert csv.load().to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    text = ln.Artifact(write(tmp_path / "n.txt", b"hello lamina"), key="n.txt").save()
    assert text.load() == "hello lamina"


def test_open_and_load_refuse_what_they_cannot_read(instance, tmp_path):
    jpg = ln.Artifact(ln.examples.datasets.file_jpg_paradisi05(tmp_path), key="i.jpg").save()
    with pytest.raises(ln.ValidationError, match="Parquet"):
        jpg.open()
    with pytest.raises(ln.ValidationError, match="cache"):
        jpg.load()
    assert Path(jpg.cache()).read_bytes() == read_bytes(instance.root, jpg.path)
    df = ln.Artifact.from_dataframe(pd.DataFrame({"a": [1]}), key="a.parquet").save()
    with pytest.raises(ln.ValidationError, match="engine"):
        df.open("spark")


def test_a_version_after_a_trashed_one_gets_a_fresh_uid(instance, tmp_path):
    v1 = ln.Artifact(write(tmp_path / "1.txt", b"one"), key="v.txt").save()
    v2 = ln.Artifact(write(tmp_path / "2.txt", b"two"), revises=v1).save()
    v2.delete()  # trashed, so queries no longer see its uid
    v3 = ln.Artifact(write(tmp_path / "3.txt", b"three"), revises=v1).save()
    uids = ln.Artifact.filter(branch_id__in=[1, -1]).to_arrow(columns=["uid"])["uid"]
    assert sorted(uids.to_pylist()) == sorted([v1.uid, v2.uid, v3.uid])
    assert len({v1.uid, v2.uid, v3.uid}) == 3
    assert read_bytes(instance.root, v3.path) == b"three"
    assert read_bytes(instance.root, v2.path) == b"two"
    assert ln.Artifact.get(v1.uid[:16]).id == v3.id


def test_new_content_under_an_existing_key_is_the_next_version(instance, tmp_path):
    v1 = ln.Artifact(write(tmp_path / "a.csv", b"a\n1\n"), key="runs/table.csv").save()
    v2 = ln.Artifact(write(tmp_path / "b.csv", b"a\n2\n"), key="runs/table.csv").save()
    assert v2.uid[:16] == v1.uid[:16] and v2.uid[16:] == "0001"
    assert ln.Artifact.get(key="runs/table.csv").id == v2.id
    rows = {r["id"]: r["is_latest"] for r in
            ln.Artifact.filter(key="runs/table.csv").to_arrow(columns=["id", "is_latest"])
            .to_pylist()}
    assert rows == {v1.id: False, v2.id: True}
    # The same content again under that key is the existing version, not a third.
    again = ln.Artifact(write(tmp_path / "c.csv", b"a\n2\n"), key="runs/table.csv")
    assert again.id == v2.id
    # Another key starts a history of its own.
    other = ln.Artifact(write(tmp_path / "d.csv", b"a\n3\n"), key="runs/other.csv").save()
    assert other.uid[16:] == "0000"


@local_only
@pytest.mark.parametrize("argument", ["version", "version_tag"])
def test_a_version_label_is_stored_whichever_name_passes_it(instance, tmp_path, argument):
    artifact = ln.Artifact(write(tmp_path / "v.txt", b"v"), key="v.txt",
                           **{argument: "1.0"}).save()
    assert ln.Artifact.get(key="v.txt").version_tag == "1.0" == artifact.version_tag
    with pytest.raises(ln.ValidationError, match="disagree"):
        ln.Artifact(write(tmp_path / "w.txt", b"w"), version="1", version_tag="2")
