"""Categorical feature columns: label names per row, resolved to ids by the one label resolver
(:class:`lamina.models.labels.LabelResolver`, one read per registry for the names not seen
yet) and encoded as ``list<int64>`` columns."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ...engine.features import FeatureInfo
from ..base import model_for
from ..labels import LabelResolver
from .context import MANIFEST, Context
from .report import Issues


def label_names(df: pl.DataFrame, name: str, info: FeatureInfo, issues: Issues) -> pl.Expr:
    """A categorical column as given: one label name per cell (text) or a list of names (in CSV
    a JSON list such as ``["DMSO", "IFNG"]`` becomes a list)."""
    col = pl.col(MANIFEST + name)
    dtype = df.schema[MANIFEST + name]
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.String)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = col.cast(pl.String)
        listed = text.str.starts_with("[")
        if df.select(listed.any()).item():
            decoded = pl.when(listed).then(text).otherwise(None).str.json_decode(
                pl.List(pl.String))
            return pl.when(listed).then(decoded).otherwise(pl.concat_list(text.str.strip_chars()))
        return text.str.strip_chars()
    if isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Categorical, pl.Null):
        return col.list.eval(pl.element().cast(pl.String))
    issues.add(df, col.is_not_null(), name,
               f"feature {info.name!r} ({info.dtype.text}) takes label names, got a {dtype} value")
    return pl.lit(None, dtype=pl.String)


def flat_names(series: pl.Series) -> tuple[np.ndarray, pa.Array]:
    """(position of the row, name) for every label name of a categorical column."""
    arr = series.rechunk().to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        parents = pc.list_parent_indices(arr)
        flat = pc.list_flatten(arr)
    elif pa.types.is_null(arr.type):
        return np.zeros(0, np.int64), pa.array([], pa.large_string())
    else:
        parents = pa.array(np.arange(len(arr), dtype=np.int64))
        flat = arr
    if flat.null_count:
        valid = flat.is_valid()
        parents, flat = parents.filter(valid), flat.filter(valid)
    return parents.to_numpy(zero_copy_only=False).astype(np.int64), flat.cast(pa.large_string())


def list_column(n: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> pa.Array:
    """A ``list<int64>`` column of ``n`` rows from (row position, id) pairs, row by row in the
    order given, each id once per row; a row without ids is null (as the per-row API leaves an
    unannotated feature)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return pa.nulls(n, pa.list_(pa.int64()))
    parents = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if len(parts) > 1:  # sorted runs: a stable sort merges them in linear time
        order = np.argsort(parents, kind="stable")
        parents, ids = parents[order], ids[order]
    key = parents * (1 << 32) + ids
    # Rows are runs already: nearly sorted, which a stable sort (timsort) merges in linear
    # time; the default introsort does not notice.
    ordered = np.sort(key, kind="stable")
    if (ordered[1:] == ordered[:-1]).any():  # a label twice in a row: keep the first
        import pandas as pd

        first = ~pd.Series(key).duplicated().to_numpy()
        parents, ids = parents[first], ids[first]
    counts = np.bincount(parents, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int64()),
                                    mask=pa.array(counts == 0))


def list_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return (pc.list_parent_indices(array).to_numpy().astype(np.int64),
            pc.list_flatten(array).to_numpy(zero_copy_only=False))


def encode_labels(n: int, parents: np.ndarray, flat: pa.Array, labels: LabelResolver) -> pa.Array:
    """Label names -> a ``list<int64>`` column of ids (unknown names are left out)."""
    if not labels.ids or not len(flat):
        return pa.nulls(n, pa.list_(pa.int64()))
    names = pa.array(list(labels.ids), pa.large_string())
    ids = np.fromiter(labels.ids.values(), dtype=np.int64, count=len(labels.ids))
    index = pc.index_in(flat, value_set=names)
    known = index.is_valid()
    if index.null_count:
        parents, index = parents[known.to_numpy(zero_copy_only=False)], index.filter(known)
    return list_column(n, [(parents, ids[index.to_numpy()])])


def check_labels(ctx: Context, df: pl.DataFrame, issues: Issues | None, create: bool,
                 encode: bool = True) -> pl.DataFrame:
    """Resolve the chunk's label names (one read per registry for the names not seen yet);
    rows naming unknown labels are issues unless labels are to be created (``create``). When every
    name is known, the column is encoded to label ids right away (``f_<id>``)."""
    for name, info in ctx.features.items():
        if not info.dtype.is_categorical:
            continue
        labels = ctx.labels[(info.dtype.label_spec.qualified, info.dtype.label_type)]
        column = f"_cat_{info.id}"
        parents, flat = flat_names(df[column])
        missing = labels.lookup(pc.unique(flat).to_pylist()) if len(flat) else set()
        if missing and issues is not None and not labels.type_error:
            if not create:
                unknown_labels(df, name, labels, parents, flat, missing, issues)
        elif missing and issues is not None:
            issues.add(df.with_columns(pl.Series("_has", np.bincount(
                parents, minlength=df.height) > 0)), pl.col("_has"), name, labels.type_error)
        if encode and (not missing or not create):
            df = df.with_columns(pl.from_arrow(
                encode_labels(df.height, parents, flat, labels)).alias(info.column)).drop(
                column)
    return df


def unknown_labels(df, name, labels, parents, flat, missing, issues,
                   template="unknown {label} label(s) {labels} of feature {feature}; pass "
                             "create_labels=True to create them") -> None:
    unknown = pc.is_in(flat, value_set=pa.array(sorted(missing), flat.type)).to_numpy(
        zero_copy_only=False)
    rows = df["_row"].to_numpy()[parents[unknown]]
    by_row: dict[int, list[str]] = {}
    for row, label in zip(rows.tolist(), flat.filter(pa.array(unknown)).to_pylist()):
        by_row.setdefault(row, []).append(label)
    issues.frames.append(pl.DataFrame({
        "row": list(by_row), "column": [name] * len(by_row),
        "reason": [template.format(label=labels.label, feature=repr(name),
                                   labels=", ".join(dict.fromkeys(v)))
                   for v in by_row.values()]},
        schema={"row": pl.Int64, "column": pl.String, "reason": pl.String}))


def ontology_unknown(ctx: Context, labels: LabelResolver, chunks, issues_all: list,
                     failed: list) -> None:
    """With create_labels, bionty names must exist in the ontology: ask it once."""
    model = model_for(labels.spec)
    try:
        result = model.from_values(sorted(labels.missing), field=labels.field, mute=True)
    except Exception as exc:  # noqa: BLE001 - reported per row below
        unknown, reason = set(labels.missing), f"cannot validate against the ontology: {exc}"
    else:
        unknown, reason = set(getattr(result, "non_validated", [])), None
    if not unknown:
        return
    template = (reason or "no " + labels.spec.model + " of the public ontology is "
                "named {labels} (nor has it as a synonym)")
    for _, df in chunks:
        issues = Issues()
        for name, info in ctx.features.items():
            if info.dtype.is_categorical and info.dtype.label_spec == labels.spec:
                parents, flat = flat_names(df[f"_cat_{info.id}"])
                unknown_labels(df, name, labels, parents, flat, unknown, issues, template)
        issues_all.extend(issues.to_list())
        failed.append(issues.rows())

