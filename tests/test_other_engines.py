"""Other engines read the catalog's Delta tables directly and get lamina's rows: Polars, DuckDB's
``delta`` extension (through the views lamina exports) and Daft, each answering the seed guide's
``filter(perturbation="DMSO", temperature__gt=20)`` like lamina does, with feature names
resolved without lamina (the feature table, or the data dictionary beside the tables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import lamina as ln
from lamina.extensions import extension_path

import engine_recipes as recipes
from conftest import TEST_USER
from helpers import filesystem, module_root, reset_process_state

EXTENSIONS = [extension_path("duckdb_extension_delta"), extension_path("duckdb_extension_httpfs")]


@pytest.fixture(scope="module", params=["local", "s3"])
def world(request, tmp_path_factory):
    """The guide's two datasets plus artifacts each filter condition alone would let through:
    IFNG at 25 degrees, DMSO at 18, and a trashed DMSO at 30. Returns (root, lamina's keys)."""
    with module_root(request, tmp_path_factory, TEST_USER) as root:
        files = tmp_path_factory.mktemp("engines-files")
        ln.init(storage=root)
        ln.examples.datasets.mini_immuno.save_mini_immuno_datasets()
        for name, values in (("ifng_25", {"perturbation": ["IFNG"], "temperature": 25.0}),
                             ("dmso_18", {"perturbation": ["DMSO"], "temperature": 18.0}),
                             ("trashed", {"perturbation": ["DMSO"], "temperature": 30.0})):
            path = files / f"{name}.txt"
            path.write_text(name)
            artifact = ln.Artifact(str(path), key=f"extra/{name}.txt").save()
            artifact.features.add_values(values)
            if name == "trashed":
                artifact.delete()
        expected = sorted(a.key for a in ln.Artifact.filter(perturbation="DMSO",
                                                            temperature__gt=20))
        assert expected == ["examples/dataset1.h5ad", "examples/dataset2.h5ad"]
        # Every row of every registry that has a table, by its path below the catalog folder.
        ids = {(spec.view, f"{spec.module}/{spec.name}"):
               sorted(ln.sql(f'SELECT id FROM "{spec.view}"')["id"].tolist())
               for spec in ln.current().table_specs()
               if ln.current().store(spec).version() >= 0}
        assert subprocess.run([sys.executable, "-m", "lamina.cli", "export-views", "--write"],
                              capture_output=True, check=True).returncode == 0
        reset_process_state()
        yield root, expected, ids


def test_polars_reads_every_registry_with_lamina_rows(world):
    root, _, ids = world
    assert len(ids) >= 6
    for (view, table), expected in ids.items():
        assert sorted(recipes.polars_table(root, table)["id"].to_list()) == expected, view


def test_polars_answers_the_seed_filter_through_the_feature_table(world):
    root, expected, _ = world
    assert recipes.polars_dmso_above_20(root) == expected


def test_the_dictionary_names_every_feature_column(world):
    root, _, _ = world
    described = recipes.dictionary(root)["tables"]["artifact"]
    features = recipes.polars_table(root, "core/feature")
    by_column = {f"f_{r['id']}": r for r in features.iter_rows(named=True)}
    artifact_columns = set(recipes.polars_table(root, "core/artifact").columns)
    assert set(described["features"]) == {c for c in artifact_columns if c.startswith("f_")}
    for column, feature in described["features"].items():
        assert feature["name"] == by_column[column]["name"]
        assert feature["dtype"] == by_column[column]["_dtype_str"]
    temperature = next(f for f in described["features"].values() if f["name"] == "temperature")
    assert temperature["dtype"] == "float"
    perturbation = next(f for f in described["features"].values()
                        if f["name"] == "perturbation")
    assert perturbation["labels"] == "core/record"
    assert described["columns"]["records"]["references"] == "core/record"
    assert described["columns"]["created_by_id"]["references"] == "core/user"


def test_duckdb_delta_extension_answers_the_seed_filter_through_exported_views(world):
    root, expected, ids = world
    views = filesystem(root).cat_file(f"{root}/.lamina/catalog/_lamina_views.sql").decode()
    con = recipes.duckdb_connection(root, EXTENSIONS)
    con.execute(views)
    assert [r[0] for r in con.execute(recipes.DMSO_ABOVE_20_SQL).fetchall()] == expected
    for (view, _), expected_ids in ids.items():
        found = con.execute(f'SELECT id FROM "{view}" ORDER BY id').fetchall()
        assert [r[0] for r in found] == expected_ids, view


def test_daft_recipe_runs_without_lamina(world):
    """The distributed-engine recipe, in a process that never imports lamina."""
    root, expected, _ = world
    code = ("import sys, json, engine_recipes as r\n"
            f"keys = r.daft_dmso_above_20({root!r})\n"
            "assert 'lamina' not in sys.modules\n"
            "print(json.dumps(keys))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(__file__), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_the_dictionary_follows_new_feature_columns_without_an_export(local_root, tmp_path):
    """The write path rewrites the dictionary when a feature's first value lands in a table,
    one value at a time or in bulk: no `lamina export-views --write` needed."""
    reset_process_state()
    ln.init(storage=local_root)
    ln.Feature(name="temperature", dtype=float).save()
    ln.Feature(name="batch", dtype=str).save()
    path = tmp_path / "a.txt"
    path.write_text("a")
    ln.Artifact(str(path), key="a.txt").save().features.add_values({"temperature": 21.5})
    names = {f["name"] for f in recipes.dictionary(local_root)["tables"]["artifact"]["features"]
             .values()}
    assert names == {"temperature"}

    other = tmp_path / "b.txt"
    other.write_text("b")
    ln.save(ln.Artifact.from_manifest(pd.DataFrame({"path": [str(other)], "key": ["b.txt"],
                                                   "batch": ["b1"]})))
    names = {f["name"] for f in recipes.dictionary(local_root)["tables"]["artifact"]["features"]
             .values()}
    assert names == {"temperature", "batch"}
