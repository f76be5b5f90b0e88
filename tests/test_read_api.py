"""Read-side calls people reach for first: cut frames that say so, values_list, get() with no
argument, versions, describe() and view_lineage()."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

import lamina as ln

from helpers import local_only, statements_of, write_file



@pytest.fixture
def six_artifacts(instance, tmp_path):
    return [ln.Artifact(write_file(tmp_path, f"f{i}.txt", f"content {i}"),
                        key=f"dir/f{i}.txt").save() for i in range(6)]


@pytest.fixture
def counts(monkeypatch) -> list:
    """Every count statement (Session.scalar) the sessions run."""
    return statements_of(monkeypatch, "scalar")


def test_a_cut_frame_says_more_rows_match_without_counting_them(six_artifacts, caplog,
                                                                 counts):
    # One row more than shown tells that more match; counting them (the seed system does not
    # either) was most of a filtered display's time at 1e6 artifacts.
    with caplog.at_level("INFO", logger="lamina"):
        frame = ln.Artifact.filter(key__startswith="dir/").to_dataframe(limit=4)
    assert len(frame) == 4
    assert list(frame.index) == [a.id for a in six_artifacts][::-1][:4]
    messages = [r.getMessage() for r in caplog.records]
    assert any("showing 4 Artifact rows, more match" in m and "limit=None" in m
               for m in messages), messages
    assert counts == []


def test_a_whole_frame_runs_no_count_and_says_nothing(six_artifacts, caplog, counts):
    with caplog.at_level("INFO", logger="lamina"):
        assert len(ln.Artifact.to_dataframe(limit=6)) == 6
        assert len(ln.Artifact.to_dataframe(limit=None)) == 6
        # A slice is the user's own limit: nothing was cut behind their back.
        assert len(ln.Artifact.filter()[:2].to_dataframe()) == 2
    assert not [r for r in caplog.records if "more match" in r.getMessage()]
    assert counts == []


def test_values_list(six_artifacts):
    keys = [f"dir/f{i}.txt" for i in range(6)]
    assert ln.Artifact.filter().values_list("key", flat=True) == keys
    pairs = ln.Artifact.filter(key__in=keys[:2]).values_list("id", "key")
    assert pairs == [(six_artifacts[0].id, keys[0]), (six_artifacts[1].id, keys[1])]
    assert ln.Artifact.filter().order_by("-id").values_list("key", flat=True) == keys[::-1]
    with pytest.raises(ln.FieldError, match="did you mean 'key'"):
        ln.Artifact.filter().values_list("kye")
    with pytest.raises(ln.ValidationError, match="exactly one field"):
        ln.Artifact.filter().values_list("id", "key", flat=True)


@local_only
def test_get_without_arguments_gives_the_first_record(instance, tmp_path):
    with pytest.raises(ln.DoesNotExist, match="no Artifact saved yet"):
        ln.Artifact.get()
    first = ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    ln.Artifact(write_file(tmp_path, "b.txt", "b"), key="b.txt").save()
    assert ln.Artifact.get() == first
    with pytest.raises(ln.MultipleResultsFound):
        ln.Artifact.get(suffix=".txt")


@local_only
def test_versions_of_an_artifact(instance, tmp_path):
    v1 = ln.Artifact(write_file(tmp_path, "a.txt", "one"), key="data/a.txt").save()
    other = ln.Artifact(write_file(tmp_path, "b.txt", "other"), key="data/b.txt").save()
    v2 = ln.Artifact(write_file(tmp_path, "a2.txt", "two"), revises=v1).save()
    v3 = ln.Artifact(write_file(tmp_path, "a3.txt", "three"), revises=v2).save()
    for member in (v1, v2, v3):
        assert list(member.versions) == [v1, v2, v3]
    assert list(other.versions) == [other]
    assert v1.versions.filter(is_latest=True).one() == v3
    with pytest.raises(ln.FieldError, match="versions"):
        ln.Record(name="x").save().versions


@local_only
def test_describe_shows_fields_lineage_labels_and_features(instance, tmp_path, capsys):
    ln.track(key="prepare.py", source_code="print(1)")
    artifact = ln.Artifact(write_file(tmp_path, "a.csv", "x\n1\n"), key="tables/a.csv",
                           description="a small table").save()
    artifact.records.add(ln.Record(name="Experiment 1").save(),
                         ln.Record(name="Experiment 2").save())
    ln.Feature(name="temperature", dtype=float).save()
    artifact.features.add_values({"temperature": 21.5})
    artifact = ln.Artifact.get(key="tables/a.csv")
    assert artifact.describe() is None
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"Artifact: tables/a.csv (uid {artifact.uid!r})"
    assert "│   ├── description: 'a small table'" in text
    assert re.search(r"transform: prepare\.py \(uid '\w+'\)", text)
    assert "records: Experiment 1, Experiment 2" in text
    assert text.rstrip().endswith("└── Features\n    └── temperature: 21.5")
    assert artifact.describe(return_str=True) == text.rstrip("\n")


@local_only
def test_view_lineage_walks_runs_and_inputs(instance, tmp_path):
    ln.track(key="make.py", source_code="make")
    raw = ln.Artifact(write_file(tmp_path, "raw.txt", "raw"), key="raw.txt").save()
    ln.track(key="clean.py", source_code="clean")
    ln.Artifact.get(key="raw.txt").load()
    clean = ln.Artifact(write_file(tmp_path, "clean.txt", "clean"), key="clean.txt").save()
    graph = clean.view_lineage()
    lines = str(graph).splitlines()
    assert lines[0] == f"clean.txt ({clean.uid[:8]})"
    assert re.fullmatch(r"└── saved by run \w{8} of clean\.py, .*", lines[1])
    assert lines[2] == f"    └── input raw.txt ({raw.uid[:8]})"
    assert re.fullmatch(r"        └── saved by run \w{8} of make\.py, .*", lines[3])
    assert len(lines) == 4
    svg = ET.fromstring(graph._repr_svg_())
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert sorted(t.split(" ")[0] for t in texts) == ["clean.txt", "raw.txt", "run", "run"]
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}line"))) == 3
    # Saved without a run: the artifact alone.
    ln.finish()
    lone = ln.Artifact(write_file(tmp_path, "lone.txt", "lone"), key="lone.txt").save()
    assert str(lone.view_lineage()) == f"lone.txt ({lone.uid[:8]})"


@local_only
def test_the_untracked_warning_is_said_once_per_process(instance, tmp_path, caplog):
    from lamina.models import lineage

    lineage._warned["untracked"] = False
    with caplog.at_level("INFO", logger="lamina"):
        for i in range(3):
            ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"{i}.txt").save()
        ln.save(ln.Artifact.from_manifest(pd.DataFrame(
            {"path": [write_file(tmp_path, "m.txt", "m")], "key": ["m.txt"]})))
    said = [r for r in caplog.records if "ln.track()" in r.getMessage()]
    assert len(said) == 1
