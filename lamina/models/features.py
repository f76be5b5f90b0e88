"""The Feature registry and the ``.features`` accessor of artifacts, records and runs."""

from __future__ import annotations

from datetime import date, datetime

from ..catalog import tables, writer
from ..catalog.instance import current
from ..engine.features import (FeatureInfo, decode, encode, feature_id_path, parse_dtype,
                               to_display)
from ..engine.filter_tree import Q
from ..errors import ValidationError, did_you_mean
from .base import SQLRecord, model_for
from .labels import label_ids

_PYTHON_DTYPES = {str: "str", int: "int", float: "float", bool: "bool", dict: "dict",
                  date: "date", datetime: "datetime"}


def dtype_text(dtype) -> str:
    """``float``, ``"cat[Record]"``, ``ln.Record``, ``bt.CellType`` or a Record type → text."""
    if isinstance(dtype, str):
        return parse_dtype(dtype).text
    if dtype in _PYTHON_DTYPES:
        return _PYTHON_DTYPES[dtype]
    if isinstance(dtype, type) and issubclass(dtype, SQLRecord):
        spec = dtype._spec
        prefix = "" if spec.module == "core" else f"{spec.module}."
        return f"cat[{prefix}{spec.model}]"
    if isinstance(dtype, SQLRecord) and dtype._spec.qualified == "core.record" and dtype.is_type:
        return f"cat[Record[{dtype.name}]]"
    raise ValidationError(f"unknown feature dtype {dtype!r}; pass str, int, float, bool, dict, "
                          "date, datetime, 'list[str]', a registry such as ln.Record or "
                          "bt.CellType, or a Record type")


class Feature(SQLRecord):
    _spec = tables.get("core.feature")

    def __init__(self, name: str | None = None, dtype=None, **fields):
        if fields.get("is_type"):
            super().__init__(name=name, **fields)
            return
        if not name or dtype is None:
            raise ValidationError("Feature() needs a name and a dtype, e.g. "
                                  "ln.Feature(name='temperature', dtype=float)")
        text = dtype_text(dtype)
        super().__init__(name=name, _dtype_str=text, **fields)
        existing = Feature.filter(name=name, type_id=self._data["type_id"]).first()
        if existing is not None:
            if existing._data["_dtype_str"] != text:
                raise ValidationError(
                    f"feature {name!r} exists with dtype {existing._data['_dtype_str']!r}, not {text!r}")
            object.__setattr__(self, "_data", dict(existing._data))
            object.__setattr__(self, "_saved", dict(existing._data))

    def __setattr__(self, name, value):
        if name == "_dtype_str":  # validated in __init__; not settable by users otherwise
            self._data[name] = value
            return
        super().__setattr__(name, value)

    @property
    def dtype(self) -> str:
        return self._data["_dtype_str"]

    def _info(self) -> FeatureInfo:
        return FeatureInfo(self._lamina_id(), self.name, parse_dtype(self._data["_dtype_str"]))

    # Feature predicates: ``ln.Artifact.filter(perturbation == "DMSO")``.
    def _predicate(self, lookup: str | None, value) -> Q:
        return Q(**{feature_id_path(self._lamina_id(), lookup): value})

    def __eq__(self, other):
        if isinstance(other, SQLRecord):
            return super().__eq__(other)
        return self._predicate(None, other)

    def __ne__(self, other):
        if isinstance(other, SQLRecord):
            return not super().__eq__(other)
        return ~self._predicate(None, other)

    def __gt__(self, other):
        return self._predicate("gt", other)

    def __ge__(self, other):
        return self._predicate("gte", other)

    def __lt__(self, other):
        return self._predicate("lt", other)

    def __le__(self, other):
        return self._predicate("lte", other)

    __hash__ = SQLRecord.__hash__

    def isnull(self) -> Q:
        return self._predicate("isnull", True)


def describe_catalog(instance) -> None:
    """Rewrite the data dictionary and views that other engines read (engine/interop.py): a
    feature column appeared in a table. Once per feature and table, not per value."""
    from ..engine.interop import write_data_dictionary

    write_data_dictionary(instance)


def resolve_features(names) -> dict[str, Feature]:
    """Feature records by name; an unknown or ambiguous name is an error naming it."""
    names = list(names)
    found: dict[str, list[Feature]] = {}
    for feature in Feature.filter(name__in=names, is_type=False):
        found.setdefault(feature.name, []).append(feature)
    missing = [n for n in names if n not in found]
    if missing:
        known = [f.name for f in Feature.filter(is_type=False)]
        raise ValidationError(
            f"feature(s) {missing} do not exist{did_you_mean(missing[0], known)}; create them with "
            f"ln.Feature(name={missing[0]!r}, dtype=...).save()")
    ambiguous = [n for n, fs in found.items() if len(fs) > 1]
    if ambiguous:
        raise ValidationError(f"feature name(s) {ambiguous} are ambiguous; several features "
                              "share them under different feature types")
    return {n: fs[0] for n, fs in found.items()}


def resolve_labels(info: FeatureInfo, value) -> list[int]:
    """Label ids for a categorical value: names or records; missing names are an error."""
    spec = info.dtype.label_spec
    model = model_for(spec)
    items = list(value) if isinstance(value, (list, tuple, set)) else [value]
    ids, names = [], []
    for item in items:
        if isinstance(item, model):
            ids.append(item._lamina_id())
        elif isinstance(item, str):
            names.append(item)
        else:
            raise ValidationError(f"feature {info.name!r} ({info.dtype.text}) takes "
                                  f"{spec.model} names or records, got {item!r}")
    if names:
        ids.extend(label_ids(info, names))
    return list(dict.fromkeys(ids))


class HasFeatures:
    """Mixin of registries whose rows carry feature values."""

    @property
    def features(self) -> FeatureManager:
        return FeatureManager(self)


class FeatureManager:
    """``artifact.features``: add, set, remove, read and describe feature values."""

    def __init__(self, owner: SQLRecord):
        self._owner = owner

    def _link_column(self, info: FeatureInfo) -> str | None:
        """The owner's many-to-many list that also links the labels (``records``, ...)."""
        for m2m in self._owner._spec.many_to_many:
            if info.dtype.label_spec is not None and m2m.target == info.dtype.label_spec.qualified:
                return m2m.name
        return None

    def _write(self, updates: dict[str, object], *, replace_all: bool = False,
               remove: dict | None = None) -> None:
        owner = self._owner
        owner_id = owner._lamina_id()
        features = resolve_features([*updates, *(remove or {})])
        encoded: dict[FeatureInfo, object] = {}
        for name, value in updates.items():
            info = features[name]._info()
            if info.dtype.is_categorical:
                encoded[info] = resolve_labels(info, value)
                writer.require_rows(current(), info.dtype.label_spec, encoded[info])
            else:
                encoded[info] = encode(info, value)
        removals = {}
        for name, value in (remove or {}).items():
            info = features[name]._info()
            removals[info] = (None if value is None or not info.dtype.is_categorical
                              else resolve_labels(info, value))

        def patch(row: dict) -> dict:
            changes: dict = {}
            if replace_all:
                changes.update({column: None for column in row if column.startswith("f_")})
            for info, value in encoded.items():
                if not info.dtype.is_categorical:
                    changes[info.column] = value
                    continue
                changes[info.column] = value if replace_all else writer.ListEdit(add=value)
                link = self._link_column(info)
                if link:
                    changes[link] = writer.ListEdit(add=value)
            for info, drop in removals.items():
                if drop is None:
                    changes[info.column] = None
                else:
                    kept = writer.ListEdit(remove=drop).apply(row.get(info.column))
                    changes[info.column] = kept or None
            return changes

        new_columns = {i.column: i.dtype.arrow for i in (*encoded, *removals)}
        instance = current()
        known = instance.store(owner._spec).known_columns()
        row = writer.update(instance, owner._spec, owner_id, patch, new_columns=new_columns,
                            what=owner._describe())
        owner._adopt(row)
        if not known >= set(new_columns):
            describe_catalog(instance)

    def add_values(self, values: dict) -> None:
        """Annotate with feature values; categorical values add to those already there."""
        self._check(values)
        self._write(dict(values))

    def set_values(self, values: dict) -> None:
        """Replace every feature value of this record by ``values``."""
        self._check(values)
        self._write(dict(values), replace_all=True)

    def remove_values(self, feature: str | Feature, value=None) -> None:
        """Remove a feature's value, or one label of a categorical feature."""
        name = feature.name if isinstance(feature, Feature) else feature
        self._write({}, remove={name: value})

    def get_values(self) -> dict:
        """{feature name: value} of the features this record has values for."""
        data = self._owner._data
        ids = [int(c[2:]) for c, v in data.items() if c.startswith("f_") and v is not None]
        if not ids:
            return {}
        values = {}
        for feature in Feature.filter(id__in=ids).order_by("id"):
            info = feature._info()
            raw = data.get(info.column)
            if info.dtype.is_categorical:
                model = model_for(info.dtype.label_spec)
                field = info.dtype.label_spec.name_field or "id"
                table = model.filter(id__in=list(raw)).to_arrow(columns=["id", field])
                labels = dict(zip(table["id"].to_pylist(), table[field].to_pylist()))
                values[info.name] = to_display(info, raw, labels)
            else:
                values[info.name] = decode(info, raw)
        return values

    def describe(self) -> str:
        owner = self._owner
        lines = [f"{owner._spec.model} {owner._data.get('key') or owner._data.get('name') or ''}"
                 f" (uid {owner._data.get('uid')})", "└── Features"]
        for name, value in self.get_values().items():
            lines.append(f"    └── {name}: {value!r}")
        text = "\n".join(lines)
        print(text)
        return text

    def _check(self, values) -> None:
        if not isinstance(values, dict) or not values:
            raise ValidationError(f"feature values must be a non-empty dict, got {values!r}")

    def __repr__(self) -> str:
        return f"Features of {self._owner!r}: {self.get_values()}"
