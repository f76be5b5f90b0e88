"""``ln.sql`` sees the catalog's registries and nothing else: no local file, no other bucket or
prefix, no artifact file, no Python variable; every registry stays readable."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lamina as ln

from helpers import every_root, filesystem, local_only, new_gcs_root, new_s3_root, python


@every_root
def test_every_registry_is_readable(instance):
    ln.Record(name="r1").save()
    for spec in instance.table_specs():
        frame = ln.sql(f'SELECT count(*) AS n FROM "{spec.view}"')
        assert frame["n"][0] >= 0, spec.view
    assert ln.sql("SELECT name FROM record")["name"].tolist() == ["r1"]


@local_only
def test_queries_print_no_progress_bar(instance):
    # DuckDB prints one on stdout for a statement slower than 2 s, which a loaded machine makes
    # of an ordinary query; a library must not write into its user's output. Asked in a child
    # process writing to a pipe, as a script's would (under pytest's capture DuckDB differs).
    out = python(f"""
        ln.connect({instance.root!r})
        print(bool(ln.sql("SELECT current_setting('enable_progress_bar') AS bar")["bar"][0]))
    """).stdout.split()
    assert out == ["False"]


def test_a_local_file_is_refused_with_the_reason(instance, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    for query in (f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM '{secret}'",
                  f"SELECT * FROM read_text('{secret}')", "SELECT * FROM glob('/etc/*')"):
        with pytest.raises(ln.ValidationError, match="reads the registries of this instance "
                                                     "only") as info:
            ln.sql(query)
        assert "hunter2" not in str(info.value)


@every_root
def test_artifact_files_of_the_instance_are_not_registries(instance, tmp_path):
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    artifact = ln.Artifact(str(path), key="t.parquet").save()
    with pytest.raises(ln.ValidationError, match="cannot read other files"):
        ln.sql(f"SELECT * FROM read_parquet('{artifact.path}')")
    # The artifact's own reader is not confined to the catalog.
    assert artifact.open("duckdb").fetchall() == [(1,), (2,)]


@every_root
def test_a_path_escaping_the_catalog_is_refused(instance):
    escaping = instance.location.join(".lamina/catalog") + "/core/../../instance.json"
    with pytest.raises(ln.ValidationError, match="cannot read other files"):
        ln.sql(f"SELECT * FROM read_text('{escaping}')")


def test_python_variables_are_not_readable(instance):
    leaked = pa.table({"token": ["abc"]})  # noqa: F841 (DuckDB would find it by name)
    with pytest.raises(duckdb.CatalogException, match="leaked"):
        ln.sql("SELECT * FROM leaked")


@pytest.mark.parametrize("new_root", [new_s3_root, new_gcs_root], ids=["s3", "gs"])
def test_another_bucket_reachable_with_the_same_keys_is_refused(new_root, request):
    request.getfixturevalue("gcs_endpoint" if new_root is new_gcs_root else "s3_endpoint")
    ln.init(storage=new_root())
    other = new_root("elsewhere")
    with filesystem(other).open(f"{other}/data.csv", "wb") as f:
        f.write(b"a\n1\n")
    # The keys can read it (so only the sandbox stands in the way).
    assert filesystem(other).cat_file(f"{other}/data.csv") == b"a\n1\n"
    with pytest.raises(ln.ValidationError, match="cannot read other files, buckets"):
        ln.sql(f"SELECT * FROM read_csv('{other}/data.csv')")
