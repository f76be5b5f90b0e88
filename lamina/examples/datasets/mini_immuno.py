"""Two tiny immunology datasets with features, labels, genes and cell types: the world the
query guide runs in. ``save_mini_immuno_datasets()`` registers all of it."""

from __future__ import annotations

from datetime import date

import anndata as ad
import numpy as np
import pandas as pd

# The genes and cell types these datasets use; their records come from the offline public
# sources (GENCODE for genes, the Cell Ontology for cell types, NCBITaxon for the organism).
GENES = [
    # symbol, ensembl_gene_id
    ("CD8A", "ENSG00000153563"),
    ("CD4", "ENSG00000010610"),
    ("CD14", "ENSG00000170458"),
    ("CD38", "ENSG00000004468"),
]
CELL_TYPES = {
    "B cell": "CL:0000236",
    "T cell": "CL:0000084",
    "CD8-positive, alpha-beta T cell": "CL:0000625",
}
_ENSEMBL = dict(GENES)


def get_dataset1(otype: str = "AnnData"):
    obs = pd.DataFrame({
        "perturbation": pd.Categorical(["DMSO", "IFNG", "DMSO"]),
        "sample_note": ["was ok", "looks naah", "pretty! 🤩"],
        "cell_type_by_expert": pd.Categorical(["B cell", "T cell", "T cell"]),
        "cell_type_by_model": pd.Categorical(["B cell", "CD8-positive, alpha-beta T cell",
                                              "T cell"]),
    }, index=["sample1", "sample2", "sample3"])
    metadata = {
        "temperature": 21.6, "experiment": "Experiment 1", "date_of_study": date(2024, 12, 1),
        "study_note": "We had a great time performing this study and the results look "
                      "compelling.",
        "study_metadata": {"detail1": "123", "detail2": 1},
    }
    return _dataset(obs, ["CD8A", "CD4", "CD14"], metadata, otype)


def get_dataset2(otype: str = "AnnData"):
    obs = pd.DataFrame({
        "perturbation": pd.Categorical(["DMSO", "DMSO", "IFNG"]),
        "cell_type_by_model": pd.Categorical(["T cell", "B cell", "T cell"]),
    }, index=["sample4", "sample5", "sample6"])
    metadata = {
        "temperature": 22.6, "experiment": "Experiment 2", "date_of_study": date(2025, 2, 13),
        "study_metadata": {"detail1": "456", "detail2": 2},
    }
    return _dataset(obs, ["CD8A", "CD4", "CD38"], metadata, otype)


def _dataset(obs: pd.DataFrame, symbols: list[str], metadata: dict, otype: str):
    genes = [_ENSEMBL[s] for s in symbols]
    values = np.arange(1, 1 + len(obs) * len(genes)).reshape(len(obs), len(genes))
    if otype == "DataFrame":
        frame = pd.concat([pd.DataFrame(values, index=obs.index, columns=genes), obs], axis=1)
        frame.attrs.update(metadata)
        return frame
    if otype != "AnnData":
        raise ValueError(f"otype must be 'AnnData' or 'DataFrame', got {otype!r}")
    adata = ad.AnnData(X=values.astype("float32"), obs=obs, var=pd.DataFrame(index=genes))
    adata.uns.update({k: (v.isoformat() if isinstance(v, date) else v)
                      for k, v in metadata.items()})
    return adata, metadata


def define_features_labels() -> None:
    """Features, records, genes and cell types the datasets are validated against."""
    import lamina as ln
    from lamina import bionty as bt

    features = [
        ("perturbation", ln.Record), ("sample_note", str),
        ("cell_type_by_expert", bt.CellType), ("cell_type_by_model", bt.CellType),
        ("temperature", float), ("experiment", ln.Record), ("date_of_study", date),
        ("study_note", str), ("study_metadata", dict),
    ]
    for name, dtype in features:
        ln.Feature(name=name, dtype=dtype).save()
    for name in ["DMSO", "IFNG", "Experiment 1", "Experiment 2"]:
        if not ln.Record.filter(name=name).exists():
            ln.Record(name=name).save()
    human = bt.Organism.from_source(name="human").save()
    # One commit per registry; the cell types bring their ancestors, as in the seed system.
    bt.CellType.from_values(list(CELL_TYPES.values()), field="ontology_id").save()
    bt.Gene.from_values([ensembl for _, ensembl in GENES], field="ensembl_gene_id",
                        organism=human).save()


def define_mini_immuno_schema():
    """The AnnData schema: features in ``obs``, Ensembl gene ids in ``var``."""
    import lamina as ln

    obs = ln.Schema(itype="Feature", name="valid_features").save()
    var = ln.Schema(itype="bionty.Gene.ensembl_gene_id",
                    name="valid_ensembl_gene_ids").save()
    return ln.Schema(name="anndata_ensembl_gene_ids_and_valid_features_in_obs",
                     otype="AnnData", slots={"obs": obs, "var": var}).save()


def save_mini_immuno_datasets():
    """Register both datasets, validated and annotated; returns the two artifacts."""
    import lamina as ln

    define_features_labels()
    schema = define_mini_immuno_schema()
    artifacts = []
    for key, get in (("examples/dataset1.h5ad", get_dataset1),
                     ("examples/dataset2.h5ad", get_dataset2)):
        adata, metadata = get()
        artifact = ln.Artifact.from_anndata(adata, key=key, schema=schema).save()
        artifact.features.add_values(metadata)
        artifacts.append(artifact)
    return artifacts
