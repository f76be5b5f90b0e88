#!/usr/bin/env python
"""Search benchmark: ranking quality on queries generated from the ontologies, and latency.

    python bench/search.py                 # quality (>= 300 queries) + speed
    python bench/search.py --quick         # fewer queries and repetitions, for a smoke run
    python bench/search.py --failures      # also print every query whose term is not top-1
    python bench/search.py --no-speed      # quality only
    python bench/search.py --no-quality    # speed only (queries are still generated)

Sources, all offline: CL, UBERON and MONDO from the PyPI package ``cellxgene-ontology-guide``
(its latest shipped version of each, deprecated terms left out), human genes (GENCODE, symbol +
Ensembl id) from lamina's bionty package data. Each query is searched in the corpus its term
comes from (CL; UBERON+MONDO; genes), through ``lamina.search.search_table`` with the index
built once per corpus.

Query kinds, each with the term it was made from as the expected answer:

- ``exact``: a term's name.
- ``synonym``: one of its synonyms (not an abbreviation-like one).
- ``abbreviation``: a synonym that is an acronym or symbol (no space, >= 2 capitals: ``ALS``).
- ``typo1`` / ``typo2``: the name with one / two random edits (delete, insert, substitute,
  transpose adjacent) on letters anywhere, the first one included; one edit on names of >= 5
  characters, two on names of >= 8.
- ``prefix``: the name cut inside a word, after 50-85 % of its characters.
- ``swap``: the name with two adjacent words swapped.

A generated query is dropped when the expected term is not the right answer by construction, and
the drops are counted per reason: an exact name or synonym that another term also has; a typo
that is exactly another term's name or synonym, or that another term's name or synonym is as
close to (Damerau-Levenshtein, on normalised text); a prefix whose last (partial) word is a
whole word elsewhere in the corpus, or that another term completes with a name or synonym no
longer than the term's own name; a swap whose words another term's name or synonym has too.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import gc
import glob
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from lamina.search import cache_info, clear_cache, search_table  # noqa: E402
from search_queries import REGISTRIES, ontology_terms  # noqa: E402
from lamina.search.text import normalize, normalized_sql  # noqa: E402

ONTOLOGY_FIELDS = ["name", "ontology_id", "synonyms", "description"]
GENE_FIELDS = ["symbol", "ensembl_gene_id"]
KINDS = ["exact", "synonym", "abbreviation", "typo1", "typo2", "prefix", "swap"]
ABBREVIATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9+\-/.]{1,11}")


# ---- data ----------------------------------------------------------------------------------
def gene_terms() -> list[dict]:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lamina")
    found = sorted(glob.glob(os.path.join(root, "bionty*", "data", "genes_homo_sapiens.parquet")))
    if not found:
        return []
    rows = pq.read_table(found[0], columns=["ensembl_gene_id", "symbol"]).to_pylist()
    # Every gene is searchable (by Ensembl id at least); queries are made from those with a
    # symbol.
    return [{"id": r["ensembl_gene_id"], "name": r["symbol"], "synonyms": [],
             "description": None} for r in rows]


@dataclass
class Corpus:
    name: str
    terms: list[dict]
    genes: bool = False
    data: pa.Table | None = None

    def table(self) -> pa.Table:
        if self.genes:
            return pa.table({"symbol": [t["name"] for t in self.terms],
                             "ensembl_gene_id": [t["id"] for t in self.terms]})
        return pa.table({
            "ontology_id": [t["id"] for t in self.terms],
            "name": [t["name"] for t in self.terms],
            "synonyms": ["|".join(t["synonyms"]) or None for t in self.terms],
            "description": [t["description"] for t in self.terms],
        })

    @property
    def search_args(self) -> dict:
        if self.genes:
            return {"fields": GENE_FIELDS, "name_field": "symbol", "key": "ensembl_gene_id"}
        return {"fields": ONTOLOGY_FIELDS, "name_field": "name", "key": "ontology_id"}

    @property
    def id_column(self) -> str:
        return "ensembl_gene_id" if self.genes else "ontology_id"


def combined(corpora: list[Corpus]) -> tuple[pa.Table, dict]:
    """Every corpus in one table (genes: symbol as name), for the latency at > 1e5 terms."""
    ids, names, synonyms, descriptions = [], [], [], []
    for corpus in corpora:
        for t in corpus.terms:
            ids.append(t["id"])
            names.append(t["name"])
            synonyms.append("|".join(t["synonyms"]) or None)
            descriptions.append(t["description"])
    table = pa.table({"ontology_id": ids, "name": names, "synonyms": synonyms,
                      "description": descriptions})
    return table, {"fields": ONTOLOGY_FIELDS, "name_field": "name", "key": "ontology_id"}


# ---- query generation ----------------------------------------------------------------------
@dataclass
class Query:
    corpus: str
    kind: str
    text: str
    expected: str


class Generator:
    def __init__(self, corpus: Corpus, rng: random.Random):
        self.corpus, self.rng = corpus, rng
        self.by_text: dict[str, set[str]] = defaultdict(set)  # normalised name/synonym -> ids
        self.by_words: dict[tuple, set[str]] = defaultdict(set)
        self.entries: list[tuple[str, str]] = []  # (normalised text, id)
        self.words: set[str] = set()
        for t in corpus.terms:
            for text in [t["name"], *t["synonyms"]]:
                if not text:
                    continue
                tok = normalize(text).strip()
                if tok:
                    self.by_text[tok].add(t["id"])
                    self.by_words[tuple(sorted(tok.split()))].add(t["id"])
                    self.entries.append((tok, t["id"]))
                    self.words.update(tok.split())
            if t["description"]:
                self.words.update(normalize(t["description"]).split())
        self.sorted_entries = sorted(self.entries)
        self.dropped: Counter = Counter()

    def unique(self, text: str, term_id: str) -> bool:
        return self.by_text.get(normalize(text).strip(), set()) <= {term_id}

    def make(self, per_kind: int) -> list[Query]:
        terms = [t for t in self.corpus.terms if t["name"]]
        self.rng.shuffle(terms)
        made: dict[str, list[Query]] = {k: [] for k in KINDS}
        typo_candidates: dict[str, list[Query]] = {"typo1": [], "typo2": []}
        for t in terms:
            name, tid = t["name"], t["id"]
            self._add(made, per_kind, "exact", name, tid,
                      None if self.unique(name, tid) else "exact: another term has this name")
            synonyms = [s for s in t["synonyms"] if normalize(s) != normalize(name)]
            if synonyms:
                s = self.rng.choice(synonyms)
                kind = "abbreviation" if is_abbreviation(s) else "synonym"
                self._add(made, per_kind, kind, s, tid,
                          None if self.unique(s, tid) else f"{kind}: another term has it too")
            abbreviations = [s for s in synonyms if is_abbreviation(s)]
            if abbreviations and len(made["abbreviation"]) < per_kind:
                s = self.rng.choice(abbreviations)
                self._add(made, per_kind, "abbreviation", s, tid,
                          None if self.unique(s, tid) else "abbreviation: another term has it")
            for kind, edits, min_len in (("typo1", 1, 5), ("typo2", 2, 8)):
                if len(name) >= min_len and len(typo_candidates[kind]) < 3 * per_kind:
                    typo = with_edits(self.rng, name, edits)
                    if typo is None or not self.unique(typo, "-"):
                        self.dropped[f"{kind}: is another name or synonym"] += 1
                    else:
                        typo_candidates[kind].append(Query(self.corpus.name, kind, typo, tid))
            if len(made["prefix"]) < per_kind:
                self._add(made, per_kind, "prefix", *self.prefix(name, tid))
            if len(made["swap"]) < per_kind:
                self._add(made, per_kind, "swap", *self.swap(name, tid))
        for kind, queries in typo_candidates.items():
            made[kind] = self.closest_only(queries)[:per_kind]
        return [q for kind in KINDS for q in made[kind]]

    def _add(self, made, per_kind, kind, text, tid, reason=None):
        if text is None or len(made[kind]) >= per_kind:
            return
        if reason:
            self.dropped[reason] += 1
            return
        made[kind].append(Query(self.corpus.name, kind, text, tid))

    def prefix(self, name: str, tid: str):
        if len(name) < 6:
            return None, tid, None
        lo, hi = max(3, int(len(name) * 0.5)), int(len(name) * 0.85)
        cuts = [c for c in range(lo, hi + 1) if name[c - 1].isalnum() and name[c].isalnum()]
        if not cuts:
            return None, tid, None
        text = name[:self.rng.choice(cuts)]
        tok = normalize(text).strip()
        if tok.split()[-1] in self.words:
            return text, tid, "prefix: its last word is a whole word elsewhere"
        own = len(normalize(name).strip())
        i = bisect.bisect_left(self.sorted_entries, (tok, ""))
        while i < len(self.sorted_entries) and self.sorted_entries[i][0].startswith(tok):
            entry, other = self.sorted_entries[i]
            if other != tid and len(entry) <= own:
                return text, tid, "prefix: another term completes it as short"
            i += 1
        return text, tid, None

    def swap(self, name: str, tid: str):
        words = name.split()
        if len(words) < 2:
            return None, tid, None
        i = self.rng.randrange(len(words) - 1)
        if normalize(words[i]) == normalize(words[i + 1]):
            return None, tid, None
        words[i], words[i + 1] = words[i + 1], words[i]
        text = " ".join(words)
        tok = normalize(text).strip()
        if tok in self.by_text:
            return text, tid, "swap: is a name or synonym as is"
        if self.by_words.get(tuple(sorted(tok.split())), set()) - {tid}:
            return text, tid, "swap: another term has the same words"
        return text, tid, None

    def closest_only(self, queries: list[Query]) -> list[Query]:
        """Typos for which no other term's name or synonym is as close as the term's own."""
        if not queries:
            return []
        con = duckdb.connect()
        con.register("entries_in", pa.table({"t": [e[0] for e in self.entries],
                                             "id": [e[1] for e in self.entries]}))
        con.register("queries_in", pa.table({
            "n": list(range(len(queries))),
            "q": [normalize(q.text).strip() for q in queries],
            "id": [q.expected for q in queries]}))
        rows = con.execute("""
            SELECT q.n,
                   min(damerau_levenshtein(q.q, e.t)) FILTER (WHERE e.id = q.id) AS own,
                   min(damerau_levenshtein(q.q, e.t)) FILTER (WHERE e.id <> q.id) AS other
            FROM queries_in q JOIN entries_in e ON abs(length(e.t) - length(q.q)) <= 2
            GROUP BY q.n
        """).fetchall()
        con.close()
        keep = set()
        for n, own, other in rows:
            if own is not None and (other is None or other > own):
                keep.add(n)
            else:
                self.dropped[f"{queries[n].kind}: another term is as close"] += 1
        return [q for i, q in enumerate(queries) if i in keep]


def is_abbreviation(text: str) -> bool:
    return (" " not in text and ABBREVIATION.fullmatch(text) is not None
            and sum(c.isupper() for c in text) >= 2)


def with_edits(rng: random.Random, text: str, n: int) -> str | None:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = text
    for _ in range(n):
        positions = [i for i in range(len(out)) if out[i].isalpha()]
        if not positions:
            return None
        i = rng.choice(positions)
        op = rng.choice(["delete", "insert", "substitute", "transpose"])
        if op == "delete":
            out = out[:i] + out[i + 1:]
        elif op == "insert":
            out = out[:i] + rng.choice(letters) + out[i:]
        elif op == "substitute":
            out = out[:i] + rng.choice(letters.replace(out[i].lower(), "")) + out[i + 1:]
        else:
            if i + 1 >= len(out) or out[i] == out[i + 1]:
                out = out[:i] + out[i + 1:]
            else:
                out = out[:i] + out[i + 1] + out[i] + out[i + 2:]
    return out if normalize(out) != normalize(text) else None


# ---- measuring -----------------------------------------------------------------------------
def quality(corpora: dict[str, Corpus], queries: list[Query], show_failures: bool):
    results = defaultdict(lambda: [0, 0, 0])  # (corpus, kind) -> n, top1, top5
    failures = []
    for q in queries:
        corpus = corpora[q.corpus]
        frame = search_table(corpus.data, q.text, cache_key=("bench", corpus.name), limit=5,
                             **corpus.search_args)
        ids = list(frame[corpus.id_column])
        r = results[(q.corpus, q.kind)]
        r[0] += 1
        r[1] += bool(ids) and ids[0] == q.expected
        r[2] += q.expected in ids
        if not ids or ids[0] != q.expected:
            got = [f"{i} {n!r}" for i, n in zip(ids[:3], frame[corpus.search_args["name_field"]])]
            failures.append((q, q.expected in ids, got))
    if show_failures:
        names = {t["id"]: t["name"] for c in corpora.values() for t in c.terms}
        print("\nqueries whose expected term is not top-1:")
        for q, in5, got in failures:
            print(f"  [{q.corpus}/{q.kind}] {q.text!r} -> want {q.expected} "
                  f"{names.get(q.expected)!r} ({'top-5' if in5 else 'MISSED'}); got {got}")
    return results


def latency(table, args, queries: list[str], cache_key, repeats: int) -> dict:
    clear_cache()
    gc.collect()
    started = time.perf_counter()
    search_table(table, "warm up", cache_key=cache_key, **args)
    build = time.perf_counter() - started
    info = cache_info()["indexes"][0]
    walls, cpus = [], []
    for _ in range(repeats):
        for text in queries:
            w, c = time.perf_counter(), time.process_time()
            search_table(table, text, cache_key=cache_key, **args)
            cpus.append(time.process_time() - c)
            walls.append(time.perf_counter() - w)
    walls.sort()
    cpus.sort()
    return {"rows": table.num_rows, "entries": info["entries"], "build_s": build,
            "memory_mb": info["memory_mb"],
            "p50_ms": 1000 * statistics.median(walls),
            "p95_ms": 1000 * walls[int(0.95 * (len(walls) - 1))],
            "cpu_p50_ms": 1000 * statistics.median(cpus), "n": len(walls)}


# ---- the biologists' query set (bench/search_queries.tsv) ----------------------------------------
BIO_KINDS = ["plural", "spelling", "abbreviation", "partial", "typo", "synonym", "exact", "case"]


def biologist_queries(path: str = os.path.join(HERE, "search_queries.tsv")) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def biologist_bench(rows: list[dict], show_failures: bool) -> dict:
    """Each query searched in its registry's ontology alone (CellType: CL, Tissue: UBERON,
    Disease: MONDO), limit 20 as ``search()``'s default; top-1/top-5 per registry and kind, and
    the wall-clock latency of every query (index built before timing)."""
    results = defaultdict(lambda: [0, 0, 0])  # (registry, kind) -> n, top1, top5
    times, cpus = defaultdict(list), defaultdict(list)
    failures = []
    for registry, ontology in REGISTRIES.items():
        corpus = Corpus(ontology, ontology_terms(ontology))
        data = corpus.table()
        key = ("bench-bio", ontology)
        search_table(data, "warm up", cache_key=key, **corpus.search_args)
        names = {t["id"]: t["name"] for t in corpus.terms}
        for row in rows:
            if row["registry"] != registry:
                continue
            expected = set(row["expected"].split("|"))
            started, cpu = time.perf_counter(), time.process_time()
            frame = search_table(data, row["query"], cache_key=key, **corpus.search_args)
            times[registry].append(time.perf_counter() - started)
            cpus[registry].append(time.process_time() - cpu)
            ids = list(frame["ontology_id"])
            r = results[(registry, row["kind"])]
            r[0] += 1
            r[1] += bool(ids) and ids[0] in expected
            r[2] += bool(expected & set(ids[:5]))
            if not ids or ids[0] not in expected:
                got = [f"{i} {n!r} ({m})" for i, n, m in
                       zip(ids[:3], frame["name"], frame["match"])]
                failures.append(f"  [{registry}/{row['kind']}] {row['query']!r} -> want "
                                f"{row['expected']} {names.get(sorted(expected)[0])!r} "
                                f"({'top-5' if expected & set(ids[:5]) else 'MISSED'}); got {got}")
        clear_cache()
    if show_failures:
        print("\nbiologist queries whose expected term is not top-1:")
        print("\n".join(failures))
    latency = {}
    for registry, walls in times.items():
        walls.sort()
        latency[registry] = {"n": len(walls), "p50_ms": 1000 * statistics.median(walls),
                             "p90_ms": 1000 * walls[int(0.9 * (len(walls) - 1))],
                             "cpu_p50_ms": 1000 * statistics.median(cpus[registry])}
    return {"quality": {f"{k[0]}/{k[1]}": v for k, v in results.items()}, "latency": latency}


def report_biologist(out: dict) -> None:
    quality = out["quality"]
    print(f"\n## Biologists' queries (bench/search_queries.tsv, "
          f"{sum(v[0] for v in quality.values())} queries): top-1 / top-5\n")
    print("| registry | " + " | ".join(BIO_KINDS) + " | all | p50 | p90 | p50 CPU |")
    print("| --- |" + " ---: |" * (len(BIO_KINDS) + 4))
    totals = defaultdict(lambda: [0, 0, 0])
    for registry in [*REGISTRIES, "all"]:
        cells = []
        for kind in BIO_KINDS:
            n, t1, t5 = (totals[kind] if registry == "all"
                         else quality.get(f"{registry}/{kind}", [0, 0, 0]))
            if registry != "all":
                for i, v in enumerate((n, t1, t5)):
                    totals[kind][i] += v
                    totals[registry][i] += v
                    totals["all"][i] += v
            cells.append(f"{100 * t1 / n:.1f} / {100 * t5 / n:.1f}" if n else "–")
        n, t1, t5 = totals[registry]
        lat = out["latency"].get(registry)
        timing = (f"{lat['p50_ms']:.1f} ms | {lat['p90_ms']:.1f} ms | {lat['cpu_p50_ms']:.1f} ms"
                  if lat else "| | ")
        print(f"| {registry} | " + " | ".join(cells)
              + f" | **{100 * t1 / n:.1f} / {100 * t5 / n:.1f}** | {timing} |")


def registry_latency(corpora: dict[str, Corpus], queries: dict[str, list[str]],
                     repeats: int) -> list[dict]:
    """``bt.CellType.search`` / ``bt.Gene.search`` on a real catalog (local root) holding CL and
    the human genes, each bulk-loaded in one commit: the first search after the commit builds
    the index; then p50 of ``search()`` (the ranking, as a SearchResult) and of
    ``search().to_dataframe()`` (plus fetching the rows through the query engine)."""
    import tempfile

    import lamina as ln
    from lamina import bionty as bt
    from lamina.catalog import tables
    from lamina.catalog.ids import new_uid
    from lamina.catalog.snapshot import Change

    work = tempfile.mkdtemp(prefix="lamina-bench-search-")
    os.environ["LAMINA_HOME"] = os.path.join(work, "home")  # never touch the user's settings
    os.environ["LAMINA_CACHE_DIR"] = os.path.join(work, "cache")
    instance = ln.init(storage=os.path.join(work, "root"), modules="bionty")
    out = []
    for corpus_name, registry, qualified in (("CL", bt.CellType, "bionty.celltype"),
                                             ("genes", bt.Gene, "bionty.gene")):
        corpus = corpora.get(corpus_name)
        if corpus is None:
            continue
        spec = tables.get(qualified)
        n = len(corpus.terms)
        columns = {"id": list(range(1, n + 1)), "uid": [new_uid(14) for _ in range(n)],
                   "branch_id": [1] * n, "created_on_id": [1] * n, "space_id": [1] * n,
                   "is_locked": [False] * n}
        source = corpus.data
        for name in source.column_names:
            if name in spec.column_names:
                columns[name] = source.column(name)
        table = pa.table(columns)
        instance.store(spec).transact(lambda snapshot: Change(append=table))
        texts = queries[corpus_name]
        started = time.perf_counter()
        registry.search(texts[0])
        build = time.perf_counter() - started
        ranking, frames = [], []
        for _ in range(repeats):
            for text in texts:
                t = time.perf_counter()
                result = registry.search(text)
                ranking.append(time.perf_counter() - t)
                t = time.perf_counter()
                result.to_dataframe()
                frames.append(time.perf_counter() - t + ranking[-1])
        out.append({"registry": f"bt.{registry.__name__} ({corpus_name})", "rows": n,
                    "build_s": build, "search_ms": 1000 * statistics.median(ranking),
                    "frame_ms": 1000 * statistics.median(frames), "n": len(ranking)})
    return out


ARTIFACT_QUERIES = ["pbmc", "PBMC 10x", "liver", "kidny", "perturb-seq screen", "T cells"]


def artifact_catalog(n: int) -> str:
    """A local catalog of ``n`` artifacts, bulk-appended in one commit, whose keys and
    descriptions read like a lab's (tissue, assay, donor, batch; 1 in 8 a PBMC dataset); built
    once under the temp folder and reused."""
    import tempfile

    import lamina as ln
    from lamina.catalog.ids import new_uid
    from lamina.catalog.snapshot import Change

    root = os.path.join(tempfile.gettempdir(), f"lamina-bench-search-artifacts-n{n}")
    marker = os.path.join(root, "bench-built")
    os.environ.setdefault("LAMINA_HOME", os.path.join(root, "home"))
    os.environ.setdefault("LAMINA_CACHE_DIR", os.path.join(root, "cache"))
    if os.path.exists(marker):
        ln.connect(os.path.join(root, "root"))
        return root
    instance = ln.init(storage=os.path.join(root, "root"))
    rng = random.Random(1)
    tissues = ["pbmc", "liver", "kidney", "lung", "heart", "brain", "spleen", "bone-marrow"]
    assays = ["scrna-seq", "atac-seq", "perturb-seq", "cite-seq", "bulk-rna"]
    keys, descriptions = [], []
    for i in range(n):
        tissue, assay = rng.choice(tissues), rng.choice(assays)
        keys.append(f"project-{i % 37}/{tissue}_{assay}_donor{rng.randrange(60)}_"
                    f"batch{rng.randrange(200)}_{i}.h5ad")
        descriptions.append(f"{assay} of {tissue.replace('-', ' ')} from donor "
                            f"{rng.randrange(60)}, "
                            f"{rng.choice(['10x v3', 'smart-seq2', 'drop-seq'])}")
    spec = ln.Artifact._spec
    schema = spec.arrow_schema()
    given = {"id": list(range(1, n + 1)), "uid": [new_uid(20, versioned=True) for _ in range(n)],
             "key": keys, "description": descriptions, "suffix": [".h5ad"] * n,
             "kind": ["dataset"] * n, "otype": ["AnnData"] * n, "size": [1000] * n,
             "hash": [new_uid(22) for _ in range(n)], "is_latest": [True] * n,
             "is_locked": [False] * n, "branch_id": [1] * n, "created_on_id": [1] * n,
             "space_id": [1] * n, "storage_id": [ln.Storage.filter().first().id] * n,
             "created_by_id": [instance.user_id] * n}
    table = pa.Table.from_arrays(
        [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type)
         for f in schema], schema=schema)
    instance.store(spec).transact(lambda snapshot: Change(append=table))
    open(marker, "w").close()
    return root


def artifact_latency(n: int, repeats: int) -> dict:
    """``ln.Artifact.search(q)`` and ``.to_dataframe()`` on ``n`` artifacts, p50/p90 wall
    clock after the first search of the snapshot (which builds the index)."""
    import lamina as ln

    artifact_catalog(n)
    started = time.perf_counter()
    ln.Artifact.search("warm up")
    build = time.perf_counter() - started
    out = {"rows": n, "build_s": build, "queries": {}}
    for text in ARTIFACT_QUERIES:
        ranking, frames, cpus = [], [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            result = ln.Artifact.search(text)
            ranking.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            t = time.perf_counter()
            result.to_dataframe()
            frames.append(time.perf_counter() - t + ranking[-1])
        ranking.sort()
        frames.sort()
        out["queries"][text] = {
            "search_p50_ms": 1000 * statistics.median(ranking),
            "search_p90_ms": 1000 * ranking[int(0.9 * (len(ranking) - 1))],
            "search_cpu_p50_ms": 1000 * statistics.median(cpus),
            "to_dataframe_p50_ms": 1000 * statistics.median(frames),
            "top": list(result.scores["key"][:1])}
    return out


def report_artifacts(out: dict) -> None:
    print(f"\n## `ln.Artifact.search()` over {out['rows']:,} artifacts (local catalog; first "
          f"search builds the index: {out['build_s']:.2f} s)\n")
    print("| query | p50 `search()` | p90 | p50 CPU | p50 `search().to_dataframe()` |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for text, r in out["queries"].items():
        print(f"| `{text}` | {r['search_p50_ms']:.1f} ms | {r['search_p90_ms']:.1f} ms | "
              f"{r['search_cpu_p50_ms']:.1f} ms | {r['to_dataframe_p50_ms']:.1f} ms |")


def normalisation_check(corpora: list[Corpus]) -> tuple[int, int, list]:
    """Python's normalize() (queries) against DuckDB's normalized_sql() (index) on every name
    and synonym."""
    values = list({v for c in corpora for t in c.terms for v in [t["name"], *t["synonyms"]]
                   if v})
    con = duckdb.connect()
    con.register("v", pa.table({"v": values}))
    duck = con.execute(f"SELECT v, {normalized_sql('v')} AS a, {normalized_sql('v', False)} AS b "
                       "FROM v").fetchall()
    con.close()
    bad = [(v, a, normalize(v)) for v, a, b in duck
           if a != normalize(v) or b != normalize(v, lower=False)]
    return len(values), len(bad), bad[:5]


def report_quality(corpora, queries, dropped, show_failures: bool) -> dict:
    print(f"\n## Quality: {len(queries)} queries")
    started = time.perf_counter()
    results = quality(corpora, queries, show_failures)
    elapsed = time.perf_counter() - started
    print(f"(including index builds: {elapsed:.1f} s)\n")
    print("| corpus | kind | queries | top-1 | top-5 |")
    print("| --- | --- | ---: | ---: | ---: |")
    totals = defaultdict(lambda: [0, 0, 0])
    for (corpus, kind), (n, t1, t5) in sorted(results.items(),
                                               key=lambda kv: (kv[0][0], KINDS.index(kv[0][1]))):
        print(f"| {corpus} | {kind} | {n} | {100 * t1 / n:.1f} % | {100 * t5 / n:.1f} % |")
        for key in (kind, "all"):
            for i, v in enumerate((n, t1, t5)):
                totals[key][i] += v
    for key in [*KINDS, "all"]:
        if key in totals:
            n, t1, t5 = totals[key]
            label = "**all**" if key == "all" else key
            print(f"| all corpora | {label} | {n} | {100 * t1 / n:.1f} % | {100 * t5 / n:.1f} % |")
    print_drops(dropped)
    return results


def print_drops(dropped) -> None:
    print("\ngenerated queries dropped because their expected term was not the answer by "
          "construction:")
    for reason, count in sorted(dropped.items()):
        print(f"  {reason}: {count}")


RESULTS = os.path.join(HERE, "search_results.json")


def write_results(results: dict) -> None:
    results["load_average_end"] = os.getloadavg()[0]
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"\nraw results -> {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--per-kind", type=int, default=None,
                        help="queries per kind and corpus (default 40, quick 12)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--failures", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--biologists-only", action="store_true",
                        help="only the query set of bench/search_queries.tsv")
    parser.add_argument("--artifacts-only", action="store_true",
                        help="only ln.Artifact.search over --artifacts artifacts")
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20260523)
    opts = parser.parse_args()
    per_kind = opts.per_kind or (12 if opts.quick else 40)
    repeats = opts.repeats or (1 if opts.quick else 3)
    rng = random.Random(opts.seed)

    print(f"# lamina search benchmark — {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    cl = Corpus("CL", ontology_terms("CL"))
    um = Corpus("UBERON+MONDO", ontology_terms("UBERON") + ontology_terms("MONDO"))
    genes = Corpus("genes", gene_terms(), genes=True)
    corpora = {c.name: c for c in (cl, um, genes) if c.terms}
    if not genes.terms:
        print("! no human gene table under lamina/bionty*/data; genes left out")
    for c in corpora.values():
        c.data = c.table()

    results = {"load_average_start": os.getloadavg()[0], "cores": os.cpu_count()}
    if opts.artifacts_only:
        results["artifacts"] = artifact_latency(opts.artifacts, 20)
        report_artifacts(results["artifacts"])
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
        return
    results["biologists"] = biologist_bench(biologist_queries(), opts.failures)
    report_biologist(results["biologists"])
    if opts.biologists_only:
        write_results(results)
        return

    n_values, n_bad, examples = normalisation_check(list(corpora.values()))
    print(f"\nnormalisation: Python (queries) vs DuckDB (index) differ on {n_bad} of "
          f"{n_values} names and synonyms {examples if n_bad else ''}")

    queries, dropped = [], Counter()
    for c in corpora.values():
        gen = Generator(c, rng)
        queries += gen.make(per_kind)
        dropped.update({f"{c.name} {k}": v for k, v in gen.dropped.items()})
    if not opts.no_quality:
        generated = report_quality(corpora, queries, dropped, opts.failures)
        results["generated"] = {f"{c}/{k}": v for (c, k), v in generated.items()}

    if opts.no_speed:
        write_results(results)
        return
    print(f"\n## Speed (limit=20, {repeats} pass(es) over the corpus's queries; wall clock and "
          "CPU time of the calling thread's process)\n")
    print("| corpus | rows | index entries | index build | index memory | p50 | p95 | p50 CPU "
          "| queries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    by_corpus = defaultdict(list)
    for q in queries:
        by_corpus[q.corpus].append(q.text)
    runs = [(c.name, c.data, c.search_args, by_corpus[c.name]) for c in corpora.values()]
    table, args = combined(list(corpora.values()))
    runs.append(("all of the above", table, args, [q.text for q in queries]))
    for name, data, args, texts in runs:
        r = latency(data, args, texts, ("bench-speed", name), repeats)
        results.setdefault("speed", {})[name] = r
        print(f"| {name} | {r['rows']:,} | {r['entries']:,} | {r['build_s']:.2f} s | "
              f"{r['memory_mb']:.0f} MB | "
              f"{r['p50_ms']:.2f} ms | {r['p95_ms']:.2f} ms | {r['cpu_p50_ms']:.2f} ms | "
              f"{r['n']} |")
    registries = registry_latency(corpora, by_corpus, repeats)
    results["registries"] = registries
    print("\nThrough the registries (local catalog; first search after the bulk commit builds "
          "the index):\n")
    print("| registry | rows | first search (build) | p50 `search()` | "
          "p50 `search().to_dataframe()` | queries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in registries:
        print(f"| {r['registry']} | {r['rows']:,} | {r['build_s']:.2f} s | {r['search_ms']:.2f} ms "
              f"| {r['frame_ms']:.2f} ms | {r['n']} |")
    results["artifacts"] = artifact_latency(opts.artifacts, 20 if not opts.quick else 3)
    report_artifacts(results["artifacts"])
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    write_results(results)


if __name__ == "__main__":
    main()
