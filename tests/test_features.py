"""Features: registering, annotating, filtering and displaying feature values; schemas;
lineage. Expected answers come from the values the test wrote, not from lamina."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date

import pandas as pd
import pytest

import lamina as ln


@pytest.fixture
def world(root, tmp_path):
    """Six artifacts annotated with every kind of feature, some left unannotated."""
    ln.init(storage=root)
    for name in ["DMSO", "IFNG", "TNF", "Experiment 1", "Experiment 2"]:
        ln.Record(name=name).save()
    features = {
        "perturbation": ln.Record, "temperature": float, "n_cells": int, "is_control": bool,
        "date_of_study": date, "study_metadata": dict, "study_note": str, "tags": "list[str]",
    }
    for name, dtype in features.items():
        ln.Feature(name=name, dtype=dtype).save()
    values = [
        {"perturbation": ["DMSO", "IFNG"], "temperature": 21.6, "n_cells": 100,
         "is_control": True, "date_of_study": date(2024, 12, 1),
         "study_metadata": {"detail1": "123", "detail2": 1, "nested": {"k": "v"}},
         "study_note": "great", "tags": ["a", "b"]},
        {"perturbation": "IFNG", "temperature": 22.6, "n_cells": 5, "is_control": False,
         "date_of_study": date(2025, 2, 13), "study_metadata": {"detail1": "456", "detail2": 2}},
        {"perturbation": ["TNF"], "temperature": 19.0, "date_of_study": date(2025, 6, 1),
         "study_metadata": {"detail1": "789", "detail2": 3}},
        {"temperature": 30.5},
        {},
        {},
    ]
    artifacts = []
    for i, annotation in enumerate(values):
        df = pd.DataFrame({"x": [i, i + 1]})
        artifact = ln.Artifact.from_dataframe(df, key=f"a{i}.parquet").save()
        if annotation:
            artifact.features.add_values(annotation)
        artifacts.append(artifact)
    return values, artifacts


def ids(qs) -> set[int]:
    return {a.id for a in qs}


def expected(values, artifacts, predicate) -> set[int]:
    return {a.id for v, a in zip(values, artifacts) if predicate(v)}


def labels(v) -> list[str]:
    p = v.get("perturbation")
    return [] if p is None else [p] if isinstance(p, str) else list(p)


@pytest.mark.parametrize("condition, predicate", [
    ({"perturbation": "DMSO"}, lambda v: "DMSO" in labels(v)),
    ({"perturbation": "IFNG"}, lambda v: "IFNG" in labels(v)),
    ({"perturbation__in": ["DMSO", "TNF"]}, lambda v: {"DMSO", "TNF"} & set(labels(v))),
    ({"perturbation__startswith": "IF"}, lambda v: any(x.startswith("IF") for x in labels(v))),
    ({"perturbation__isnull": False}, lambda v: bool(labels(v))),
    ({"perturbation__isnull": True}, lambda v: not labels(v)),
    ({"temperature__gt": 21.5}, lambda v: v.get("temperature", -1) > 21.5),
    ({"temperature__lte": 21.6}, lambda v: "temperature" in v and v["temperature"] <= 21.6),
    ({"temperature__range": (20, 23)}, lambda v: 20 <= v.get("temperature", -1) <= 23),
    ({"n_cells": 5}, lambda v: v.get("n_cells") == 5),
    ({"is_control": True}, lambda v: v.get("is_control") is True),
    ({"date_of_study__gte": date(2025, 1, 1)},
     lambda v: "date_of_study" in v and v["date_of_study"] >= date(2025, 1, 1)),
    ({"date_of_study__year": 2025},
     lambda v: "date_of_study" in v and v["date_of_study"].year == 2025),
    ({"study_metadata__detail1": "123"},
     lambda v: v.get("study_metadata", {}).get("detail1") == "123"),
    ({"study_metadata__detail2__gt": 1},
     lambda v: v.get("study_metadata", {}).get("detail2", 0) > 1),
    ({"study_metadata__detail2__lte": 2},
     lambda v: "study_metadata" in v and v["study_metadata"]["detail2"] <= 2),
    ({"study_metadata__detail1__in": ["123", "789"]},
     lambda v: v.get("study_metadata", {}).get("detail1") in ("123", "789")),
    ({"study_metadata__nested__k": "v"},
     lambda v: v.get("study_metadata", {}).get("nested", {}).get("k") == "v"),
    ({"study_metadata__isnull": True}, lambda v: "study_metadata" not in v),
    ({"study_note__icontains": "GREAT"}, lambda v: "great" in v.get("study_note", "")),
    ({"tags": "b"}, lambda v: "b" in v.get("tags", [])),
])
def test_feature_filters_match_python(world, condition, predicate):
    values, artifacts = world
    assert ids(ln.Artifact.filter(**condition)) == expected(values, artifacts, predicate)
    assert ln.Artifact.filter(**condition).count() == len(expected(values, artifacts, predicate))


def test_negated_feature_filters_keep_unannotated_rows(world):
    values, artifacts = world
    assert ids(ln.Artifact.exclude(perturbation="DMSO")) == expected(
        values, artifacts, lambda v: "DMSO" not in labels(v))
    assert ids(ln.Artifact.filter(~ln.Q(temperature__gt=21.5))) == expected(
        values, artifacts, lambda v: not v.get("temperature", -1) > 21.5)


def test_feature_predicates_and_mixing_with_fields(world):
    values, artifacts = world
    perturbation = ln.Feature.get(name="perturbation")
    temperature = ln.Feature.get(name="temperature")
    assert ids(ln.Artifact.filter(perturbation == "IFNG")) == expected(
        values, artifacts, lambda v: "IFNG" in labels(v))
    assert ids(ln.Artifact.filter(temperature > 21.0)) == expected(
        values, artifacts, lambda v: v.get("temperature", -1) > 21.0)
    assert ids(ln.Artifact.filter(temperature < 21.0)) == expected(
        values, artifacts, lambda v: "temperature" in v and v["temperature"] < 21.0)
    assert ids(ln.Artifact.filter(temperature != 30.5)) == expected(
        values, artifacts, lambda v: v.get("temperature") != 30.5)
    assert ids(ln.Artifact.filter(perturbation.isnull())) == expected(
        values, artifacts, lambda v: not labels(v))
    mixed = ln.Artifact.filter((perturbation == "TNF") | ln.Q(key="a3.parquet"), size__gt=0)
    assert ids(mixed) == {artifacts[2].id, artifacts[3].id}
    assert ids(ln.Artifact.filter(ln.Q(temperature__gt=20) & ln.Q(key__startswith="a1"))) == {
        artifacts[1].id}


def test_get_set_remove_values(world):
    values, artifacts = world
    first = ln.Artifact.get(artifacts[0].id)
    got = first.features.get_values()
    assert got["perturbation"] == {"DMSO", "IFNG"}
    assert got["study_metadata"] == values[0]["study_metadata"]
    assert got["date_of_study"] == date(2024, 12, 1) and got["tags"] == ["a", "b"]
    first.features.add_values({"perturbation": "TNF"})
    assert ln.Artifact.get(first.id).features.get_values()["perturbation"] == {
        "DMSO", "IFNG", "TNF"}
    first.features.remove_values("perturbation", "DMSO")
    assert ln.Artifact.get(first.id).features.get_values()["perturbation"] == {"IFNG", "TNF"}
    first.features.remove_values("temperature")
    assert "temperature" not in ln.Artifact.get(first.id).features.get_values()
    first.features.set_values({"n_cells": 7})
    assert ln.Artifact.get(first.id).features.get_values() == {"n_cells": 7}
    assert "n_cells: 7" in first.features.describe()


def test_categorical_values_also_link_the_labels(world):
    _, artifacts = world
    assert set(ln.Artifact.get(artifacts[0].id).records.to_dataframe()["name"]) == {
        "DMSO", "IFNG"}
    assert artifacts[0].id in ids(ln.Artifact.filter(records__name="DMSO"))


def test_include_features_display(world):
    values, artifacts = world
    df = ln.Artifact.to_dataframe(include="features")
    assert {"perturbation", "temperature", "date_of_study", "study_metadata"} <= set(df.columns)
    row = df.loc[artifacts[0].id]
    assert row["perturbation"] == {"DMSO", "IFNG"}
    assert df.loc[artifacts[1].id, "perturbation"] == "IFNG"
    assert row["study_metadata"]["detail1"] == "123"
    assert str(df["date_of_study"].dtype).startswith("datetime64")
    assert df["temperature"].dtype == float and pd.isna(df.loc[artifacts[5].id, "temperature"])
    only = ln.Artifact.to_dataframe(features=["temperature"])
    assert "temperature" in only.columns and "perturbation" not in only.columns


def test_bad_feature_input_is_rejected_and_nothing_written(world):
    _, artifacts = world
    artifact = ln.Artifact.get(artifacts[4].id)
    with pytest.raises(ln.ValidationError, match="temperatur"):
        artifact.features.add_values({"temperatur": 1.0})
    with pytest.raises(ln.ValidationError, match="NOPE"):
        artifact.features.add_values({"perturbation": ["DMSO", "NOPE"]})
    with pytest.raises(ln.ValidationError, match="n_cells"):
        artifact.features.add_values({"n_cells": "many"})
    with pytest.raises(ln.ValidationError, match="dict"):
        artifact.features.add_values({"study_metadata": "not a dict"})
    assert ln.Artifact.get(artifacts[4].id).features.get_values() == {}
    with pytest.raises(ln.FieldError, match="did you mean 'temperature'"):
        ln.Artifact.filter(temperatur__gt=1)
    with pytest.raises(ln.ValidationError):
        ln.Artifact.filter(temperature__gt="hot")
    with pytest.raises(ln.ValidationError, match="dtype"):
        ln.Feature(name="weird", dtype="cat[Nope]")
    with pytest.raises(ln.ValidationError, match="exists with dtype"):
        ln.Feature(name="temperature", dtype=int)


def test_ambiguous_feature_names_are_an_error(world):
    group_a = ln.Feature(name="GroupA", is_type=True).save()
    group_b = ln.Feature(name="GroupB", is_type=True).save()
    ln.Feature(name="score", dtype=float, type=group_a).save()
    second = ln.Feature(name="score", dtype=float, type=group_b).save()
    with pytest.raises(ln.FieldError, match="ambiguous"):
        ln.Artifact.filter(score__gt=1)
    assert ln.Artifact.filter(second > 1).count() == 0


def test_record_features(world):
    record = ln.Record(name="sample 1").save()
    record.features.add_values({"temperature": 4.0, "perturbation": "DMSO"})
    assert ln.Record.filter(temperature__lt=5).one() == record
    assert ln.Record.filter(perturbation="DMSO").one() == record


def test_schema_validation_reports_every_problem(world):
    schema = ln.Schema([ln.Feature.get(name="perturbation"), ln.Feature.get(name="n_cells")],
                       name="samples").save()
    good = pd.DataFrame({"perturbation": ["DMSO", "IFNG"], "n_cells": [1, 2]})
    artifact = ln.Artifact.from_dataframe(good, key="good.parquet", schema=schema).save()
    assert artifact.schema_id == schema.id
    assert artifact.features.get_values()["perturbation"] == {"DMSO", "IFNG"}
    assert ln.Artifact.filter(schemas__features__name="n_cells").count() == 1
    before = ln.Artifact.filter().count()
    bad = pd.DataFrame({"perturbation": ["DMSO", "UNKNOWN"], "n_cells": ["x", "y"]})
    with pytest.raises(ln.ValidationError) as error:
        ln.Artifact.from_dataframe(bad, key="bad.parquet", schema=schema)
    assert "UNKNOWN" in str(error.value) and "n_cells" in str(error.value)
    with pytest.raises(ln.ValidationError, match="missing"):
        ln.Artifact.from_dataframe(pd.DataFrame({"n_cells": [1]}), key="m.parquet",
                                   schema=schema)
    assert ln.Artifact.filter().count() == before


def test_track_records_lineage_and_run_params(world, tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import pandas as pd
        import lamina as ln
        ln.connect({ln.current().root!r})
        ln.track(params={{"learning_rate": 0.02, "optimizer": "adam"}})
        ln.Artifact.get(key="a0.parquet").load()
        ln.Artifact.from_dataframe(pd.DataFrame({{"y": [1]}}), key="model.parquet").save()
        ln.finish()
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    output = ln.Artifact.get(key="model.parquet")
    assert ln.Artifact.filter(run__transform__key="train.py").one() == output
    run = output.run
    assert run.finished_at is not None and run.transform.source_code == script.read_text()
    assert [a.key for a in run.input_artifacts] == ["a0.parquet"]
    assert ln.Run.filter(params__learning_rate__gt=0.01).one() == run
    assert ln.Run.filter(params__learning_rate__gt=0.05).count() == 0
    assert ln.Run.filter(params__optimizer="adam").count() == 1
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    assert ln.Transform.filter(key="train.py").count() == 1  # same code: same transform
    script.write_text(script.read_text() + "\n# changed\n")
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    versions = ln.Transform.filter(key="train.py").order_by("id").to_list()
    assert len(versions) == 2 and versions[0].uid[:12] == versions[1].uid[:12]
    assert [v.is_latest for v in versions] == [False, True]


def test_label_names_resolve_within_their_record_type_on_every_path(instance, tmp_path):
    """The same name in two Record types: from_values, add_values and a manifest all pick the
    record of the type asked for, and create missing ones inside that type."""
    treatment = ln.Record(name="Treatment", is_type=True).save()
    donor = ln.Record(name="Donor", is_type=True).save()
    as_treatment = ln.Record(name="X", type=treatment).save()
    as_donor = ln.Record(name="X", type=donor).save()
    assert [r.id for r in ln.Record.from_values(["X"], type=donor)] == [as_donor.id]
    assert [r.id for r in ln.Record.from_values(["X"], type=treatment)] == [as_treatment.id]

    ln.Feature(name="donor", dtype=donor).save()
    artifact = ln.Artifact.from_dataframe(pd.DataFrame({"x": [1]}), key="one.parquet").save()
    artifact.features.add_values({"donor": "X"})
    assert ids(ln.Artifact.filter(donor=as_donor)) == {artifact.id}
    assert ids(ln.Artifact.filter(donor=as_treatment)) == set()

    path = tmp_path / "two.csv"
    path.write_text("a\n1\n")
    report = ln.save(ln.Artifact.from_manifest(
        pd.DataFrame({"path": [str(path)], "key": ["two.csv"], "donor": ["X"]})))
    assert report.new == 1
    assert ids(ln.Artifact.filter(donor=as_donor)) == {artifact.id, *report.artifact_ids()}

    created = ln.Record.from_values(["X", "Y"], type=treatment, create=True)
    assert created[0].id == as_treatment.id and created[1].id is None
    ln.save(created)
    assert ln.Record.get(name="Y").type_id == treatment.id
    with pytest.raises(ln.ValidationError, match="Record label"):
        artifact.features.add_values({"donor": "Y"})  # a Treatment, not a Donor


def test_include_features_shows_every_dtype(local_root):
    """Every feature with values appears, bionty-typed ones too, each as the user wrote it."""
    from lamina import bionty as bt

    ln.init(storage=local_root, modules="bionty")
    bt.CellType(name="T cell").save()
    bt.CellType(name="B cell").save()
    ln.Record(name="DMSO").save()
    ln.ULabel(name="good").save()
    written = {"cell_type": {"T cell", "B cell"}, "perturbation": "DMSO", "quality": "good",
               "temperature": 21.5, "n_cells": 7, "is_control": False,
               "date_of_study": date(2024, 1, 2), "study_metadata": {"k": 1},
               "study_note": "fine", "tags": ["a"]}
    dtypes = {"cell_type": bt.CellType, "perturbation": ln.Record, "quality": ln.ULabel,
              "temperature": float, "n_cells": int, "is_control": bool, "date_of_study": date,
              "study_metadata": dict, "study_note": str, "tags": "list[str]"}
    for name, dtype in dtypes.items():
        ln.Feature(name=name, dtype=dtype).save()
    artifact = ln.Artifact.from_dataframe(pd.DataFrame({"x": [1]}), key="a.parquet").save()
    artifact.features.add_values({**written, "cell_type": sorted(written["cell_type"])})
    row = ln.Artifact.to_dataframe(include="features").loc[artifact.id]
    assert set(written) <= set(row.index)
    for name, value in written.items():
        shown = row[name]
        if name == "date_of_study":
            shown = shown.date()
        if name == "tags":
            shown = list(shown)
        assert shown == value, name


def test_feature_filter_values_are_checked_against_the_dtype(world):
    """A wrong-typed value raises naming the feature and its dtype, whether or not any row has
    a value for the feature yet (like a wrong-typed value for a field)."""
    ln.Feature(name="unset_score", dtype=float).save()
    for conditions, feature, dtype in [({"temperature": "hot"}, "temperature", "float"),
                                       ({"unset_score": "hot"}, "unset_score", "float"),
                                       ({"n_cells__gt": "many"}, "n_cells", "int"),
                                       ({"is_control": "yes"}, "is_control", "bool"),
                                       ({"date_of_study__lt": "soon"}, "date_of_study", "date")]:
        with pytest.raises(ln.ValidationError, match=rf"'{feature}' has dtype {dtype}"):
            ln.Artifact.filter(**conditions)
    with pytest.raises(ln.ValidationError, match="expects a number"):
        ln.Artifact.filter(size="big")
    assert ln.Artifact.filter(unset_score__gt=1.0).count() == 0
