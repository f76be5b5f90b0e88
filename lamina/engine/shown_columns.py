"""The columns ``to_dataframe`` adds to the rows it shows: related fields (``include=``) and
features. They are looked up for the shown rows only, by id, from registries that are small
or served from memory (session.fields_by_id), so a page costs the same at any table size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..catalog.tables import TableSpec
from ..errors import FieldError, did_you_mean
from .features import to_display
from .includes import includes_query, one_hop_field
from .planner import Compiler, id_list_params

if TYPE_CHECKING:  # imported where a DataFrame is built, not when the registries load
    import pandas as pd


def features_shown(spec: TableSpec, session, names: list[str] | None) -> list:
    """The features ``include="features"`` (or ``features=[names]``) shows: those with a
    column in the registry's table."""
    if not spec.has_features:
        raise FieldError(f"{spec.model} has no features")
    resolver = session.features()
    every = resolver.all()
    if names is None:
        chosen = every
    else:
        known = {f.name: f for f in every}
        missing = [n for n in names if n not in known]
        if missing:
            raise FieldError(f"unknown feature(s) {missing}{did_you_mean(missing[0], known)}")
        chosen = [known[n] for n in names]
    return [f for f in chosen if resolver.has_column(spec, f)]


def with_features(session, base: pd.DataFrame, frame: pd.DataFrame, present: list,
                  start_values: dict) -> pd.DataFrame:
    """One column per feature with values on these rows: label names (a set when several),
    numbers, dates and dicts as themselves. ``start_values`` holds the features' columns
    as read with the rows, in the frame's order. The new columns join the frame in one
    concat: inserting them one by one cost ~1 ms a feature at 100 rows."""
    if not present or base.empty:
        return frame
    import pandas as pd

    names_by_label = _label_names(session, present, start_values)
    added = {}
    for feature in present:
        labels = names_by_label.get(feature.dtype.label_spec, {})
        values = [to_display(feature, value, labels)
                  for value in start_values.get(feature.column, ())]
        if not any(v is not None for v in values):
            continue
        column = pd.Series(values, index=frame.index, dtype=object)
        if feature.dtype.kind in ("date", "datetime"):
            column = pd.to_datetime(column)
        elif feature.dtype.kind in ("float", "num", "int"):
            column = pd.to_numeric(column)
        added[feature.name] = column
    replaced = [name for name in added if name in frame.columns]
    for name in replaced:  # a feature named like a field shows the feature, in its place
        frame[name] = added.pop(name)
    if not added:
        return frame
    return pd.concat([frame, pd.DataFrame(added, index=frame.index)], axis=1)


def _label_names(session, features, start_values: dict) -> dict:
    """Names of every label the rows reference, by label registry."""
    wanted: dict = {}
    for feature in features:
        if feature.dtype.is_categorical:
            ids = wanted.setdefault(feature.dtype.label_spec, set())
            for value in start_values.get(feature.column, ()):
                ids.update(value or ())
    found = {}
    for spec, ids in wanted.items():
        field = spec.name_field or "id"
        labels = session.fields_by_id(spec, [field], sorted(ids))
        found[spec] = {i: row[field] for i, row in labels.items()}
    return found


def one_hop_includes(spec: TableSpec, paths: list[str]) -> dict:
    """The include paths that are one field one hop away (see includes.one_hop_field)."""
    compiler = Compiler(spec)
    found = {path: one_hop_field(compiler, path) for path in paths}
    return {path: hop_field for path, hop_field in found.items() if hop_field is not None}


def with_includes(spec: TableSpec, session, run, frame: pd.DataFrame, paths: list[str],
                  one_hop: dict, start_values: dict) -> pd.DataFrame:
    """Add one column per related path; many-valued paths become a set per row.

    One-hop paths take the related ids from the shown rows (``start_values`` holds the
    columns they start from, in the frame's order) and look the related rows up by id,
    one statement per related registry; other paths run :func:`includes.includes_query`.
    Why: the shown rows are already read, and the related registries are small; joining
    them in one statement cost 20-30 ms at 1e5 artifacts (re-reading the shown rows and
    unnesting their lists in DuckDB)."""
    ids = [int(i) for i in frame.index]
    keep = [c for c in ("uid", "key", "name") if c in frame.columns][:2]
    out = frame[keep].copy() if keep else frame.iloc[:, :0].copy()
    if not paths:
        return out
    shown = _one_hop_values(session, frame, one_hop, start_values)
    others = [p for p in paths if p not in one_hop]
    if others and ids:
        compiler = Compiler(spec)
        sql, flags = includes_query(compiler, others)
        values = run(sql, id_list_params(ids), compiler.specs).to_pydict()
        positions = {row_id: k for k, row_id in enumerate(values["id"])}
        for k, (path, many) in enumerate(zip(others, flags)):
            column = values[f"v{k}"]
            found = [column[positions[i]] if i in positions else None for i in ids]
            shown[path] = [(set(v) if v is not None else {None}) if many else v
                           for v in found]
    elif others:
        includes_query(Compiler(spec), others)  # names are checked on no rows too
    for path in paths:
        out[path] = shown[path] if ids else []
    return out


def _one_hop_values(session, frame: pd.DataFrame, one_hop: dict, start_values: dict) -> dict:
    """The values of one-hop include paths for the frame's rows: as LEFT JOINs give them,
    a foreign key's field or None, a list's fields as a set ({None} for an empty list)."""
    related: dict = {}  # target spec -> (fields, ids)
    starts = {}
    for path, (hop, field) in one_hop.items():
        column = start_values.get(hop.column)
        if column is None:
            column = frame[hop.column].tolist()
        starts[path] = column
        fields, wanted = related.setdefault(hop.target, (set(), set()))
        fields.add(field)
        for value in column:
            if hop.kind == "fk":
                if value is not None and value == value:  # NaN: a missing key in pandas
                    wanted.add(int(value))
            else:
                wanted.update(value or ())
    by_target = {spec: session.fields_by_id(spec, sorted(fields), sorted(wanted))
                 for spec, (fields, wanted) in related.items()}
    shown = {}
    for path, (hop, field) in one_hop.items():
        values = by_target[hop.target]
        lookup = {i: row[field] for i, row in values.items()}
        if hop.kind == "fk":
            shown[path] = [None if v is None or v != v else lookup.get(int(v))
                           for v in starts[path]]
        else:
            shown[path] = [{lookup.get(i) for i in v} if v else {None} for v in starts[path]]
    return shown
