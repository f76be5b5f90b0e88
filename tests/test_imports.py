"""What a fresh process imports: ``import lamina`` loads none of the heavy libraries, each
public name loads its module on first use, and what the first call does not need stays unloaded.
Checked in child processes through ``sys.modules`` (a deterministic answer, unlike a time)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest

import lamina as ln

from helpers import new_s3_root, python, write_file

# Libraries that cost tens to hundreds of ms of CPU each to import.
HEAVY = ["anndata", "deltalake", "duckdb", "fsspec", "numpy", "pandas", "polars", "pyarrow",
         "s3fs", "botocore", "jellyfish"]

PUBLIC_NAMES = [
    "Artifact", "Branch", "Collection", "DoesNotExist", "Feature", "FieldError", "InstanceError",
    "InvalidPath", "LaminaError", "MultipleResultsFound", "PermissionDenied", "Project", "Q",
    "Record", "Run", "Schema", "Space", "Storage", "Transform", "ULabel", "User",
    "ValidationError", "bionty", "connect", "current", "examples", "finish", "gc", "history",
    "init", "save", "settings", "sql", "track", "view",
]


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after ``import lamina as ln`` and ``code``."""
    proc = python(code + "\nprint(json.dumps(sorted(sys.modules)))")
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_import_lamina_loads_no_heavy_library():
    loaded = loaded_after("")
    assert sorted(loaded & set(HEAVY)) == []
    ours = sorted(m for m in loaded if m.startswith("lamina."))
    assert ours == ["lamina.errors"]


def test_registries_load_without_polars_anndata_fsspec_or_pandas():
    loaded = loaded_after("ln.Artifact, ln.Record, ln.Feature, ln.Q, ln.connect")
    assert {"duckdb", "deltalake", "pyarrow"} <= loaded  # what any query needs
    # pandas comes with the first query (DuckDB imports it to bind a parameter) or DataFrame
    assert sorted(loaded & {"polars", "anndata", "fsspec", "s3fs", "pandas"}) == []


def test_building_a_q_tree_loads_no_heavy_library():
    """A script may build its filters before anything queries: ``ln.Q`` is the tree alone."""
    loaded = loaded_after("ln.Q(key__startswith='raw/') | ~ln.Q(suffix='.csv')")
    assert sorted(loaded & set(HEAVY)) == []
    ours = sorted(m for m in loaded if m.startswith("lamina."))
    assert ours == ["lamina.engine", "lamina.engine.filter_tree", "lamina.errors"]


def test_a_first_query_loads_neither_polars_nor_anndata(local_root, tmp_path):
    ln.init(storage=local_root)
    ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="raw/a.txt").save()
    loaded = loaded_after(f"""
ln.connect({local_root!r})
assert ln.Artifact.filter(key__startswith="raw/").count() == 1
print(ln.Artifact.filter(key__startswith="raw/").to_dataframe())""")
    assert sorted(loaded & {"polars", "anndata"}) == []


def test_a_first_query_on_s3_loads_no_s3fs_aiobotocore_or_aiohttp(s3_endpoint, tmp_path):
    """A process that only reads an S3 catalog reads it through obstore: s3fs, aiobotocore,
    aiohttp and fsspec (~0.6 s of CPU to import, most of a first answer) stay unloaded, and so
    does botocore while the keys come from the environment."""
    root = new_s3_root()
    ln.init(storage=root)
    ln.Record(name="DMSO").save()
    ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="raw/a.txt").save()
    loaded = loaded_after(f"""
ln.connect({root!r})
assert ln.Artifact.filter(key__startswith="raw/").count() == 1
assert ln.Record.get(name="DMSO").name == "DMSO"
assert len(ln.Artifact.filter(key="raw/a.txt").to_dataframe()) == 1""")
    assert sorted(loaded & {"aiobotocore", "aiohttp", "botocore", "fsspec", "s3fs"}) == []


def test_every_public_name_resolves_to_its_defining_object():
    from lamina.catalog.instance import connect
    from lamina.engine.filter_tree import Q
    from lamina.models import Artifact, Record
    from lamina.models.saving import save

    assert sorted(ln.__all__) == sorted(PUBLIC_NAMES)
    for name in PUBLIC_NAMES:
        assert getattr(ln, name) is not None, name
    assert (ln.Artifact, ln.Record, ln.Q, ln.connect, ln.save) == (Artifact, Record, Q, connect,
                                                                   save)
    assert ln.bionty.CellType.__module__ == "lamina.bionty.registries"
    assert set(PUBLIC_NAMES) <= set(dir(ln))
    assert ln.__version__ == version("lamina")


def test_star_import_gives_every_public_name():
    proc = python("from lamina import *\nprint(json.dumps(sorted(k for k in dir() "
                  "if not k.startswith('_'))))")
    names = set(json.loads(proc.stdout.splitlines()[-1]))
    assert set(PUBLIC_NAMES) <= names


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'lamina' has no attribute 'Artefact'"):
        ln.Artefact  # noqa: B018


def test_bionty_rows_reached_from_a_core_registry_come_back_as_bionty_records(local_root,
                                                                              tmp_path):
    """A fresh process that never imported ``lamina.bionty`` still gets CellType records
    (not an error) when it follows an artifact's ``cell_types``."""
    from lamina import bionty as bt

    ln.init(storage=local_root, modules="bionty")
    t_cell = bt.CellType.from_source(name="T cell").save(parents=False)
    artifact = ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    artifact.cell_types.add(t_cell)
    proc = python(f"""
        ln.connect({local_root!r})
        artifact = ln.Artifact.get(key="a.txt")
        before = "lamina.bionty" in sys.modules
        cells = list(artifact.cell_types.all())
        print(json.dumps([before, [(type(c).__name__, c.name) for c in cells]]))
        """)
    before, cells = json.loads(proc.stdout.splitlines()[-1])
    assert before is False
    assert cells == [["CellType", "T cell"]]


def test_cli_version_loads_no_heavy_library():
    code = ("import json, sys\nfrom lamina.cli import main\ntry:\n    main(['--version'])\n"
            "except SystemExit:\n    pass\nprint(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.splitlines()[0] == f"lamina {version('lamina')}"
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert sorted(loaded & set(HEAVY)) == []


def test_cli_searches_a_bionty_registry_in_a_fresh_process(local_root):
    from lamina import bionty as bt

    ln.init(storage=local_root, modules="bionty")
    bt.CellType.from_source(name="T cell").save(parents=False)
    proc = python("""
        from lamina.cli import main
        sys.exit(main(["search", "T cell", "--registry", "CellType"]))
        """, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "T cell" in proc.stdout
