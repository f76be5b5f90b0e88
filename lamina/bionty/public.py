"""A whole public source as a queryable table: ``bt.CellType.public()``.

The terms are read with DuckDB straight from the source's cached Parquet file (see
``sources.py``). Matching names, synonyms and ids goes through a small in-memory index per source
(one row per name, synonym and id, lower-cased), built once per process, so validating a list of
any length is one hash join.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from .. import log
from ..engine.frames import to_pandas
from ..errors import DoesNotExist, FieldError, ValidationError, unknown_field
from .sources import PublicSource, parquet_path

if TYPE_CHECKING:
    from ..models.base import SQLRecord

# How a value matched a term, best first.
NAME, SYNONYM, KEY = 0, 1, 2


@dataclass
class Layout:
    """Which columns of a source play which role."""

    key: str  # the id field: ontology_id, ensembl_gene_id, uniprotkb_id
    name: str  # the name field: name, symbol
    synonyms: str | None
    deprecated: bool
    # Fields a registry record is filled with (registry field -> source column).
    fields: tuple[str, ...]
    # Columns to_dataframe() shows.
    display: tuple[str, ...]
    # SQL expression ranking several terms that share a name (lower first).
    tiebreak: str = "0"


def layout_of(source: PublicSource) -> Layout:
    if source.kind == "genes":
        return Layout("ensembl_gene_id", "symbol", None, False,
                      ("ensembl_gene_id", "symbol", "biotype"),
                      ("ensembl_gene_id", "symbol", "biotype"),
                      "CASE WHEN t.biotype = 'protein_coding' THEN 0 ELSE 1 END")
    if source.name == "uniprot":
        return Layout("uniprotkb_id", "name", None, False, ("uniprotkb_id", "name"),
                      ("uniprotkb_id", "name"))
    extra = ("scientific_name",) if source.name == "ncbitaxon" else ()
    return Layout("ontology_id", "name", "synonyms", True,
                  ("ontology_id", "name", "synonyms", "description", *extra),
                  ("ontology_id", "name", "synonyms", "description", *extra, "parents"))


class _DuckDB:
    """One in-memory DuckDB connection per process for all public sources."""

    def __init__(self):
        self._con: duckdb.DuckDBPyConnection | None = None
        self.lock = threading.RLock()
        self.views: dict[str, str] = {}
        self.indexes: dict[str, str] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect(config={"threads": min(4, os.cpu_count() or 2)})
            self._con.execute("SET enable_progress_bar = false")
        return self._con

    def arrow(self, sql: str, params: list | dict | None = None) -> pa.Table:
        with self.lock:
            return self.con.execute(sql, params or []).to_arrow_table()


DB = _DuckDB()


def _quote_path(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _clean_values(values) -> list[str]:
    """Distinct non-null values as strings, in input order."""
    if isinstance(values, str):
        values = [values]
    elif isinstance(values, (pd.Series, pd.Index, np.ndarray)):
        values = list(values)
    elif not isinstance(values, (list, tuple, set, frozenset, dict)) and not hasattr(
            values, "__iter__"):
        raise ValidationError(f"expected a list of values, got {values!r}")
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        out.append(value if isinstance(value, str) else str(value))
    return list(dict.fromkeys(out))


@dataclass
class Match:
    value: str
    row: dict
    kind: int
    exact_case: bool
    ambiguous: list[str] = field(default_factory=list)


@dataclass
class InspectResult:
    """What validated among some values: ``validated``, ``non_validated``, and the synonyms
    (or case variants) that map to a standard value."""

    validated: list[str]
    non_validated: list[str]
    synonyms_mapper: dict[str, str] = field(default_factory=dict)

    @property
    def frac_validated(self) -> float:
        total = len(self.validated) + len(self.non_validated)
        return 100.0 * len(self.validated) / total if total else 100.0

    def __repr__(self) -> str:
        return (f"InspectResult(validated={len(self.validated)}, "
                f"non_validated={self.non_validated!r}, synonyms_mapper={self.synonyms_mapper!r})")


class PublicOntology:
    """The terms of one public source for one registry: ``to_dataframe()``, ``search()``,
    ``inspect()``, ``validate()``, ``standardize()``, ``lookup()`` and graph walks."""

    def __init__(self, model: type[SQLRecord], source: PublicSource):
        self.model = model
        self.source = source
        self.layout = layout_of(source)
        self._path = parquet_path(source)
        with DB.lock:
            view = DB.views.get(str(self._path))
            if view is None:
                view = f"src_{len(DB.views)}"
                DB.con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM "
                               f"read_parquet({_quote_path(self._path)})")
                DB.views[str(self._path)] = view
        self._view = view

    # ---- identity ------------------------------------------------------------------------
    @property
    def entity(self) -> str:
        return self.source.entity

    @property
    def organism(self) -> str:
        return self.source.organism

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> str:
        return self.source.version

    def __repr__(self) -> str:
        return (f"PublicOntology(entity={self.entity!r}, organism={self.organism!r}, "
                f"name={self.name!r}, version={self.version!r}, n_terms={len(self)})")

    def __len__(self) -> int:
        return self._arrow(f"SELECT count(*) AS n FROM {self._view} t WHERE {self._live}"
                           )["n"][0].as_py()

    # ---- reading -------------------------------------------------------------------------
    @property
    def _live(self) -> str:
        return "NOT t.deprecated" if self.layout.deprecated else "true"

    def _arrow(self, sql: str, params: list | None = None) -> pa.Table:
        return DB.arrow(sql, params)

    def _columns(self) -> list[str]:
        return list(self.layout.display)

    def to_arrow(self, columns: list[str] | None = None) -> pa.Table:
        cols = columns or self._columns()
        bad = [c for c in cols if c not in self._all_columns()]
        if bad:
            raise unknown_field(bad[0], f"{self.source}", self._all_columns())
        select = ", ".join(f't."{c}"' for c in cols)
        return self._arrow(f"SELECT {select} FROM {self._view} t WHERE {self._live} "
                           f'ORDER BY t."{self.layout.key}"')

    def to_dataframe(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every current (non-obsolete) term, one row each, ordered by id."""
        return to_pandas(self.to_arrow(columns))

    df = to_dataframe

    def to_polars(self, columns: list[str] | None = None):
        import polars as pl

        return pl.from_arrow(self.to_arrow(columns))

    def _all_columns(self) -> list[str]:
        with DB.lock:
            return [d[0] for d in DB.con.execute(f"SELECT * FROM {self._view} LIMIT 0").description]

    # ---- matching ------------------------------------------------------------------------
    def _index(self) -> str:
        """The in-memory (lower-cased text, kind, id, text) index of names, synonyms and ids."""
        with DB.lock:
            found = DB.indexes.get(str(self._path))
            if found is not None:
                return found
            name = f"idx_{len(DB.indexes)}"
            lay = self.layout
            live = self._live
            parts = [f"SELECT lower(t.\"{lay.name}\") AS k, {NAME} AS kind, t.\"{lay.key}\" AS id, "
                     f"t.\"{lay.name}\" AS text FROM {self._view} t WHERE {live} "
                     f"AND t.\"{lay.name}\" IS NOT NULL"]
            if lay.synonyms:
                parts.append(
                    f"SELECT lower(s) AS k, {SYNONYM} AS kind, id, s AS text FROM (SELECT "
                    f"t.\"{lay.key}\" AS id, unnest(string_split(t.\"{lay.synonyms}\", '|')) AS s "
                    f"FROM {self._view} t WHERE {live} AND t.\"{lay.synonyms}\" IS NOT NULL)")
            parts.append(f"SELECT lower(t.\"{lay.key}\") AS k, {KEY} AS kind, t.\"{lay.key}\" AS id, "
                         f"t.\"{lay.key}\" AS text FROM {self._view} t WHERE {live}")
            DB.con.execute(f"CREATE OR REPLACE TABLE {name} AS " + " UNION ALL ".join(parts))
            DB.indexes[str(self._path)] = name
            return name

    def _check_field(self, field: str | None) -> str:
        field = field or self.layout.name
        if not isinstance(field, str):
            raise FieldError(f"field must be a field name, got {field!r}")
        spec = self.model._spec
        if spec.column(field) is None:
            raise unknown_field(field, spec.model, spec.display_columns)
        if field not in self._all_columns():
            raise FieldError(f"the public source {self.source} has no {field!r}; "
                             f"it has {self.layout.fields}")
        return field

    def _match(self, values: list[str], field: str, *, synonyms: bool = True,
               case_sensitive: bool = False) -> dict[str, Match]:
        """Each value's best term (exact > case variant > synonym). Exact values are joined
        against the source's Parquet directly; only the rest go through the name/synonym
        index, which is therefore built only when a synonym or case variant is looked up."""
        if not values:
            return {}
        lay = self.layout
        exact_kind = KEY if field == lay.key else NAME
        rows = self._arrow(
            f"SELECT q.v AS _v, {exact_kind} AS _kind, true AS _exact, {lay.tiebreak} AS _tie, "
            f"t.* FROM unnest(?::VARCHAR[]) AS q(v) JOIN {self._view} t "
            f"ON t.\"{field}\" = q.v WHERE {self._live}", [values]).to_pylist()
        found = {r["_v"] for r in rows}
        rest = [v for v in values if v not in found]
        if rest and not (case_sensitive and (field == lay.key or not synonyms)):
            if field == lay.name or field == lay.key:
                kinds = [KEY] if field == lay.key else ([NAME, SYNONYM] if synonyms else [NAME])
                sql = (f"SELECT q.v AS _v, l.kind AS _kind, l.text = q.v AS _exact, "
                       f"{lay.tiebreak} AS _tie, t.* FROM unnest(?::VARCHAR[]) AS q(v) "
                       f"JOIN {self._index()} l ON l.k = lower(q.v) AND l.kind IN "
                       f"({', '.join(map(str, kinds))}) "
                       f"JOIN {self._view} t ON t.\"{lay.key}\" = l.id")
            else:
                sql = (f"SELECT q.v AS _v, {NAME} AS _kind, t.\"{field}\" = q.v AS _exact, "
                       f"{lay.tiebreak} AS _tie, t.* FROM unnest(?::VARCHAR[]) AS q(v) "
                       f"JOIN {self._view} t ON lower(t.\"{field}\") = lower(q.v) "
                       f"WHERE {self._live}")
            rows += self._arrow(sql, [rest]).to_pylist()
        if case_sensitive:
            rows = [r for r in rows if r["_exact"]]
        rows.sort(key=lambda r: (r["_kind"], not r["_exact"], r["_tie"], r[lay.key]))
        best: dict[str, Match] = {}
        for r in rows:
            value = r.pop("_v")
            kind, exact = r.pop("_kind"), r.pop("_exact")
            r.pop("_tie")
            found = best.get(value)
            if found is None:
                best[value] = Match(value, r, kind, exact)
            elif (kind, exact) == (found.kind, found.exact_case) and \
                    r[lay.key] != found.row[lay.key] and r[lay.key] not in found.ambiguous:
                found.ambiguous.append(r[lay.key])
        return best

    def close_matches(self, value: str, n: int = 3, field: str | None = None) -> list[str]:
        """The names (or ids) closest to ``value`` by Jaro-Winkler similarity; for messages."""
        lay = self.layout
        kinds = f"{KEY}" if field == lay.key else f"{NAME}, {SYNONYM}"
        rows = self._arrow(
            f"SELECT l.id, max(jaro_winkler_similarity(l.k, lower(?))) AS s FROM {self._index()} l "
            f"WHERE l.kind IN ({kinds}) GROUP BY l.id ORDER BY s DESC, l.id LIMIT ?",
            [value, n]).to_pylist()
        ids = [r["id"] for r in rows if r["s"] >= 0.75]
        if field == lay.key or not ids:
            return ids
        rows = self._arrow(
            f"SELECT t.\"{lay.key}\" AS id, t.\"{lay.name}\" AS n FROM {self._view} t "
            f"WHERE t.\"{lay.key}\" IN (SELECT unnest(?::VARCHAR[]))", [ids]).to_pylist()
        names = {r["id"]: r["n"] for r in rows}
        return [names.get(i) or i for i in ids]

    def _obsolete(self, values: list[str], field: str) -> dict[str, str | None]:
        """Values naming obsolete terms -> the term that replaces them (or None)."""
        if not self.layout.deprecated or not values:
            return {}
        rows = self._arrow(
            f"SELECT q.v, t.replaced_by FROM unnest(?::VARCHAR[]) AS q(v) JOIN {self._view} t "
            f"ON t.\"{field}\" = q.v WHERE t.deprecated", [values]).to_pylist()
        return {r["v"]: r["replaced_by"] for r in rows}

    def not_found_message(self, value: str, field: str) -> str:
        message = f"{value!r} matches no {field} in {self.source}"
        obsolete = self._obsolete([value], field)
        if value in obsolete:
            replaced = obsolete[value]
            return message + ("; it is obsolete" +
                              (f" and replaced by {replaced!r}" if replaced else ""))
        close = self.close_matches(value, field=field)
        return message + (f"; close matches: {close}" if close else "")

    # ---- the curation API ----------------------------------------------------------------
    def inspect(self, values, field: str | None = None, *, case_sensitive: bool = False,
                mute: bool = False) -> InspectResult:
        """Which values are terms (by name or id); synonyms are reported with their name."""
        field = self._check_field(field)
        values = _clean_values(values)
        matches = self._match(values, field, case_sensitive=case_sensitive)
        validated, non_validated, mapper = [], [], {}
        for value in values:
            match = matches.get(value)
            if match is None:
                non_validated.append(value)
            elif match.kind == NAME and match.exact_case or match.kind == KEY:
                validated.append(value)
            else:
                mapper[value] = match.row[field]
                non_validated.append(value)
        if not mute:
            _report(self.source, len(values), validated, non_validated, mapper)
        return InspectResult(validated, non_validated, mapper)

    def validate(self, values, field: str | None = None, *, case_sensitive: bool = True,
                 mute: bool = True) -> np.ndarray:
        """A boolean per value: is it a term's ``field`` (exactly, no synonyms)."""
        field = self._check_field(field)
        cleaned = list(values) if not isinstance(values, str) else [values]
        distinct = _clean_values(cleaned)
        matches = self._match(distinct, field, synonyms=False, case_sensitive=case_sensitive)
        ok = {v for v, m in matches.items() if m.kind in (NAME, KEY)}
        return np.array([v in ok for v in map(_as_text, cleaned)], dtype=bool)

    def standardize(self, values, field: str | None = None, *, return_field: str | None = None,
                    return_mapper: bool = False, case_sensitive: bool = False):
        """Synonyms and case variants → the term's ``return_field`` (default: ``field``);
        values that match nothing are returned unchanged."""
        field = self._check_field(field)
        return_field = self._check_field(return_field) if return_field else field
        single = isinstance(values, str)
        items = [values] if single else list(values)
        matches = self._match(_clean_values(items), field, case_sensitive=case_sensitive)
        mapper = {v: m.row[return_field] for v, m in matches.items()
                  if m.row[return_field] != v}
        if return_mapper:
            return mapper
        out = [mapper.get(_as_text(v), v) for v in items]
        return out[0] if single else out

    def get(self, value: str, field: str | None = None) -> dict:
        """The row of one term by name (or synonym) or id; a clear error if there is none."""
        field = self._check_field(field)
        match = self._match([value], field).get(value)
        if match is None:
            raise DoesNotExist(self.not_found_message(value, field))
        return match.row

    def lookup(self, field: str | None = None):
        """Attribute access to the terms by ``field`` (default name):
        ``bt.CellType.public().lookup().t_cell``."""
        from ..models.base import Lookup

        field = self._check_field(field)
        rows = self.to_arrow(list(dict.fromkeys([field, *self.layout.fields]))).to_pylist()
        return Lookup(f"{self.source}", {r[field]: SimpleNamespace(**r) for r in rows
                                         if r[field] is not None})

    # ---- search --------------------------------------------------------------------------
    def search(self, string: str, field: str | None = None, limit: int | None = 20,
               case_sensitive: bool = False) -> pd.DataFrame:
        """Terms ranked for ``string`` (exact name or id > synonym > words > prefix > BM25 >
        typos; see ``lamina.search``), best first, with ``score`` and ``match`` columns. The
        index is built once per source version and process."""
        from ..search import search_table

        lay = self.layout
        columns = self._all_columns()
        fields = [c for c in (lay.name, lay.key, lay.synonyms, "scientific_name", "description")
                  if c and c in columns]
        if field is not None:
            field = self._check_field(field)
            if field not in fields:
                fields.append(field)
        display = list(dict.fromkeys([*self._columns(), *fields]))
        return search_table(lambda: self.to_arrow(display), string, fields=fields,
                            name_field=lay.name, key=lay.key,
                            cache_key=("bionty", self.source.uid_text, str(self._path)),
                            field=field, limit=limit, case_sensitive=case_sensitive)

    # ---- the graph -----------------------------------------------------------------------
    def _term_id(self, term) -> str:
        if isinstance(term, dict):
            return term[self.layout.key]
        if hasattr(term, "_data"):
            term = term._data.get(self.layout.key) or term._data.get(self.layout.name)
        lay = self.layout
        matches = self._match([term], lay.key)
        if term in matches:
            return matches[term].row[lay.key]
        return self.get(term, lay.name)[lay.key]

    def _rows(self, ids: list[str]) -> pd.DataFrame:
        columns = ", ".join(f't."{c}"' for c in self._columns())
        return self._arrow(f"SELECT {columns} FROM {self._view} t WHERE t.\"{self.layout.key}\" "
                           f"IN (SELECT unnest(?::VARCHAR[])) ORDER BY t.\"{self.layout.key}\"",
                           [ids]).to_pandas()

    def _require_graph(self) -> None:
        if not self.layout.deprecated:
            raise ValidationError(f"{self.source} has no term hierarchy")

    def parent_ids(self, term) -> list[str]:
        self._require_graph()
        term_id = self._term_id(term)
        rows = self._arrow(f"SELECT parents FROM {self._view} t WHERE t.ontology_id = ?",
                           [term_id]).to_pylist()
        return list(rows[0]["parents"] or []) if rows else []

    def ancestor_ids(self, term) -> list[str]:
        """Every ancestor of a term, nearest first (from the source's ancestor lists, or by
        walking parents where the source keeps parents only)."""
        self._require_graph()
        term_id = self._term_id(term)
        rows = self._arrow(f"SELECT ancestors FROM {self._view} t WHERE t.ontology_id = ?",
                           [term_id]).to_pylist()
        if rows and rows[0]["ancestors"] is not None:
            return list(rows[0]["ancestors"])
        found = self._arrow(
            f"WITH RECURSIVE a(id, depth) AS ("
            f"SELECT unnest(t.parents), 1 FROM {self._view} t WHERE t.ontology_id = ? "
            f"UNION SELECT unnest(t.parents), a.depth + 1 FROM a JOIN {self._view} t "
            f"ON t.ontology_id = a.id WHERE a.depth < 200) "
            f"SELECT id, min(depth) AS d FROM a GROUP BY id ORDER BY d, id", [term_id])
        return found["id"].to_pylist()

    def descendant_ids(self, term) -> list[str]:
        self._require_graph()
        term_id = self._term_id(term)
        probe = self._arrow(f"SELECT ancestors IS NULL AS walk FROM {self._view} t "
                            f"WHERE t.ontology_id = ?", [term_id]).to_pylist()
        if probe and not probe[0]["walk"]:
            return self._arrow(f"SELECT t.ontology_id FROM {self._view} t WHERE {self._live} "
                               f"AND list_contains(t.ancestors, ?) ORDER BY 1",
                               [term_id])["ontology_id"].to_pylist()
        return self._arrow(
            f"WITH RECURSIVE d(id, depth) AS (SELECT ?, 0 UNION SELECT t.ontology_id, "
            f"d.depth + 1 FROM d JOIN {self._view} t ON list_contains(t.parents, d.id) "
            f"WHERE d.depth < 200) SELECT DISTINCT id FROM d WHERE id <> ? ORDER BY 1",
            [term_id, term_id])["id"].to_pylist()

    def parents(self, term) -> pd.DataFrame:
        """The direct parents of a term (by name or id)."""
        return self._rows(self.parent_ids(term))

    def children(self, term) -> pd.DataFrame:
        self._require_graph()
        term_id = self._term_id(term)
        columns = ", ".join(f't."{c}"' for c in self._columns())
        return self._arrow(f"SELECT {columns} FROM {self._view} t WHERE {self._live} AND "
                           f"list_contains(t.parents, ?) ORDER BY t.ontology_id",
                           [term_id]).to_pandas()

    def ancestors(self, term) -> pd.DataFrame:
        return self._rows(self.ancestor_ids(term))

    def descendants(self, term) -> pd.DataFrame:
        return self._rows(self.descendant_ids(term))


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def _report(where, n: int, validated, non_validated, mapper) -> None:
    if not n:
        return
    log.info(f"{len(validated)} of {n} value(s) validated in {where}")
    if mapper:
        shown = ", ".join(f"{k!r} → {v!r}" for k, v in list(mapper.items())[:10])
        log.info(f"{len(mapper)} synonym(s) or case variant(s) found; standardize() maps them: "
                 f"{shown}")
    rest = [v for v in non_validated if v not in mapper]
    if rest:
        log.warning(f"{len(rest)} value(s) not found: {rest[:20]}")
