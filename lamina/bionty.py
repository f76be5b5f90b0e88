"""Biological registries: ``from lamina import bionty as bt``."""

from __future__ import annotations

from .catalog import tables
from .models.base import SQLRecord


class Source(SQLRecord):
    _spec = tables.get("bionty.source")


class Organism(SQLRecord):
    _spec = tables.get("bionty.organism")


class Gene(SQLRecord):
    _spec = tables.get("bionty.gene")


class CellType(SQLRecord):
    _spec = tables.get("bionty.celltype")


class Tissue(SQLRecord):
    _spec = tables.get("bionty.tissue")


class Disease(SQLRecord):
    _spec = tables.get("bionty.disease")


__all__ = ["CellType", "Disease", "Gene", "Organism", "Source", "Tissue"]
