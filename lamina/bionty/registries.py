"""The registry classes of module ``bionty``: each is its table declaration plus its public id."""

from __future__ import annotations

from ..catalog import tables
from ..models.base import SQLRecord
from .models import BioRecord


class Source(SQLRecord):
    """A public source (ontology or gene table) and version; every shipped one is registered
    in an instance the first time a bionty record is saved there."""

    _spec = tables.get("bionty.source")


class Organism(BioRecord):
    _spec = tables.get("bionty.organism")
    # A taxon's 30 ancestors (cellular organisms, Eukaryota, ...) are rarely wanted as records.
    _save_parents = False


class Gene(BioRecord):
    _spec = tables.get("bionty.gene")
    _key_field = "ensembl_gene_id"


class Protein(BioRecord):
    _spec = tables.get("bionty.protein")
    _key_field = "uniprotkb_id"


class CellMarker(BioRecord):
    _spec = tables.get("bionty.cellmarker")
    _key_field = "name"


class CellType(BioRecord):
    _spec = tables.get("bionty.celltype")


class CellLine(BioRecord):
    _spec = tables.get("bionty.cellline")


class Tissue(BioRecord):
    _spec = tables.get("bionty.tissue")


class Disease(BioRecord):
    _spec = tables.get("bionty.disease")


class Phenotype(BioRecord):
    _spec = tables.get("bionty.phenotype")


class Pathway(BioRecord):
    _spec = tables.get("bionty.pathway")


class ExperimentalFactor(BioRecord):
    _spec = tables.get("bionty.experimentalfactor")


class DevelopmentalStage(BioRecord):
    _spec = tables.get("bionty.developmentalstage")


class Ethnicity(BioRecord):
    _spec = tables.get("bionty.ethnicity")

