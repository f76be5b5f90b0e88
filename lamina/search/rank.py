"""Ranking: which rows of an index match a query, in which tier, in which order.

Tiers, best first; every row of a better tier ranks above every row of a worse one:

========  ==============================================================  ==========
tier      a row is in it when one of its entries (a field value, or one       score
          synonym) ...
========  ==============================================================  ==========
exact     equals the query on a name or id field                              100
synonym   equals the query on another field (synonyms, abbr, ...)             95
plural,   equals the query once its plurals are made singular ("T cells")     [90, 95)
spelling  or its British spellings American ("anaemia", "tumours")
abbrev-   has the query as its initials ("IBD": inflammatory bowel           [85, 90)
iation    disease), when the query is typed as an acronym (two or more
          capitals) or is a short word no name or synonym has
word      holds every word of the query as a whole word (a phrase in the      [70, 85)
          query's order ranks higher than the same words in another order);
          a word may be held as its singular or American spelling, and the
          match then says "plural" or "spelling"
prefix    holds the query with its last word as the start of a word           [50, 70)
bm25      shares a word with the query, or matches at least half of its       [25, 50)
          words within a typo or two each (1 edit for words of 3-5
          characters, 2 for longer: Elasticsearch's AUTO fuzziness; digits
          must agree, so CD4 is no typo of CD8)
typo      is similar to the query as a whole string (trigrams, then           [0, 25)
          jellyfish), e.g. words run together or split apart
========  ==============================================================  ==========

"Equals" and "holds" compare normalised token strings (:mod:`lamina.search.text`): case,
accents and punctuation do not count unless the search is case-sensitive, which then also
requires the letters' case to agree (on an otherwise case-insensitive candidate list).

Inside a tier: *word* prefers entries the query covers more of, in distinct words ("of", "the"
not counted) and then characters (``"T cell"`` before ``"T cell receptor complex"``), the query
as a phrase, and names over synonyms over descriptions; *prefix* also entries that start with
the query; both, between entries matching alike, the row with the shorter name. *bm25* and *typo* rows come from short candidate lists — the best BM25 entries (DuckDB fts
index; a query word that is no word of the index stands for the words within its typo budget,
weighted down, as in Elasticsearch's fuzzy matching), the entries with the most trigrams in common, and for short queries the entries one
edit away (trigrams miss those: "rp3l2" shares one trigram with "rpl32") — re-scored with jellyfish
string similarity (Jaro-Winkler and Damerau-Levenshtein, also on sorted words); *bm25* mixes
that similarity with the share of the query's words the entry holds and its BM25 score. Ties
keep the table's order.

Lower tiers are only computed while the better ones have not filled ``limit`` rows. The
``match`` of a row says why it matched: the tier's name, except that a *word* row matched only
through a plural or spelling variant says ``plural`` or ``spelling``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .index import LONG, NAME, SearchIndex
from .text import (PLURAL, SPELLING, STOPWORDS, looks_like_acronym, normalize, one_edit_away,
                   quick_similarity, similarity, trigrams, unpronounceable, word_overlap)

TIERS = ("exact", "synonym", PLURAL, SPELLING, "abbreviation", "word", "prefix", "bm25", "typo")
BANDS = {"exact": (100.0, 100.0), "synonym": (95.0, 95.0), PLURAL: (90.0, 95.0),
         SPELLING: (90.0, 95.0), "abbreviation": (85.0, 90.0), "word": (70.0, 85.0),
         "prefix": (50.0, 70.0), "bm25": (25.0, 50.0), "typo": (0.0, 25.0)}
# Query strings tried per query in the plural/spelling tier (every combination of its words'
# variants, up to this many).
MAX_VARIANT_QUERIES = 32
# How much an entry's field counts inside a tier: names/ids, other short fields, long text.
ROLE_WEIGHT = np.array([1.0, 0.9, 0.5])
# Candidates re-scored with jellyfish per list (BM25, trigram): at least this many, and more
# for a large limit.
CANDIDATES = 100
# A row sharing no word exactly is in the bm25 tier when it matches at least this share of the
# query's words softly (within a typo or two, see ``text.word_overlap``).
SOFT_WORDS_MIN = 0.5
# A row found only by trigrams must be at least this similar to the query.
TYPO_MIN_SIMILARITY = 0.62
# Candidates given the full jellyfish comparison, per row still to fill (the others are ranked
# out by a Jaro-Winkler estimate first).
RESCORED_PER_ROW = 3
# Similarity is computed on at most this many characters of a long query.
MAX_COMPARED = 256


@dataclass(frozen=True)
class Query:
    text: str
    tok: str  # " t cell " (lower-cased, padded)
    tokc: str  # " T cell " (case kept)
    grams: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Query:
        tok = normalize(text)
        return cls(text, tok, normalize(text, lower=False), tuple(trigrams(tok)))

    @property
    def tokens(self) -> list[str]:
        return self.tok.split()


@dataclass(frozen=True)
class Hit:
    rid: int  # row position in the index's source table
    score: float
    match: str  # tier name
    eid: int  # the entry that placed the row


def rank(index: SearchIndex, query: Query, *, limit: int | None = 20,
         fields: tuple[int, ...] | None = None, case_sensitive: bool = False) -> list[Hit]:
    """The best ``limit`` rows (all matching rows for None) for ``query``, searching only the
    index's fields at positions ``fields`` when given."""
    return _Ranking(index, query, limit, fields, case_sensitive).run()


class _Ranking:
    def __init__(self, index: SearchIndex, query: Query, limit, fields, case_sensitive):
        self.index, self.q, self.limit = index, query, limit
        self.fids = None if fields is None else np.asarray(sorted(set(fields)), dtype=np.int8)
        self.case = case_sensitive
        self.placed = np.zeros(index.n_rows, dtype=bool)
        self.hits: list[Hit] = []
        # Per query word: the word and its plural/spelling variants held by the index, with
        # their kind (None for the word as typed); None for a case-sensitive search.
        self.alternatives: list[list[tuple[str, str | None]]] | None = None

    # ---- helpers ---------------------------------------------------------------------------
    def full(self) -> bool:
        return self.limit is not None and len(self.hits) >= self.limit

    def open(self, eids: np.ndarray) -> np.ndarray:
        """Entries of the searched fields whose rows are not placed yet."""
        return eids[self._open_mask(eids)]

    def cased(self, eids) -> list[str]:
        """Case-preserving token strings of ``eids``."""
        values = self.index.values.take(np.asarray(eids, dtype=np.int64)).to_pylist()
        return [normalize(v, lower=False) for v in values]

    def place(self, tier: str, eids: np.ndarray, subs: np.ndarray,
              matches: dict[int, str] | None = None) -> None:
        """Add the rows not placed yet (each by its best entry) in the order of ``subs``, until
        ``limit``; ``matches`` names why an entry matched when that is not the tier's name."""
        if len(eids) == 0 or self.full():
            return
        index = self.index
        if self.limit is not None:
            eids, subs = self._best_only(eids, subs, self.limit - len(self.hits))
        order = np.lexsort((eids, -subs))
        eids, subs = eids[order], subs[order]
        rids = index.rid[eids]
        open_rows = ~self.placed[rids]
        eids, subs, rids = eids[open_rows], subs[open_rows], rids[open_rows]
        _, first = np.unique(rids, return_index=True)
        first.sort()  # keep the ranking order; ties were broken by entry (= table) order
        lo, hi = BANDS[tier]
        for i in first.tolist():
            if self.full():
                return
            rid = int(rids[i])
            score = lo + (hi - lo) * 0.999 * min(max(float(subs[i]), 0.0), 1.0)
            eid = int(eids[i])
            match = matches.get(eid, tier) if matches else tier
            self.hits.append(Hit(rid, round(score, 3), match, eid))
            self.placed[rid] = True

    def _best_only(self, eids: np.ndarray, subs: np.ndarray, wanted: int):
        """The entries that can still place one of the ``wanted`` best rows: all with a score
        at least the k-th best, when they cover enough rows (so sorting a word found in 25k
        entries costs no more than sorting a few hundred); otherwise all of them."""
        k = 8 * wanted + 64
        if len(eids) <= 2 * k:
            return eids, subs
        threshold = np.partition(subs, len(subs) - k)[len(subs) - k]
        keep = subs >= threshold
        rids = self.index.rid[eids[keep]]
        if len(np.unique(rids[~self.placed[rids]])) < wanted:
            return eids, subs
        return eids[keep], subs[keep]

    # ---- tiers -----------------------------------------------------------------------------
    def run(self) -> list[Hit]:
        if not self.q.tokens or self.index.n_entries == 0:
            return []
        steps, acronym = [self.exact], None
        if not self.case:
            self.alternatives = [[(t, None), *self.index.variants(t)] for t in self.q.tokens]
            acronym = self.acronym()
            if acronym == "strong":  # before plurals: the S of "IRDS" is no plural
                steps.append(self.abbreviation)
            steps.append(self.variant)
        steps.append(self.word)
        if acronym == "named":
            steps.append(self.abbreviation)
        steps += [self.prefix, self.fuzzy]
        if not self.case and acronym == "weak":
            steps.append(self.abbreviation)
        for step in steps:
            step()
            if self.full():
                break
        return self.hits

    def acronym(self) -> str | None:
        """Whether the query may be an acronym (some entry has it as initials), and how sure
        that is. ``strong`` (ranked right after exact matches): typed as one (``IBD``); or a
        word no name or synonym has and no typo of one could be (``pbmc``); or one that could
        not be an English word (``arvc``: three consonants running). ``weak`` (ranked last)
        otherwise: ``hert`` is more likely a typo of heart, ``renal`` a word, ``amas`` the start
        of amastia. ``named`` (ranked right after word matches) when a name starts with it:
        ``MEND syndrome`` for MEND."""
        tokens = self.q.tokens
        token = tokens[0]
        if len(tokens) != 1 or not 2 <= len(token) <= 6 or not token.isalpha():
            return None
        if token not in self.index.initials:
            return None
        rank = self.index.term_rank.get(token)
        if rank is not None and self._starts_a_name(token, rank):
            return "named"  # "MEND syndrome" is what MEND means, before any initials
        if looks_like_acronym(self.q.text.strip()) or unpronounceable(token):
            return "strong"
        lo, hi = self.index.prefix_ranks(token)
        if np.any(self.index.term_short[lo:hi]):
            return "weak"  # a word, or the start of one ("amas" for amastia)
        near = self.index.near_terms(token, limit=50)
        return "weak" if any(self.index.term_short[r] for r, _ in near) else "strong"

    def exact(self) -> None:
        index, q = self.index, self.q
        eids = self.open(np.asarray(index.exact.get(q.tok, ()), dtype=np.int32))
        if self.case and len(eids):
            eids = eids[np.array([t == q.tokc for t in self.cased(eids)], dtype=bool)]
        names = index.role[eids] == NAME
        self.place("exact", eids[names], np.ones(int(names.sum())))
        self.place("synonym", eids[~names], np.ones(int((~names).sum())))

    def variant(self) -> None:
        """Entries equal to the query once some of its words are replaced by their singular or
        American spelling (every combination, up to ``MAX_VARIANT_QUERIES``)."""
        if all(len(options) == 1 for options in self.alternatives):
            return
        found: dict[int, str] = {}
        combos = itertools.islice(itertools.product(*self.alternatives), MAX_VARIANT_QUERIES + 1)
        next(combos)  # the query as typed: the exact tier's
        for combo in combos:
            kinds = [kind for _, kind in combo if kind]
            for eid in self.index.exact.get(f" {' '.join(w for w, _ in combo)} ", ()):
                found.setdefault(eid, PLURAL if PLURAL in kinds else SPELLING)
        if not found:
            return
        eids = self.open(np.fromiter(found, dtype=np.int32, count=len(found)))
        subs = ROLE_WEIGHT[self.index.role[eids]] * (1.0 - 0.002 * self.index.toklen[eids] / 100)
        # One band for both kinds: the tier is where they rank, the match says which it was.
        self.place(PLURAL, eids, subs, {e: found[e] for e in eids.tolist()})

    def _starts_a_name(self, token: str, rank: int) -> bool:
        eids = self.index.postings(token)
        return bool(np.any((self.index.role[eids] == NAME) & (self.index.first_rank[eids] == rank)))

    def abbreviation(self) -> None:
        """Entries whose initials are the query; names before synonyms, shorter ones (the more
        general terms) first."""
        index = self.index
        eids = self.open(np.asarray(index.initials.get(self.q.tokens[0], ()), dtype=np.int32))
        if len(eids):
            # Words with digits (IgG4, type 2) are rarely abbreviated to their first letter.
            digits = np.array([any(c.isdigit() for c in index.tok[e]) for e in eids.tolist()])
            subs = (ROLE_WEIGHT[index.role[eids]] / (1.0 + index.toklen[eids] / 100)
                    * np.where(digits, 0.9, 1.0))
            self.place("abbreviation", eids, subs)

    def _holding(self, tokens: list[str] | list[list[str]]) -> np.ndarray | None:
        """Entries holding every one of ``tokens`` as a whole token, or one of the alternatives
        when a token is a list of them (None: some token is in no entry at all)."""
        postings = []
        for token in tokens:
            words = [token] if isinstance(token, str) else token
            parts = [p for p in (self.index.postings(w) for w in words) if len(p)]
            if not parts:
                return None
            postings.append(parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts)))
        found = None
        for posting in sorted(postings, key=len):
            found = posting if found is None else np.intersect1d(found, posting,
                                                                 assume_unique=True)
        return found

    def word(self) -> None:
        """Entries holding every word of the query (or a plural/spelling variant of it); as a
        phrase (in the query's order) they rank a little higher than in another order, and
        through a variant a little lower than as typed."""
        index, q = self.index, self.q
        tokens = q.tokens
        alternatives = self.alternatives
        varied = alternatives is not None and any(len(a) > 1 for a in alternatives)
        if varied:
            eids = self._holding([[w for w, _ in options] for options in alternatives])
        else:
            eids = self._holding(tokens)
        if eids is None:
            return
        eids = self.open(eids)
        if len(eids) == 0:
            return
        matches, as_typed = None, True
        if varied:
            typed = self._holding(tokens)
            as_typed = (np.isin(eids, typed) if typed is not None
                        else np.zeros(len(eids), dtype=bool))
            kinds = {kind for options in alternatives for _, kind in options[1:]}
            label = PLURAL if PLURAL in kinds else SPELLING
            matches = {e: label for e in eids[~as_typed].tolist()}
        if self.case:
            wanted = set(q.tokc.split())
            cased = self.cased(eids)
            keep = np.array([wanted <= set(t.split()) for t in cased], dtype=bool)
            eids = eids[keep]
            texts, phrase_of = [t for t, k in zip(cased, keep) if k], q.tokc
        else:
            texts, phrase_of = None, q.tok
        if len(tokens) > 1:
            texts = texts if texts is not None else [index.tok[e] for e in eids.tolist()]
            phrases = [phrase_of]
            if varied:
                combos = itertools.islice(itertools.product(*alternatives), MAX_VARIANT_QUERIES)
                phrases = [f" {' '.join(w for w, _ in combo)} " for combo in combos]
            phrase = np.array([any(p in t for p in phrases) for t in texts], dtype=bool)
        else:
            phrase = np.ones(len(eids), dtype=bool)
        # How much of the entry the query is: in words first, then in characters, so that a
        # short synonym padded with a code ("316 Bergmann NN") does not beat the name
        # "Bergmann glial cell".
        chars = np.minimum((len(q.tok) - 2) / np.maximum(index.toklen[eids], 1), 1.0)
        content = len({t for t in tokens if t not in STOPWORDS}) or 1
        words = np.minimum(content / index.content_words[eids], 1.0)
        cover = words * (0.9 + 0.1 * chars)
        subs = (ROLE_WEIGHT[index.role[eids]] * cover * np.where(phrase, 1.0, 0.85)
                * np.where(as_typed, 1.0, 0.85) * self.general(eids))
        self.place("word", eids, subs, matches)

    def prefix(self) -> None:
        index, q = self.index, self.q
        tokens = q.tokens
        head = q.tok[:-1]  # " alpha beta t ce": the last word may go on
        lo, hi = index.prefix_ranks(tokens[-1])
        if lo >= hi:
            return
        eids = index.prefix_postings(tokens[-1])
        if len(tokens) > 1:
            holding = self._holding(tokens[:-1])
            if holding is None:
                return
            eids = np.intersect1d(eids, holding, assume_unique=True)
        eids = self.open(eids)
        if len(eids) == 0:
            return
        if len(tokens) > 1:
            eids = eids[np.array([head in index.tok[e] for e in eids.tolist()], dtype=bool)]
            starts = np.array([index.tok[e].startswith(head) for e in eids.tolist()], dtype=bool)
        else:
            first = index.first_rank[eids]
            starts = (first >= lo) & (first < hi)
        if self.case and len(eids):
            keep = np.array([q.tokc[:-1] in t for t in self.cased(eids)], dtype=bool)
            eids, starts = eids[keep], starts[keep]
        cover = np.minimum((len(head) - 1) / np.maximum(index.toklen[eids], 1), 1.0)
        subs = ROLE_WEIGHT[index.role[eids]] * (0.5 * starts + 0.5 * cover) * self.general(eids)
        self.place("prefix", eids, subs)

    def fuzzy(self) -> None:
        """BM25 and typo tiers: two short candidate lists, re-scored with jellyfish."""
        index, q = self.index, self.q
        budget = CANDIDATES if self.limit is None else max(CANDIDATES, 4 * self.limit)
        # Once the query has found what it names (an exact, synonym, plural, spelling or
        # abbreviation match), these tiers only fill the tail: fewer BM25 candidates will do,
        # and typo candidates are only the strings one edit away (no trigram search).
        # (With no limit every match is wanted, so all candidates are looked at.)
        found = (self.limit is not None and bool(self.hits)
                 and self.hits[0].score >= BANDS["abbreviation"][0])
        per_row = 1 if found else RESCORED_PER_ROW
        if found:
            budget = max(2 * (self.limit - len(self.hits)), 10)
        bm25_eids, bm25_scores = index.bm25(q.tokens, fuzzy=True)
        keep = self._open_mask(bm25_eids)
        bm25_eids, bm25_scores = bm25_eids[keep], bm25_scores[keep]
        top_bm25 = _top(bm25_eids, bm25_scores, budget)
        top_grams = np.zeros(0, dtype=np.int32)
        if not found:
            gram_eids, jaccard = index.trigram_overlap(list(q.grams))
            keep = self._open_mask(gram_eids)
            top_grams = _top(gram_eids[keep], jaccard[keep], budget)
        near = np.asarray([e for text in one_edit_away(q.tok.strip())
                           for e in index.exact.get(f" {' '.join(text.split())} ", ())],
                          dtype=np.int32)
        near = near[self._open_mask(near)]
        candidates = np.union1d(np.union1d(top_bm25, top_grams), near).astype(np.int32)
        if len(candidates) == 0:
            return
        best_bm25 = float(bm25_scores.max()) if len(bm25_scores) else 0.0
        # BM25 of the candidates only (a common word's postings run to tens of thousands).
        at = np.minimum(np.searchsorted(bm25_eids, candidates), max(len(bm25_eids) - 1, 0))
        held = bm25_eids[at] == candidates if len(bm25_eids) else np.zeros(len(candidates), bool)
        bm25_of = dict(zip(candidates[held].tolist(), bm25_scores[at[held]].tolist()))
        if self.case:
            query = q.tokc.strip()[:MAX_COMPARED]
            texts = [t.strip() for t in self.cased(candidates)]
        else:
            query = q.tok.strip()[:MAX_COMPARED]
            texts = [index.tok[e].strip() for e in candidates.tolist()]
        words = list(dict.fromkeys(query.split()))
        memo: dict = {}
        # First pass, cheap: tier and a Jaro-Winkler estimate for every candidate.
        pool = {"bm25": [], "typo": []}
        for eid, text, role in zip(candidates.tolist(), texts, index.role[candidates].tolist()):
            exact, soft = word_overlap(words, set(text.split()), memo)
            relevance = bm25_of.get(eid, 0.0) / best_bm25 if best_bm25 else 0.0
            tier = "bm25" if exact > 0 or soft >= SOFT_WORDS_MIN else "typo"
            quick = 0.0 if role == LONG else quick_similarity(query, text[:MAX_COMPARED])
            estimate = ROLE_WEIGHT[role] * (0.6 * quick + 0.3 * soft + 0.1 * relevance)
            pool[tier].append((estimate, eid, text, role, soft, relevance))
        # Second pass: the full similarity, only for the candidates that can still make it.
        for tier in ("bm25", "typo"):
            if self.full():
                return
            entries = sorted(pool[tier], key=lambda c: (-c[0], c[1]))
            if self.limit is not None:
                entries = entries[:per_row * (self.limit - len(self.hits)) + 10]
            eids, subs = [], []
            for _, eid, text, role, soft, relevance in entries:
                # Word order only matters between strings with mostly the same words.
                sim = 0.0 if role == LONG else similarity(query, text[:MAX_COMPARED],
                                                          reorder=soft >= 0.5)
                if tier == "bm25":
                    sub = 0.6 * sim + 0.3 * soft + 0.1 * relevance
                elif sim >= TYPO_MIN_SIMILARITY:
                    sub = (sim - TYPO_MIN_SIMILARITY) / (1.0 - TYPO_MIN_SIMILARITY)
                else:
                    continue
                eids.append(eid)
                subs.append(ROLE_WEIGHT[role] * sub)
            self.place(tier, np.array(eids, dtype=np.int32), np.array(subs))

    def general(self, eids: np.ndarray) -> np.ndarray:
        """A factor just below 1 that is smaller for rows with longer names, so that of two
        entries matching alike, the row with the shorter name (the general term) wins."""
        return 1.0 - 0.002 * np.minimum(self.index.name_len[self.index.rid[eids]], 200) / 200

    def _open_mask(self, eids: np.ndarray) -> np.ndarray:
        index = self.index
        mask = ~self.placed[index.rid[eids]]
        if self.fids is not None:
            mask &= np.isin(index.fid[eids], self.fids)
        return mask


def _top(eids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    if len(eids) <= k:
        return eids
    best = np.argpartition(-scores, k - 1)[:k]
    return eids[best]

