"""Example files and tables, written to a folder of your choice (default: the current one)."""

from __future__ import annotations

import gzip
import importlib
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd

_DATA = resources.files(__package__) / "data"


def file_fastq(in_dir: str | Path = ".") -> Path:
    """A tiny gzipped FASTQ file (byte-identical on every call, so its hash is stable)."""
    path = Path(in_dir) / "input.fastq.gz"
    record = b"@r1\nACGTACGTAC\n+\nIIIIIIIIII\n"
    # mtime=0 keeps the gzip header, and so the hash, the same on every run.
    path.write_bytes(gzip.compress(record, mtime=0))
    return path


def file_jpg_paradisi05(in_dir: str | Path = ".") -> Path:
    """A small JPEG image (generated; stands in for the seed's paradisi05 photo)."""
    path = Path(in_dir) / "paradisi05_laminopathic_nuclei.jpg"
    with resources.as_file(_DATA / "paradisi05.jpg") as source:
        shutil.copyfile(source, path)
    return path


def df_iris() -> pd.DataFrame:
    """The 150-row iris table: four measurements and the species name."""
    with resources.as_file(_DATA / "iris.csv") as source:
        return pd.read_csv(source)


def manifest(in_dir: str | Path = ".") -> pd.DataFrame:
    """Three small CSV files written to ``<in_dir>/batch/``, and their manifest for
    ``ln.Artifact.from_manifest``: ``path``, ``key`` and two feature columns, ``temperature``
    (a number) and ``perturbation`` (a label name)."""
    folder = Path(in_dir) / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (temperature, perturbation) in enumerate([(21.5, "DMSO"), (37.0, "IFNG"),
                                                     (37.0, "DMSO")]):
        path = folder / f"sample_{i}.csv"
        path.write_text(f"gene,count\nCD8A,{10 * (i + 1)}\nCD4,{5 * (i + 2)}\n")
        rows.append({"path": str(path.resolve()), "key": f"batch/sample_{i}.csv",
                     "temperature": temperature, "perturbation": perturbation})
    return pd.DataFrame(rows)


def __getattr__(name: str):
    # mini_immuno builds AnnData objects; import anndata when the example is first used.
    if name == "mini_immuno":
        return importlib.import_module(f"{__name__}.mini_immuno")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
