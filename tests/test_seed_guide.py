"""The query guide of the seed system, call by call, with the rows it printed (uids and
timestamps aside), on a local root and on an S3 root."""

from __future__ import annotations

import contextlib
import io
import math

import pytest

import lamina as ln
from conftest import TEST_USER, reset_process_state
from helpers import module_root
from lamina import bionty as bt

ARTIFACT_COLUMNS = [
    "uid", "key", "description", "suffix", "kind", "otype", "size", "hash", "n_files",
    "n_observations", "version_tag", "is_latest", "is_locked", "created_at", "branch_id",
    "created_on_id", "space_id", "storage_id", "run_id", "schema_id", "created_by_id",
]
D2, D1, IRIS, JPG, FASTQ = ("examples/dataset2.h5ad", "examples/dataset1.h5ad", "iris.parquet",
                            "my_image.jpg", "raw/my_fastq.fastq.gz")


@pytest.fixture(scope="module", params=["local", "s3"])
def guide_root(request, tmp_path_factory):
    """The guide's world, built once per storage kind (its queries only read)."""
    with module_root(request, tmp_path_factory, TEST_USER) as root:
        files = tmp_path_factory.mktemp("guide-files")
        ln.init(storage=root, modules="bionty")
        ln.Artifact(ln.examples.datasets.file_fastq(files), key=FASTQ).save()
        ln.Artifact(ln.examples.datasets.file_jpg_paradisi05(files), key=JPG).save()
        ln.Artifact.from_dataframe(ln.examples.datasets.df_iris(), key=IRIS).save()
        ln.examples.datasets.mini_immuno.save_mini_immuno_datasets()
        reset_process_state()
    return root


@pytest.fixture
def guide(guide_root):
    ln.connect(guide_root)
    return guide_root


def keys(frame) -> list[str]:
    return list(frame["key"])


def test_overview_of_artifacts(guide):
    df = ln.Artifact.to_dataframe()
    assert list(df.columns) == ARTIFACT_COLUMNS
    assert df.index.name == "id" and list(df.index) == [5, 4, 3, 2, 1]
    assert keys(df) == [D2, D1, IRIS, JPG, FASTQ]
    assert list(df["suffix"]) == [".h5ad", ".h5ad", ".parquet", ".jpg", ".fastq.gz"]
    assert list(df["kind"])[:3] == ["dataset"] * 3 and list(df["kind"])[3:] == [None, None]
    assert list(df["otype"]) == ["AnnData", "AnnData", "DataFrame", None, None]
    assert list(df["n_observations"])[:3] == [3, 3, 150]
    assert all(math.isnan(v) for v in df["n_observations"][3:])
    assert list(df["schema_id"])[:2] == [3, 3]
    assert set(df["is_latest"]) == {True} and set(df["branch_id"]) == {1}
    assert df["hash"].str.len().eq(22).all()


def test_include_features(guide):
    df = ln.Artifact.to_dataframe(include="features")
    # Every feature with values, the bionty-typed ones too (as the seed system returns them).
    assert list(df.columns) == ["uid", "key", "perturbation", "cell_type_by_expert",
                                "cell_type_by_model", "temperature", "experiment",
                                "date_of_study", "study_note", "study_metadata"]
    d2, d1 = df.loc[5], df.loc[4]
    assert d2["perturbation"] == {"IFNG", "DMSO"} == d1["perturbation"]
    assert (d2["temperature"], d1["temperature"]) == (22.6, 21.6)
    assert (d2["experiment"], d1["experiment"]) == ("Experiment 2", "Experiment 1")
    assert str(d2["date_of_study"].date()) == "2025-02-13"
    assert str(d1["date_of_study"].date()) == "2024-12-01"
    assert d1["study_note"].startswith("We had a great time performing this study")
    assert d2["study_metadata"] == {"detail1": "456", "detail2": 2}
    assert d1["study_metadata"] == {"detail1": "123", "detail2": 1}
    assert df.loc[[3, 2, 1], "temperature"].isna().all()


def test_include_related_fields(guide):
    df = ln.Artifact.to_dataframe(
        include=["created_by__name", "records__name", "cell_types__name", "schemas__itype"])
    assert list(df.columns) == ["uid", "key", "created_by__name", "records__name",
                                "cell_types__name", "schemas__itype"]
    assert set(df["created_by__name"]) == {"Test User1"}
    assert df.loc[5, "records__name"] == {"IFNG", "DMSO", "Experiment 2"}
    assert df.loc[4, "records__name"] == {"IFNG", "DMSO", "Experiment 1"}
    assert df.loc[5, "cell_types__name"] == {"T cell", "B cell"}
    assert df.loc[4, "cell_types__name"] == {"CD8-positive, alpha-beta T cell", "T cell",
                                             "B cell"}
    assert df.loc[4, "schemas__itype"] == {"bionty.Gene.ensembl_gene_id", "Feature"}
    for artifact_id in (3, 2, 1):
        assert df.loc[artifact_id, "records__name"] == {None}


def test_view_lists_every_registry(guide):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ln.view()
    text = out.getvalue()
    for name in ("module: core", "Artifact", "Feature", "Record", "Schema", "Storage",
                 "module: bionty", "CellType", "Gene", "Organism"):
        assert name in text
    assert "Experiment 2" in text and "CD8A" in text


def test_lookup_and_get(guide):
    records = ln.Record.lookup()
    experiment_1 = records.experiment_1
    assert experiment_1.name == "Experiment 1"
    assert "b_cell" in dir(bt.CellType.lookup())
    assert ln.Record.get(experiment_1.uid) == experiment_1
    assert ln.Record.get(name="Experiment 1") == experiment_1
    assert "Record(uid=" in repr(experiment_1) and "name='Experiment 1'" in repr(experiment_1)


def test_query_by_fields(guide):
    qs = ln.Artifact.filter(suffix=".h5ad")
    assert [a.key for a in qs] == [D1, D2]
    assert repr(qs).startswith("<ArtifactQuerySet (2 rows) [Artifact(uid=")
    qs = qs.filter(records__name="Experiment 1")
    assert keys(qs.to_dataframe()) == [D1]
    assert qs.one().key == D1 and qs.one_or_none().key == D1


def test_query_by_features(guide):
    assert keys(ln.Artifact.filter(perturbation="DMSO").to_dataframe(include="features")) == [
        D2, D1]
    perturbation = ln.Feature.get(name="perturbation")
    assert [a.key for a in ln.Artifact.filter(perturbation == "DMSO")] == [D1, D2]
    by_key = ln.Artifact.filter(study_metadata__detail1="123").to_dataframe(include="features")
    assert keys(by_key) == [D1]
    annotated = ln.Artifact.filter(perturbation__isnull=False).to_dataframe(include="features")
    assert keys(annotated) == [D2, D1]


def test_query_related_registries(guide):
    assert keys(ln.Artifact.filter(created_by__handle__startswith="testuse").to_dataframe()) == [
        D2, D1, IRIS, JPG, FASTQ]
    cd8a = bt.Gene.get(symbol="CD8A")
    schemas_with_cd8a = ln.Schema.filter(genes=cd8a)
    assert keys(ln.Artifact.filter(schemas__in=schemas_with_cd8a).to_dataframe()) == [D2, D1]
    assert keys(ln.Artifact.filter(schemas__genes__symbol="CD8A").to_dataframe()) == [D2, D1]


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
    assert ln.Transform.filter(description__contains="search").to_dataframe().empty
    assert ln.Transform.filter(description__icontains="Search").to_dataframe().empty
    assert ln.Transform.filter(description__startswith="Query").to_dataframe().empty
    either = ln.Artifact.filter(ln.Q(suffix=".jpg") | ln.Q(suffix=".fastq.gz")).to_dataframe()
    assert keys(either) == [JPG, FASTQ]
    assert keys(ln.Artifact.filter(~ln.Q(suffix=".jpg")).to_dataframe()) == [D2, D1, IRIS, FASTQ]
