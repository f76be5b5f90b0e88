"""The demo behind ``make demo``: the first cells of the query guide on a local instance."""

from __future__ import annotations

import sys
import tempfile

import pandas as pd

import lamina as ln


def main(root: str = "./mydata") -> None:
    ln.init(storage=root, modules="bionty")
    with tempfile.TemporaryDirectory() as scratch:
        ln.Artifact(ln.examples.datasets.file_fastq(scratch), key="raw/my_fastq.fastq.gz").save()
        ln.Artifact(ln.examples.datasets.file_jpg_paradisi05(scratch), key="my_image.jpg").save()
        ln.Artifact.from_dataframe(ln.examples.datasets.df_iris(), key="iris.parquet").save()
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(ln.Artifact.to_dataframe())


if __name__ == "__main__":
    main(*sys.argv[1:2])
