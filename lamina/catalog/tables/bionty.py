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
    many_to_many=(ManyToMany("parents", "bionty.organism", "children"),),
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

PROTEIN = table(
    "bionty", "protein", "Protein",
    [("uid", STR), ("name", STR), ("uniprotkb_id", STR), ("synonyms", STR), ("length", INT),
     ("gene_symbol", STR), ("ensembl_gene_ids", STR), *_TAIL, ("source_id", INT),
     ("organism_id", INT)],
    foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK, _ORGANISM_FK),
    uid_length=12, search_fields=("name", "uniprotkb_id", "gene_symbol", "synonyms"),
)

CELL_MARKER = table(
    "bionty", "cellmarker", "CellMarker",
    [("uid", STR), ("name", STR), ("synonyms", STR), ("gene_symbol", STR), ("ncbi_gene_id", STR),
     ("protein_name", STR), ("uniprotkb_id", STR), *_TAIL, ("source_id", INT),
     ("organism_id", INT)],
    foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK, _ORGANISM_FK),
    many_to_many=(ManyToMany("genes", "bionty.gene", "cell_markers"),
                  ManyToMany("proteins", "bionty.protein", "cell_markers")),
    uid_length=12, search_fields=("name", "synonyms", "gene_symbol", "protein_name"),
)

# Columns every ontology registry has, in the seed system's display order.
_ONTOLOGY_FIELDS = [("uid", STR), ("name", STR), ("ontology_id", STR), ("abbr", STR),
                    ("synonyms", STR), ("description", STR)]


def _ontology(name: str, model: str, extra: list | None = None,
              many_to_many: tuple = ()) -> object:
    """An ontology registry: its terms, ``parents`` (a list column of ids of the same table;
    the reverse is ``children``) and the source they came from."""
    return table(
        "bionty", name, model,
        [*_ONTOLOGY_FIELDS, *(extra or []), *_TAIL, ("source_id", INT)],
        foreign_keys=(*RECORD_BOOKKEEPING, _SOURCE_FK),
        many_to_many=(ManyToMany("parents", f"bionty.{name}", "children"), *many_to_many),
        uid_length=14, search_fields=("name", "ontology_id", "abbr", "synonyms", "description"),
    )


CELL_TYPE = _ontology("celltype", "CellType")
CELL_LINE = _ontology("cellline", "CellLine")
TISSUE = _ontology("tissue", "Tissue")
DISEASE = _ontology("disease", "Disease")
PHENOTYPE = _ontology("phenotype", "Phenotype")
PATHWAY = _ontology("pathway", "Pathway",
                    many_to_many=(ManyToMany("genes", "bionty.gene", "pathways"),))
EXPERIMENTAL_FACTOR = _ontology("experimentalfactor", "ExperimentalFactor",
                                [("molecule", STR), ("instrument", STR), ("measurement", STR)])
DEVELOPMENTAL_STAGE = _ontology("developmentalstage", "DevelopmentalStage")
ETHNICITY = _ontology("ethnicity", "Ethnicity")

# Not partitioned: these tables hold the terms a catalog uses (tens to thousands of rows, one
# small commit per save); whole ontologies stay in the public-source cache, outside the catalog.
TABLES = (SOURCE, ORGANISM, GENE, PROTEIN, CELL_MARKER, CELL_TYPE, CELL_LINE, TISSUE, DISEASE,
          PHENOTYPE, PATHWAY, EXPERIMENTAL_FACTOR, DEVELOPMENTAL_STAGE, ETHNICITY)
