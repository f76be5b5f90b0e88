"""The query cells of the seed guide that need no features or bionty, on a world built like the
guide's (three example files, two h5ad datasets, four records), on a local and an S3 root.
Each cell returns the rows, in the order, the guide shows."""

from __future__ import annotations

import contextlib
import io
import random
import uuid

import pytest

import lamina as ln
from lamina import testing
from lamina.catalog import instance as lamina_instance

import query_catalog as qc

D2, D1, IRIS, JPG, FASTQ = ("examples/dataset2.h5ad", "examples/dataset1.h5ad", "iris.parquet",
                            "my_image.jpg", "raw/my_fastq.fastq.gz")
# The sizes the guide prints for its two AnnData files.
H5AD_SIZES = {D1: 31672, D2: 26896}


def _h5ad_like(path, size: int, seed: int):
    """A file of exactly ``size`` bytes with an .h5ad suffix (stands in for the guide's
    AnnData files; only its size, suffix and hash matter to the queries)."""
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture(scope="module", params=["local", "s3"])
def seed_world(request, tmp_path_factory) -> dict:
    if request.param == "local":
        root = str(tmp_path_factory.mktemp("seed-root"))
    else:
        request.getfixturevalue("s3_endpoint")
        bucket = f"lamina-query-{uuid.uuid4().hex[:12]}"
        testing.create_bucket(bucket)
        root = f"s3://{bucket}/seed"
    home = tmp_path_factory.mktemp("seed-home")
    files = tmp_path_factory.mktemp("seed-files")
    with qc.lamina_env(home):
        ln.init(storage=root)
        ln.Artifact(ln.examples.datasets.file_fastq(files), key=FASTQ).save()
        ln.Artifact(ln.examples.datasets.file_jpg_paradisi05(files), key=JPG).save()
        ln.Artifact.from_dataframe(ln.examples.datasets.df_iris(), key=IRIS).save()
        dmso, ifng = ln.Record(name="DMSO").save(), ln.Record(name="IFNG").save()
        experiments = [ln.Record(name="Experiment 1").save(), ln.Record(name="Experiment 2").save()]
        for i, (key, experiment) in enumerate(zip((D1, D2), experiments)):
            path = _h5ad_like(files / f"dataset{i + 1}.h5ad", H5AD_SIZES[key], i)
            artifact = ln.Artifact(path, key=key, kind="dataset", otype="AnnData",
                                   n_observations=3).save()
            artifact.records.add(dmso, ifng, experiment)
    return {"root": root, "home": str(home)}


@pytest.fixture
def guide(seed_world, monkeypatch):
    qc.use(seed_world["root"], monkeypatch, seed_world["home"])
    yield
    lamina_instance._current = None


def keys(frame) -> list[str]:
    return list(frame["key"])


def test_the_world_is_the_guides(guide):
    df = ln.Artifact.to_dataframe()
    assert list(df.index) == [5, 4, 3, 2, 1]
    assert keys(df) == [D2, D1, IRIS, JPG, FASTQ]
    assert list(df["suffix"]) == [".h5ad", ".h5ad", ".parquet", ".jpg", ".fastq.gz"]
    assert list(df["size"])[:2] == [26896, 31672]
    assert list(ln.Record.to_dataframe()["name"]) == ["Experiment 2", "Experiment 1", "IFNG",
                                                      "DMSO"]


def test_include_related_fields(guide):
    df = ln.Artifact.to_dataframe(include=["created_by__name", "records__name"])
    assert list(df.columns) == ["uid", "key", "created_by__name", "records__name"]
    assert set(df["created_by__name"]) == {"Test User1"}
    assert df.loc[5, "records__name"] == {"IFNG", "DMSO", "Experiment 2"}
    assert df.loc[4, "records__name"] == {"IFNG", "DMSO", "Experiment 1"}
    for artifact_id in (3, 2, 1):
        assert df.loc[artifact_id, "records__name"] == {None}


def test_lookup_and_get(guide):
    records = ln.Record.lookup()
    experiment_1 = records.experiment_1
    text = repr(experiment_1)
    assert text.startswith(f"Record(uid='{experiment_1.uid}', is_type=False, "
                           "name='Experiment 1', description=None, reference=None, "
                           "reference_type=None, extra_data=None, branch_id=1, created_on_id=1, "
                           "space_id=1, created_by_id=1, type_id=None, schema_id=None, "
                           "run_id=None, created_at=")
    assert text.endswith(" UTC, is_locked=False)")
    assert ln.Record.get(experiment_1.uid) == experiment_1
    assert ln.Record.get(name="Experiment 1") == experiment_1


def test_query_by_fields(guide):
    qs = ln.Artifact.filter(suffix=".h5ad")
    text = repr(qs)
    assert text.startswith("<ArtifactQuerySet [Artifact(uid=") and text.endswith(")]>")
    assert text.index(f"key='{D1}'") < text.index(f"key='{D2}'")
    assert (f"suffix='.h5ad', kind='dataset', otype='AnnData', size={H5AD_SIZES[D1]}, "
            in text)
    qs = qs.filter(records__name="Experiment 1")
    assert keys(qs.to_dataframe()) == [D1]
    assert qs.one().key == D1 and qs.one_or_none().key == D1
    assert [a.key for a in qs] == [D1] and qs[0].key == D1


def test_query_related_registries(guide):
    df = ln.Artifact.filter(created_by__handle__startswith="testuse").to_dataframe()
    assert keys(df) == [D2, D1, IRIS, JPG, FASTQ]
    assert ln.Artifact.filter(created_by__handle__startswith="nobody").to_dataframe().empty
    storage = ln.Storage.filter(artifacts__suffix=".h5ad")
    assert len(storage) == 1 and storage.one().root == ln.Storage.get(1).root
    assert ln.Storage.filter(artifacts__suffix=".zarr").count() == 0
    assert keys(ln.Artifact.filter(storage__in=ln.Storage.filter(artifacts__key=IRIS))
                .to_dataframe()) == [D2, D1, IRIS, JPG, FASTQ]
    assert [r.name for r in ln.Record.filter(artifacts__key=D2)] == [
        "DMSO", "IFNG", "Experiment 2"]


def test_filter_operators(guide):
    experiment_1 = ln.Record.lookup().experiment_1
    assert keys(ln.Artifact.filter(suffix=".h5ad", records=experiment_1).to_dataframe()) == [D1]
    assert keys(ln.Artifact.filter(records=experiment_1, size__gt=1e4).to_dataframe()) == [D1]
    assert keys(ln.Artifact.filter(suffix__in=[".jpg", ".fastq.gz"]).to_dataframe()) == [
        JPG, FASTQ]
    by_created = [FASTQ, JPG, IRIS, D1, D2]
    assert keys(ln.Artifact.filter().order_by("created_at").to_dataframe()) == by_created
    assert keys(ln.Artifact.filter().order_by("-created_at").to_dataframe()) == by_created[::-1]
    by_key = [D1, D2, IRIS, JPG, FASTQ]
    assert keys(ln.Artifact.filter().order_by("key").to_dataframe()) == by_key
    assert keys(ln.Artifact.filter().order_by("-key").to_dataframe()) == by_key[::-1]
    for condition in ({"description__contains": "search"}, {"description__icontains": "Search"},
                      {"description__startswith": "Query"}):
        frame = ln.Transform.filter(**condition).to_dataframe().head(5)
        assert frame.empty and "key" in frame.columns and "description" in frame.columns
    either = ln.Artifact.filter(ln.Q(suffix=".jpg") | ln.Q(suffix=".fastq.gz")).to_dataframe()
    assert keys(either) == [JPG, FASTQ]
    assert keys(ln.Artifact.filter(~ln.Q(suffix=".jpg")).to_dataframe()) == [D2, D1, IRIS, FASTQ]


def test_view(guide):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ln.view()
    text = out.getvalue()
    assert text.startswith("****************\n* module: core *\n****************\nArtifact\n")
    names = [line for line in text.splitlines() if line in ("Artifact", "Record", "Storage",
                                                            "Transform", "User", "Feature")]
    assert names == ["Artifact", "Record", "Storage"]
    assert "Experiment 2" in text and "examples/dataset2.h5ad" in text
