"""The lazy QuerySet users hold: filters accumulate, SQL runs only when results are asked for."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from .. import log
from ..catalog import tables, writer
from ..catalog.instance import current
from ..catalog.tables import TableSpec
from ..errors import (
    DoesNotExist,
    FieldError,
    LaminaError,
    MultipleResultsFound,
    ValidationError,
    did_you_mean,
    unknown_field,
)
from . import id_order, shown_columns
from .filter_tree import Q
from .frames import plain_text, to_pandas
from .lookups import SubQuery, coerce
from .planner import Compiler, row_columns
from .relations import relations
from .session import session_for

if TYPE_CHECKING:  # imported where a DataFrame is built, not when the registries load
    import pandas as pd


class Model(Protocol):
    """The record class a QuerySet returns rows as (given by the models layer, which the
    engine does not import)."""

    _spec: TableSpec

    @classmethod
    def _from_row(cls, row: dict) -> Any: ...

    @classmethod
    def _get_from(cls, qs: QuerySet, idlike, **conditions) -> Any: ...


FEATURE_SPEC = tables.get("core.feature")
DEFAULT_DATAFRAME_LIMIT = 100
REPR_LIMIT = 20


class _LazyFeatures:
    """The session's feature resolver, fetched on first use: a query that names fields only
    never checks the feature table for a new version (one Delta log read fewer per compile;
    on S3 that is a request each). When it does, the queried table, which the query reads in
    any case, is checked with it: on S3 a first feature filter listed and read the artifact
    log only after the feature table's log and the feature's data file (issue 15)."""

    __slots__ = ("_session", "_queried", "_resolver", "_fresh")

    def __init__(self, session, queried: TableSpec, fresh: bool = True):
        self._session = session
        self._queried = queried
        self._resolver = None
        self._fresh = fresh

    def __getattr__(self, name):
        if self._resolver is None:
            self._resolver = self._session.features(fresh=self._fresh, along=[self._queried])
        return getattr(self._resolver, name)


# On an object store, a query built and run in one go
# (``ln.Artifact.filter(temperature__gt=25).count()``) reads the tables its filter() already
# checked for new commits as of that check, when it runs within this many seconds of it: the
# query is taken to start when it is built. Without this, the first query of a process listed
# the feature and artifact logs right after reading them (two requests of ten). A QuerySet kept
# for longer checks again when it runs.
BUILT_AND_RUN_S = 1.0


def _one_view(method):
    """Run a reading method with each table checked for new commits once (Session.one_view)."""
    @functools.wraps(method)
    def reading(self, *args, **kwargs):
        session = self._session()
        if session.instance.location.is_local:  # a check is one stat: always check
            with session.one_view():
                return method(self, *args, **kwargs)
        checked_at, tables_checked = self._checked
        fresh = tables_checked if time.monotonic() - checked_at <= BUILT_AND_RUN_S else ()
        with session.one_view(fresh):
            # Checked for new commits at once; each view is pointed (on an object store, a
            # small registry's files fetched) when a statement reads it, not before: a
            # feature or label looked up by name reads only the files that may hold it.
            session.refresh(self._tables_read(), views=False)
            return method(self, *args, **kwargs)
    return reading


class QuerySet:
    """A lazy query of one registry: conditions, order and slices accumulate, and SQL runs only
    when results are asked for (``to_dataframe``, ``to_polars``, ``count``, iteration, ...)."""

    def __init__(self, model: type[Model], q: Q | None = None, order_by: tuple = (),
                 limit: int | None = None, offset: int = 0, distinct: bool = False):
        self.model = model
        self.spec = model._spec
        self.q = q if q is not None else Q()
        self._order_by = tuple(order_by)
        self._limit = limit
        self._offset = offset
        self._distinct = distinct
        # (when, which tables) building this QuerySet checked for new commits; see _one_view
        self._checked: tuple[float, frozenset] = (0.0, frozenset())

    def _clone(self, **changes) -> QuerySet:
        state = {"q": self.q, "order_by": self._order_by, "limit": self._limit,
                 "offset": self._offset, "distinct": self._distinct}
        state.update(changes)
        clone = type(self)(self.model, **state)
        clone._checked = self._checked
        return clone

    def _narrowed(self, added: Q, checked: frozenset) -> QuerySet:
        """A clone with ``added`` conditions, remembering the tables checking them read."""
        clone = self._clone(q=Q.chain(self.q, added) if self.q else added)
        since, before = self._checked
        if time.monotonic() - since > BUILT_AND_RUN_S:
            since, before = time.monotonic(), frozenset()
        clone._checked = (since, before | checked)
        return clone

    # ---- building ------------------------------------------------------------------------
    def filter(self, *queries: Q, **conditions) -> QuerySet:
        """This QuerySet narrowed by more conditions (see ``SQLRecord.filter``); a bad field,
        comparator or value fails here, before any SQL runs."""
        added = Q(*queries, **conditions)
        # Compile now so that a bad field, comparator or value fails here, before any SQL runs.
        return self._narrowed(added, self._check(added))

    def exclude(self, *queries: Q, **conditions) -> QuerySet:
        """This QuerySet without the rows matching the conditions."""
        added = ~Q(*queries, **conditions)
        return self._narrowed(added, self._check(added))

    def order_by(self, *fields: str) -> QuerySet:
        """Rows ordered by fields (``"-size"`` descending; relations as ``"created_by__name"``)."""
        compiler = self._compiler()
        for term in fields:
            compiler.order_term(term)
        return self._clone(order_by=fields)

    def distinct(self) -> QuerySet:
        """Each row once."""
        return self._clone(distinct=True)

    def all(self) -> QuerySet:
        return self._clone()

    # ---- compiling -----------------------------------------------------------------------
    def _compiler(self, resolve_related: bool = True, fresh: bool = True) -> Compiler:
        features = (_LazyFeatures(self._session(), self.spec, fresh) if self.spec.has_features
                    else None)
        return Compiler(self.spec, features=features, resolve_related=resolve_related)

    def _tables_read(self) -> list[TableSpec]:
        """The tables this query reads, as far as the features and columns already seen tell
        (no request), so that on an object store they are checked for new commits at once,
        in one round trip, instead of one after the other as compiling reaches them."""
        features = (_LazyFeatures(self._session(), self.spec, fresh=False)
                    if self.spec.has_features else None)
        compiler = Compiler(self.spec, features=features, resolve_related=False)
        try:
            compiler.where(self.q)
        except LaminaError:  # the query itself reports it when it runs
            return [self.spec]
        used_features = features is not None and features._resolver is not None
        return [self.spec, *compiler.specs, *([FEATURE_SPEC] if used_features else [])]

    def _check(self, q: Q) -> frozenset:
        """Compile ``q`` to fail early on a bad field, comparator or value: first against the
        features and columns this process has seen (no request to the bucket; the query
        checks for new commits when it runs), and, if a name is unknown there, once more
        against the latest ones (another process may have just added the feature). The
        tables it checked for new commits (read for the first time, mostly)."""
        with self._session().one_view() as checked:
            try:
                self._compiler(resolve_related=False, fresh=False).where(q)
            except FieldError:
                self._compiler(resolve_related=False).where(q)
            return frozenset(checked)

    def _compile(self, columns=None, order_by=None, limit=None, offset=None, id_bound=None,
                 rows_from=None, ids=None, compiler=None, id_range=None):
        compiler = compiler or self._compiler()
        order = self._order_by if order_by is None else order_by
        sql, params = compiler.select(
            self.q, columns=columns, order_by=order,
            limit=self._limit if limit is None else limit,
            offset=self._offset if offset is None else offset, distinct=self._distinct,
            id_bound=id_bound, rows_from=rows_from, ids=ids, id_range=id_range)
        return sql, params, compiler.specs

    def _candidate_ids(self, compiler: Compiler) -> np.ndarray | None:
        """The sorted ids of the rows passing the list tests of the statement ``compiler``
        compiled last (``records=r``, ``schemas__genes__symbol=``, ``perturbation=``), from
        the session's indexes of list columns (Session.rows_holding): every matching row
        is among them, and they are exactly the matching rows when the statement has no
        other condition. None when there are no such tests, the query names a branch, or
        the session has no index yet."""
        if not compiler.list_tests or compiler.mentions_branch(self.q):
            return None
        return self._session().rows_holding(self.spec, compiler.list_tests)

    def _rows(self, columns=None, order_by=(), limit=None, offset=None) -> pa.Table:
        """The rows of the query, first ordered by ``order_by`` then cut by limit and offset."""
        limit = self._limit if limit is None else limit
        offset = self._offset if offset is None else offset
        by_id = tuple(order_by) in (("id",), ("-id",))
        if limit is not None and by_id:
            return id_order.first_rows(self, columns, order_by[0] == "-id", limit, offset)
        if limit is None and by_id:
            table = id_order.all_rows(self, columns, order_by[0] == "-id", offset)
            if table is not None:
                return table
        if limit is not None and order_by and columns:
            return id_order.top_rows(self, columns, tuple(order_by), limit, offset)
        return self._run(*self._compile(columns=columns, order_by=order_by, limit=limit,
                                        offset=offset))

    def to_sql(self) -> tuple[str, list]:
        """The SQL and bound parameters that fetching the rows runs."""
        sql, params, _ = self._compile(order_by=self._order_by or ("id",))
        return sql, params

    def explain(self) -> str:
        sql, params, specs = self._compile(order_by=self._order_by or ("id",))
        return self._session().explain(sql, params, specs)

    def _as_id_subquery(self) -> SubQuery:
        sql, params, specs = self._compile(columns=["id"], order_by=self._order_by)
        return SubQuery(sql, params, specs)

    def _session(self):
        return session_for(current())

    def _run(self, sql, params, specs) -> pa.Table:
        return self._session().arrow(sql, params, specs)

    # ---- results -------------------------------------------------------------------------
    @_one_view
    def to_arrow(self, columns: list[str] | None = None) -> pa.Table:
        """Every matching row (no default limit) as an Arrow table, ordered by id unless
        ordered otherwise."""
        sql, params, specs = self._compile(columns=columns,
                                           order_by=self._order_by or ("id",))
        return self._run(sql, params, specs)

    def to_polars(self, columns: list[str] | None = None):
        """Every matching row (no default limit) as a Polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.to_arrow(columns or ["id", *self.spec.display_columns]))

    @_one_view
    def to_dataframe(self, include: str | list[str] | None = None, features=False,
                     limit: int | None = DEFAULT_DATAFRAME_LIMIT) -> pd.DataFrame:
        """The matching rows as a pandas DataFrame indexed by id, newest first unless ordered.

        ``limit`` caps the rows (100 by default, ``None`` for all); when rows are left out, one
        line on stderr says how many matched. ``include`` adds related fields as columns
        (``"records__name"``, ``"created_by__handle"``; many-valued ones as a set per row) and
        ``"features"`` (or ``features=True`` / a list of names) one column per feature.
        ``ln.Artifact.filter(suffix=".parquet").to_dataframe(include="features")``"""
        columns = ["id", *self.spec.display_columns]
        order = self._order_by or ("-id",)
        paths = [include] if isinstance(include, str) else list(include or [])
        wants_features = features or "features" in paths
        paths = [p for p in paths if p != "features"]
        one_hop = shown_columns.one_hop_includes(self.spec, paths)
        shown_features = shown_columns.features_shown(
            self.spec, self._session(), features if isinstance(features, (list, tuple)) else None
        ) if wants_features else []
        # The columns one-hop includes start from and the features' columns are read with
        # the shown rows (one statement; the rows are not read again).
        starts = sorted(({hop.column for hop, _ in one_hop.values()}
                         | {f.column for f in shown_features}) - set(columns))
        # The rows are cut by ``limit`` only where the QuerySet has no smaller limit of its own;
        # one row more than shown tells whether anything was cut, without counting what
        # matches (the count was most of a filtered display's time at 1e6 artifacts).
        cut_by_limit = limit is not None and (self._limit is None or limit < self._limit)
        row_limit = limit + 1 if cut_by_limit else self._limit
        table = self._rows(columns + starts, order, row_limit)
        if cut_by_limit and table.num_rows > limit:
            table = table.slice(0, limit)
            log.info(f"showing {limit} {self.spec.model} rows, more match; "
                     "to_dataframe(limit=None) returns all of them")
        start_values = {c: table.column(c).to_pylist() for c in starts}
        frame = to_pandas(table.drop_columns(starts), index="id")
        if paths or wants_features:
            base = frame
            frame = shown_columns.with_includes(self.spec, self._session(), self._run, frame,
                                                paths, one_hop, start_values)
            if wants_features:
                frame = shown_columns.with_features(self._session(), base, frame,
                                                    shown_features, start_values)
            plain_text(frame)
        return frame

    df = to_dataframe

    @_one_view
    def _records(self, limit=None, offset=None, order_by=None) -> list[Model]:
        order_by = order_by or self._order_by or ("id",)
        rows = self._first_by_equalities(order_by, limit) if limit == 1 and not offset else None
        if rows is None:
            rows = self._rows(order_by=order_by, limit=limit, offset=offset).to_pylist()
        return [self.model._from_row(row) for row in rows]

    def _first_by_equalities(self, order_by: tuple, limit: int) -> list[dict] | None:
        """``first()``/``last()`` of a filter that only asks text columns to equal values
        (``filter(hash=...)``, ``filter(key=..., is_latest=True)``): from the index of a
        registry held in memory, else one statement without the id window. Such a filter is
        selective, so id_order's window would widen through the table to find nothing: three
        statements at 1e5 artifacts for a new file's content check in ``Artifact(...)``. None
        for any other query."""
        if tuple(order_by) not in (("id",), ("-id",)) or self._limit is not None or self._offset:
            return None
        equal = self._compiler(resolve_related=False).equalities(self.q)
        if not equal or not any(isinstance(v, str) for v in equal.values()):
            return None
        rows = self._session().rows_equal(self.spec, equal)
        if rows is None:
            return self._run(*self._compile(order_by=order_by, limit=limit)).to_pylist()
        return sorted(rows, key=lambda row: row["id"], reverse=order_by[0] == "-id")[:limit]

    def to_list(self) -> list[Model]:
        """Every matching row as a record object."""
        return self._records()

    def __iter__(self):
        return iter(self._records())

    @_one_view
    def count(self) -> int:
        """How many distinct rows match (one COUNT query; no rows are fetched)."""
        compiler = self._compiler()
        inner, params, specs = self._compile(columns=["id"], order_by=(), compiler=compiler)
        if self._limit is None and not self._offset:
            candidates = self._candidate_ids(compiler)
            if candidates is not None and (not compiler.other_conditions or not len(candidates)):
                return len(candidates)
            if candidates is not None:
                counted = self._count_among(candidates, compiler)
                if counted is not None:
                    return counted
        return self._session().scalar(f"SELECT count(*) AS n FROM ({inner})", params, specs)

    def _count_among(self, candidates: np.ndarray, compiler: Compiler,
                     answer: str = "count(*)"):
        """How many of ``candidates`` (the rows passing the query's list tests) meet its other
        conditions, evaluated on those rows alone (Session.count_among; ``answer`` as there);
        None when the session leaves it to the whole statement. ``compiler``: the one that
        compiled the query (select()), which kept those conditions."""
        condition, params = compiler.beside_list_tests
        return self._session().count_among(self.spec, candidates, condition, params,
                                           row_columns(condition), compiler.specs, answer)

    def __len__(self) -> int:
        return self.count()

    @_one_view
    def exists(self) -> bool:
        """Whether any row matches."""
        inner, params, specs = self._compile(columns=["id"], order_by=(), limit=1)
        return self._run(inner, params, specs).num_rows > 0

    def __bool__(self) -> bool:
        return self.exists()

    def __getitem__(self, item):
        if isinstance(item, slice):
            if item.step not in (None, 1) or (item.start or 0) < 0 or (item.stop or 0) < 0:
                raise ValueError("QuerySet slices take non-negative start and stop, no step")
            start = item.start or 0
            stop = item.stop
            base_offset = self._offset + start
            limit = None if stop is None else max(stop - start, 0)
            if self._limit is not None:
                remaining = max(self._limit - start, 0)
                limit = remaining if limit is None else min(limit, remaining)
            return self._clone(offset=base_offset, limit=limit,
                               order_by=self._order_by or ("id",))
        if not isinstance(item, int):
            raise TypeError(f"QuerySet indices must be integers or slices, not {type(item).__name__}")
        if item < 0:
            raise IndexError("negative indexing is not supported on a QuerySet; use .last()")
        found = self._records(limit=1, offset=self._offset + item)
        if not found:
            raise IndexError(f"QuerySet index {item} out of range")
        return found[0]

    def first(self) -> Model | None:
        """The first row (by id unless ordered), or None."""
        found = self._records(limit=1)
        return found[0] if found else None

    def last(self) -> Model | None:
        """The last row (by id unless ordered), or None."""
        order = self._order_by or ("id",)
        reversed_order = tuple(t[1:] if t.startswith("-") else f"-{t}" for t in order)
        found = self._records(limit=1, order_by=reversed_order)
        return found[0] if found else None

    @_one_view
    def one(self) -> Model:
        """The only matching row; DoesNotExist or MultipleResultsFound otherwise."""
        # Unordered: which of two rows comes first does not matter, and a sort (or the id
        # window of id_order) would cost a selective filter, get(key=...), a scan or several.
        rows = None
        if self._limit is None and not self._offset:
            equal = self._compiler(resolve_related=False).equalities(self.q)
            if equal:
                rows = self._session().rows_equal(self.spec, equal)
        if rows is None:
            rows = self._run(*self._compile(order_by=(), limit=2)).to_pylist()
        found = [self.model._from_row(row) for row in rows[:2]]
        if not found:
            raise DoesNotExist(f"no {self.spec.model} matches {self.q!r}")
        if len(found) > 1:
            raise MultipleResultsFound(
                f"more than one {self.spec.model} matches {self.q!r}; narrow the filter")
        return found[0]

    def one_or_none(self) -> Model | None:
        """The only matching row, or None when there is none."""
        try:
            return self.one()
        except DoesNotExist:
            return None

    @_one_view
    def get(self, idlike=None, **conditions) -> Model:
        """The one record matching ``idlike`` (id, uid or uid prefix) and ``conditions``."""
        return self.model._get_from(self, idlike, **conditions)

    def delete(self, permanent: bool = False) -> int:
        """Move every matching record to the trash (``permanent=True``: remove them); returns
        how many."""
        records = self._records()
        for record in records:
            record.delete(permanent=permanent)
        return len(records)

    def update(self, **fields) -> int:
        """Set ``fields`` on every record of this QuerySet in one commit (other fields, links
        and feature values stay as stored); the number of records changed."""
        spec = self.spec
        patch = {}
        for name, value in fields.items():
            column = spec.column(name)
            hop = relations(spec).get(name)
            if column is not None and column.display and name != "id":
                patch[name] = coerce(value, column.type, f"{spec.model}.{name}")
            elif hop is not None and hop.kind == "fk":
                if value is not None and getattr(value, "_spec", None) != hop.target:
                    raise ValidationError(f"{spec.model}.{name} expects a {hop.target.model} "
                                          f"record, got {value!r}")
                patch[hop.column] = None if value is None else value._lamina_id()
            elif hop is not None:
                raise FieldError(f"{spec.model}.{name} holds many records; update() sets "
                                 f"fields, use .{name}.add(...) on each record for links")
            else:
                raise FieldError(f"cannot update {name!r} of {spec.model}"
                                 f"{did_you_mean(name, [*spec.display_columns, *relations(spec)])}")
        if not patch:
            return 0
        ids = self.to_arrow(columns=["id"]).column("id").to_pylist()
        return writer.update_many(current(), spec, ids, patch)
    @_one_view
    def values_list(self, *fields: str, flat: bool = False) -> list:
        """The values of ``fields`` for every matching row, as tuples in the QuerySet's order
        (by id unless ordered); ``flat=True`` with one field gives the values themselves:
        ``ln.Artifact.filter(suffix=".parquet").values_list("key", flat=True)``."""
        if flat and len(fields) != 1:
            raise ValidationError(f"values_list(flat=True) takes exactly one field, got {fields}")
        choices = ["id", *self.spec.display_columns]
        names = list(fields) or choices
        for name in names:
            if name not in choices:
                raise unknown_field(name, self.spec.model, choices)
        table = self.to_arrow(columns=names)
        columns = [table.column(name).to_pylist() for name in names]
        return columns[0] if flat else list(zip(*columns))

    def __repr__(self) -> str:
        records = self._records(limit=REPR_LIMIT + 1)
        shown = ", ".join(repr(r) for r in records[:REPR_LIMIT])
        if len(records) > REPR_LIMIT:
            return f"<{self.spec.model}QuerySet ({self.count()} rows) [{shown}, ...]>"
        return f"<{self.spec.model}QuerySet ({len(records)} rows) [{shown}]>"

    def _repr_html_(self) -> str:
        return self.to_dataframe(limit=REPR_LIMIT)._repr_html_()

