"""Search: ranking tiers, tokens that DuckDB's fts defaults would lose, typos, the index built
once per snapshot, ``Registry.search`` as the seed guide uses it, and bad input. Real DuckDB
and real catalogs throughout; expected rankings come from the rows each test writes."""

from __future__ import annotations

import threading

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

import lamina as ln
from lamina import search
from lamina.search import cache_info, search_table
from lamina.search.index import FTS_OPTIONS, Field, SearchIndex, connect_with_fts
from lamina.search.text import normalize, normalized_sql


def terms(*rows) -> pa.Table:
    """A small ontology-like table: (name, synonyms or None, description or None)."""
    return pa.table({
        "ontology_id": pa.array([f"ONT:{i:04d}" for i in range(len(rows))], pa.string()),
        "name": pa.array([r[0] for r in rows], pa.string()),
        "synonyms": pa.array([r[1] for r in rows], pa.string()),
        "description": pa.array([r[2] for r in rows], pa.string()),
    })


FIELDS = dict(fields=["name", "ontology_id", "synonyms", "description"], key="ontology_id")


def ranked(table, query, **kwargs) -> list[str]:
    return list(search_table(table, query, **FIELDS, **kwargs)["name"])


def ontology_table(name: str) -> pa.Table:
    """A live ontology (CL, UBERON, MONDO) as shipped offline by cellxgene-ontology-guide."""
    import json
    import os

    guide = pytest.importorskip("cellxgene_ontology_guide")
    zstandard = pytest.importorskip("zstandard")
    folder = os.path.join(os.path.dirname(guide.__file__), "data")
    with open(os.path.join(folder, "latest_ontology_info.json")) as f:
        version = json.load(f)["ontologies"][name]["version"]
    with open(os.path.join(folder, f"{name}-ontology-{version}.json.zst"), "rb") as f:
        data = json.loads(zstandard.ZstdDecompressor().stream_reader(f).read())
    live = [(k, v) for k, v in data.items() if not v.get("deprecated") and v.get("label")]
    return pa.table({
        "ontology_id": [k for k, _ in live],
        "name": [v["label"] for _, v in live],
        "synonyms": ["|".join(v.get("synonyms") or []) or None for _, v in live],
        "description": [v.get("description") for _, v in live],
    })


@pytest.fixture(scope="module")
def cell_ontology() -> pa.Table:
    """The Cell Ontology (~3.3k live terms)."""
    return ontology_table("CL")


@pytest.fixture(scope="module")
def ontologies(cell_ontology) -> dict[str, pa.Table]:
    return {"CL": cell_ontology, "UBERON": ontology_table("UBERON"),
            "MONDO": ontology_table("MONDO")}


def top(ontologies, name: str, query: str) -> tuple[str, str, str]:
    """(ontology id, name, match) of the first row for ``query`` in ontology ``name``."""
    frame = search_table(ontologies[name], query, **FIELDS, cache_key=("test", name), limit=20)
    return tuple(frame[["ontology_id", "name", "match"]].iloc[0])


def cl(table, query, n=5, **kwargs) -> list[str]:
    return list(search_table(table, query, **FIELDS, cache_key=("test", "CL"), limit=n,
                             **kwargs)["name"])


# ---- tiers -------------------------------------------------------------------------------
def test_tiers_rank_exact_synonym_word_prefix_bm25_typo():
    table = terms(
        ("tcell", None, None),  # typo: the words run together
        ("memory cell", None, None),  # bm25: shares "cell"
        ("T cellular structure", None, None),  # prefix: "cell" starts "cellular"
        ("naive T cell", None, None),  # word: holds "T cell" as a phrase
        ("thymus-derived lymphocyte", "T cell|T lymphocyte", None),  # synonym
        ("T cell", None, None),  # exact name
        ("liver", None, None),  # nothing
    )
    frame = search_table(table, "T cell", **FIELDS, limit=None)
    assert list(frame["name"]) == ["T cell", "thymus-derived lymphocyte", "naive T cell",
                                   "T cellular structure", "memory cell", "tcell"]
    assert list(frame["match"]) == ["exact", "synonym", "word", "prefix", "bm25", "typo"]
    scores = list(frame["score"])
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert scores[0] == 100.0 and scores[1] == 95.0


def test_each_tier_beats_the_next_whatever_the_table_order():
    rows = [("T cell", None, None), ("thymus-derived lymphocyte", "T cell", None),
            ("naive T cell", None, None), ("T cellular structure", None, None),
            ("memory cell", None, None), ("tcell", None, None)]
    for start in range(len(rows)):
        table = terms(*rows[start:], *rows[:start])
        assert ranked(table, "T cell", limit=None) == [r[0] for r in rows]


def test_exact_id_ranks_first():
    table = terms(("kidney", None, "mentions ONT:0001 in passing"), ("liver", None, None))
    frame = search_table(table, "ONT:0001", **FIELDS)
    assert list(frame["name"])[0] == "liver" and frame["match"].iloc[0] == "exact"


def test_word_tier_prefers_the_phrase_and_shorter_names_and_names_over_descriptions():
    table = terms(("cell of the kidney", None, None),
                  ("kidney epithelial cell", None, None),
                  ("podocyte", None, "an epithelial cell of the kidney"),
                  ("kidney cell line", None, None),
                  ("kidney cell", None, None))
    # "cell of the kidney" is all query words ("of", "the" do not count), "kidney cell line"
    # has a word more: coverage in words first, then the phrase, then characters.
    assert ranked(table, "kidney cell", limit=None) == [
        "kidney cell", "cell of the kidney", "kidney cell line", "kidney epithelial cell",
        "podocyte"]
    phrase = terms(("cell line kidney", None, None), ("kidney cell line", None, None))
    assert ranked(phrase, "kidney cell") == ["kidney cell line", "cell line kidney"]
    assert ranked(table, "cell kidney", limit=None)[0] == "kidney cell"  # words swapped


def test_prefix_prefers_the_shortest_completion_from_the_start():
    table = terms(("renal kidney capsule", None, None), ("kidney cell", None, None),
                  ("kidney", None, None))
    assert ranked(table, "kidne", limit=None) == ["kidney", "kidney cell",
                                                  "renal kidney capsule"]


def test_lower_tiers_are_not_computed_once_limit_is_full_and_limit_cuts_exactly():
    table = terms(*[(f"T cell type {i}", None, None) for i in range(30)], ("tcell", None, None))
    everything = ranked(table, "T cell", limit=None)
    assert everything[-1] == "tcell"
    for n in (1, 5, 20, 31):
        assert ranked(table, "T cell", limit=n) == everything[:n]


# ---- tokens the fts defaults would lose --------------------------------------------------
def test_fts_index_keeps_digits_and_single_letters():
    """DuckDB's fts defaults make CD8 and CD4 the same token and drop the T of T cell; the
    options lamina builds with keep both."""
    con = connect_with_fts()
    con.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
    con.execute("INSERT INTO t VALUES (1, 'CD8 T cell'), (2, 'CD4 T cell'), (3, 'B cell'), "
                "(4, 'T cell')")
    con.execute("CREATE TABLE d AS SELECT * FROM t")
    con.execute("PRAGMA create_fts_index('d', 'id', 's')")
    con.execute(f"PRAGMA create_fts_index('t', 'id', 's', {FTS_OPTIONS})")

    def scores(schema, query):
        return dict(con.execute(f"SELECT id, {schema}.match_bm25(id, ?) FROM t ORDER BY id",
                                [query]).fetchall())

    default_cd8, ours_cd8 = scores("fts_main_d", "CD8"), scores("fts_main_t", "CD8")
    assert default_cd8[1] == default_cd8[2]  # the defaults cannot tell CD8 from CD4
    assert ours_cd8[1] > 0 and ours_cd8[2] is None
    default_t, ours_t = scores("fts_main_d", "T cell"), scores("fts_main_t", "T cell")
    assert default_t[3] == default_t[4]  # ... nor T cell from B cell
    assert ours_t[4] > ours_t[3]
    terms_kept = {r[0] for r in con.execute("SELECT term FROM fts_main_t.dict").fetchall()}
    assert {"cd8", "cd4", "t", "b"} <= terms_kept
    con.close()


def test_bm25_over_the_index_arrays_equals_duckdb_match_bm25():
    table = terms(("CD8-positive, alpha-beta T cell", None, "a T cell expressing CD8"),
                  ("CD4-positive T cell", "helper T cell", None), ("B cell", None, None),
                  ("T cell", "T lymphocyte|T-cell", "a lymphocyte"))
    index = SearchIndex(table, (Field("name"), Field("synonyms", split=True),
                                Field("description")))
    con = connect_with_fts()
    con.register("e", pa.table({"eid": list(range(index.n_entries)), "tok": index.tok}))
    con.execute("CREATE TABLE entries AS SELECT * FROM e")
    con.execute(f"PRAGMA create_fts_index('entries', 'eid', 'tok', {FTS_OPTIONS})")
    for query in ["T cell", "CD8", "cd4 helper", "lymphocyte b", "alpha beta t"]:
        expected = dict(con.execute(
            "SELECT eid, s FROM (SELECT eid, fts_main_entries.match_bm25(eid, ?) AS s "
            "FROM entries) WHERE s IS NOT NULL", [query]).fetchall())
        eids, scores = index.bm25(normalize(query).split())
        assert dict(zip(eids.tolist(), scores.tolist())) == pytest.approx(expected)
    con.close()


def test_cd8_is_not_cd4():
    table = terms(("CD4-positive, alpha-beta T cell", None, None),
                  ("CD8-positive, alpha-beta T cell", None, None),
                  ("CD4-positive helper T cell", None, None),
                  ("CD8-positive, alpha-beta cytotoxic T cell", None, None),
                  ("CD8 T cell", None, None))
    found = ranked(table, "CD8", limit=None)
    cd8 = [n for n in found if "CD8" in n]
    assert found[:len(cd8)] == cd8 and len(cd8) == 3
    assert ranked(table, "CD4-positive, alpha-beta T cell")[0] == "CD4-positive, alpha-beta T cell"
    assert ranked(table, "CD8 alpha-beta T cell")[0].startswith("CD8")
    assert set(ranked(table, "cd4 T cell", limit=2)) == {"CD4-positive, alpha-beta T cell",
                                                         "CD4-positive helper T cell"}


def test_t_cell_is_not_b_cell():
    table = terms(("B cell", None, None), ("T cell", None, None), ("B-1 B cell", None, None),
                  ("naive T cell", None, None), ("naive B cell", None, None))
    assert ranked(table, "T cell", limit=2) == ["T cell", "naive T cell"]
    assert ranked(table, "B cell", limit=3) == ["B cell", "B-1 B cell", "naive B cell"]
    frame = search_table(table, "T cell", **FIELDS, limit=None)
    assert set(frame.loc[frame["name"].str.contains("B"), "match"]) == {"bm25"}


def test_cd8_and_t_cell_in_the_cell_ontology(cell_ontology):
    top = cl(cell_ontology, "CD8-positive, alpha-beta T cell", 1)
    assert top == ["CD8-positive, alpha-beta T cell"]
    assert cl(cell_ontology, "CD4-positive, alpha-beta T cell", 1) == [
        "CD4-positive, alpha-beta T cell"]
    assert all("CD8" in n for n in cl(cell_ontology, "CD8 alpha-beta T cell", 10))
    assert cl(cell_ontology, "T cell", 1) == ["T cell"]
    assert cl(cell_ontology, "B cell", 1) == ["B cell"]
    assert "B cell" not in cl(cell_ontology, "T cell", 20)


# ---- typos, word order, prefixes ---------------------------------------------------------
@pytest.mark.parametrize("query, expected", [
    ("lymphocite", "lymphocyte"),  # one substitution
    ("lymfocyte", "lymphocyte"),  # two edits
    ("lymphcyte", "lymphocyte"),  # deletion
    ("hepatocite", "hepatocyte"),
    ("neuronn", "neuron"),
    ("macrophgae", "macrophage"),  # transposition
    ("Tcell", "T cell"),  # words run together
    ("T cel", "T cell"),  # prefix
    ("kidney epithelail cell", "kidney epithelial cell"),
    ("cell T", "T cell"),  # word order
    ("epithelial cell kidney", "kidney epithelial cell"),
    ("alpha-beta T cel", "alpha-beta T cell"),
    ("B lymphocite", "B cell"),  # typo in a synonym (B lymphocyte)
    ("procryssal call", "procrystal cell"),  # two words with typos
])
def test_finds_what_people_mean(cell_ontology, query, expected):
    assert cl(cell_ontology, query, 1) == [expected]


# ---- what biologists type: plurals, British spellings, acronyms, partial words ----------------
# Each expected term is the ontology's own: its label is the query made singular / American, or
# its label or synonym has the query as initials (spelled out so in some MONDO/UBERON
# description), or it is the general term of the query's eponym.
@pytest.mark.parametrize("ontology, query, expected", [
    ("CL", "B cells", "CL:0000236"),  # B cell, not a term whose description says "B cells"
    ("CL", "chondrocytes", "CL:0000138"),
    ("CL", "glutamatergic neurons", "CL:0000679"),
    ("UBERON", "cystic arteries", "UBERON:0039222"),  # -ies
    ("MONDO", "anemias", "MONDO:0002280"),
    ("MONDO", "liver disorders", "MONDO:0005154"),
    ("MONDO", "basal cell carcinomas", "MONDO:0020804"),
])
def test_plurals_find_the_singular_term(ontologies, ontology, query, expected):
    assert top(ontologies, ontology, query)[::2] == (expected, "plural")


@pytest.mark.parametrize("ontology, query, expected", [
    ("UBERON", "non-keratinised stratified squamous epithelium", "UBERON:0010304"),
    ("UBERON", "haemal spine series", "UBERON:2002098"),
    ("MONDO", "anaemia", "MONDO:0002280"),
    ("MONDO", "fibromyxoid tumour", "MONDO:0037745"),
    ("MONDO", "tumour predisposition syndrome 2", "MONDO:0859267"),
])
def test_british_spellings_find_the_american_term(ontologies, ontology, query, expected):
    assert top(ontologies, ontology, query)[::2] == (expected, "spelling")


@pytest.mark.parametrize("ontology, query, expected", [
    ("MONDO", "GKD", "MONDO:0010613"),  # glycerol kinase deficiency (a synonym's initials)
    ("MONDO", "BEB", "MONDO:0011728"),  # benign essential blepharospasm
    ("MONDO", "SCST", "MONDO:0006055"),  # sex cord-stromal tumor: hyphenated words count
    ("MONDO", "srps", "MONDO:0015461"),  # short rib-polydactyly syndrome, typed lower-case
    ("UBERON", "NRL", "UBERON:0014663"),  # nucleus recessus lateralis
    ("UBERON", "bbb", "UBERON:0000120"),  # blood brain barrier
    ("UBERON", "GSV", "UBERON:0001363"),  # great saphenous vein, not Guérin's valve
])
def test_acronyms_find_the_term_they_abbreviate(ontologies, ontology, query, expected):
    assert top(ontologies, ontology, query)[::2] == (expected, "abbreviation")


@pytest.mark.parametrize("ontology, query, expected", [
    ("CL", "Bergmann", "CL:0000644"),  # Bergmann glial cell, not its mouse-only subtype
    ("MONDO", "MEND", "MONDO:0010498"),  # MEND syndrome, not a term whose initials are MEND
    ("MONDO", "Kawasaki", "MONDO:0012727"),
    ("MONDO", "Marfan", "MONDO:0007947"),
])
def test_partial_words_find_the_general_term(ontologies, ontology, query, expected):
    assert top(ontologies, ontology, query)[0] == expected


def test_typos_still_beat_initials_and_plurals():
    table = terms(("heart", None, None), ("hepatic epithelial reticular tissue", None, None),
                  ("kidney", None, None), ("kidney tubule", None, None))
    assert ranked(table, "hert", limit=2) == ["heart", "hepatic epithelial reticular tissue"]
    assert search_table(table, "hert", **FIELDS)["match"].iloc[1] == "abbreviation"
    assert ranked(table, "HERT", limit=1) == ["hepatic epithelial reticular tissue"]
    assert ranked(table, "kidnys", limit=1) == ["kidney"]  # a typo of the plural
    started = terms(("anterior mesenteric artery", "AMA", None), ("amastia", None, None))
    assert ranked(started, "amas", limit=1) == ["amastia"]  # being typed, not AMA's plural


def test_tiers_of_variants_and_acronyms_sit_between_synonyms_and_words():
    table = terms(("naive B cell", None, None), ("B cell", None, None),
                  ("bone cell", "BCs", None), ("blood cell", None, None))
    frame = search_table(table, "B cells", **FIELDS, limit=None)
    assert list(frame["name"][:2]) == ["B cell", "naive B cell"]
    assert list(frame["match"][:2]) == ["plural", "plural"]
    assert 90 <= frame["score"].iloc[0] < 95 and 70 <= frame["score"].iloc[1] < 85
    assert frame["matched"].iloc[0] == "name: B cell"
    frame = search_table(table, "BC", **FIELDS, limit=None)
    assert list(frame["name"]) == ["B cell", "bone cell", "blood cell"]  # shorter names first
    assert list(frame["match"]) == ["abbreviation"] * 3
    assert all(85 <= s < 90 for s in frame["score"])
    # A case-sensitive search takes the query as typed: no variants, no initials.
    for query in ("B cells", "BC"):
        frame = search_table(table, query, **FIELDS, case_sensitive=True, limit=None)
        assert not {"plural", "abbreviation"} & set(frame["match"])


def test_typo_matches_are_marked_and_unrelated_rows_are_not_returned():
    table = terms(("lymphocyte", None, None), ("liver", None, None), ("kidney", None, None))
    frame = search_table(table, "lymphocite", **FIELDS, limit=None)
    assert list(frame["name"]) == ["lymphocyte"]
    assert frame["match"].iloc[0] in ("bm25", "typo") and 0 < frame["score"].iloc[0] < 50
    assert search_table(table, "zzzzqqq", **FIELDS).empty


# ---- case, fields, unicode and punctuation -----------------------------------------------
def test_case_sensitive():
    table = terms(("Tcf7", None, None), ("TCF7", None, None), ("TCF7 binding protein", None, None))
    insensitive = search_table(table, "TCF7", **FIELDS, limit=None)
    assert list(insensitive["match"][:2]) == ["exact", "exact"]
    sensitive = search_table(table, "TCF7", **FIELDS, limit=None, case_sensitive=True)
    assert list(sensitive["name"][:2]) == ["TCF7", "TCF7 binding protein"]
    assert list(sensitive["match"][:2]) == ["exact", "word"]
    assert "Tcf7" not in list(sensitive["name"][:2])
    assert search_table(table, "Tcf7", **FIELDS, case_sensitive=True)["name"].iloc[0] == "Tcf7"


def test_field_restricts_the_search():
    table = terms(("thymus-derived lymphocyte", "T cell", None), ("T cell", None, None),
                  ("naive T cell", None, "a T cell that has not met its antigen"))
    assert ranked(table, "T cell", field="synonyms", limit=None) == ["thymus-derived lymphocyte"]
    assert ranked(table, "T cell", field="name", limit=None) == ["T cell", "naive T cell"]
    assert ranked(table, "antigen", field="description") == ["naive T cell"]
    assert ranked(table, "antigen", field="name") == []
    with pytest.raises(ln.FieldError, match="not one of the searched"):
        search_table(table, "T cell", **FIELDS, field="size")


@pytest.mark.parametrize("query, expected", [
    ("naive t-cell", "naïve T cell"),
    ("NAÏVE T CELL", "naïve T cell"),
    ("α-beta T cell", "α-beta T cell"),
    ("α beta", "α-beta T cell"),
    ("γδ T cell", "γδ T cell"),
    ("Zellkorper", "Zellkörper"),
    ("Zellkörp", "Zellkörper"),
    ("細胞", "細胞"),
    ('"T cell"', "T cell"),
    ("T cell (human)", "T cell"),
    ("CD8+ T cell", "CD8-positive T cell"),
    ("CD8-positive/T cell", "CD8-positive T cell"),
    ("T cell;", "T cell"),
])
def test_unicode_and_punctuation(query, expected):
    table = terms(("naïve T cell", None, None), ("α-beta T cell", None, None),
                  ("γδ T cell", None, None), ("Zellkörper", None, None), ("細胞", None, None),
                  ("T cell", None, None), ("CD8-positive T cell", None, None))
    assert ranked(table, query)[0] == expected


@pytest.mark.parametrize("query", ["'; DROP TABLE entries; --", "%", "_", "***", "\\", "'",
                                   "a'b\"c", "\x00"])
def test_odd_queries_return_a_frame(query):
    table = terms(("T cell", None, None), ("a'b\"c", None, None))
    frame = search_table(table, query, **FIELDS)
    assert isinstance(frame, pd.DataFrame) and {"score", "match"} <= set(frame.columns)


def test_normalisation_is_the_same_in_python_and_duckdb():
    values = ["Café", "Zellkörper", "naïve", "İstanbul", "ΣΟΦΙΑ", "Ångström", "ß", "Œuvre", "α-β",
              "日本語", "e\u0301", "\u00a0x", "x_y", "a\tb", "CD8+/CD4-", "T-cell (human)", "",
              "  spaced   out  ", "①②", "ℌilbert", "Ⅻ"]
    con = duckdb.connect()
    got = con.execute(f"SELECT [{normalized_sql('v')} for v in $1], "
                      f"[{normalized_sql('v', lower=False)} for v in $1]", [values]).fetchone()
    assert got[0] == [normalize(v) for v in values]
    assert got[1] == [normalize(v, lower=False) for v in values]


# ---- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_an_error(query):
    with pytest.raises(ln.ValidationError, match="non-space"):
        search_table(terms(("T cell", None, None)), query, **FIELDS)


@pytest.mark.parametrize("query", [None, 5, b"T cell", ["T cell"]])
def test_query_must_be_a_string(query):
    with pytest.raises(ln.ValidationError, match="query string"):
        search_table(terms(("T cell", None, None)), query, **FIELDS)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "20"])
def test_limit_must_be_positive(limit):
    with pytest.raises(ln.ValidationError, match="limit must be a positive integer"):
        search_table(terms(("T cell", None, None)), "T cell", **FIELDS, limit=limit)


def test_case_sensitive_must_be_a_bool():
    with pytest.raises(ln.ValidationError, match="case_sensitive"):
        search_table(terms(("T cell", None, None)), "T cell", **FIELDS, case_sensitive="yes")


def test_table_input_errors():
    table = terms(("T cell", None, None))
    with pytest.raises(ln.FieldError, match="no column"):
        search_table(table, "T cell", fields=["nope"])
    numbers = pa.table({"name": ["T cell"], "size": [3]})
    with pytest.raises(ln.FieldError, match="not a text column"):
        search_table(numbers, "T cell", fields=["name", "size"])
    with pytest.raises(ln.ValidationError, match="cache_key"):
        search_table(lambda: table, "T cell", fields=["name"])


def test_tables_from_pandas_duckdb_and_functions():
    table = terms(("T cell", None, None), ("B cell", None, None))
    assert ranked(table.to_pandas(), "B cell")[0] == "B cell"
    con = duckdb.connect()
    con.register("t", table)
    assert ranked(con.sql("SELECT * FROM t"), "B cell")[0] == "B cell"
    calls = []

    def load():
        calls.append(1)
        return table

    for _ in range(3):
        assert ranked(load, "T cell", cache_key=("test", "functions"))[0] == "T cell"
    assert len(calls) == 1


# ---- registries --------------------------------------------------------------------------
def builds() -> int:
    return cache_info()["builds"]


def test_registry_search_builds_once_per_snapshot_and_rebuilds_after_a_commit(local_root):
    ln.init(storage=local_root)
    for name in ["Experiment 1", "Experiment 2", "DMSO", "IFNG", "experimental batch"]:
        ln.Record(name=name).save()
    before = builds()
    first = ln.Record.search("Experiment 1")
    assert builds() == before + 1
    for query in ["experiment", "DMSO", "exprimental", "IFNG", "Experiment 2"]:
        ln.Record.search(query)
    assert builds() == before + 1  # one index for every query on this snapshot
    assert first.scores["name"].iloc[0] == "Experiment 1"

    ln.Record(name="Experiment 3").save()  # a commit: the next search sees the new snapshot
    assert ln.Record.search("Experiment 3").scores["name"].iloc[0] == "Experiment 3"
    assert builds() == before + 2
    ln.Record.search("Experiment")
    assert builds() == before + 2

    ln.Record.get(name="DMSO").delete()  # to the trash: gone from search
    assert "DMSO" not in list(ln.Record.search("DMSO").scores["name"])
    assert builds() == before + 3
    indexes = [i for i in cache_info()["indexes"] if "core.record" in str(i["key"])]
    assert len(indexes) == 1  # the older snapshots' indexes were dropped


def test_concurrent_searches_build_one_index(local_root):
    ln.init(storage=local_root)
    for i in range(50):
        ln.Record(name=f"sample {i}").save()
    before = builds()
    errors, results = [], []

    def run(query):
        try:
            results.append(list(ln.Record.search(query).scores["name"])[:1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"sample {i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert builds() == before + 1
    assert sorted(results) == sorted([[f"sample {i}"] for i in range(8)])


def test_artifact_search_as_in_the_seed_guide(root, tmp_path):
    ln.init(storage=root)
    fastq = tmp_path / "my_fastq.fastq.gz"
    fastq.write_bytes(b"@read\nACGT\n+\nIIII\n")
    ln.Artifact(fastq, key="raw/my_fastq.fastq.gz").save()
    ln.Artifact.from_dataframe(ln.examples.datasets.df_iris(), key="iris.parquet").save()
    df = ln.Artifact.search("iris").to_dataframe()
    assert list(df["key"]) == ["iris.parquet"]
    assert df.index.name == "id"
    # The registry's columns, then why each row matched.
    assert list(df.columns) == [*ln.Artifact.filter().to_dataframe().columns,
                                "score", "match", "matched"]
    assert df["match"].iloc[0] == "word" and df["matched"].iloc[0] == "key: iris.parquet"
    assert list(ln.Artifact.search("fastq").to_dataframe()["key"]) == ["raw/my_fastq.fastq.gz"]
    assert list(ln.Artifact.search(".parquet", field="suffix").scores["match"]) == ["synonym"]


def test_search_result_keeps_the_ranking(local_root):
    ln.init(storage=local_root)
    names = ["naive T cell", "T cell receptor", "B cell", "T cell", "Tcell"]
    for name in names:
        ln.Record(name=name, description=f"about {name}").save()
    result = ln.Record.search("T cell")
    order = ["T cell", "naive T cell", "T cell receptor", "B cell", "Tcell"]
    assert list(result.scores["name"]) == order
    assert list(result.scores["score"]) == sorted(result.scores["score"], reverse=True)
    assert list(result.to_dataframe()["name"]) == order
    assert [r.name for r in result] == order
    assert result.first().name == "T cell" and result.last().name == "Tcell"
    assert result[1].name == "naive T cell"
    assert [r.name for r in result[1:3]] == order[1:3]
    assert result.count() == len(order) == len(result)
    narrowed = result.filter(name__contains="T ")
    assert [r.name for r in narrowed] == ["T cell", "naive T cell", "T cell receptor"]
    assert list(narrowed.scores["name"]) == ["T cell", "naive T cell", "T cell receptor"]
    assert list(narrowed.to_dataframe()["name"]) == ["T cell", "naive T cell", "T cell receptor"]
    assert [r.name for r in result.order_by("name")] == sorted(order)
    assert "T cell" in repr(result) and "score" in repr(result)
    assert ln.Record.search("T cell", limit=2).count() == 2
    assert ln.Record.search("nothing like it").to_dataframe().empty


def test_registry_search_fields_and_errors(local_root):
    ln.init(storage=local_root)
    ln.Record(name="alpha", description="beta gamma").save()
    assert list(ln.Record.search("gamma").scores["name"]) == ["alpha"]
    assert ln.Record.search("gamma", field="name").count() == 0
    assert ln.Record.search("gamma", field="description").count() == 1
    assert ln.Record.search("alpha", field=["name", "description"]).count() == 1
    with pytest.raises(ln.FieldError, match="not a text field"):
        ln.Artifact.search("x", field="size")
    with pytest.raises(ln.FieldError, match="did you mean 'description'"):
        ln.Record.search("x", field="descripton")
    with pytest.raises(ln.ValidationError, match="non-space"):
        ln.Record.search("  ")
    with pytest.raises(ln.ValidationError, match="limit"):
        ln.Record.search("alpha", limit=0)


def test_registry_search_dataframe_says_why_each_row_matched(local_root):
    from lamina import bionty as bt

    ln.init(storage=local_root, modules="bionty")
    bt.CellType(name="B cell", synonyms="B lymphocyte|B-cell").save()
    bt.CellType(name="naive B cell").save()
    bt.CellType(name="peripheral blood mononuclear cell").save()
    frame = bt.CellType.search("B cells").to_dataframe()
    assert list(frame["name"]) == ["B cell", "naive B cell"]
    assert list(frame["match"]) == ["plural", "plural"]
    assert list(frame["matched"]) == ["name: B cell", "name: naive B cell"]
    assert frame["score"].iloc[0] > frame["score"].iloc[1]
    frame = bt.CellType.search("PBMC").to_dataframe()
    assert list(frame["name"][:1]) == ["peripheral blood mononuclear cell"]
    assert frame["match"].iloc[0] == "abbreviation"
    assert bt.CellType.search("B lymphocytes").to_dataframe()["matched"].iloc[0] == (
        "synonyms: B lymphocyte")


def test_feature_synonyms_rank_below_names(local_root):
    ln.init(storage=local_root)
    ln.Feature(name="cell_type_by_expert", dtype=str, synonyms="cell type|celltype").save()
    ln.Feature(name="cell type", dtype=str).save()
    scores = ln.Feature.search("cell type").scores
    assert list(scores["name"][:2]) == ["cell type", "cell_type_by_expert"]
    assert list(scores["match"][:2]) == ["exact", "synonym"]


def test_search_module_is_exported():
    assert callable(search.search_registry) and callable(search.search_table)
