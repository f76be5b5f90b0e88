"""The search index of one table snapshot, built once and then only read.

Building runs in a private in-memory DuckDB connection:

1. *entries*: one row per (row, field, value); ``|``-separated synonym fields become one entry per
   synonym. Each entry keeps its row, field, role (name/id, other short field, long text) and its
   normalised token string (:mod:`lamina.search.text`).
2. a DuckDB ``fts`` index over the entries' tokens, created with no stemmer, no stopwords, and a
   tokenizer that keeps digits and single letters (``ignore='[^\\p{L}\\p{N}]+'``); DuckDB's
   defaults (``ignore='(\\.|[^a-z])+'``, English stemmer and stopwords) turn ``CD8`` and ``CD4``
   into the same token ``cd`` and drop the ``T`` of ``T cell``, so it would tie with ``B cell``.
3. the distinct trigrams of every short entry (names, synonyms, ids) for typo matching, and the
   letter counts of every fts term, to find the terms a misspelt query word could be.
4. the initials of every short entry of two or more words ("of", "and", ... skipped), so that
   ``IBD`` finds inflammatory bowel disease although no synonym says so.

The fts tables (``dict``, ``terms``, ``docs``, ``stats``) and the trigrams are then read out once
into compressed-sparse-row numpy arrays, and the DuckDB tables are dropped. A query therefore
costs a few array operations instead of SQL scans. Measured over CL+UBERON+MONDO (226k entries)
on an idle 2-core machine, per query: the fts ``match_bm25`` macro 12-46 ms, a trigram join
8-28 ms, a ``contains()`` scan for word and prefix matches 10-12 ms, so SQL alone could not meet
20 ms; the same BM25 formula over these arrays (:meth:`SearchIndex.bm25`, checked against
``match_bm25`` in the tests) and the trigram count take well under a millisecond each.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass

import duckdb
import jellyfish
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..extensions import load_statement
from .text import (NEAR_WORD, SEPARATORS, STOPWORDS, allowed_edits, normalized_sql, same_digits,
                   word_variants)

# Entry roles: what kind of text an entry is. Exact matches on a name/id rank above exact
# matches on other fields; long text (descriptions) takes part in word and BM25 matching only.
NAME, SHORT, LONG = 0, 1, 2

# BM25 parameters, DuckDB fts's defaults.
BM25_K, BM25_B = 1.2, 0.75

FTS_OPTIONS = (f"stemmer='none', stopwords='none', ignore='{SEPARATORS}', "
               "strip_accents=1, lower=1, overwrite=1")


@dataclass(frozen=True)
class Field:
    """One searchable text column: its role and whether it holds ``|``-separated values."""

    name: str
    role: int = SHORT
    split: bool = False


def connect_with_fts() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": os.cpu_count() or 2})
    con.execute("SET enable_progress_bar = false")  # a build under load must not print bars
    con.execute(load_statement("duckdb_extension_fts"))
    return con




class SearchIndex:
    """Entries, BM25 postings and trigram postings of one table snapshot (read-only)."""

    def __init__(self, source: pa.Table, fields: tuple[Field, ...], key=None):
        self.key = key
        self.source = source
        self.fields = fields
        self.n_rows = source.num_rows
        started = time.perf_counter()
        con = connect_with_fts()
        try:
            self._build(con, source, fields)
        finally:
            con.close()
        self.build_seconds = time.perf_counter() - started

    # ---- building --------------------------------------------------------------------------
    def _build(self, con, source: pa.Table, fields: tuple[Field, ...]) -> None:
        columns = {f"f{i}": source.column(f.name).cast(pa.string()) for i, f in enumerate(fields)}
        columns["_rid"] = pa.array(np.arange(source.num_rows, dtype=np.int32))
        con.register("src", pa.table(columns))
        parts = []
        for i, f in enumerate(fields):
            if f.split:
                parts.append(
                    f"SELECT rid, {i} AS fid, {f.role} AS role, unnest(range(len(l))) AS k, "
                    f"trim(unnest(l)) AS value FROM (SELECT _rid AS rid, string_split(f{i}, '|') "
                    f"AS l FROM src WHERE f{i} IS NOT NULL)")
            else:
                parts.append(f"SELECT _rid AS rid, {i} AS fid, {f.role} AS role, 0 AS k, "
                             f"trim(f{i}) AS value FROM src WHERE f{i} IS NOT NULL")
        # One entry per distinct token string of a row's field (a synonym equal up to case and
        # punctuation to another of the same row adds nothing).
        con.execute(f"""
            CREATE TABLE entries AS
            SELECT (row_number() OVER (ORDER BY rid, fid, k) - 1)::INTEGER AS eid,
                   rid::INTEGER AS rid, fid::TINYINT AS fid, role::TINYINT AS role, value, tok
            FROM (
                SELECT *, {normalized_sql('value')} AS tok FROM ({' UNION ALL '.join(parts)})
                QUALIFY row_number() OVER (PARTITION BY rid, fid, tok ORDER BY k) = 1
            ) WHERE tok <> '  '
        """)
        table = con.execute("SELECT rid, fid, role, tok, value FROM entries ORDER BY eid"
                            ).to_arrow_table()
        n = table.num_rows
        self.n_entries = n
        self.rid = table.column("rid").to_numpy().astype(np.int32)
        self.fid = table.column("fid").to_numpy().astype(np.int8)
        self.role = table.column("role").to_numpy().astype(np.int8)
        self.tok: list[str] = table.column("tok").to_pylist()
        self.values = table.column("value").combine_chunks()
        self.toklen = np.fromiter((len(t) - 2 for t in self.tok), dtype=np.int32, count=n)
        # Length of each row's first field (its name): between entries that match alike, the
        # row with the shorter name is usually the general term ("Bergmann glial cell" before
        # "Bergmann glial cell (Mmus)", which has the same synonyms).
        self.name_len = np.full(self.n_rows, 1000, dtype=np.int32)
        first = self.fid == 0
        self.name_len[self.rid[first]] = self.toklen[first]
        self.exact: dict[str, list[int]] = {}
        for eid in np.flatnonzero(self.role != LONG).tolist():
            self.exact.setdefault(self.tok[eid], []).append(eid)
        if n == 0:
            self._empty_postings()
            return

        con.execute(f"PRAGMA create_fts_index('entries', 'eid', 'tok', {FTS_OPTIONS})")
        # Terms ranked in sorted order, so that the terms starting with a prefix are one
        # contiguous range of ranks and their postings one contiguous slice.
        con.execute("""
            CREATE TABLE ranked AS
            SELECT termid, term, df, (row_number() OVER (ORDER BY term) - 1)::INTEGER AS rank
            FROM fts_main_entries.dict
        """)
        dictionary = con.execute("SELECT term, df FROM ranked ORDER BY rank").to_arrow_table()
        self.terms: list[str] = dictionary.column("term").to_pylist()
        self.term_rank = {t: i for i, t in enumerate(self.terms)}
        self.df = dictionary.column("df").to_numpy().astype(np.float64)
        postings = con.execute("""
            SELECT r.rank, d.name::INTEGER AS eid, count(*)::INTEGER AS tf
            FROM fts_main_entries.terms t
            JOIN ranked r USING (termid) JOIN fts_main_entries.docs d USING (docid)
            GROUP BY r.rank, d.name ORDER BY r.rank, eid
        """).to_arrow_table()
        self.post_eid = postings.column("eid").to_numpy().astype(np.int32)
        self.post_tf = postings.column("tf").to_numpy().astype(np.float64)
        self.term_offsets = _offsets(postings.column("rank").to_numpy(), len(self.terms))
        self._index_term_letters()
        docs = con.execute("SELECT name::INTEGER AS eid, len FROM fts_main_entries.docs"
                           ).to_arrow_table()
        self.doclen = np.zeros(n, dtype=np.float64)
        self.doclen[docs.column("eid").to_numpy()] = docs.column("len").to_numpy()
        self.num_docs, self.avgdl = con.execute(
            "SELECT num_docs, avgdl FROM fts_main_entries.stats").fetchone()
        first = con.execute("""
            SELECT e.eid, r.rank FROM entries e
            JOIN ranked r ON r.term = split_part(trim(e.tok), ' ', 1)
        """).to_arrow_table()
        self.first_rank = np.full(n, -1, dtype=np.int32)
        self.first_rank[first.column("eid").to_numpy()] = first.column("rank").to_numpy()
        # Which terms are words of a name or synonym (not only of descriptions): plural and
        # spelling variants of a query word are looked for among these.
        in_short = (self.role[self.post_eid] != LONG).astype(np.int64)
        self.term_short = np.add.reduceat(in_short, self.term_offsets[:-1]) > 0 if len(
            in_short) else np.zeros(len(self.terms), dtype=bool)
        self.term_short &= np.diff(self.term_offsets) > 0
        stop = ", ".join(f"'{w}'" for w in STOPWORDS)
        initials = con.execute(f"""
            SELECT ini, list(eid ORDER BY eid) AS eids FROM (
                SELECT eid, array_to_string(list_transform(words, w -> w[1]), '') AS ini
                FROM (SELECT eid, list_filter(string_split(trim(tok), ' '),
                                              w -> w NOT IN ({stop}, 's') AND w[1] NOT BETWEEN '0'
                                              AND '9') AS words
                      FROM entries WHERE role <> {LONG})
                WHERE len(words) BETWEEN 2 AND 8)
            GROUP BY ini
        """).fetchall()
        self.initials: dict[str, list[int]] = dict(initials)
        # Distinct words of each entry other than "of", "the", ...: how long it is, in words.
        self.content_words = con.execute(f"""
            SELECT greatest(len(list_distinct(list_filter(string_split(trim(tok), ' '),
                                                          w -> w NOT IN ({stop})))), 1)::INTEGER
                   AS n
            FROM entries ORDER BY eid
        """).to_arrow_table().column("n").to_numpy()

        # Trigrams of the short entries, grouped by trigram with numpy (faster than asking
        # DuckDB for distinct, sorted pairs); a trigram repeated in one entry counts once.
        grams = con.execute(f"""
            SELECT eid, unnest([substr(tok, i, 3) for i in range(1, length(tok) - 1)]) AS g
            FROM entries WHERE role <> {LONG}
        """).to_arrow_table()
        if grams.num_rows == 0:
            grams = pa.table({"eid": pa.array([], pa.int32()), "g": pa.array([], pa.string())})
        encoded = pc.dictionary_encode(grams.column("g").cast(pa.string())).combine_chunks()
        # One sorted, distinct int64 key per (trigram, entry): trigram code * (n + 1) + entry.
        keys = np.sort(encoded.indices.to_numpy().astype(np.int64) * (n + 1)
                       + grams.column("eid").to_numpy().astype(np.int64))
        if len(keys):
            keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        codes, gram_eids = np.divmod(keys, n + 1)
        self.gram_id = {g: i for i, g in enumerate(encoded.dictionary.to_pylist())}
        self.gram_offsets = _offsets(codes, len(self.gram_id))
        self.gram_eid = gram_eids.astype(np.int32)
        self.n_grams = np.bincount(self.gram_eid, minlength=n).astype(np.float64)
        con.execute("PRAGMA drop_fts_index('entries')")

    def _index_term_letters(self) -> None:
        """Per term: its length and how often each letter/digit occurs in it, so that the terms
        a misspelt word could be are found by array arithmetic before any edit distance."""
        lengths = np.fromiter((len(t) for t in self.terms), dtype=np.int64,
                              count=len(self.terms))
        codes = np.frombuffer("".join(self.terms).encode("utf-32-le"), dtype=np.uint32)
        rows = np.repeat(np.arange(len(self.terms), dtype=np.int64), lengths)
        counts = np.bincount(rows * _SLOTS + _slots(codes), minlength=len(self.terms) * _SLOTS)
        self.term_letters = np.minimum(counts, 255).astype(np.uint8).reshape(-1, _SLOTS)
        self.term_len = lengths
        self.by_length = np.argsort(lengths, kind="stable")
        self.length_offsets = np.searchsorted(lengths[self.by_length],
                                              np.arange(int(lengths.max(initial=0)) + 2))

    def variants(self, word: str) -> list[tuple[str, str]]:
        """Plural and spelling variants of a query word (:func:`text.word_variants`) that are
        words of some name or synonym of this index, with their kind."""
        found = []
        for variant, kind in word_variants(word):
            rank = self.term_rank.get(variant)
            if rank is not None and self.term_short[rank]:
                found.append((variant, kind))
        return found

    def near_terms(self, word: str, limit: int = 20) -> list[tuple[int, int]]:
        """Terms (rank, edits) within :func:`text.allowed_edits` of ``word`` and with the same
        digits, closest and most frequent first. The letter counts rule out most terms: an
        edit changes at most one letter of the longer word, so terms sharing fewer than
        ``max(len) - budget`` letters with ``word`` are too far."""
        budget = allowed_edits(word)
        if not budget or not self.terms:
            return []
        lo = max(len(word) - budget, 1)
        hi = min(len(word) + budget + 1, len(self.length_offsets) - 1)
        if lo >= hi:
            return []
        rows = self.by_length[self.length_offsets[lo]:self.length_offsets[hi]]
        wanted = np.bincount(_slots(np.frombuffer(word.encode("utf-32-le"), dtype=np.uint32)),
                             minlength=_SLOTS)
        shared = np.minimum(self.term_letters[rows], wanted).sum(axis=1)
        rows = rows[shared >= np.maximum(self.term_len[rows], len(word)) - budget]
        found = []
        for rank in rows.tolist():
            term = self.terms[rank]
            if same_digits(word, term):
                edits = jellyfish.damerau_levenshtein_distance(word, term)
                if edits <= budget:
                    found.append((edits, -self.df[rank], rank))
        found.sort()
        return [(rank, edits) for edits, _, rank in found[:limit]]

    def _empty_postings(self) -> None:
        self.terms, self.term_rank = [], {}
        self.term_letters = np.zeros((0, _SLOTS), dtype=np.uint8)
        self.term_len = np.zeros(0, dtype=np.int64)
        self.by_length = np.zeros(0, dtype=np.int64)
        self.length_offsets = np.zeros(1, dtype=np.int64)
        self.df = np.zeros(0)
        self.post_eid = np.zeros(0, dtype=np.int32)
        self.post_tf = np.zeros(0)
        self.term_offsets = np.zeros(1, dtype=np.int64)
        self.doclen = np.zeros(0)
        self.num_docs, self.avgdl = 0, 1.0
        self.first_rank = np.zeros(0, dtype=np.int32)
        self.term_short = np.zeros(0, dtype=bool)
        self.initials = {}
        self.content_words = np.zeros(0, dtype=np.int32)
        self.gram_id = {}
        self.gram_offsets = np.zeros(1, dtype=np.int64)
        self.gram_eid = np.zeros(0, dtype=np.int32)
        self.n_grams = np.zeros(0)

    # ---- reading ---------------------------------------------------------------------------
    def postings(self, term: str) -> np.ndarray:
        """Entries holding ``term`` as a whole token (sorted, distinct)."""
        rank = self.term_rank.get(term)
        if rank is None:
            return np.zeros(0, dtype=np.int32)
        return self.post_eid[self.term_offsets[rank]:self.term_offsets[rank + 1]]

    def prefix_ranks(self, prefix: str) -> tuple[int, int]:
        """The range of term ranks whose terms start with ``prefix``."""
        lo = bisect.bisect_left(self.terms, prefix)
        hi = bisect.bisect_left(self.terms, prefix + "\U0010ffff")
        return lo, hi

    def prefix_postings(self, prefix: str) -> np.ndarray:
        lo, hi = self.prefix_ranks(prefix)
        if lo >= hi:
            return np.zeros(0, dtype=np.int32)
        found = np.sort(self.post_eid[self.term_offsets[lo]:self.term_offsets[hi]])
        return found[np.concatenate(([True], found[1:] != found[:-1]))] if len(found) else found

    def bm25(self, tokens: list[str], fuzzy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of every entry holding at least one of ``tokens`` (entries, scores): DuckDB fts's
        ``match_bm25`` formula over the fts index's own dict/terms/docs/stats.

        With ``fuzzy``, a token that is no term of the index stands for the terms within a typo
        or two of it (:meth:`near_terms`, Elasticsearch's fuzzy matching), weighted down."""
        weights: dict[int, float] = {}
        for token in dict.fromkeys(tokens):
            rank = self.term_rank.get(token)
            if rank is not None:
                weights[rank] = max(weights.get(rank, 0.0), 1.0)
            elif fuzzy:
                for near, edits in self.near_terms(token):
                    weight = NEAR_WORD * (1.0 - 0.1 * (edits - 1))
                    weights[near] = max(weights.get(near, 0.0), weight)
        if not weights:
            return np.zeros(0, dtype=np.int32), np.zeros(0)
        eids, parts = [], []
        for rank, weight in sorted(weights.items()):
            s, e = self.term_offsets[rank], self.term_offsets[rank + 1]
            df = self.df[rank]
            # DuckDB's log() is base 10; match_bm25 uses it for the idf.
            idf = np.log10((self.num_docs - df + 0.5) / (df + 0.5) + 1.0)
            tf = self.post_tf[s:e]
            dl = self.doclen[self.post_eid[s:e]]
            norm = BM25_K * (1.0 - BM25_B + BM25_B * dl / self.avgdl)
            eids.append(self.post_eid[s:e])
            parts.append(weight * idf * tf * (BM25_K + 1.0) / (tf + norm))
        if len(eids) == 1:
            return eids[0], parts[0]
        scores = np.bincount(np.concatenate(eids), weights=np.concatenate(parts),
                             minlength=self.n_entries)
        hit = np.flatnonzero(scores).astype(np.int32)  # every part is > 0
        return hit, scores[hit]

    def trigram_overlap(self, grams: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Entries sharing a trigram with the query and their Jaccard similarity of trigram
        sets: shared / (query's + entry's - shared)."""
        ids = [self.gram_id[g] for g in set(grams) if g in self.gram_id]
        if not ids:
            return np.zeros(0, dtype=np.int32), np.zeros(0)
        post = np.concatenate([self.gram_eid[self.gram_offsets[i]:self.gram_offsets[i + 1]]
                               for i in ids])
        counts = np.bincount(post, minlength=self.n_entries)
        hit = np.flatnonzero(counts)
        shared = counts[hit].astype(np.float64)
        return hit.astype(np.int32), shared / (len(set(grams)) + self.n_grams[hit] - shared)

    def memory_bytes(self) -> int:
        arrays = [self.rid, self.fid, self.role, self.toklen, self.name_len, self.content_words,
                  self.df, self.post_eid, self.post_tf,
                  self.term_offsets, self.doclen, self.first_rank, self.gram_offsets,
                  self.gram_eid, self.n_grams, self.term_letters, self.term_len, self.by_length,
                  self.length_offsets]
        return (sum(a.nbytes for a in arrays) + self.values.nbytes
                + sum(len(t) + 49 for t in self.tok))


# Letter-count slots: a-z, 0-9, anything else.
_SLOTS = 37
_SLOT_OF = np.full(128, 36, dtype=np.int64)
_SLOT_OF[ord("a"):ord("z") + 1] = np.arange(26)
_SLOT_OF[ord("0"):ord("9") + 1] = np.arange(26, 36)


def _slots(codes: np.ndarray) -> np.ndarray:
    return np.where(codes < 128, _SLOT_OF[np.minimum(codes, 127)], 36)


def _offsets(sorted_keys: np.ndarray, n_keys: int) -> np.ndarray:
    offsets = np.zeros(n_keys + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_keys, minlength=n_keys), out=offsets[1:])
    return offsets
