"""Bulk ingestion: ``ln.Artifact.from_manifest`` / ``from_dir`` on real files and a real object
store. Expected answers come from the manifest (pandas), never from lamina."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lamina as ln
from lamina.catalog import tables
from lamina.models import ingest
from lamina.models.ingest import IngestError

from helpers import new_s3_root, objects_under

N_FILES = 2000
PERTURBATIONS = ["DMSO", "IFNG", "TNF", "IL6", "LPS"]
DONORS = [f"donor-{i}" for i in range(8)]
FEATURES = {
    "perturbation": ln.Record, "temperature": float, "n_cells": int, "is_control": bool,
    "date_of_study": date, "measured_at": datetime, "study_metadata": dict, "study_note": str,
    "tags": "list[str]",
}


def md5_hash(data: bytes) -> str:
    """LaminDB's hash of a small file, computed here independently."""
    return base64.urlsafe_b64encode(hashlib.md5(data).digest()).decode().rstrip("=")[:22]


def register_features():
    for name in PERTURBATIONS:
        ln.Record(name=name).save()
    donor_type = ln.Record(name="Donor", is_type=True).save()
    for name in DONORS[:4]:  # the other donors are created by the ingestion
        ln.Record(name=name, type=donor_type).save()
    for name, dtype in FEATURES.items():
        ln.Feature(name=name, dtype=dtype).save()
    ln.Feature(name="donor", dtype=donor_type).save()


def make_manifest(folder, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` small files with distinct content and a row of metadata each (every dtype, some
    values missing)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"sample_{i:05d}.csv")
        with open(path, "w") as f:
            f.write(f"x,y\n{i},{rng.integers(0, 1_000_000)}\n")
        paths.append(path)
    perts = []
    for i in range(n):
        k = int(rng.integers(0, 4))
        picks = list(rng.choice(PERTURBATIONS, size=k, replace=False)) if k else None
        perts.append(picks[0] if picks and len(picks) == 1 and i % 2 else picks)
    temperature = np.round(rng.uniform(15, 30, n), 2)
    temperature[rng.random(n) < 0.1] = np.nan
    days = rng.integers(0, 1500, n)
    return pd.DataFrame({
        "path": paths,
        "key": [f"atlas/sample_{i:05d}.csv" for i in range(n)],
        "description": [f"sample {i}" for i in range(n)],
        "perturbation": perts,
        "donor": [DONORS[i % len(DONORS)] for i in range(n)],
        "temperature": temperature,
        "n_cells": pd.array(rng.integers(100, 10_000, n), dtype="Int64"),
        "is_control": rng.random(n) < 0.2,
        "date_of_study": [date(2021, 1, 1) + pd.Timedelta(days=int(d)) for d in days],
        "measured_at": [datetime(2024, 5, 1, tzinfo=timezone.utc) + pd.Timedelta(hours=int(d))
                        for d in days],
        "study_metadata": [{"batch": int(i % 7), "site": "A" if i % 2 else "B"}
                           for i in range(n)],
        "study_note": [None if i % 5 == 0 else f"note {i % 11}" for i in range(n)],
        "tags": [["qc", "pass"] if i % 3 == 0 else ["qc"] for i in range(n)],
    })


def labels_of(value) -> set:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return set()
    return {value} if isinstance(value, str) else set(value)


def ids_of(qs) -> set:
    return set(qs.to_arrow(columns=["id"]).column("id").to_pylist())


@pytest.fixture
def world(instance):
    register_features()
    return instance


# ---- a few thousand local files with every feature dtype ------------------------------------
def test_local_files_every_dtype_then_rerun(world, tmp_path):
    manifest = make_manifest(tmp_path / "files", N_FILES)
    batch = ln.Artifact.from_manifest(manifest, create_labels=True, chunk_size=700)
    assert len(batch) == N_FILES
    preview = batch.to_dataframe()
    assert list(preview["path"]) == list(manifest["path"][:20])
    assert set(preview["storage"]) == {"copy"}
    report = ln.save(batch)
    assert (report.new, report.copied, report.linked, report.existing, report.failed) == (
        N_FILES, N_FILES, 0, 0, 0)
    assert report.chunks == 3 and report.labels_created == {"Record[Donor]": 4}
    assert set(report.timings) >= {"validate", "labels", "hash", "upload", "commit"}

    # Every row is there, with its hash, key and file content.
    frame = ln.Artifact.filter(key__startswith="atlas/").to_dataframe(limit=None)
    assert len(frame) == N_FILES == ln.Artifact.filter(suffix=".csv").count()
    by_key = frame.set_index("key")
    for i in (0, 17, N_FILES - 1):
        row = manifest.iloc[i]
        with open(row["path"], "rb") as f:
            data = f.read()
        assert by_key.loc[row["key"], "hash"] == md5_hash(data)
        assert by_key.loc[row["key"], "size"] == len(data)
        artifact = ln.Artifact.get(key=row["key"])
        assert artifact.description == row["description"]
        with open(artifact.cache(), "rb") as f:
            assert f.read() == data

    # Feature filters and counts agree with pandas on the manifest.
    m = manifest
    checks = [
        ({"temperature__gt": 21.5}, m["temperature"] > 21.5),
        ({"temperature__isnull": True}, m["temperature"].isna()),
        ({"n_cells__lt": 2000}, m["n_cells"].fillna(10**9) < 2000),
        ({"is_control": True}, m["is_control"]),
        ({"date_of_study__gte": date(2023, 1, 1)},
         m["date_of_study"].map(lambda d: d >= date(2023, 1, 1))),
        ({"measured_at__lt": datetime(2024, 6, 1, tzinfo=timezone.utc)},
         m["measured_at"].map(lambda d: d < datetime(2024, 6, 1, tzinfo=timezone.utc))),
        ({"study_metadata__batch": 3}, m["study_metadata"].map(lambda d: d["batch"] == 3)),
        ({"study_metadata__site": "A"}, m["study_metadata"].map(lambda d: d["site"] == "A")),
        ({"study_note": "note 3"}, m["study_note"] == "note 3"),
        ({"study_note__isnull": True}, m["study_note"].isna()),
        ({"tags": "pass"}, m["tags"].map(lambda t: "pass" in t)),
        ({"perturbation": "DMSO"}, m["perturbation"].map(lambda v: "DMSO" in labels_of(v))),
        ({"perturbation__in": ["TNF", "LPS"]},
         m["perturbation"].map(lambda v: bool({"TNF", "LPS"} & labels_of(v)))),
        ({"perturbation__isnull": True}, m["perturbation"].map(lambda v: not labels_of(v))),
        ({"donor": "donor-6"}, m["donor"] == "donor-6"),
        ({"records__name": "IFNG"}, m["perturbation"].map(lambda v: "IFNG" in labels_of(v))),
        ({"records__name": "donor-1"}, m["donor"] == "donor-1"),
    ]
    pairs = ln.Artifact.filter(key__startswith="atlas/").to_arrow(columns=["id", "key"])
    key_to_id = dict(zip(pairs.column("key").to_pylist(), pairs.column("id").to_pylist()))
    for condition, mask in checks:
        expected = {key_to_id[k] for k in m.loc[mask.astype(bool), "key"]}
        assert ids_of(ln.Artifact.filter(**condition)) == expected, condition
        assert ln.Artifact.filter(**condition).count() == len(expected), condition
    values = ln.Artifact.get(key=m["key"][0]).features.get_values()
    assert values["study_metadata"] == m["study_metadata"][0]
    assert values["tags"] == m["tags"][0]
    assert values["donor"] == m["donor"][0]

    # Rerun: nothing new, nothing uploaded again.
    n_objects = len(os.listdir(os.path.join(world.root, ".lamina", "objects"))) if (
        world.location.is_local) else None
    version = world.store(ln.Artifact._spec).version()
    again = ln.save(ln.Artifact.from_manifest(manifest, create_labels=True, chunk_size=700))
    assert (again.new, again.existing, again.failed) == (0, N_FILES, 0)
    assert world.store(ln.Artifact._spec).version() == version
    assert ln.Artifact.filter(key__startswith="atlas/").count() == N_FILES
    if n_objects is not None:
        assert len(os.listdir(os.path.join(world.root, ".lamina", "objects"))) == n_objects


# ---- a prefix of objects on the S3 server, linked in place --------------------------------
def test_s3_prefix_linked_in_place_without_reading(root, s3_endpoint, monkeypatch, tmp_path):
    import s3fs

    if root.startswith("s3://"):
        bucket_root = root
        ln.init(storage=root)
    else:  # a local instance with a bucket registered as a further storage
        bucket_root = new_s3_root("atlas-root")
        ln.init(storage=root)
    register_features()
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    prefix = f"{bucket_root}/raw/run1"
    contents = {f"{prefix}/cells_{i:04d}.h5ad": f"object {i}".encode() * (i % 5 + 1)
                for i in range(300)}
    contents[f"{prefix}/sub/extra.txt"] = b"extra"
    fs.pipe({p.split("://", 1)[1]: data for p, data in contents.items()})

    # No object of the atlas is read from here on (lamina's own files under .lamina/ may be).
    def no_read(original):
        def guarded(self, path, *args, **kwargs):
            assert "/.lamina/" in str(path), f"{path} was read"
            return original(self, path, *args, **kwargs)
        return guarded

    for method in ("_cat_file", "_get_file", "_open"):
        monkeypatch.setattr(s3fs.S3FileSystem, method,
                            no_read(getattr(s3fs.S3FileSystem, method)))

    storage = None if root.startswith("s3://") else bucket_root
    report = ln.save(ln.Artifact.from_dir(prefix, storage=storage))
    assert (report.new, report.linked, report.copied, report.failed) == (301, 301, 0, 0)
    frame = ln.Artifact.filter().to_dataframe(limit=None)
    assert len(frame) == 301
    rel = {p: p[len(bucket_root) + 1:] for p in contents}
    assert set(frame["key"]) == set(rel.values())
    by_key = frame.set_index("key")
    for path, data in contents.items():
        assert by_key.loc[rel[path], "hash"] == md5_hash(data)
        assert by_key.loc[rel[path], "size"] == len(data)
    one = ln.Artifact.get(key=rel[f"{prefix}/cells_0007.h5ad"])
    assert one.path == f"{prefix}/cells_0007.h5ad" and one.suffix == ".h5ad"
    # Nothing was copied into managed storage.
    assert not fs.exists(f"{bucket_root}/.lamina/objects".split("://", 1)[1])
    if not root.startswith("s3://"):
        assert not os.path.exists(os.path.join(root, ".lamina", "objects"))

    # A manifest of the same objects with features: annotates nothing new (same hash and key)
    # ... and with other keys, adds annotated rows whose size and hash come from the listing.
    paths = sorted(p for p in contents if p.endswith(".h5ad"))
    manifest = pd.DataFrame({
        "path": paths, "key": [f"by-manifest/{os.path.basename(p)}" for p in paths],
        "temperature": np.arange(len(paths), dtype=float),
        "perturbation": [PERTURBATIONS[i % 5] for i in range(len(paths))]})
    second = ln.save(ln.Artifact.from_manifest(manifest, storage=storage))
    assert (second.new, second.linked, second.existing) == (300, 300, 0)
    assert ln.Artifact.filter(temperature__gte=100).count() == 200
    assert ln.Artifact.filter(perturbation="TNF", key__startswith="by-manifest/").count() == 60
    again = ln.save(ln.Artifact.from_dir(prefix, storage=storage))
    assert (again.new, again.existing) == (0, 301)


# ---- interrupt (killed child process) and resume -------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys
    import pandas as pd
    import lamina as ln
    from lamina.models.ingest import staging

    ln.connect(sys.argv[1])
    manifest = pd.read_parquet(sys.argv[2])
    real_upload, calls = staging.upload_one, [0]

    def upload_then_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] > int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # like a killed job: no cleanup runs
        return real_upload(*args, **kwargs)

    staging.upload_one = upload_then_die
    ln.save(ln.Artifact.from_manifest(manifest, chunk_size=100, create_labels=True))
""")


def test_interrupted_run_leaves_valid_catalog_and_resumes(world, tmp_path):
    n = 500
    manifest = make_manifest(tmp_path / "files", n, seed=3)
    manifest["perturbation"] = manifest["perturbation"].map(  # Parquet: lists, not mixed cells
        lambda v: [v] if isinstance(v, str) else v)
    manifest_path = tmp_path / "manifest.parquet"
    manifest.to_parquet(manifest_path)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # Killed while uploading the third chunk: two chunks are committed, some of the third's
    # files are uploaded without rows.
    done = subprocess.run([sys.executable, str(script), world.root, str(manifest_path), "250"],
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr

    # The catalog is valid: whole chunks, queryable, every row's file present.
    committed = ln.Artifact.filter(key__startswith="atlas/").to_dataframe(limit=None)
    assert len(committed) == 200
    assert ln.Artifact.filter(key__startswith="atlas/", perturbation__isnull=False).count() == (
        manifest["perturbation"].map(lambda v: bool(labels_of(v))).iloc[:200].sum())
    for key in committed["key"][:5]:
        assert os.path.exists(ln.Artifact.get(key=key).cache())

    report = ln.save(ln.Artifact.from_manifest(str(manifest_path), chunk_size=100,
                                               create_labels=True))
    assert (report.existing, report.new, report.failed) == (200, 300, 0)
    # Uploads 201..250 had started; all but those still in flight in other threads finished.
    threads = ingest.UPLOAD_THREADS if world.root.startswith("s3:") else ingest.LOCAL_COPY_THREADS
    assert report.reused_uploads >= 50 - threads + 1
    assert ln.Artifact.filter(key__startswith="atlas/").count() == n
    # No dangling objects: one object per copied artifact (half-written copies removed).
    uids = ln.Artifact.filter(key__startswith="atlas/").to_arrow(columns=["uid"])
    assert objects_under(world.root) == sorted(f"{u}.csv" for u in uids.column("uid").to_pylist())
    expected = dict(zip(manifest["key"], manifest["temperature"]))
    frame = ln.Artifact.filter(key__startswith="atlas/").to_dataframe(
        features=["temperature"], limit=None)
    got = dict(zip(frame["key"], frame["temperature"]))
    assert all((np.isnan(expected[k]) and pd.isna(got[k])) or expected[k] == got[k]
               for k in expected)


# ---- invalid rows: a report, nothing written --------------------------------------------------
def test_invalid_rows_are_reported_and_nothing_is_written(world, tmp_path):
    manifest = make_manifest(tmp_path / "files", 30)
    manifest["donor"] = [DONORS[i % 4] for i in range(30)]  # donors that exist
    manifest["temperature"] = manifest["temperature"].astype(object)
    manifest.loc[3, "temperature"] = "hot"                      # wrong type
    manifest.loc[4, "path"] = str(tmp_path / "missing.csv")     # missing file
    manifest.loc[5, "key"] = manifest.loc[6, "key"]             # duplicated key
    manifest.loc[7, "perturbation"] = "NOT-A-LABEL"             # unknown label
    manifest.loc[8, "date_of_study"] = "2024-13-45"             # not a date
    manifest.loc[9, "key"] = "../escape.csv"                    # unsafe key
    manifest.loc[10, "key"] = "atlas/wrong_suffix.txt"          # suffix differs
    manifest.loc[11, "study_metadata"] = "not json"             # not a dict
    before = {name: world.store(tables.get(name)).version()
              for name in ("core.artifact", "core.record")}

    report = ln.Artifact.from_manifest(manifest).validate()
    problems = {(i.row, i.column) for i in report.issues}
    assert problems == {(3, "temperature"), (4, "path"), (6, "key"), (7, "perturbation"),
                        (8, "date_of_study"), (9, "key"), (10, "key"),
                        (11, "study_metadata")}
    assert report.failed == 8 and report.failed_rows == [3, 4, 6, 7, 8, 9, 10, 11]
    reasons = {(i.row, i.column): i.reason for i in report.issues}
    assert "hot" in reasons[(3, "temperature")]
    assert "does not exist" in reasons[(4, "path")]
    assert "first on row 5" in reasons[(6, "key")]
    assert "NOT-A-LABEL" in reasons[(7, "perturbation")]
    frame = report.to_dataframe()
    assert list(frame.columns) == ["row", "column", "reason"] and len(frame) == 8
    # The same problems when the rows of the duplicated key are in different chunks.
    chunked = ln.Artifact.from_manifest(manifest, chunk_size=6).validate()
    assert {(i.row, i.column): i.reason for i in chunked.issues} == reasons

    with pytest.raises(IngestError) as info:
        ln.save(ln.Artifact.from_manifest(manifest))
    assert len(info.value.report.issues) == 8
    after = {name: world.store(tables.get(name)).version() for name in before}
    assert after == before and ln.Artifact.filter().count() == 0

    # An unknown feature column is an error that names it.
    extra = manifest.assign(not_a_feature=1)
    report = ln.Artifact.from_manifest(extra).validate()
    assert any(i.column == "not_a_feature" and "unknown feature column" in i.reason
               for i in report.issues)
    with pytest.raises(IngestError, match="not_a_feature"):
        ln.save(ln.Artifact.from_manifest(extra, on_error="skip"))
    # ... unless the feature columns are chosen.
    chosen = ln.Artifact.from_manifest(extra, features=["temperature"]).validate()
    assert {(i.row, i.column) for i in chosen.issues} == {(3, "temperature"), (4, "path"),
                                                          (6, "key"), (9, "key"), (10, "key")}

    # on_error="skip" writes the valid rows and reports the others.
    skipped = ln.save(ln.Artifact.from_manifest(manifest, on_error="skip"))
    assert (skipped.new, skipped.failed) == (22, 8)
    written = set(ln.Artifact.filter().to_dataframe(limit=None)["key"])
    assert written == set(manifest["key"].drop(index=[3, 4, 6, 7, 8, 9, 10, 11]))


# ---- labels in bulk ------------------------------------------------------------------------------
def test_labels_created_in_bulk_with_one_commit(world, tmp_path):
    record_store = world.store(tables.get("core.record"))
    names = [f"compound-{i:03d}" for i in range(120)]
    version = record_store.version()
    records = ln.Record.from_values(["DMSO", *names], create=True)
    assert [r.name for r in records] == ["DMSO", *names]
    assert records[0].id is not None and all(r.id is None for r in records[1:])
    ln.save(records)
    assert record_store.version() == version + 1
    assert all(r.id is not None for r in records)
    assert ln.Record.filter(name__startswith="compound-").count() == 120
    assert [r.id for r in ln.Record.from_values(names[:3])] == [r.id for r in records[1:4]]

    # create_labels: the missing ones in one commit, before the artifact rows.
    manifest = make_manifest(tmp_path / "files", 200)
    manifest["perturbation"] = [[f"drug-{i % 40}", f"drug-{(i + 1) % 40}"] for i in range(200)]
    version = record_store.version()
    report = ln.save(ln.Artifact.from_manifest(manifest, create_labels=True))
    assert report.labels_created == {"Record": 40, "Record[Donor]": 4}
    assert record_store.version() == version + 2  # one commit per registry and type
    assert ln.Record.filter(name__startswith="drug-").count() == 40
    assert ln.Artifact.filter(perturbation="drug-5").count() == 10
    donor_type = ln.Record.get(name="Donor")
    assert ln.Record.filter(type=donor_type).count() == len(DONORS)


# ---- streaming manifests ----------------------------------------------------------------------
def test_parquet_and_csv_manifests_stream_in_chunks(world, tmp_path):
    manifest = make_manifest(tmp_path / "files", 250)
    table = manifest[["path", "key", "temperature", "n_cells", "is_control", "study_note"]]
    parquet = tmp_path / "m.parquet"
    table.iloc[:120].to_parquet(parquet, row_group_size=7)
    csv = tmp_path / "m.csv"
    table.iloc[120:].to_csv(csv, index=False)
    first = ln.save(ln.Artifact.from_manifest(str(parquet), chunk_size=50))
    assert (first.new, first.chunks) == (120, 3)
    batch = ln.Artifact.from_manifest(str(csv), chunk_size=50)
    assert len(batch) == 130
    second = ln.save(batch)
    assert (second.new, second.chunks) == (130, 3)
    assert ln.Artifact.filter(temperature__gt=20).count() == int((table["temperature"] > 20).sum())
    assert ln.Artifact.filter(study_note="note 3").count() == int(
        (table["study_note"] == "note 3").sum())


def test_from_dir_local_folder_copies_with_folder_keys(instance, tmp_path):
    folder = tmp_path / "plates"
    (folder / "a").mkdir(parents=True)
    for i in range(5):
        (folder / "a" / f"w{i}.txt").write_text(f"well {i}")
    (folder / "top.json").write_text(json.dumps({"x": 1}))
    report = ln.save(ln.Artifact.from_dir(folder))
    assert (report.new, report.copied) == (6, 6)
    keys = set(ln.Artifact.filter().to_dataframe(limit=None)["key"])
    assert keys == {"plates/top.json", *{f"plates/a/w{i}.txt" for i in range(5)}}
    assert ln.Artifact.get(key="plates/top.json").load() == {"x": 1}



def test_paths_spelled_relative_or_with_dot_segments_name_the_same_files(instance, tmp_path,
                                                                         monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in "abcd":
        (folder / f"{name}.txt").write_text(f"file {name}")
    monkeypatch.chdir(tmp_path)
    spelled = ["data/a.txt", f"{tmp_path}/data/./b.txt", f"{tmp_path}/data/sub/../c.txt",
               f"{tmp_path}//data//d.txt"]
    manifest = pd.DataFrame({"path": spelled, "key": [f"spelled/{n}.txt" for n in "abcd"]})
    batch = ln.Artifact.from_manifest(manifest)
    preview = batch.to_dataframe()
    assert list(preview["path"]) == [os.path.normpath(os.path.join(tmp_path, p))
                                     for p in spelled]
    report = ln.save(batch)
    assert (report.new, report.failed) == (4, 0)
    for name in "abcd":
        artifact = ln.Artifact.get(key=f"spelled/{name}.txt")
        assert artifact.size == len(f"file {name}")
        assert Path(artifact.cache()).read_text() == f"file {name}"

# ---- two writers, one manifest ------------------------------------------------------------------
def test_two_processes_ingesting_the_same_manifest_register_each_file_once(world, tmp_path):
    from helpers import spawn

    manifest = make_manifest(tmp_path / "files", 300, seed=5)
    manifest["perturbation"] = manifest["perturbation"].map(
        lambda v: [v] if isinstance(v, str) else v)
    path = tmp_path / "manifest.parquet"
    manifest.to_parquet(path)
    code = f"""
        ln.connect({world.root!r})
        report = ln.save(ln.Artifact.from_manifest({str(path)!r}, chunk_size=60,
                                                   create_labels=True))
        print(json.dumps({{"new": report.new, "existing": report.existing}}))
    """
    children = [spawn(code) for _ in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["new"] for r in results) == 300
    assert all(r["new"] + r["existing"] == 300 for r in results)
    frame = ln.Artifact.filter(key__startswith="atlas/").to_arrow(columns=["key", "uid"])
    assert sorted(frame.column("key").to_pylist()) == sorted(manifest["key"])
    # Every row's object is there, and no object is without a row.
    assert objects_under(world.root) == sorted(f"{u}.csv" for u in frame.column("uid").to_pylist())
    assert ln.Record.filter(type__name="Donor").count() == len(DONORS)


@pytest.mark.parametrize("root", ["local"], indirect=True)
def test_bionty_labels_are_created_from_the_ontology(root, tmp_path):
    from lamina import bionty as bt

    ln.init(storage=root, modules=["bionty"])
    ln.Feature(name="cell_type", dtype=bt.CellType).save()
    folder = tmp_path / "files"
    folder.mkdir()
    paths = []
    for i in range(4):
        (folder / f"x{i}.txt").write_text(str(i))
        paths.append(str(folder / f"x{i}.txt"))
    manifest = pd.DataFrame({"path": paths, "key": [f"x{i}.txt" for i in range(4)],
                             "cell_type": ["T cell", ["B cell", "T-cell"], "not a cell", None]})
    report = ln.Artifact.from_manifest(manifest, create_labels=True).validate()
    assert [(i.row, i.column) for i in report.issues] == [(2, "cell_type")]
    assert "not a cell" in report.issues[0].reason
    saved = ln.save(ln.Artifact.from_manifest(manifest, create_labels=True, on_error="skip"))
    assert (saved.new, saved.failed) == (3, 1)
    # "T-cell" is a synonym of "T cell": both rows link the same term.
    assert ln.Artifact.filter(cell_type="T cell").count() == 2
    assert ln.Artifact.filter(cell_types__name="B cell").count() == 1


@pytest.mark.parametrize("root", ["local"], indirect=True)
def test_suffixes_follow_the_lamindb_rule(instance, tmp_path):
    from lamina.catalog.objects import suffix_of

    folder = tmp_path / "names"
    folder.mkdir()
    names = ["a.fastq.gz", "b.tar.gz", "c.csv", "noext", ".hidden", "d.ome.zarr", "e.x.y.z.gz",
             "f.toolongpart.gz", "g..gz", "h.CSV", "i.h5ad", "j.results.final.gz", "k.123",
             "l.v1.2.csv", "m.anndata.zarr", "n.csv.gz"]
    for i, name in enumerate(names):
        (folder / name).write_text(f"file {i}")
    ln.save(ln.Artifact.from_dir(folder))
    frame = ln.Artifact.filter().to_dataframe(limit=None)
    got = dict(zip(frame["key"], frame["suffix"]))
    assert got == {f"names/{n}": suffix_of(n) for n in names}


def test_same_content_without_key_in_later_chunk_is_existing(instance, tmp_path):
    paths = []
    for i, text in enumerate(["same", "other", "same"]):
        path = tmp_path / f"f{i}.txt"
        path.write_text(text)
        paths.append(str(path))
    report = ln.save(ln.Artifact.from_manifest(pd.DataFrame({"path": paths}), chunk_size=1))
    assert (report.new, report.existing, report.chunks) == (2, 1, 2)
    assert ln.Artifact.filter().count() == 2


def test_ctrl_c_stops_the_save_says_what_was_committed_and_a_rerun_resumes(
        local_root, tmp_path):
    """Without a terminal, each committed chunk is a log line; Ctrl-C (SIGINT) stops the save
    with a message naming what is saved, and running the same save again finishes the job."""
    import signal

    n, chunk = 3000, 250
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:05d}.txt").write_text(f"file {i}")
    child = subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(f"""
            import lamina as ln
            ln.init(storage={local_root!r})
            ln.save(ln.Artifact.from_dir({str(folder)!r}, key_prefix="many",
                                         chunk_size={chunk}))
        """)], env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in child.stderr:
        lines.append(line)
        if line.startswith("→ committed chunk 1:"):
            child.send_signal(signal.SIGINT)
            break
    _, rest = child.communicate(timeout=120)
    output = "".join(lines) + rest
    assert child.returncode != 0, output
    assert "Traceback" not in output.split("interrupted:")[0], output
    message = next(line for line in output.splitlines() if "interrupted:" in line)
    committed = int(message.split("interrupted: ")[1].split(" new artifacts")[0].replace(",", ""))
    assert "Run the same ln.save again to resume" in message

    ln.connect(local_root)
    saved = ln.Artifact.filter(key__startswith="many/").count()
    assert saved == committed and chunk <= saved <= 2 * chunk < n
    report = ln.save(ln.Artifact.from_dir(str(folder), key_prefix="many", chunk_size=chunk,
                                          progress=False))
    assert (report.existing, report.new) == (saved, n - saved)
    keys = ln.Artifact.filter(key__startswith="many/").to_arrow(columns=["key"])
    assert sorted(keys.column("key").to_pylist()) == [f"many/{i:05d}.txt" for i in range(n)]


def test_rerunning_a_corrected_manifest_updates_the_annotations_it_changed(world, tmp_path):
    manifest = make_manifest(tmp_path / "files", 6, seed=5)
    manifest["perturbation"] = ["DMSO", "IFNG", None, "TNF", ["DMSO", "LPS"], None]
    first = ln.save(ln.Artifact.from_manifest(manifest, create_labels=True))
    assert first.new == 6
    keep = ln.Record(name="kept by hand").save()
    hand = ln.Artifact.get(key=manifest["key"][0])
    hand.records.add(keep)  # a link the manifest does not manage
    untouched = ln.Artifact.get(key=manifest["key"][5]).features.get_values()

    corrected = manifest.copy()
    corrected.loc[0, "temperature"] = 99.5
    corrected.loc[1, "description"] = "corrected"
    corrected.at[0, "perturbation"] = "LPS"
    corrected.loc[3, "study_note"] = None
    report = ln.save(ln.Artifact.from_manifest(corrected, create_labels=True))

    assert (report.new, report.existing, report.updated) == (0, 6, 3)
    assert report.changed == {"temperature": 1, "perturbation": 1, "description": 1,
                              "study_note": 1}
    by_key = {k: ln.Artifact.get(key=k) for k in corrected["key"]}
    first_values = by_key[corrected["key"][0]].features.get_values()
    assert first_values["temperature"] == 99.5
    assert first_values["perturbation"] == "LPS"
    assert by_key[corrected["key"][1]].description == "corrected"
    assert "study_note" not in by_key[corrected["key"][3]].features.get_values()
    links = {r.name for r in by_key[corrected["key"][0]].records}
    assert links == {"LPS", "kept by hand", corrected["donor"][0]}
    # Unchanged rows are untouched, and a rerun of the corrected manifest changes nothing.
    assert by_key[corrected["key"][5]].features.get_values() == untouched
    again = ln.save(ln.Artifact.from_manifest(corrected, create_labels=True))
    assert (again.existing, again.updated, again.changed) == (6, 0, {})
