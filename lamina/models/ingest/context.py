"""What a validation or save of one batch resolves once: the manifest's columns (artifact
fields, features and their label resolvers) and the storage roots."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ...catalog import tables
from ...catalog.instance import Instance, current
from ...catalog.location import Location
from ...engine.features import FeatureInfo
from ...engine.session import session_for
from ...errors import ValidationError
from ..labels import LabelResolver
from .manifest import Source
from .report import Issue

# Artifact fields a manifest may set; everything else lamina fills in.
SETTABLE = {"description": pl.String, "kind": pl.String, "otype": pl.String,
            "n_observations": pl.Int64, "version_tag": pl.String, "size": pl.Int64,
            "hash": pl.String}
# Manifest columns are renamed ``manifest:<name>`` inside a prepared chunk; what is derived
# starts with ``_`` or ``f_``, so no manifest column can shadow it.
MANIFEST = "manifest:"


@dataclass
class Context:
    """What a validation or save of one batch resolved once."""

    instance: Instance
    path_column: str  # the manifest's path and key columns
    key_column: str
    features: dict[str, FeatureInfo]  # manifest column -> feature
    fields: list[str]  # settable artifact fields present in the manifest
    labels: dict[tuple, LabelResolver]  # (label table, type) -> resolver
    roots: list[tuple[int | None, str]]  # registered storage roots, longest first
    target_id: int | None  # storage that copies go to (None: not registered yet)
    target_root: str
    column_issues: list[Issue]


def resolve_context(source: Source, path_column: str, key_column: str, features,
                    storage) -> Context:
    """Which manifest columns are artifact fields and which are features (``features``:
    ``"auto"`` or a list), the label resolvers, and the storage roots files go to or lie in;
    problems of whole columns become ``column_issues``."""
    instance = current()
    columns = source.columns
    issues: list[Issue] = []
    if path_column not in columns:
        issues.append(Issue(None, path_column,
                            f"the manifest has no path column {path_column!r} "
                            f"(columns: {columns})"))
    rest = [c for c in columns if c not in (path_column, key_column)]
    fields = [c for c in rest if c in SETTABLE]
    candidates = [c for c in rest if c not in SETTABLE]
    chosen = features
    if chosen is None:
        chosen = []
    if chosen == "auto":
        wanted = candidates
    else:
        if isinstance(chosen, str):
            raise ValidationError("features takes 'auto' or a list of feature names")
        wanted = [getattr(f, "name", f) for f in chosen]
        for name in wanted:
            if name not in columns:
                issues.append(Issue(None, name, f"feature {name!r} is not a column of the "
                                                "manifest"))
        wanted = [w for w in wanted if w in columns]
    by_column: dict[str, FeatureInfo] = {}
    if wanted:
        registered = session_for(instance).features()  # main branch, no feature types
        for name in wanted:
            found = registered.by_name(name)
            if not found:
                artifact_columns = tables.get("core.artifact").column_names
                hint = (f"; {name!r} is an artifact field lamina sets itself"
                        if name in artifact_columns else "")
                issues.append(Issue(None, name, f"unknown feature column {name!r}: no "
                                    f"Feature has this name{hint}; register it with "
                                    f"ln.Feature(name={name!r}, dtype=...).save() or leave "
                                    f"it out with features=[...]"))
            elif len(found) > 1:
                issues.append(Issue(None, name, f"feature name {name!r} is ambiguous "
                                    "(several feature types have it)"))
            else:
                by_column[name] = found[0]
    labels: dict[tuple, LabelResolver] = {}
    for info in by_column.values():
        if info.dtype.is_categorical:
            k = (info.dtype.label_spec.qualified, info.dtype.label_type)
            if k not in labels:
                labels[k] = LabelResolver.for_feature(instance, info)
    source.string_columns(
        [path_column, key_column, "description", "kind", "otype", "version_tag",
         "hash", *[c for c, i in by_column.items()
                   if i.dtype.kind in ("str", "dict", "cat")]])
    rows = instance.store(tables.get("core.storage")).snapshot().read(["id", "root"])
    roots = [(r["id"], r["root"]) for r in rows.to_pylist()]
    target_id, target_root = instance.storage_id, instance.storage_location(
        instance.storage_id).root
    if storage is not None:
        root = getattr(storage, "root", None) or Location.of(
            storage).root
        target_root = root
        target_id = next((i for i, r in roots if r == root), None)
        if target_id is None:
            roots.append((None, root))
    roots.sort(key=lambda r: -len(r[1]))
    return Context(instance, path_column, key_column, by_column, fields, labels, roots,
                   target_id, target_root, issues)

def register_target(ctx: Context) -> None:
    """Register ``storage=`` if it is new (at save time: validation writes nothing)."""
    if ctx.target_id is not None:
        return
    ctx.target_id = ctx.instance.register_storage(ctx.target_root)
    ctx.roots = [(ctx.target_id if r == ctx.target_root else i, r) for i, r in ctx.roots]
