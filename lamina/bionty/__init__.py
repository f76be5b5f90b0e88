"""Biological registries: ``from lamina import bionty as bt``.

Every registry can be filled from an offline public source (see ``sources.py``)::

    bt.CellType.public()                                  # the Cell Ontology as a table
    bt.CellType.public().search("T cel")
    t_cell = bt.CellType.from_source(name="T cell").save()   # with its ancestors
    bt.CellType.from_values(["B cell", "T-cell"]).save()  # synonyms mapped; one commit
    bt.Gene.from_values(["CD8A", "CD4"], field="symbol", organism="human").save()
    bt.CellType.standardize(["T-lymphocyte"])             # -> ["T cell"]
    t_cell.query_parents(), t_cell.query_children(), t_cell.parents, t_cell.children
"""

from __future__ import annotations

from .models import BioRecord, RecordList, save
from .public import InspectResult, PublicOntology
from .registries import (CellLine, CellMarker, CellType, DevelopmentalStage, Disease, Ethnicity,
                         ExperimentalFactor, Gene, Organism, Pathway, Phenotype, Protein, Source,
                         Tissue)

__all__ = [
    "BioRecord", "CellLine", "CellMarker", "CellType", "DevelopmentalStage", "Disease",
    "Ethnicity", "ExperimentalFactor", "Gene", "InspectResult", "Organism", "Pathway",
    "Phenotype", "Protein", "PublicOntology", "RecordList", "Source", "Tissue", "save",
]
