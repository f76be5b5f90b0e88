#!/usr/bin/env python
"""Write ``bench/search_queries.tsv``: queries typed the way biologists type them, each with the
ontology id(s) a biologist would expect, for CellType (CL), Tissue (UBERON) and Disease (MONDO).

    python bench/search_queries.py          # rewrites bench/search_queries.tsv

The expected ids come from the ontologies' own labels, synonyms and (for ambiguity only) their
``ancestors``, as shipped by the PyPI package ``cellxgene-ontology-guide``; this script never
imports lamina, so no expected id can come from lamina's ranking. Text is compared after
:func:`norm` (lower case, accents stripped, possessive 's joined to its word, every run of other
characters one space).

Every query is made by one rule per kind; a query is dropped when the rule does not make its
expected term the one answer (the drops are printed per reason):

- ``plural``: the label with its head noun in the plural (the word before the first " of ", else
  the last word): regular English endings plus the Latin/Greek ones of anatomy (nucleus/nuclei,
  epithelium/epithelia, vertebra/vertebrae, testis/testes, cortex/cortices, ganglion/ganglia) and
  tooth/teeth, foot/feet. Labels of at most 4 words, no digits, commas or parentheses; mass nouns
  (blood, marrow, ...) and -itis/-osis heads left out. Dropped when the plural already is some
  term's label or synonym, or the label is another term's label or synonym too.
- ``spelling``: the label in British spelling (haem-, -aemia, oedema, oesophag-, oestr-, foet-,
  coeliac, caec-, -oea, paediatric, orthopaed-, gynaec-, anaesth-, ischaem-, leucocyte, tumour,
  colour, behaviour, centre, fibre, -ise/-isation/-ised, -yse, sulphur, amoeba). Dropped when the
  British form is already a label or synonym (then it is a plain synonym query), or the label is
  another term's too.
- ``abbreviation``: (a) an acronym synonym as the ontology writes it (no space, 2-8 characters,
  at least two capitals), expecting the term that has it; when several terms have it, the one
  that is an ancestor of all the others (``ALS`` for the general disease, not ``ALS type 4``),
  else dropped. (b) the initials of a label or synonym (first letters of its words, "of", "and",
  "the", ... skipped; labels with digits or parentheses left out), upper-cased, kept only when
  some description in the same ontology spells it out as "<that label or synonym> (<acronym>)"
  (so it is in use for that very text) and no other term's label or synonym has the same
  initials or is that acronym.
- ``partial``: (a) MONDO: the eponym alone (``Kawasaki``) of a label "<Eponym> disease" or
  "<Eponym> syndrome" (also "<Eponym>'s ..."), expecting that term (both, when the ontology has
  "X disease" and "X syndrome"). (b) every ontology: the first word W of a label of two or more
  words, expecting the one term whose label or synonym starts with W and has the fewest words
  (dropped when several tie, W is itself a label or synonym, W is shorter than 4 letters, or W
  is not distinctive: a word of more than 8 labels and synonyms, such as "deep" or "left").
  Capitalised words (eponyms: Purkinje, Sjogren) are taken first.
- ``typo``: the label with one random edit (delete, insert, substitute or transpose letters;
  labels of >= 5 characters), dropped unless the label is strictly the closest label or synonym
  (Damerau-Levenshtein on normalised text).
- ``synonym``: a synonym that is not an acronym and belongs to this term only.
- ``exact``: the label, when no other term has it as label or synonym.
- ``case``: the label upper-cased, or an acronym of kind ``abbreviation`` lower-cased.

Terms are drawn at random with a fixed seed among the terms a rule applies to; "terms a
biologist would type" are approximated by leaving out labels with more than 4 words (6 for
spelling), and for MONDO the terms with fewer than 2 synonyms (mostly numbered subtypes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import unicodedata
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "search_queries.tsv")
REGISTRIES = {"CellType": "CL", "Tissue": "UBERON", "Disease": "MONDO"}
# Queries per kind and registry (the issue asks for >= 50 plural and >= 30 of the other new kinds).
PER_KIND = {"plural": 60, "spelling": 40, "abbreviation": 40, "partial": 40, "typo": 30,
            "synonym": 30, "exact": 30, "case": 30}
STOPWORDS = frozenset("of and the in to with for by or a an on at from".split())
MASS_NOUNS = frozenset("blood marrow lymph milk fat bile urine sweat plasma serum mucus semen "
                       "saliva tissue hair dentine dentin enamel cartilage bone".split())


def ontology_terms(name: str) -> list[dict]:
    """Non-deprecated terms of the ontology ``name`` (CL, UBERON, MONDO, ...) in the latest
    version ``cellxgene-ontology-guide`` ships: id, name, synonyms, description, ancestors."""
    import cellxgene_ontology_guide
    import zstandard

    folder = os.path.join(os.path.dirname(cellxgene_ontology_guide.__file__), "data")
    with open(os.path.join(folder, "latest_ontology_info.json")) as f:
        version = json.load(f)["ontologies"][name]["version"]
    path = os.path.join(folder, f"{name}-ontology-{version}.json.zst")
    with open(path, "rb") as f:
        data = json.loads(zstandard.ZstdDecompressor().stream_reader(f).read())
    terms = []
    for term_id, term in data.items():
        if term.get("deprecated") or not term.get("label"):
            continue
        terms.append({"id": term_id, "name": term["label"],
                      "synonyms": list(dict.fromkeys(term.get("synonyms") or [])),
                      "description": term.get("description"),
                      "ancestors": set(term.get("ancestors") or ())})
    return terms


def norm(text: str) -> str:
    text = re.sub(r"(?<=\w)'s\b", "s", text)  # Rathke's pouch: the word is "rathkes"
    text = unicodedata.normalize("NFD", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Mn").lower()
    return " ".join(re.split(r"[\W_]+", text)).strip()


# ---- the rules ---------------------------------------------------------------------------------
IRREGULAR = {"tooth": "teeth", "foot": "feet", "man": "men", "woman": "women", "child": "children"}
LATIN = [("us", "i"), ("is", "es"), ("ex", "ices"), ("ix", "ices"), ("on", "a")]
LATIN_WORDS = frozenset("nucleus bronchus villus fundus sulcus gyrus thalamus hippocampus "
                        "bronchiolus glomerulus alveolus fasciculus calculus "
                        "epithelium endothelium atrium cerebellum ileum duodenum septum "
                        "mesothelium ependymum ovum acetabulum cilium flagellum "
                        "testis epididymis cortex apex matrix ganglion mitochondrion".split())


def plural(word: str, anatomy: bool = True) -> str | None:
    low = word.lower()
    if low in IRREGULAR:
        return IRREGULAR[low]
    if low in LATIN_WORDS:
        for end, new in LATIN:
            if low.endswith(end):
                return word[:-len(end)] + new
    if low.endswith(("ous", "ss", "ies", "ae", "ia", "itis", "osis", "asis", "esis")) and not (
            low.endswith("ss") and len(low) > 5) and not low.endswith("emia"):
        return None  # no plural anyone types (-itis, -osis, agenesis); -ia heads are mass nouns
    if low.endswith("sis"):
        return word[:-2] + "es"  # epiphysis, epiphyses
    if low.endswith("um"):
        return word[:-2] + "a" if anatomy else None  # diverticulum, diverticula; not ainhum
    if low.endswith(("ulus", "olus")):
        return word[:-2] + "i"  # anulus, anuli
    if low.endswith("a") and low in ("vertebra", "lamina", "fovea", "macula", "papilla",
                                     "trachea", "concha", "ampulla", "fossa", "plica", "bursa"):
        return word + "e"
    if low.endswith("s") and not low.endswith(("ss", "us", "is")):
        return None  # already plural
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if low.endswith("y") and len(low) > 2 and low[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


BRITISH = [
    (r"\bhem(?=a|o)", "haem"), (r"(?<=[a-z])emia\b", "aemia"), (r"\bedema", "oedema"),
    (r"\besophag", "oesophag"), (r"\bestr(?=o|a|i)", "oestr"), (r"\bfet(?=al|us)", "foet"),
    (r"\bceliac", "coeliac"), (r"\bcec(?=um|al)", "caec"), (r"(?<=[a-z][a-z])rhea\b", "rhoea"),
    (r"(?<=[a-z])pnea\b", "pnoea"), (r"\bpediatric", "paediatric"), (r"\borthoped", "orthopaed"),
    (r"\bgynec", "gynaec"), (r"\banesth", "anaesth"), (r"\bischem", "ischaem"),
    (r"\bleukocyte", "leucocyte"), (r"\btumor", "tumour"), (r"\bcolor", "colour"),
    (r"\bbehavior", "behaviour"), (r"\bcenter", "centre"), (r"\bfiber", "fibre"),
    (r"(?<=[a-z]{4})iz(?=e\b|ed\b|ation\b|ing\b)", "is"), (r"(?<=[a-z]{3})yze\b", "yse"),
    (r"\bsulfur", "sulphur"), (r"\bameb", "amoeb"),
]


def british(label: str) -> str:
    out = label
    for pattern, new in BRITISH:
        out = re.sub(pattern, new, out, flags=re.IGNORECASE)
    return out


def initials(text: str) -> str | None:
    words = [w for w in norm(text).split() if w not in STOPWORDS]
    if len(words) < 2 or any(not w.isalpha() for w in words):
        return None
    return "".join(w[0] for w in words).upper()


def is_acronym(text: str) -> bool:
    return (" " not in text and 2 <= len(text) <= 8
            and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+\-/.]*", text) is not None
            and sum(c.isupper() for c in text) >= 2)


def head_index(words: list[str]) -> int:
    lowered = [w.lower() for w in words]
    return lowered.index("of") - 1 if "of" in lowered[1:] else len(words) - 1


def one_edit(rng: random.Random, text: str) -> str:
    positions = [i for i, c in enumerate(text) if c.isalpha()]
    i = rng.choice(positions)
    op = rng.choice(["delete", "insert", "substitute", "transpose"])
    letters = "abcdefghijklmnopqrstuvwxyz"
    if op == "delete":
        return text[:i] + text[i + 1:]
    if op == "insert":
        return text[:i] + rng.choice(letters) + text[i:]
    if op == "substitute":
        return text[:i] + rng.choice(letters.replace(text[i].lower(), "")) + text[i + 1:]
    if i + 1 < len(text) and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:i] + text[i + 1:]


def damerau(a: str, b: str) -> int:
    """Optimal-string-alignment distance (as DuckDB's damerau_levenshtein)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


# ---- one ontology ------------------------------------------------------------------------------
class Ontology:
    def __init__(self, registry: str, terms: list[dict], rng: random.Random):
        self.registry, self.terms, self.rng = registry, terms, rng
        self.by_id = {t["id"]: t for t in terms}
        self.holders: dict[str, set[str]] = defaultdict(set)  # normalised label/synonym -> ids
        self.by_initials: dict[str, set[str]] = defaultdict(set)
        self.by_first: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.spelled_out: dict[str, list[str]] = defaultdict(list)  # acronym -> text before it
        self.word_count: Counter = Counter()  # in how many labels/synonyms each word is
        for t in terms:
            for text in [t["name"], *t["synonyms"]]:
                n = norm(text)
                if not n:
                    continue
                self.holders[n].add(t["id"])
                acronym = initials(text)
                if acronym:
                    self.by_initials[acronym].add(t["id"])
                words = n.split()
                self.by_first[words[0]].append((len(words), t["id"]))
                self.word_count.update(set(words))
            for m in re.finditer(r"([^()]{3,120}?)\s*\(([A-Z][A-Za-z0-9-]{1,9})\)",
                                 t["description"] or ""):
                self.spelled_out[m.group(2)].append(" " + norm(m.group(1)))
        self.dropped: Counter = Counter()
        self.rows: list[dict] = []

    def add(self, kind: str, query: str, ids, rule: str) -> None:
        self.rows.append({"registry": self.registry, "kind": kind, "query": query,
                          "expected": "|".join(sorted(ids)), "rule": rule})

    def only_holder(self, text: str, tid: str) -> bool:
        return self.holders.get(norm(text), set()) <= {tid}

    def shuffled(self, max_words: int = 4, min_synonyms: int = 0) -> list[dict]:
        terms = [t for t in self.terms if len(t["name"].split()) <= max_words
                 and len(t["synonyms"]) >= min_synonyms]
        self.rng.shuffle(terms)
        return terms

    @property
    def min_synonyms(self) -> int:
        return 2 if self.registry == "Disease" else 0

    def take(self, kind: str, candidates, limit: int) -> None:
        n = 0
        for made in candidates:
            if n >= limit:
                break
            if isinstance(made, str):
                self.dropped[f"{kind}: {made}"] += 1
                continue
            self.add(kind, *made)
            n += 1
        if n < limit:
            print(f"  ! {self.registry} {kind}: only {n} of {limit}")

    # ---- kinds ---------------------------------------------------------------------------------
    def plurals(self):
        for t in self.shuffled(4, self.min_synonyms):
            name, tid = t["name"], t["id"]
            if re.search(r"[\d,()/]", name):
                continue
            words = name.split()
            i = head_index(words)
            head = words[i]
            if not head.isalpha() or len(head) < 3 or head.lower() in MASS_NOUNS:
                continue
            new = plural(head, anatomy=self.registry != "Disease")
            if new is None:
                continue
            query = " ".join(words[:i] + [new] + words[i + 1:])
            if norm(query) in self.holders:
                yield "the plural is a label or synonym already"
            elif not self.only_holder(name, tid):
                yield "another term has the label too"
            else:
                yield query, [tid], f"plural of head noun '{head}' of the label"

    def spellings(self):
        for t in self.shuffled(6, 0):
            name, tid = t["name"], t["id"]
            query = british(name)
            if query == name:
                continue
            if norm(query) in self.holders:
                yield "the British form is a label or synonym already"
            elif not self.only_holder(name, tid):
                yield "another term has the label too"
            else:
                yield query, [tid], "British spelling of the label"

    def abbreviations(self):
        from_initials, from_synonyms = [], []
        for t in self.shuffled(10, 0):
            tid = t["id"]
            for text in [t["name"], *t["synonyms"]]:
                acronym = initials(text)
                if (not acronym or re.search(r"[\d()]", text) or not any(
                        before.endswith(" " + norm(text)) for before in self.spelled_out[acronym])):
                    continue
                if self.by_initials[acronym] != {tid}:
                    from_initials.append("initials shared by several terms")
                elif self.holders.get(norm(acronym), set()) - {tid}:
                    from_initials.append("initials are another term's label or synonym")
                elif norm(acronym) in self.holders:
                    continue  # the term's own synonym: counted under (a)
                else:
                    from_initials.append((acronym, [tid], f"initials of '{text}', spelled "
                                          "out so in a description"))
                break
            for s in t["synonyms"]:
                if not is_acronym(s):
                    continue
                holders = self.holders[norm(s)]
                general = [h for h in holders
                           if all(h == o or h in self.by_id[o]["ancestors"] for o in holders)]
                if len(general) != 1:
                    from_synonyms.append("acronym synonym of several terms, none general")
                elif general[0] == tid:
                    from_synonyms.append((s, [tid], "acronym synonym" + (
                        " (of several terms; this one is the ancestor of the others)"
                        if len(holders) > 1 else "")))
                break
        made_initials = [m for m in from_initials if not isinstance(m, str)]
        quota = min(len(made_initials), PER_KIND["abbreviation"] // 2)
        yield from [m for m in from_initials if isinstance(m, str)]
        yield from made_initials[:quota]
        yield from from_synonyms

    def partials(self):
        eponyms, general = [], {}
        if self.registry == "Disease":
            general = defaultdict(list)
            for t in self.terms:
                m = re.fullmatch(r"([A-Z][a-z]{3,})(?:'s)? (?:disease|syndrome)", t["name"])
                if m:
                    general[m.group(1)].append(t["id"])
            for word in sorted(general):
                ids = general[word]
                if norm(word) in self.holders:
                    eponyms.append("the eponym is a label or synonym")
                elif any(n < 2 and tid not in ids for n, tid in self.by_first[norm(word)]):
                    eponyms.append("the eponym starts a shorter label")
                else:
                    eponyms.append((word, ids, "eponym of 'X disease/syndrome'"))
            self.rng.shuffle(eponyms)
        firsts, capitalised = [], []
        seen = set()
        for t in self.shuffled(4, self.min_synonyms):
            words = norm(t["name"]).split()
            if (len(words) < 2 or not words[0].isalpha() or len(words[0]) < 4
                    or words[0] in seen or t["name"].split()[0] in general
                    or self.word_count[words[0]] > 8):
                continue
            seen.add(words[0])
            first = t["name"].split()[0]
            starting = self.by_first[words[0]]
            fewest = min(n for n, _ in starting)
            best = {tid for n, tid in starting if n == fewest}
            if words[0] in self.holders:
                firsts.append("the first word is a label or synonym")
            elif len(best) != 1 or best != {t["id"]}:
                firsts.append("another term's label starts with it and is as short")
            else:
                made = (first, [t["id"]], "first word of the label; the term with the "
                        "shortest label starting with it")
                eponym = re.fullmatch(r"[A-Z][a-z]+(?:-[A-Z][a-z]+)*(?:'s|')?", first)
                (capitalised if eponym else firsts).append(made)
        half = PER_KIND["partial"] // 2
        made_eponyms = [m for m in eponyms if not isinstance(m, str)][:half]
        yield from [m for m in eponyms if isinstance(m, str)]
        yield from made_eponyms
        yield from capitalised
        yield from firsts

    def typos(self):
        entries = list(self.holders.items())
        for t in self.shuffled(4, self.min_synonyms):
            name, tid = t["name"], t["id"]
            if len(name) < 5 or not self.only_holder(name, tid):
                continue
            query = one_edit(self.rng, name)
            q = norm(query)
            if q in self.holders:
                yield "the typo is a label or synonym"
                continue
            own = damerau(q, norm(name))
            if any(ids - {tid} and abs(len(text) - len(q)) <= own and damerau(q, text) <= own
                   for text, ids in entries):
                yield "another label or synonym is as close"
            else:
                yield query, [tid], "one random edit of the label"

    def synonyms(self):
        for t in self.shuffled(10, 0):
            options = [s for s in t["synonyms"] if not is_acronym(s)
                       and norm(s) != norm(t["name"]) and self.only_holder(s, t["id"])]
            if options:
                yield self.rng.choice(options), [t["id"]], "a synonym only this term has"

    def exacts(self):
        for t in self.shuffled(6, self.min_synonyms):
            if self.only_holder(t["name"], t["id"]):
                yield t["name"], [t["id"]], "the label"

    def cases(self, abbreviations: list[dict]):
        rows = []
        for t in self.shuffled(4, self.min_synonyms):
            if len(rows) >= PER_KIND["case"] // 2:
                break
            if t["name"].upper() != t["name"] and self.only_holder(t["name"], t["id"]):
                rows.append((t["name"].upper(), [t["id"]], "the label upper-cased"))
        for row in abbreviations[:PER_KIND["case"] - len(rows)]:
            rows.append((row["query"].lower(), row["expected"].split("|"),
                         "an abbreviation query lower-cased"))
        yield from rows

    def make(self) -> None:
        self.take("plural", self.plurals(), PER_KIND["plural"])
        self.take("spelling", self.spellings(), PER_KIND["spelling"])
        self.take("abbreviation", self.abbreviations(), PER_KIND["abbreviation"])
        abbreviations = [r for r in self.rows if r["kind"] == "abbreviation"]
        self.rng.shuffle(abbreviations)
        self.take("partial", self.partials(), PER_KIND["partial"])
        self.take("typo", self.typos(), PER_KIND["typo"])
        self.take("synonym", self.synonyms(), PER_KIND["synonym"])
        self.take("exact", self.exacts(), PER_KIND["exact"])
        self.take("case", self.cases(abbreviations), PER_KIND["case"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", default=OUT)
    opts = parser.parse_args()
    rows = []
    for registry, ontology in REGISTRIES.items():
        rng = random.Random(f"{opts.seed}-{registry}")
        onto = Ontology(registry, ontology_terms(ontology), rng)
        onto.make()
        rows += onto.rows
        print(f"{registry} ({ontology}): {Counter(r['kind'] for r in onto.rows)}")
        for reason, n in sorted(onto.dropped.items()):
            print(f"    dropped, {reason}: {n}")
    with open(opts.out, "w", newline="") as f:
        writer = csv.DictWriter(f, ["registry", "kind", "query", "expected", "rule"],
                                delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} queries -> {opts.out}")


if __name__ == "__main__":
    main()
