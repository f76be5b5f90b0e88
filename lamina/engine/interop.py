"""The catalog described for engines that do not import lamina (Polars, DuckDB's ``delta``
extension, Daft, Spark, Trino, ...).

Every registry is a Delta table at ``<root>/.lamina/catalog/<module>/<table>``. Feature values
sit in columns ``f_<feature id>`` of the annotated tables, and the feature registry
(``core/feature``: ``id``, ``name``, ``_dtype_str``) names them, so any Delta reader can resolve
a feature name with one read of that table. For readers that want names without a join, lamina
describes the catalog in two files beside the tables, written by :func:`write_data_dictionary`
(and printed by ``lamina export-views``):

- ``_lamina_dictionary.json``: every table's path and columns; for each feature column the
  feature's name, dtype and (categorical) the label table its ids point at; for each link list
  and foreign key the table whose ids it holds.
- ``_lamina_views.sql``: DuckDB views over ``delta_scan`` with feature columns renamed to their
  feature names.

Both describe the catalog as it was when written; the feature registry stays the source of truth.
"""

from __future__ import annotations

import json

from ..catalog import tables
from ..catalog.instance import Instance
from ..catalog.store import CATALOG_DIR
from .connections import identifier, quote
from .features import FeatureInfo
from .session import Session, session_for

DICTIONARY_FILE = f"{CATALOG_DIR}/_lamina_dictionary.json"
VIEWS_FILE = f"{CATALOG_DIR}/_lamina_views.sql"
DICTIONARY_FORMAT = 1


def table_path(instance: Instance, spec: tables.TableSpec) -> str:
    return instance.location.join(CATALOG_DIR, spec.module, spec.name)


def _table_ref(qualified: str) -> str:
    """``core.record`` → ``core/record``, a table's path below the catalog folder."""
    return qualified.replace(".", "/", 1)


def _feature_names(spec: tables.TableSpec, present: list[FeatureInfo]) -> dict[str, str]:
    """The name each present feature column gets in a view: the feature's name, unless it
    would clash with a field or another feature's name (then it keeps ``f_<id>``)."""
    counts: dict[str, int] = {}
    for feature in present:
        counts[feature.name] = counts.get(feature.name, 0) + 1
    fields = set(spec.column_names)
    return {f.column: f.name if counts[f.name] == 1 and f.name not in fields else f.column
            for f in present}


def data_dictionary(session: Session) -> dict:
    """The catalog's tables, their columns, and what every feature and link column means."""
    instance = session.instance
    features = session.features().all()
    described = {}
    for spec in instance.table_specs():
        columns = session.columns(spec)
        references = {fk.column: _table_ref(fk.target) for fk in spec.foreign_keys}
        references.update({m.name: _table_ref(m.target) for m in spec.many_to_many})
        entry = {
            "path": table_path(instance, spec),
            # -1: no Delta table yet (nothing was ever written to this registry).
            "version": session.current_version(spec),
            "registry": spec.model if spec.module == "core" else f"{spec.module}.{spec.model}",
            "columns": {c.name: {"type": str(c.type), **({"references": references[c.name]}
                                                         if c.name in references else {})}
                        for c in spec.columns},
        }
        if spec.has_features:
            present = [f for f in features if f.column in columns]
            names = _feature_names(spec, present)
            entry["features"] = {
                f.column: {"feature_id": f.id, "name": f.name, "view_column": names[f.column],
                           "dtype": f.dtype.text,
                           **({"labels": _table_ref(f.dtype.label_spec.qualified)}
                              if f.dtype.label_spec is not None else {})}
                for f in present}
        described[spec.view] = entry
    return {"format": DICTIONARY_FORMAT, "instance": instance.slug, "root": instance.root,
            "branches": {"main": 1, "archive": 0, "trash": -1}, "tables": described}


def views_sql(session: Session) -> str:
    """DuckDB statements creating one view per registry over its Delta table, feature columns
    renamed to feature names. Needs the ``delta`` extension (and an S3 secret for s3 roots)."""
    dictionary = data_dictionary(session)
    lines = [f"-- lamina catalog {dictionary['instance']} at {dictionary['root']}",
             "-- Views over the registries' Delta tables; feature columns carry feature names.",
             "-- Rows of every branch: main is branch_id = 1 (archive 0, trash -1).",
             "-- Run after LOAD delta (and, for s3:// roots, CREATE SECRET (TYPE s3, ...))."]
    for view, entry in dictionary["tables"].items():
        if entry["version"] < 0:
            lines.append(f"-- {view}: no table yet (nothing written to {entry['registry']})")
            continue
        renamed = {c: f["view_column"] for c, f in entry.get("features", {}).items()
                   if f["view_column"] != c}
        select = "*"
        if renamed:
            excluded = ", ".join(identifier(c) for c in renamed)
            named = ", ".join(f"{identifier(c)} AS {identifier(n)}" for c, n in renamed.items())
            select = f"* EXCLUDE ({excluded}), {named}"
        lines.append(f"CREATE OR REPLACE VIEW {identifier(view)} AS SELECT {select} "
                     f"FROM delta_scan({quote(entry['path'])});")
    return "\n".join(lines) + "\n"


def write_data_dictionary(instance: Instance) -> None:
    """Write the dictionary and the view SQL beside the catalog's tables (overwriting the last
    ones). For the write path: call after features are created, renamed or deleted, or after a
    feature's first value lands in a table (its column appears then)."""
    session = session_for(instance)
    location = instance.location
    dictionary = json.dumps(data_dictionary(session), indent=2, sort_keys=True).encode()
    views = views_sql(session).encode()
    fs = location.fs
    for path, content in ((DICTIONARY_FILE, dictionary), (VIEWS_FILE, views)):
        with fs.open(location.join(path), "wb") as f:
            f.write(content)
