"""How text is normalised and compared. One definition, used when indexing and when querying.

Entries are normalised in DuckDB when an index is built (:func:`normalized_sql`, over all rows at
once), queries in Python (:func:`normalize`: compiling the Unicode token regex costs DuckDB more
than a millisecond per statement). The two implement the same rules, and the tests check that
they agree, on tricky strings and in the benchmark on every ontology term:

- accents stripped, lower-cased (unless a search is case-sensitive),
- every run of characters that is neither a letter nor a digit (any script) becomes one space,
- the result is padded with one space on each side: ``"CD8-positive, α-beta T cell"`` →
  ``" cd8 positive α beta t cell "``. A whole-word or phrase match is then a substring test
  (``" t cell " in tok``) and a prefix match at a word start is ``" t cel" in tok``.

Digits and single letters are tokens: ``CD8`` stays ``cd8`` and the ``T`` of ``T cell`` stays.
"""

from __future__ import annotations

import re
import unicodedata

import jellyfish

# Characters that separate tokens (RE2 syntax, as DuckDB's fts ``ignore`` parameter takes it).
SEPARATORS = r"[^\p{L}\p{N}]+"


def normalized_sql(expr: str, lower: bool = True) -> str:
    """SQL for the padded token string of ``expr`` (see the module docstring)."""
    inner = f"strip_accents(CAST({expr} AS VARCHAR))"
    if lower:
        inner = f"lower({inner})"
    return f"(' ' || trim(regexp_replace({inner}, '{SEPARATORS}', ' ', 'g')) || ' ')"


_SEPARATORS_RE = re.compile(r"[\W_]+")  # Python's \w is letters and digits of every script, and _
_MARKS = ("Mn", "Mc", "Me")


def strip_accents(text: str) -> str:
    """DuckDB's ``strip_accents``: decompose, drop combining marks, recompose."""
    decomposed = unicodedata.normalize("NFD", text)
    if decomposed.isascii():
        return decomposed
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in _MARKS)
    return unicodedata.normalize("NFC", kept)


def normalize(text: str, lower: bool = True) -> str:
    """The padded token string of ``text``; the same as :func:`normalized_sql` computes."""
    text = strip_accents(text)
    if lower:
        text = text.lower()
    return " " + _SEPARATORS_RE.sub(" ", text).strip() + " "


def trigrams(tok: str) -> list[str]:
    """The distinct trigrams of a padded token string (spaces included), as the index builds
    them in SQL (``index.py``)."""
    return list(dict.fromkeys(tok[i:i + 3] for i in range(len(tok) - 2)))


def similarity(query: str, value: str, reorder: bool = True) -> float:
    """How alike two normalised strings are, in [0, 1]: the mean of Jaro-Winkler similarity
    (rewards a shared start) and normalised Damerau-Levenshtein similarity (counts edits,
    transpositions as one), taken on the strings as typed and (``reorder``) with their words
    sorted, so "cell T" is as close to "T cell" as "T cell" is. Only ever run on a short
    candidate list."""
    if query == value:
        return 1.0
    if not query or not value:
        return 0.0
    best = _pair(query, value)
    if reorder and (" " in query or " " in value):
        sorted_q = " ".join(sorted(query.split()))
        sorted_v = " ".join(sorted(value.split()))
        if (sorted_q, sorted_v) != (query, value):
            # A little below the as-typed score: word order is a weaker signal than spelling.
            best = max(best, _pair(sorted_q, sorted_v) - 0.02)
    return best


# A query word matches an entry word within this many edits, by the query word's length:
# Elasticsearch's "AUTO" fuzziness (exact below 3 characters, 1 edit up to 5, then 2).
def allowed_edits(word: str) -> int:
    n = len(word)
    return 0 if n < 3 else 1 if n < 6 else 2


_DIGITS = re.compile(r"\D+")


def same_digits(a: str, b: str) -> bool:
    """Digits name different things (CD4 / CD8, IL2 / IL6, TP53 / TP63), so two words are
    never typos of each other unless their digits agree."""
    return _DIGITS.sub("", a) == _DIGITS.sub("", b)


def near_words(word: str, other: str) -> bool:
    """``other`` is ``word`` with a typo or two (see :func:`allowed_edits`)."""
    budget = allowed_edits(word)
    return (budget > 0 and abs(len(other) - len(word)) <= budget and same_digits(word, other)
            and jellyfish.damerau_levenshtein_distance(word, other) <= budget)


# How much a query word counts when it matches an entry word only fuzzily.
PREFIX_WORD, NEAR_WORD = 0.9, 0.8


def word_overlap(query_words: list[str], entry_words: set[str],
                 memo: dict | None = None) -> tuple[float, float]:
    """The share of the query's words an entry holds: exactly, and softly (exact, or the last
    query word as the start of an entry word, or within :func:`allowed_edits`). ``memo``
    caches word-against-word results across the entries of one query."""
    exact = soft = 0.0
    last = len(query_words) - 1
    memo = {} if memo is None else memo
    for i, word in enumerate(query_words):
        if word in entry_words:
            exact += 1.0
            soft += 1.0
            continue
        best = 0.0
        for other in entry_words:
            key = (word, other, i == last)
            found = memo.get(key)
            if found is None:
                found = memo[key] = _soft_match(word, other, i == last)
            if found > best:
                best = found
                if best >= PREFIX_WORD:
                    break
        soft += best
    n = max(len(query_words), 1)
    return exact / n, soft / n


def _soft_match(word: str, other: str, last: bool) -> float:
    if last and len(word) >= 3 and other.startswith(word):
        return PREFIX_WORD
    return NEAR_WORD if near_words(word, other) else 0.0


def quick_similarity(query: str, value: str) -> float:
    """A cheap stand-in for :func:`similarity` (Jaro-Winkler only), to pick which candidates
    are worth the full comparison."""
    if query == value:
        return 1.0
    return jellyfish.jaro_winkler_similarity(query, value)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


def one_edit_away(text: str, max_len: int = 12) -> set[str]:
    """Every string one edit (delete, transpose, substitute, insert) from ``text``, over the
    letters a-z, digits, space and ``text``'s own characters. Trigrams miss typos in short
    strings ("rp3l2" shares one trigram with "rpl32"); these are looked up exactly instead.
    Empty for texts longer than ``max_len``."""
    if len(text) > max_len:
        return set()
    alphabet = set(_ALPHABET) | set(text)
    splits = [(text[:i], text[i:]) for i in range(len(text) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in alphabet}
    out |= {a + c + b for a, b in splits for c in alphabet}
    out.discard(text)
    return out


def _pair(a: str, b: str) -> float:
    if a == b:
        return 1.0
    jw = jellyfish.jaro_winkler_similarity(a, b)
    longest, gap = max(len(a), len(b)), abs(len(a) - len(b))
    if gap * 2 > longest:
        # At least ``gap`` edits apart: a poor match whatever the letters; its bound suffices
        # and spares the quadratic distance on long synonyms.
        dl = 1.0 - gap / longest
    else:
        dl = 1.0 - jellyfish.damerau_levenshtein_distance(a, b) / longest
    return 0.5 * (jw + dl)


# ---- how biologists spell a word: plurals and British spellings --------------------------------
# Each rule rewrites a query word's ending (plural -> singular) or a spelling (British ->
# American, the ontologies' spelling); a rewrite is used only when the index holds the result as
# a word, so a rule that misfires on some other word finds nothing rather than something wrong.
IRREGULAR_SINGULARS = {"teeth": "tooth", "feet": "foot", "men": "man", "women": "woman",
                       "children": "child", "mice": "mouse", "lice": "louse", "geese": "goose"}
SINGULAR_ENDINGS = (  # (plural ending, singular ending), tried in turn
    ("ies", "y"), ("ices", "ex"), ("ices", "ix"), ("ses", "sis"), ("es", "is"), ("ves", "f"),
    ("ves", "fe"), ("es", ""), ("s", ""), ("ae", "a"), ("i", "us"), ("a", "um"), ("a", "on"),
)
AMERICAN_SPELLINGS = (  # (pattern, replacement) on one word, British -> American
    (re.compile(r"ae"), "e"), (re.compile(r"oe"), "e"), (re.compile(r"our(?=s?$)"), "or"),
    (re.compile(r"(?<=[bcdfghklmnpstvz])re(?=s?$)"), "er"), (re.compile(r"is(?=e[ds]?$|ation|ing)"),
                                                           "iz"),
    (re.compile(r"ys(?=e[ds]?$|ing)"), "yz"), (re.compile(r"^leuc"), "leuk"),
    (re.compile(r"^sulph"), "sulf"), (re.compile(r"ll(?=ed$|ing$)"), "l"),
    (re.compile(r"ogue(?=s?$)"), "og"),
)
PLURAL, SPELLING = "plural", "spelling"
# Small words initials skip: "CNS" is central nervous system, "NRL" nucleus recessus lateralis
# (and the "s" of a possessive: "GSV" is great saphenous vein, not Guérin's valve).
STOPWORDS = ("of", "and", "the", "in", "to", "with", "for", "by", "or", "a", "an", "on", "at")


def word_variants(word: str) -> list[tuple[str, str]]:
    """Words a query word may stand for, with why: its singulars (``cells`` -> ``cell``,
    ``nuclei`` -> ``nucleus``, ``vertebrae`` -> ``vertebra``) and its American spelling
    (``tumours`` -> ``tumors`` and ``tumor``, ``haematopoietic`` -> ``hematopoietic``). Not
    checked against anything: the index keeps the ones it holds."""
    out: dict[str, str] = {}
    if word in IRREGULAR_SINGULARS:
        out[IRREGULAR_SINGULARS[word]] = PLURAL
    if len(word) >= 4 and word.isalpha():
        american = word
        for pattern, new in AMERICAN_SPELLINGS:
            american = pattern.sub(new, american)
        if american != word:
            out[american] = SPELLING
        # Regular plurals of four letters or fewer are left alone: "amas" is the start of
        # amastia before it is the plural of AMA ("eyes", one edit from eye, is a typo match).
        for base in (word, american) if len(word) >= 5 else ():
            for plural, singular in SINGULAR_ENDINGS:
                if base.endswith(plural) and len(base) - len(plural) >= 2:
                    stem = base[:len(base) - len(plural)] + singular
                    if stem != word and not base.endswith(("ss", "us", "is")) or plural == "ses":
                        out.setdefault(stem, PLURAL)
    out.pop(word, None)
    return list(out.items())


def looks_like_acronym(text: str) -> bool:
    """A query typed as an acronym: one word of 2-6 letters with at least two capitals."""
    return 2 <= len(text) <= 6 and text.isalpha() and sum(c.isupper() for c in text) >= 2


_CONSONANT_RUN = re.compile(r"[^aeiouy]{3}")


def unpronounceable(word: str) -> bool:
    """A lower-case word that reads as letters, not as an English word: no vowel, or three
    consonants running outside the clusters English words have (``pbmc``, ``arvc``, ``cns``)."""
    return not re.search(r"[aeiouy]", word) or any(
        run not in ("str", "mph", "nth", "sch", "scr", "spr", "spl", "chr", "phr", "thr", "ght",
                    "tch", "nch", "rch", "rst", "nst", "mpl", "ntr", "ndr", "sth", "rth", "lth")
        for run in _CONSONANT_RUN.findall(word))
