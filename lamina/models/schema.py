"""Schemas: sets of features or genes that datasets are validated against and linked to."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING

from ..catalog import tables
from ..engine.features import parse_dtype
from ..errors import ValidationError
from .base import SQLRecord, model_for
from .features import Feature

if TYPE_CHECKING:  # imported where a DataFrame is validated, not when the registries load
    import pandas as pd

GENE_ITYPE = "bionty.Gene.ensembl_gene_id"


def members_hash(uids: list[str]) -> str:
    digest = hashlib.md5(",".join(sorted(uids)).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


class Schema(SQLRecord):
    _spec = tables.get("core.schema")

    def __init__(self, members: list | None = None, *, slots: dict | None = None,
                 itype: str | None = None, minimal_set: bool = True, maximal_set: bool = False,
                 ordered_set: bool = False, **fields):
        super().__init__(minimal_set=minimal_set, maximal_set=maximal_set,
                         ordered_set=ordered_set, **fields)
        data = self._data
        members = list(members or [])
        gene_model = model_for(tables.get("bionty.gene"))
        if slots:
            if members:
                raise ValidationError("a Schema has either members or slots, not both")
            bad = {k: v for k, v in slots.items() if not isinstance(v, Schema)}
            if bad:
                raise ValidationError(f"slots take Schema records, got {bad!r}")
            data["slots"] = json.dumps({k: v._lamina_id() for k, v in slots.items()})
            data["components"] = [v._lamina_id() for v in slots.values()]
            data["hash"] = members_hash([f"{k}:{v.uid}" for k, v in slots.items()])
            return
        if members and all(isinstance(m, Feature) for m in members):
            data["itype"] = itype or "Feature"
            data["features"] = [m._lamina_id() for m in members]
        elif members and all(isinstance(m, gene_model) for m in members):
            data["itype"] = itype or GENE_ITYPE
            data["genes"] = [m._lamina_id() for m in members]
        elif members:
            raise ValidationError("Schema members must all be Features or all be Genes, got "
                                  f"{sorted({type(m).__name__ for m in members})}")
        else:
            if itype is None:
                raise ValidationError("a Schema without members needs an itype, e.g. "
                                      "itype='Feature' or itype='bionty.Gene.ensembl_gene_id'")
            data["itype"] = itype
            data["flexible"] = True
        if members:
            data["n_members"] = len(members)
            data["hash"] = members_hash([m.uid for m in members])
        else:
            data["hash"] = members_hash([f"itype:{itype}", f"name:{data.get('name')}"])
        existing = Schema.filter(hash=data["hash"], otype=data["otype"]).first()
        if existing is not None:
            object.__setattr__(self, "_data", dict(existing._data))
            object.__setattr__(self, "_saved", dict(existing._data))

    @property
    def slots(self) -> dict[str, Schema]:
        ids = json.loads(self._data.get("slots") or "{}")
        return {slot: Schema.get(id=i) for slot, i in ids.items()}

    # ---- validation --------------------------------------------------------------------
    def validate(self, data) -> list[str]:
        """Problems of a DataFrame or AnnData against this schema (empty when it fits);
        a ValidationError lists them all."""
        problems = self._problems(data)
        if problems:
            raise ValidationError(f"dataset does not match schema {self.name or self.uid}:\n  - "
                                  + "\n  - ".join(problems))
        return problems

    def _problems(self, data) -> list[str]:
        slots = self.slots
        if slots:
            problems = []
            for slot, component in slots.items():
                part = _slot_of(data, slot)
                problems += [f"{slot}: {p}" for p in component._problems(part)]
            return problems
        if self.itype == GENE_ITYPE:
            return _unknown_genes(data)
        if self.itype == "Feature":
            return self._feature_problems(data)
        return []

    def _feature_problems(self, df: pd.DataFrame) -> list[str]:
        import pandas as pd

        if not isinstance(df, pd.DataFrame):
            return [f"expected a DataFrame, got {type(df).__name__}"]
        problems = []
        ids = self._data.get("features") or []
        features = list(Feature.filter(id__in=list(ids)).order_by("id")) if ids else []
        if not features and self.flexible:
            features = list(Feature.filter(name__in=list(map(str, df.columns)), is_type=False))
        known = {f.name for f in features}
        if self.minimal_set and not self.flexible:
            problems += [f"column {f.name!r} is missing" for f in features if f.name not in df]
        if self.maximal_set:
            problems += [f"column {c!r} is not a feature of this schema" for c in df.columns
                         if c not in known]
        for feature in features:
            if feature.name in df:
                problems += _column_problems(feature, df[feature.name])
        return problems


def _slot_of(data, slot: str):
    if slot == "obs":
        return data.obs
    if slot in ("var", "var.T"):
        return data.var
    raise ValidationError(f"unknown slot {slot!r}; use 'obs' or 'var'")


def _unknown_genes(data) -> list[str]:
    ids = list(map(str, data.index if hasattr(data, "index") else data))
    gene = model_for(tables.get("bionty.gene"))
    found = set(gene.filter(ensembl_gene_id__in=ids).to_arrow(columns=["ensembl_gene_id"])
                .column("ensembl_gene_id").to_pylist())
    missing = [i for i in ids if i not in found]
    return [f"{len(missing)} gene id(s) not in bionty.Gene: {missing[:10]}"] if missing else []


def _column_problems(feature: Feature, column: pd.Series) -> list[str]:
    import pandas as pd

    dtype = parse_dtype(feature.dtype)
    values = column.dropna()
    if dtype.is_categorical:
        spec = dtype.label_spec
        field = spec.name_field or "name"
        names = sorted(set(map(str, values)))
        found = set(model_for(spec).filter(**{f"{field}__in": names})
                    .to_arrow(columns=[field]).column(field).to_pylist())
        missing = [n for n in names if n not in found]
        if missing:
            return [f"column {feature.name!r}: {len(missing)} value(s) not in {spec.model}: "
                    f"{missing[:10]}"]
        return []
    checks = {
        "int": pd.api.types.is_integer_dtype, "float": pd.api.types.is_numeric_dtype,
        "num": pd.api.types.is_numeric_dtype, "bool": pd.api.types.is_bool_dtype,
        "str": lambda s: pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s),
    }
    check = checks.get(dtype.kind)
    if check is not None and len(values) and not check(values):
        return [f"column {feature.name!r} has dtype {column.dtype}, expected {dtype.text}"]
    return []


def annotate_from_dataset(artifact, schema: Schema, data) -> None:
    """After saving a validated dataset: link the schemas of what it holds (the features and
    genes present) and annotate the artifact with its categorical values."""
    import pandas as pd

    slots = schema.slots or {"": schema}
    members, values = [], {}
    gene = model_for(tables.get("bionty.gene"))
    for slot, component in slots.items():
        part = _slot_of(data, slot) if slot else data
        if component.itype == GENE_ITYPE:
            genes = list(gene.filter(ensembl_gene_id__in=list(map(str, part.index))).order_by("id"))
            if genes:
                members.append(Schema(genes).save())
        elif component.itype == "Feature" and isinstance(part, pd.DataFrame):
            present = list(Feature.filter(name__in=list(map(str, part.columns)), is_type=False)
                           .order_by("id"))
            if present:
                members.append(Schema(present).save())
            for feature in present:
                if parse_dtype(feature.dtype).is_categorical:
                    unique = list(dict.fromkeys(map(str, part[feature.name].dropna())))
                    if unique:
                        values[feature.name] = unique
    if members:
        artifact.schemas.add(*members)
    if values:
        artifact.features.add_values(values)
