"""A generated catalog for the query tests, and a plain-Python oracle over its rows.

``build(root)`` writes a few hundred artifacts with varied (and NULL) fields, users, storages,
records, ulabels, schemas and features, linked many-to-many, straight into the registries' tables
in one bulk commit per table. ``Oracle`` answers a filter in Python over rows read back from the
catalog, with the semantics of Django's ORM as LaminDB uses it:

- a comparison with NULL is false, and a negated condition on NULL is true;
- a relation path holds when *some* related row satisfies the rest of the path (for a
  many-valued relation), and a negated one when *none* does;
- only the queried registry hides trashed/archived rows (``branch_id != 1``) unless the query
  names the branch; related rows on any branch count, as in LaminDB.
"""

from __future__ import annotations

import os
import random
import re
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

import pytest

import lamina as ln
from lamina import Q
from lamina.catalog import instance as lamina_instance
from lamina.catalog import tables
from lamina.catalog.snapshot import Change

USER_ENV = {"LAMINA_USER_HANDLE": "testuser1", "LAMINA_USER_NAME": "Test User1"}

SUFFIXES = [".h5ad", ".parquet", ".csv", ".jpg", ".fastq.gz", "", None]
KEY_STEMS = ["raw/sample", "Processed/Matrix", "data/sub/cells", "RAW/Image", "50%_done/x",
             "quote's/file", "a.b/c"]
DESCRIPTIONS = [None, None, "Single-cell RNA of T cells", "bulk rna-seq", "IMAGE of cells",
                "t cell atlas", "Zellen über alles", "50% subset", "under_score name",
                "", "contains a . dot"]
RECORD_NAMES = ["Experiment 1", "Experiment 2", "DMSO", "IFNG", "experiment 3", "Control",
                "control", "Sample A", "Sample B", "treated_1", "treated 2", None]
ULABEL_NAMES = ["good", "Good", "bad", "pending review", "archived", "qc:pass", "qc:fail"]
SCHEMA_ITYPES = ["Feature", "bionty.Gene.ensembl_gene_id", None]
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
N_ARTIFACTS = 300


def _uid(prefix: str, i: int, length: int) -> str:
    return (prefix + str(i).rjust(length, "0"))[-length:] if len(prefix) < length else prefix


def _common(rng: random.Random, i: int, created_at: datetime, user_ids, branch=True) -> dict:
    row = {"created_at": created_at, "created_by_id": rng.choice(user_ids), "is_locked": False}
    if branch:
        row.update(branch_id=rng.choices([1, -1, 0], [85, 10, 5])[0], created_on_id=1,
                   space_id=1)
    return row


def _sample(rng: random.Random, ids: list[int], k_max: int):
    """A link list: NULL, empty, or up to ``k_max`` distinct ids."""
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.25:
        return []
    return sorted(rng.sample(ids, rng.randint(1, min(k_max, len(ids)))))


def generate(seed: int = 7, n_artifacts: int = N_ARTIFACTS) -> dict[str, list[dict]]:
    """Rows for each registry by qualified name (ids included; the instance's own user 1 and
    storage 1 come from ``ln.init`` and are not generated here)."""
    rng = random.Random(seed)
    users = [
        {"id": 2, "uid": "alice001", "handle": "alice", "name": "Alice Smith"},
        {"id": 3, "uid": "bob00001", "handle": "bob", "name": "Bob Jones"},
        {"id": 4, "uid": "tu200001", "handle": "testuser2", "name": None},
        # Creates records but no artifacts.
        {"id": 5, "uid": "carol001", "handle": "carol", "name": "Carol King"},
    ]
    for user in users:
        user["created_at"] = START
    user_ids = [1, 2, 3, 4]
    storages = []
    for i, (root, kind, branch) in enumerate(
            [("s3://bucket-a/data", "s3", 1), ("gs://bucket-b", "gs", 1),
             ("s3://old-bucket", "s3", -1), ("s3://empty-bucket", "s3", 1)], start=2):
        storages.append({"id": i, "uid": _uid("stor", i, 12), "root": root, "type": kind,
                         "description": None if i != 3 else "Google bucket",
                         "region": "us-east-1" if kind == "s3" else None,
                         "created_at": START + timedelta(days=i), "branch_id": branch,
                         "created_on_id": 1, "space_id": 1, "created_by_id": 1,
                         "is_locked": False})

    def when(k: int) -> datetime:
        return START + timedelta(days=rng.randint(0, 3 * 365), seconds=rng.randint(0, 86399),
                                 microseconds=rng.randint(0, 999999))

    # Record types first (is_type), then records pointing at them.
    records = []
    for i, name in enumerate(["Perturbation", "Experiment"], start=1):
        records.append({"id": i, "uid": _uid("rtype", i, 16), "name": name, "is_type": True,
                        "description": None, "type_id": None,
                        **_common(rng, i, when(i), user_ids), "branch_id": 1})
    for i in range(3, 45):
        records.append({
            "id": i, "uid": _uid("rec", i, 16), "name": rng.choice(RECORD_NAMES),
            "is_type": False,
            "description": rng.choice([None, "a record", "Treatment arm", "control arm"]),
            "type_id": rng.choice([None, 1, 2]), **_common(rng, i, when(i), user_ids + [5])})
    # Records 41-44 are linked to no artifact.
    record_ids = [r["id"] for r in records if r["id"] <= 40]
    ulabels = []
    for i in range(1, 15):
        ulabels.append({"id": i, "uid": _uid("ulab", i, 16),
                        "name": ULABEL_NAMES[(i - 1) % len(ULABEL_NAMES)] + ("" if i <= 7
                                                                              else f" {i}"),
                        "is_type": False, "description": rng.choice([None, "label"]),
                        **_common(rng, i, when(i), user_ids)})
    ulabel_ids = [u["id"] for u in ulabels if u["id"] <= 12]  # 13 and 14 label nothing
    features = []
    for i, (name, dtype) in enumerate([("gene_count", "int"), ("tissue_note", "str"),
                                       ("assay", "cat[ULabel]"), ("unused", "float")],
                                      start=1):
        features.append({"id": i, "uid": _uid("feat", i, 12), "name": name, "_dtype_str": dtype,
                         "is_type": False, **_common(rng, i, when(i), user_ids),
                         "branch_id": 1})
    schemas = []
    for i in range(1, 7):
        schemas.append({"id": i, "uid": _uid("schema", i, 16), "name": f"schema {i}",
                        "itype": SCHEMA_ITYPES[i % 3], "n_members": rng.choice([None, 2, 3]),
                        "is_type": False, "features": _sample(rng, [1, 2, 3], 3),
                        **_common(rng, i, when(i), user_ids)})
    schema_ids = [s["id"] for s in schemas]
    artifacts = []
    for i in range(1, n_artifacts + 1):
        suffix = rng.choice(SUFFIXES)
        stem = rng.choice(KEY_STEMS)
        # Storage 5 holds nothing; the gs bucket holds no h5ad; bob made no jpg.
        storage_id = rng.choice([1, 2, 4] if suffix == ".h5ad" else [1, 2, 3, 4])
        creator = rng.choice([1, 2, 4] if suffix == ".jpg" else user_ids)
        key = None if rng.random() < 0.08 else f"{stem}_{i}{suffix or ''}"
        artifacts.append({
            "id": i, "uid": _uid("art", i, 16) + "0000", "key": key,
            "description": rng.choice(DESCRIPTIONS), "suffix": suffix,
            "kind": rng.choice(["dataset", None, "model"]),
            "otype": rng.choice([None, "AnnData", "DataFrame"]),
            "size": None if rng.random() < 0.1 else rng.choice(
                [0, 20, 5202, 10_000, 26_896, 31_672, rng.randint(1, 2_000_000)]),
            "hash": f"h{i:021d}", "n_files": None,
            "n_observations": None if rng.random() < 0.4 else rng.randint(1, 500),
            "version_tag": None,
            "is_latest": rng.choice([True, True, False, None]),
            "created_at": when(i), "storage_id": storage_id,
            "schema_id": rng.choice([None, None, *schema_ids]),
            "records": _sample(rng, record_ids, 4), "ulabels": _sample(rng, ulabel_ids, 3),
            "schemas": _sample(rng, schema_ids, 2),
            **_common(rng, i, when(i), user_ids), "created_by_id": creator,
        })
    # Exact boundaries for the date transforms and comparisons.
    artifacts[0]["created_at"] = datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    artifacts[1]["created_at"] = datetime(2025, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
    artifacts[2]["created_at"] = datetime(2024, 2, 29, 12, 0, tzinfo=timezone.utc)
    for row in artifacts[:3]:
        row["branch_id"] = 1
    return {"core.user": users, "core.storage": storages, "core.record": records,
            "core.ulabel": ulabels, "core.feature": features, "core.schema": schemas,
            "core.artifact": artifacts}


def write(instance, rows_by_table: dict[str, list[dict]]) -> None:
    """One bulk commit per table, straight through the table store."""
    for qualified, rows in rows_by_table.items():
        spec = tables.get(qualified)
        instance.store(spec).transact(lambda snapshot, rows=rows: Change(append=list(rows)))


@contextmanager
def lamina_env(home: str):
    """LAMINA_HOME and the test user for code that runs outside a test (module fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAMINA_HOME", str(home))
        mp.setenv("LAMINA_CACHE_DIR", os.path.join(str(home), "cache"))
        mp.delenv("LAMINA_INSTANCE", raising=False)
        for key, value in USER_ENV.items():
            mp.setenv(key, value)
        try:
            yield
        finally:
            lamina_instance._current = None


def build(root: str, home: str, seed: int = 7, n_artifacts: int = N_ARTIFACTS) -> None:
    """Create an instance in ``root`` holding the generated catalog."""
    with lamina_env(home):
        instance = ln.init(storage=root)
        write(instance, generate(seed, n_artifacts))


def use(root: str, monkeypatch, home: str) -> None:
    """Point this test at the catalog in ``root``."""
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.delenv("LAMINA_INSTANCE", raising=False)
    for key, value in USER_ENV.items():
        monkeypatch.setenv(key, value)
    ln.connect(root)


# ---- the oracle ------------------------------------------------------------------------------

def read_rows() -> dict[str, dict[int, dict]]:
    """Every row of every core registry (all branches), read once with ``ln.sql``."""
    found = {}
    for spec in tables.MODULES["core"]:
        frame = ln.sql(f'SELECT * FROM "{spec.view}"', polars=True)
        found[spec.qualified] = {row["id"]: row for row in frame.to_dicts()}
    return found


LOOKUP_NAMES = ("exact", "iexact", "gt", "gte", "lt", "lte", "in", "contains", "icontains",
                "startswith", "istartswith", "endswith", "iendswith", "isnull", "range",
                "regex", "iregex")
TRANSFORMS = ("year", "month", "day")


def _lower(v):
    return v.lower() if isinstance(v, str) else v


def _as_datetime(arg):
    """A datetime filter value as lamina reads it: ISO text or a date, naive means UTC."""
    if isinstance(arg, str):
        arg = datetime.fromisoformat(arg)
    elif isinstance(arg, date) and not isinstance(arg, datetime):
        arg = datetime(arg.year, arg.month, arg.day)
    if isinstance(arg, datetime) and arg.tzinfo is None:
        arg = arg.replace(tzinfo=timezone.utc)
    return arg


def compare(value, lookup: str, arg) -> bool:
    """Django's comparison of one field value; a comparison with NULL is False."""
    if lookup == "isnull":
        return (value is None) == arg
    if lookup == "exact" and arg is None:
        return value is None
    if value is None:
        return False
    if isinstance(value, datetime):
        arg = [_as_datetime(a) for a in arg] if isinstance(arg, (list, tuple)) else (
            _as_datetime(arg))
    if lookup == "exact":
        return value == arg
    if lookup == "iexact":
        return value.lower() == arg.lower()
    if lookup == "gt":
        return value > arg
    if lookup == "gte":
        return value >= arg
    if lookup == "lt":
        return value < arg
    if lookup == "lte":
        return value <= arg
    if lookup == "in":
        return value in [a for a in arg if a is not None]
    if lookup == "range":
        return arg[0] <= value <= arg[1]
    if lookup == "contains":
        return arg in value
    if lookup == "icontains":
        return arg.lower() in value.lower()
    if lookup == "startswith":
        return value.startswith(arg)
    if lookup == "istartswith":
        return value.lower().startswith(arg.lower())
    if lookup == "endswith":
        return value.endswith(arg)
    if lookup == "iendswith":
        return value.lower().endswith(arg.lower())
    if lookup == "regex":
        return re.search(arg, value) is not None
    if lookup == "iregex":
        return re.search(arg, value, re.IGNORECASE) is not None
    raise AssertionError(f"oracle does not know {lookup!r}")


# The relations the tests filter on, as the seed guide describes the registries; written out
# here so that the oracle does not share the planner's reading of the schema. name ->
# (kind, target registry, the column holding the link on whichever side holds it).
_FK, _M2M, _REVERSE_FK, _REVERSE_M2M = "fk", "m2m", "reverse_fk", "reverse_m2m"
_COMMON = {"branch": (_FK, "core.branch", "branch_id"),
           "created_by": (_FK, "core.user", "created_by_id")}
RELATIONS = {
    "core.artifact": {**_COMMON, "storage": (_FK, "core.storage", "storage_id"),
                      "schema": (_FK, "core.schema", "schema_id"),
                      "records": (_M2M, "core.record", "records"),
                      "ulabels": (_M2M, "core.ulabel", "ulabels"),
                      "schemas": (_M2M, "core.schema", "schemas")},
    "core.record": {**_COMMON, "type": (_FK, "core.record", "type_id"),
                    "schema": (_FK, "core.schema", "schema_id"),
                    "artifacts": (_REVERSE_M2M, "core.artifact", "records"),
                    "records": (_REVERSE_FK, "core.record", "type_id")},
    "core.ulabel": {**_COMMON, "type": (_FK, "core.ulabel", "type_id"),
                    "artifacts": (_REVERSE_M2M, "core.artifact", "ulabels"),
                    "ulabels": (_REVERSE_FK, "core.ulabel", "type_id")},
    "core.schema": {**_COMMON, "type": (_FK, "core.schema", "type_id"),
                    "features": (_M2M, "core.feature", "features"),
                    "artifacts": (_REVERSE_M2M, "core.artifact", "schemas"),
                    "validated_artifacts": (_REVERSE_FK, "core.artifact", "schema_id"),
                    "schemas": (_REVERSE_FK, "core.schema", "type_id")},
    "core.feature": {**_COMMON, "type": (_FK, "core.feature", "type_id"),
                     "schemas": (_REVERSE_M2M, "core.schema", "features")},
    "core.user": {f"created_{name}": (_REVERSE_FK, f"core.{table}", "created_by_id")
                  for name, table in [("artifacts", "artifact"), ("records", "record"),
                                      ("ulabels", "ulabel"), ("schemas", "schema"),
                                      ("features", "feature"), ("storages", "storage")]},
    "core.storage": {**_COMMON, "artifacts": (_REVERSE_FK, "core.artifact", "storage_id")},
    "core.branch": {"created_by": (_FK, "core.user", "created_by_id")},
}


def _relation(spec, name: str):
    """(kind, target spec, column) of relation ``name`` on ``spec``, or None."""
    found = RELATIONS.get(spec.qualified, {}).get(name)
    return None if found is None else (found[0], tables.get(found[1]), found[2])


def _is_field(spec, name: str) -> bool:
    column = spec.column(name)
    return column is not None and (column.display or name == "id")


def _lookup_of(rest: list[str]) -> str:
    return rest[-1] if rest and rest[-1] in LOOKUP_NAMES else "exact"


def _asks_null(parts: list[str], arg) -> bool:
    lookup = _lookup_of(parts)
    return (lookup == "isnull" and arg is True) or (lookup == "exact" and arg is None)


class Oracle:
    """Answers filters in plain Python over the rows of the catalog.

    Django's rule for many-valued relations: within the conditions of one ``filter()`` call
    (keyword arguments and ``Q`` objects alike), every mention of the same relation path refers
    to one related row; each chained call, and each negated condition, finds its own. The
    oracle reads it literally: it tries every choice of one related row per many-valued path
    the call mentions (no row at all when there is none) and keeps the row when one choice
    satisfies the whole call. Tests for NULL are read as Django's LEFT OUTER JOIN does: a row
    with no related row has a NULL one."""

    def __init__(self, rows: dict[str, dict[int, dict]]):
        self.rows = rows

    def table(self, model) -> dict[int, dict]:
        return self.rows[model._spec.qualified]

    def ids(self, model, q: Q | None = None, *, default_branch: bool = True,
            **conditions) -> list[int]:
        """Sorted ids of ``model`` rows matching ``q`` and ``conditions`` as one ``filter()``
        call (visible rows only, unless the query names the branch)."""
        q = self.resolve(Q(q, **conditions) if q is not None else Q(**conditions))
        spec = model._spec
        names_branch = any(p.split("__")[0] in ("branch", "branch_id") for p in q.paths())
        out = []
        for row_id, row in self.rows[spec.qualified].items():
            if default_branch and spec.has_branch and not names_branch and row["branch_id"] != 1:
                continue
            if self.holds(spec, row, q):
                out.append(row_id)
        return sorted(out)

    def holds(self, spec, row: dict, q: Q) -> bool:
        """Whether ``row`` meets ``q``, the conditions of one call (or a chain of calls)."""
        if getattr(q, "chained", False):
            return all(self.holds(spec, row, call) for call in q.children)
        if q.negated:
            return not self.holds(spec, row, _unnegated(q))
        paths = sorted(self.many_valued_paths(spec, q), key=len)
        return any(self.evaluate(spec, row, q, chosen)
                   for chosen in self.choices(spec, row, paths, 0, {}))

    def many_valued_paths(self, spec, q: Q) -> set[tuple]:
        """Every many-valued relation path that a condition of this call (outside negations
        and NULL tests) goes through, e.g. ("schemas",), ("schemas", "genes")."""
        found = set()
        for child in q.children:
            if isinstance(child, Q):
                if not child.negated:
                    found |= self.many_valued_paths(spec, child)
                continue
            parts = child[0].split("__")
            if _asks_null(parts, child[1]):
                continue
            current, prefix = spec, ()
            for name in parts:
                hop = _relation(current, name)
                if hop is None:
                    break
                prefix += (name,)
                if hop[0] != _FK:
                    found.add(prefix)
                current = hop[1]
        return found

    def choices(self, spec, row, paths: list[tuple], i: int, chosen: dict):
        """Each way of choosing one related row (or None) per path, parents first."""
        if i == len(paths):
            yield chosen
            return
        path = paths[i]
        source_spec, source = self.follow(spec, row, path[:-1], chosen)
        options = []
        if source is not None:
            options = self.related(_relation(source_spec, path[-1]), source)
        for option in options or [None]:
            yield from self.choices(spec, row, paths, i + 1, {**chosen, path: option})

    def follow(self, spec, row, path: tuple, chosen: dict):
        """The registry and row at the end of ``path`` from ``row`` (None: nothing there)."""
        for i, name in enumerate(path):
            kind, target, column = _relation(spec, name)
            if row is None:
                return target, None
            if kind == _FK:
                row = self.rows.get(target.qualified, {}).get(row.get(column))
            else:
                row = chosen[path[:i + 1]]
            spec = target
        return spec, row

    def evaluate(self, spec, row, q: Q, chosen: dict) -> bool:
        results = []
        for child in q.children:
            if isinstance(child, Q):
                value = (not self.holds(spec, row, _unnegated(child)) if child.negated
                         else self.evaluate(spec, row, child, chosen))
            else:
                value = self.leaf(spec, row, child[0].split("__"), child[1], chosen)
            results.append(value)
        if not results:
            return True
        return all(results) if q.connector == "AND" else any(results)

    def leaf(self, spec, row, parts: list[str], arg, chosen: dict) -> bool:
        if _asks_null(parts, arg):
            return self.condition(spec, row, parts, arg)
        i = 0
        while i < len(parts) and _relation(spec, parts[i]) is not None \
                and not _is_field(spec, parts[i]):
            i += 1
        if i == 0:
            return self.condition(spec, row, parts, arg)
        target, related = self.follow(spec, row, tuple(parts[:i]), chosen)
        if related is None:
            return False
        return self.condition(target, related, _on_target(parts[i:]), arg)

    def condition(self, spec, row: dict, parts: list[str], arg) -> bool:
        """One leaf, each many-valued hop on its own: some related row satisfies the rest."""
        head, rest = parts[0], parts[1:]
        if _is_field(spec, head):
            value = row.get(head)
            lookup = "exact"
            for name in rest:
                if name in TRANSFORMS:
                    value = None if value is None else getattr(value, name)
                else:
                    lookup = name
            return compare(value, lookup, arg)
        hop = _relation(spec, head)
        assert hop is not None, f"oracle: unknown path {parts} on {spec.qualified}"
        related = self.related(hop, row)
        rest = _on_target(rest)
        if not related and _asks_null(rest, arg):
            # Django joins the relation LEFT OUTER when asking for NULL: no related row
            # counts as a NULL one.
            return True
        return any(self.condition(hop[1], r, rest, arg) for r in related)

    def related(self, hop, row: dict) -> list[dict]:
        kind, target_spec, column = hop
        target = self.rows.get(target_spec.qualified, {})
        if kind == _FK:
            found = target.get(row.get(column))
            return [found] if found else []
        if kind == _M2M:
            return [target[i] for i in (row.get(column) or []) if i in target]
        if kind == _REVERSE_FK:
            return [r for r in target.values() if r.get(column) == row["id"]]
        return [r for r in target.values() if row["id"] in (r.get(column) or [])]

    def resolve(self, q: Q) -> Q:
        """``q`` with records as their ids and QuerySets as the ids they select (in Python)."""
        resolved = Q(_connector=q.connector, _negated=q.negated)
        resolved.children = tuple(self.resolve(c) if isinstance(c, Q) else (c[0], self.value(c[1]))
                                  for c in q.children)
        resolved.chained = getattr(q, "chained", False)
        return resolved

    def value(self, arg):
        if hasattr(arg, "_lamina_id"):
            return arg._lamina_id()
        if hasattr(arg, "_as_id_subquery"):
            assert arg._limit is None and not arg._offset, "oracle: no sliced QuerySets"
            return self.ids(arg.model, arg.q)
        if isinstance(arg, (list, tuple)):
            return [self.value(a) for a in arg]
        return arg


def _unnegated(q: Q) -> Q:
    """``q`` without its negation: a call of its own."""
    positive = Q(_connector=q.connector)
    positive.children = q.children
    return positive


def _on_target(rest: list[str]) -> list[str]:
    return ["id", *rest] if not rest or (len(rest) == 1 and rest[0] in LOOKUP_NAMES) else rest


# ---- fixtures (imported by the test modules that use them) -----------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The generated catalog, built once per test module in a local root, and its rows."""
    root = str(tmp_path_factory.mktemp("query-root"))
    home = str(tmp_path_factory.mktemp("query-home"))
    build(root, home)
    with lamina_env(home):
        ln.connect(root)
        rows = read_rows()
    return {"root": root, "home": home, "oracle": Oracle(rows)}


@pytest.fixture
def oracle(world, monkeypatch) -> Oracle:
    """The generated catalog connected for this test (read-only use), and its oracle."""
    use(world["root"], monkeypatch, world["home"])
    yield world["oracle"]
    lamina_instance._current = None


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> Oracle:
    """A small generated catalog of this test's own, for tests that change it."""
    root, home = str(tmp_path / "root"), str(tmp_path / "home")
    build(root, home, n_artifacts=40)
    use(root, monkeypatch, home)
    yield Oracle(read_rows())
    lamina_instance._current = None
