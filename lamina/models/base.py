"""The record classes users hold. Thin: fields come from ``catalog/tables``, reads go through the
QuerySet, writes through the table store's ``transact``."""

from __future__ import annotations

import importlib
import keyword
import re

import pyarrow.compute as pc
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from ..catalog import tables, writer
from ..catalog.instance import MAIN_BRANCH_ID, TRASH_BRANCH_ID, Instance, current
from ..catalog.snapshot import Change, Snapshot
from ..catalog.tables import TableSpec
from ..engine.features import FeatureInfo, parse_dtype
from ..engine.lookups import coerce
from ..engine.relations import Hop, relations
from ..engine.queryset import DEFAULT_DATAFRAME_LIMIT, QuerySet
from ..errors import DoesNotExist, FieldError, ValidationError, did_you_mean, unknown_field
from .describe import describe

if TYPE_CHECKING:  # search ranks with pandas and numpy: loaded by the first search()
    from .search import SearchResult

MODELS: dict[str, type[SQLRecord]] = {}

# Columns lamina fills in itself; users read them but do not pass them to constructors.
BOOKKEEPING = ("id", "created_at", "branch_id", "created_on_id", "space_id", "created_by_id",
               "is_locked")


def model_for(spec: TableSpec) -> type[SQLRecord]:
    if spec.qualified not in MODELS and spec.module != "core":
        # A module's classes (bionty's) register when its package is imported, which
        # `import lamina` no longer does up front; a row of that module may be read first.
        importlib.import_module(f"lamina.{spec.module}")
    return MODELS[spec.qualified]


class SQLRecord:
    _spec: ClassVar[TableSpec]
    _versioned: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_spec" in cls.__dict__:
            MODELS[cls._spec.qualified] = cls

    def __init__(self, **fields: Any):
        object.__setattr__(self, "_data", {c.name: None for c in self._spec.columns})
        object.__setattr__(self, "_related_cache", {})
        for name, value in fields.items():
            if name in BOOKKEEPING:
                raise FieldError(f"{name!r} is set by lamina and cannot be passed to "
                                 f"{self._spec.model}()")
            setattr(self, name, value)

    # ---- construction from rows ------------------------------------------------------------
    @classmethod
    def _from_row(cls, row: dict) -> SQLRecord:
        record = cls.__new__(cls)
        data = {c.name: None for c in cls._spec.columns}
        data.update(row)
        object.__setattr__(record, "_data", data)
        object.__setattr__(record, "_related_cache", {})
        object.__setattr__(record, "_saved", dict(data))
        return record

    def _lamina_id(self) -> int:
        if self.__dict__.get("_deleted"):
            raise DoesNotExist(f"{self._describe()} was deleted permanently")
        if self._data.get("id") is None:
            raise ValidationError(f"this {self._spec.model} is not saved yet; call .save() first")
        return self._data["id"]

    # ---- attributes ------------------------------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        data = self.__dict__.get("_data", {})
        hop = relations(self._spec).get(name)
        if name in data and (hop is None or hop.kind == "fk"):
            return data[name]
        if hop is None:
            raise unknown_field(name, self._spec.model,
                                [*data, *relations(self._spec)])
        if hop.kind == "fk":
            target_id = data.get(hop.column)
            if target_id is None:
                return None
            cache = self._related_cache
            if cache.get(name, (None,))[0] != target_id:
                cache[name] = (target_id, model_for(hop.target).get(id=target_id))
            return cache[name][1]
        return RelatedManager(self, hop)

    def __setattr__(self, name: str, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        spec = self._spec
        column = spec.column(name)
        if column is not None and column.display:
            self._data[name] = coerce(value, column.type, f"{spec.model}.{name}")
            return
        hop = relations(spec).get(name)
        if hop is not None and hop.kind == "fk":
            if value is not None and not isinstance(value, model_for(hop.target)):
                raise ValidationError(f"{spec.model}.{name} expects a {hop.target.model} record, "
                                      f"got {value!r}")
            self._data[hop.column] = None if value is None else value._lamina_id()
            return
        if hop is not None:
            raise FieldError(f"{spec.model}.{name} holds many records; use "
                             f"{name}.add(...) / {name}.set([...]) after saving")
        if name in type(self).__dict__ or any(name in k.__dict__ for k in type(self).__mro__):
            object.__setattr__(self, name, value)
            return
        raise unknown_field(name, spec.model, [*spec.display_columns, *relations(spec)])

    def __eq__(self, other) -> bool:
        return (type(other) is type(self) and self._data.get("id") is not None
                and other._data.get("id") == self._data.get("id"))

    def __hash__(self) -> int:
        return hash((self._spec.qualified, self._data.get("id")))

    # ---- persistence -----------------------------------------------------------------------
    def _fill_defaults(self, instance: Instance) -> None:
        writer.fill_defaults(self._spec, self._data, instance.user_id, self._versioned)

    def _plan_insert(self, snapshot: Snapshot) -> Change:
        """Hook: a subclass may find an existing row (return it as ``result``) instead."""
        row = dict(self._data, id=snapshot.next_id)
        return Change(append=[row], result=row)

    def _describe(self) -> str:
        """How errors name this record: ``Record 'Experiment 1' (id 3)``."""
        spec, data = self._spec, self._data
        label = data.get(spec.name_field) if spec.name_field else None
        shown = f" {label!r}" if label is not None else ""
        return f"{spec.model}{shown} (id {data.get('id')})"

    def _changed_fields(self) -> dict:
        saved = self.__dict__.get("_saved", {})
        return {name: value for name, value in self._data.items()
                if name != "id" and (name not in saved or saved[name] != value)}

    def _adopt(self, row: dict) -> None:
        """Take ``row`` as committed: what the record holds and what it was loaded as."""
        self._data.update(row)
        object.__setattr__(self, "_saved", dict(self._data))

    def save(self) -> SQLRecord:
        """Insert a new record, or send the fields changed since it was loaded: other users'
        changes to other fields, links and feature values are kept."""
        instance = current()
        if self.__dict__.get("_deleted"):
            self._lamina_id()  # raises: deleted records stay deleted
        if self._data.get("id") is None:
            self._fill_defaults(instance)
            self._adopt(writer.transact(instance, self._spec, self._plan_insert).result)
            return self
        changed = self._changed_fields()
        if changed:
            self._adopt(writer.update(instance, self._spec, self._data["id"], changed,
                                      what=self._describe()))
        return self

    def _references(self, instance: Instance) -> list:
        """Columns of the instance's tables that may hold this record's id: relations, and
        the columns of categorical features whose labels come from this registry."""
        specs = instance.table_specs()
        found = writer.references_to(self._spec, specs)
        features = instance.store(tables.get("core.feature")).snapshot().read(
            ["id", "_dtype_str"], pc.field("is_type").is_null() | ~pc.field("is_type"))
        for feature_id, text in zip(*features.to_pydict().values()):
            if text and text.startswith("cat[") and parse_dtype(text).label_spec == self._spec:
                found.extend((spec, FeatureInfo(feature_id, "", None).column, "list")
                             for spec in specs if spec.has_features)
        return found

    def delete(self, permanent: bool | None = None) -> None:
        """Move to the trash; ``permanent=True`` (or deleting from the trash) removes the row,
        refused while another record still links to it."""
        record_id = self._lamina_id()
        instance = current()
        if self._spec.has_branch and not permanent and self._data["branch_id"] != TRASH_BRANCH_ID:
            self._adopt(writer.update(instance, self._spec, record_id,
                                      {"branch_id": TRASH_BRANCH_ID}, what=self._describe()))
            return
        writer.delete(instance, self._spec, [record_id], references=self._references(instance),
                      what=self._describe())
        object.__setattr__(self, "_deleted", True)

    def restore(self) -> None:
        self._adopt(writer.update(current(), self._spec, self._lamina_id(),
                                  {"branch_id": MAIN_BRANCH_ID}, what=self._describe()))

    # ---- versions --------------------------------------------------------------------------
    @property
    def versions(self) -> QuerySet:
        """Every version of this record (same uid stem, the last 4 characters count up),
        oldest first: ``artifact.versions.to_dataframe()``."""
        if not self._versioned:  # an AttributeError: Python then asks __getattr__, which names
            raise AttributeError("versions")  # the fields this registry has
        return self._queryset().filter(uid__startswith=self._data["uid"][:-4]).order_by("id")

    # ---- display ---------------------------------------------------------------------------
    def describe(self, return_str: bool = False) -> str | None:
        """Print what this record is: its fields, lineage, labels and feature values."""
        text = describe(self)
        if return_str:
            return text
        print(text)
        return None

    def _repr_fields(self) -> list[str]:
        names = self._spec.display_columns
        tail = [n for n in ("created_at", "is_locked", "version_tag", "is_latest") if n in names]
        fk_ids = [n for n in names if n.endswith("_id") and n not in tail]
        head = [n for n in ("uid", "is_type") if n in names]
        middle = [n for n in names if n not in (*head, *fk_ids, *tail)]
        return [*head, *middle, *fk_ids, *tail]

    def __repr__(self) -> str:
        parts = []
        for name in self._repr_fields():
            value = self._data.get(name)
            if isinstance(value, datetime):
                shown = value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            else:
                shown = repr(value)
            parts.append(f"{name}={shown}")
        return f"{self._spec.model}({', '.join(parts)})"

    # ---- registry-level queries ------------------------------------------------------------
    @classmethod
    def _queryset(cls) -> QuerySet:
        return QuerySet(cls)

    @classmethod
    def filter(cls, *queries, **conditions) -> QuerySet:
        """A lazy QuerySet of the records matching every condition. Conditions are
        ``field=value`` or ``field__lookup=value`` (lookups: exact, iexact, gt, gte, lt, lte, in,
        contains, icontains, startswith, istartswith, endswith, iendswith, isnull, range,
        regex), may follow relations (``records__name="x"``) and name features
        (``temperature__gt=20``); ``ln.Q`` objects combine with ``&``, ``|`` and ``~``.
        Nothing runs until results are asked for (``to_dataframe()``, ``count()``, ...)."""
        return cls._queryset().filter(*queries, **conditions)

    @classmethod
    def exclude(cls, *queries, **conditions) -> QuerySet:
        """A lazy QuerySet of the records that do not match (see :meth:`filter`)."""
        return cls._queryset().exclude(*queries, **conditions)

    @classmethod
    def all(cls) -> QuerySet:
        """A lazy QuerySet of every record of the registry (trashed ones excluded)."""
        return cls._queryset()

    @classmethod
    def get(cls, idlike: int | str | None = None, **conditions) -> SQLRecord:
        """The one record with id or uid ``idlike`` (a uid prefix works; a versioned record's
        stem gives its latest version) and matching ``conditions``: ``ln.Record.get(name="x")``.
        Raises DoesNotExist or MultipleResultsFound. With no argument: the first record."""
        if idlike is None and not conditions:
            found = cls._queryset().first()
            if found is None:
                raise DoesNotExist(f"no {cls._spec.model} saved yet")
            return found
        return cls._get_from(cls._queryset(), idlike, **conditions)

    @classmethod
    def _get_from(cls, qs: QuerySet, idlike, **conditions) -> SQLRecord:
        spec = cls._spec
        if idlike is not None:
            if isinstance(idlike, bool) or not isinstance(idlike, (int, str)):
                raise ValidationError(f"{spec.model}.get() takes an id, a uid or a uid prefix, "
                                      f"got {idlike!r}")
            if isinstance(idlike, int):
                conditions["id"] = idlike
            elif spec.uid_length and len(idlike) == spec.uid_length:
                conditions["uid"] = idlike
            elif cls._versioned and len(idlike) == spec.uid_length - 4:
                conditions.update(uid__startswith=idlike, is_latest=True)
            else:
                conditions["uid__startswith"] = idlike
        if cls._versioned and "key" in conditions and not any(
                name.startswith("is_latest") for name in conditions):
            conditions["is_latest"] = True  # a key names the newest of its versions
        try:
            return qs.filter(**conditions).one()
        except DoesNotExist:
            shown = ", ".join(f"{k}={v!r}" for k, v in conditions.items())
            raise DoesNotExist(f"no {spec.model} with {shown}") from None

    @classmethod
    def to_dataframe(cls, include: str | list[str] | None = None, features=False,
                     limit: int | None = DEFAULT_DATAFRAME_LIMIT):
        """The registry's records as a pandas DataFrame, newest first; see
        :meth:`QuerySet.to_dataframe` for ``include``, ``features`` and ``limit``."""
        return cls._queryset().to_dataframe(include=include, features=features, limit=limit)

    df = to_dataframe

    @classmethod
    def search(cls, string: str, *, field: str | None = None, limit: int | None = 20,
               case_sensitive: bool = False) -> SearchResult:
        """Rows ranked for ``string``: exact name/id > exact synonym > whole words > prefix >
        BM25 > typo (see ``lamina.search``). Returns a QuerySet in ranking order:
        ``.to_dataframe()`` gives the rows, ``.scores`` the ranking with a ``score`` column."""
        from .search import search_records

        return search_records(cls, string, field=field, limit=limit,
                              case_sensitive=case_sensitive)

    @classmethod
    def lookup(cls, field: str | None = None, return_field: str | None = None) -> Lookup:
        """An object whose attributes are the registry's values of ``field`` (tab-completable)."""
        spec = cls._spec
        field = field or spec.name_field
        for name in (field, return_field):
            if name is not None and spec.column(name) is None:
                raise unknown_field(name, spec.model, spec.display_columns)
        # Several records with one value: the first saved wins, as in LaminDB (keep="first").
        values: dict = {}
        if return_field is None:
            for record in cls._queryset().order_by("id"):
                if record._data[field] is not None:
                    values.setdefault(record._data[field], record)
        else:
            table = cls._queryset().order_by("id").to_arrow(columns=[field, return_field])
            for row in table.to_pylist():
                if row[field] is not None:
                    values.setdefault(row[field], row[return_field])
        return Lookup(spec.model, values)


class Lookup:
    """Attribute access to records by a field's values: ``ln.Record.lookup().experiment_1``."""

    def __init__(self, registry: str, values: dict):
        self._registry = registry
        self._values = values
        self._by_attr: dict[str, Any] = {}
        for key, value in values.items():
            self._by_attr.setdefault(to_attribute(str(key)), value)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["_by_attr"][name]
        except KeyError:
            raise AttributeError(
                f"no {self._registry} named {name!r} in this lookup"
                f"{did_you_mean(name, self._by_attr)}") from None

    def __getitem__(self, key):
        return self._values[key]

    def __dir__(self):
        return list(self._by_attr)

    def dict(self) -> dict:
        return dict(self._values)

    def __repr__(self) -> str:
        keys = list(self._by_attr)
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"Lookup of {len(keys)} {self._registry} records: {shown}"


def to_attribute(value: str) -> str:
    """A Python identifier for a value: lower case, non-alphanumerics to ``_``."""
    name = re.sub(r"\W+", "_", value.strip().lower()).strip("_") or "_"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"_{name}"
    return name


class RelatedManager(QuerySet):
    """The records on the other side of a relation of one record; many-to-many ones it owns
    can be changed with ``add``, ``remove`` and ``set``."""

    def __init__(self, owner: SQLRecord, hop: Hop, q=None, **state):
        self._owner, self._hop = owner, hop
        if q is None:
            q = QuerySet(model_for(hop.target)).filter(
                **{_reverse_name(hop): owner._lamina_id()}).q
        super().__init__(model_for(hop.target), q, **state)

    def _clone(self, **changes) -> QuerySet:
        state = {"q": self.q, "order_by": self._order_by, "limit": self._limit,
                 "offset": self._offset, "distinct": self._distinct}
        state.update(changes)
        return QuerySet(self.model, **state)

    def _change_links(self, records, mode: str) -> None:
        if self._hop.kind != "m2m":
            raise FieldError(f"links of {self._owner._spec.model}.{self._hop.column} are owned by "
                             f"{self._hop.target.model}; change them from that side")
        target_model = model_for(self._hop.target)
        ids = []
        for record in records:
            if not isinstance(record, target_model):
                raise ValidationError(f"{self._hop.column} takes {target_model._spec.model} "
                                      f"records, got {record!r}")
            ids.append(record._lamina_id())
        owner = self._owner
        column = self._hop.column
        instance = current()
        if mode != "remove":
            writer.require_rows(instance, self._hop.target, ids)
        edit = (writer.ListEdit(add=ids) if mode == "add" else
                writer.ListEdit(remove=ids) if mode == "remove" else None)

        def patch(row: dict) -> dict:
            if edit is not None:
                return {column: edit}
            # set: keep the links named, drop the others, whoever added them
            return {column: writer.ListEdit(add=ids, remove=set(row.get(column) or ()) - set(ids))}

        row = writer.update(instance, owner._spec, owner._lamina_id(), patch,
                            what=owner._describe())
        owner._data[column] = row[column]
        owner.__dict__.setdefault("_saved", {})[column] = row[column]

    def add(self, *records: SQLRecord) -> None:
        self._change_links(_flatten(records), "add")

    def remove(self, *records: SQLRecord) -> None:
        self._change_links(_flatten(records), "remove")

    def set(self, records) -> None:
        self._change_links(_flatten([records]), "set")


def _flatten(items) -> list:
    flat = []
    for item in items:
        if isinstance(item, (list, tuple, QuerySet)):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


def _reverse_name(hop: Hop) -> str:
    """The name by which ``hop.target`` refers back to ``hop.source``."""
    for name, back in relations(hop.target).items():
        if back.target == hop.source and back.column == hop.column and back.kind != hop.kind:
            return name
    raise FieldError(f"{hop.target.model} has no relation back to {hop.source.model}")


def make_model(spec: TableSpec, base: type[SQLRecord] = SQLRecord) -> type[SQLRecord]:
    return type(spec.model, (base,), {"_spec": spec, "__module__": __name__})


__all__ = ["SQLRecord", "MODELS", "model_for", "make_model", "tables"]
