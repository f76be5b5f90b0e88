"""Biological registries (module ``bionty``), with the fields the seed system prints."""

from __future__ import annotations

from .core import RECORD_BOOKKEEPING
from .spec import BOOL, DATETIME, INT, STR, ForeignKey, ManyToMany, table

_TAIL = [("is_locked", BOOL), ("created_at", DATETIME), ("branch_id", INT),
         ("created_on_id", INT), ("space_id", INT), ("created_by_id", INT), ("run_id", INT)]
_SOURCE_FK = ForeignKey("source", "bionty.source")
_ORGANISM_FK = ForeignKey("organism", "bionty.organism")

SOURCE = table(
    "bionty", "source", "Source",
    [("uid", STR), ("entity", STR), ("organism", STR), ("name", STR), ("version", STR),
     ("in_db", BOOL), ("currently_used", BOOL), ("description", STR), ("url", STR), ("md5", STR),
     ("source_website", STR), *_TAIL, ("dataframe_artifact_id", INT)],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("dataframe_artifact", "core.artifact")),
    uid_length=8, search_fields=("name", "entity", "description"),
)

ORGANISM = table(
    "bionty", "organism", "Organism",
    [("uid", STR), ("name", STR), ("ontology_id", STR), ("abbr", STR), ("synonyms", STR),
     ("description", STR), ("scientific_name", STR), *_TAIL, ("source_id", INT)],
    foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK),
    uid_length=14, search_fields=("name", "ontology_id", "synonyms", "scientific_name"),
)

GENE = table(
    "bionty", "gene", "Gene",
    [("uid", STR), ("abbr", STR), ("synonyms", STR), ("description", STR), ("symbol", STR),
     ("stable_id", STR), ("ensembl_gene_id", STR), ("ncbi_gene_ids", STR), ("biotype", STR),
     *_TAIL, ("source_id", INT), ("organism_id", INT)],
    foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK, _ORGANISM_FK),
    uid_length=14, name_field="symbol",
    search_fields=("symbol", "ensembl_gene_id", "synonyms", "description"),
)


def _ontology(name: str, model: str) -> object:
    return table(
        "bionty", name, model,
        [("uid", STR), ("name", STR), ("ontology_id", STR), ("abbr", STR), ("synonyms", STR),
         ("description", STR), *_TAIL, ("source_id", INT)],
        foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK),
        many_to_many=(ManyToMany("parents", f"bionty.{name}", "children"),),
        uid_length=14, search_fields=("name", "ontology_id", "abbr", "synonyms", "description"),
    )


CELL_TYPE = _ontology("celltype", "CellType")
TISSUE = _ontology("tissue", "Tissue")
DISEASE = _ontology("disease", "Disease")

TABLES = (SOURCE, ORGANISM, GENE, CELL_TYPE, TISSUE, DISEASE)
