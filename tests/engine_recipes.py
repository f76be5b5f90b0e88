"""The README's recipes for reading a lamina catalog with other engines. Nothing here imports
lamina: these functions are what a user without lamina runs over the same root."""

from __future__ import annotations

import json
import os

import duckdb
import fsspec
import polars as pl

# The seed guide's question: artifacts on the main branch perturbed with DMSO above 20 degrees.
MAIN_BRANCH = 1


def object_store_options(root: str) -> dict[str, str] | None:
    """Storage options of object_store-based readers (Polars, deltalake) from the usual AWS
    environment variables."""
    if not root.startswith("s3://"):
        return None
    options = {"aws_region": os.environ.get("AWS_REGION", "us-east-1"),
               "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
               "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint_url"] = endpoint
        options["aws_allow_http"] = str(endpoint.startswith("http://")).lower()
    return options


def polars_table(root: str, table: str) -> pl.DataFrame:
    return pl.scan_delta(f"{root}/.lamina/catalog/{table}",
                         storage_options=object_store_options(root)).collect()


def polars_dmso_above_20(root: str) -> list[str]:
    """Feature columns are ``f_<id>``; the feature table names them."""
    features = polars_table(root, "core/feature").filter(pl.col("branch_id") == MAIN_BRANCH)
    column = {row["name"]: f"f_{row['id']}" for row in features.iter_rows(named=True)}
    dmso = polars_table(root, "core/record").filter(pl.col("name") == "DMSO")["id"].to_list()
    artifacts = polars_table(root, "core/artifact")
    found = artifacts.filter(
        (pl.col("branch_id") == MAIN_BRANCH)
        & (pl.col(column["temperature"]) > 20)
        & pl.col(column["perturbation"]).list.eval(pl.element().is_in(dmso)).list.any())
    return sorted(found["key"].to_list())


def dictionary(root: str) -> dict:
    """lamina's data dictionary beside the tables (``lamina export-views --write``)."""
    options = {}
    if root.startswith("s3://"):
        options["endpoint_url"] = os.environ.get("AWS_ENDPOINT_URL")
    with fsspec.open(f"{root}/.lamina/catalog/_lamina_dictionary.json", "rb", **options) as f:
        return json.load(f)


def duckdb_connection(root: str, extensions: list[str]) -> duckdb.DuckDBPyConnection:
    """DuckDB with its ``delta`` extension (and for S3 ``httpfs`` and a secret from the
    environment). ``extensions``: extension files (with internet access, INSTALL works too)."""
    con = duckdb.connect()
    for extension in extensions:
        con.execute(f"LOAD '{extension}'")
    if root.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        options = {"KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                   "SECRET": os.environ["AWS_SECRET_ACCESS_KEY"],
                   "REGION": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            options.update(ENDPOINT=endpoint.split("://", 1)[1], URL_STYLE="path",
                           USE_SSL=str(endpoint.startswith("https")).lower())
        body = ", ".join(f"{k} '{v}'" for k, v in options.items())
        con.execute(f"CREATE SECRET catalog (TYPE s3, {body})")
    return con


DMSO_ABOVE_20_SQL = """
    SELECT key FROM artifact
    WHERE branch_id = 1 AND temperature > 20
      AND list_has_any(perturbation, (SELECT list(id) FROM record WHERE name = 'DMSO'))
    ORDER BY key
"""


def daft_dmso_above_20(root: str) -> list[str]:
    import daft
    from daft.io import IOConfig, S3Config

    io_config = None
    if root.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        io_config = IOConfig(s3=S3Config(
            endpoint_url=endpoint, key_id=os.environ["AWS_ACCESS_KEY_ID"],
            access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            use_ssl=not (endpoint or "").startswith("http://"),
            force_virtual_addressing=False))

    def table(name: str):
        return daft.read_deltalake(f"{root}/.lamina/catalog/{name}", io_config=io_config)

    features = table("core/feature").where(daft.col("branch_id") == MAIN_BRANCH)
    column = {r["name"]: f"f_{r['id']}" for r in features.select("id", "name").to_pylist()}
    dmso = table("core/record").where(daft.col("name") == "DMSO").select("id").to_pydict()["id"]
    artifacts = table("core/artifact").where(
        (daft.col("branch_id") == MAIN_BRANCH) & (daft.col(column["temperature"]) > 20))
    rows = artifacts.select("key", column["perturbation"]).to_pylist()
    return sorted(r["key"] for r in rows if set(r[column["perturbation"]] or ()) & set(dmso))
