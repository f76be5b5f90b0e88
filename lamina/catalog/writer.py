"""The one path for every change to the catalog's rows.

Models, link and feature managers, ``ln.save``, bionty's bulk saves and bulk ingest change rows
only through the functions here; they in turn are the only callers of
:meth:`TableStore.transact`. What that buys:

- **Bookkeeping in one place.** A new row gets its uid, creation time, branch, space, creator
  and flags from :func:`fill_defaults`, whichever path inserted it.
- **Ids are never reused.** New ids continue from the table's high-water mark
  (``Snapshot.next_id``), which a delete records in the same commit, so deleting the newest
  row does not hand its id to the next insert (see ``store.ID_HIGH_WATER``).
- **Updates are patches.** :func:`update` takes only the fields a user changed and applies
  them to the row as it is in the snapshot the commit lands on; after a lost race the patch is
  applied again to the newer row. Two users who change different fields, or add different
  links, both keep their change.
- **Nothing points at a missing row.** :func:`delete` refuses to remove a row that another
  row still links to, naming the link (a link lives in another table, so it cannot be dropped
  in the same commit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DoesNotExist, ValidationError
from . import tables
from .ids import new_uid
from .snapshot import Change, Snapshot

TRASH_BRANCH_ID, ARCHIVE_BRANCH_ID, MAIN_BRANCH_ID = -1, 0, 1
DEFAULT_SPACE_ID = 1


def now() -> datetime:
    return datetime.now(timezone.utc)


# ---- bookkeeping --------------------------------------------------------------------------
def bookkeeping(spec: tables.TableSpec, user_id: int | None) -> dict[str, Any]:
    """The values lamina fills into a new row of ``spec`` (for the columns it has)."""
    values = {"created_at": now(), "branch_id": MAIN_BRANCH_ID, "created_on_id": MAIN_BRANCH_ID,
              "space_id": DEFAULT_SPACE_ID, "created_by_id": user_id, "is_locked": False,
              "is_type": False, "is_latest": True}
    return {name: value for name, value in values.items() if spec.column(name) is not None}


def fill_defaults(spec: tables.TableSpec, row: dict, user_id: int | None,
                  versioned: bool = False) -> dict:
    """Fill the bookkeeping columns of ``row`` that are still None (in place), and a uid."""
    for name, value in bookkeeping(spec, user_id).items():
        if row.get(name) is None:
            row[name] = value
    if spec.uid_length and row.get("uid") is None:
        row["uid"] = new_uid(spec.uid_length, versioned)
    return row


# ---- the commit -------------------------------------------------------------------------
def transact(instance, spec: tables.TableSpec, plan: Callable[[Snapshot], Change],
             before_commit: Callable[[], None] | None = None) -> Change:
    """Commit what ``plan`` makes of the latest snapshot (re-planned after a lost race). For the
    changes the functions below do not cover (artifact versions, bulk ingest); new ids must
    come from ``snapshot.next_id``. ``before_commit`` must return before the commit (an
    upload the row will point at)."""
    return instance.store(spec).transact(plan, before_commit)


# ---- inserts ------------------------------------------------------------------------------
def insert(instance, spec: tables.TableSpec, rows: Sequence[dict], *, unique: str | None = None,
           scope: pc.Expression | None = None,
           resolve: Callable[[list[dict], dict, Snapshot], None] | None = None,
           created_by: int | None = None) -> list[dict]:
    """Insert ``rows`` (bookkeeping filled, ids after the high-water mark unless a row brings
    its own) and return the stored rows in the same order.

    With ``unique``, a row whose ``unique`` value the table already holds (among the rows
    matching ``scope``; the lowest id wins), or that an earlier row of ``rows`` has, is not
    inserted: the row already stored is returned in its place. ``resolve(new_rows, by_value,
    snapshot)`` may fill columns that depend on the ids just assigned (ontology parents).
    ``created_by`` is the creating user's id: the instance's user unless given (as it is while
    that user is being registered)."""
    if created_by is None and spec.column("created_by_id") is not None:
        created_by = instance.user_id
    for row in rows:
        fill_defaults(spec, row, created_by)

    def plan(snapshot: Snapshot) -> Change:
        by_value: dict = {}
        if unique is not None:
            values = list({row[unique] for row in rows if row.get(unique) is not None})
            cond = pc.field(unique).isin(values)
            if scope is not None:
                cond = cond & scope
            for found in sorted(snapshot.read(filter=cond).to_pylist() if values else [],
                                key=lambda r: r["id"]):
                by_value.setdefault(found[unique], found)
        next_id = snapshot.next_id
        stored, new = [], []
        for row in rows:
            value = row.get(unique) if unique is not None else None
            if value is not None and value in by_value:
                stored.append(by_value[value])
                continue
            row = dict(row)
            if row.get("id") is None:
                row["id"] = next_id
                next_id += 1
            if value is not None:
                by_value[value] = row
            new.append(row)
            stored.append(row)
        if resolve is not None and new:
            resolve(new, by_value, snapshot)
        return Change(append=new, result=stored)

    return transact(instance, spec, plan).result


# ---- updates ------------------------------------------------------------------------------
class ListEdit:
    """A change to a list column relative to what the row holds when the commit lands."""

    def __init__(self, add: Iterable[int] = (), remove: Iterable[int] = ()):
        self.add, self.remove = list(add), set(remove)

    def apply(self, current: list | None) -> list | None:
        kept = [i for i in (current or []) if i not in self.remove]
        merged = list(dict.fromkeys([*kept, *(i for i in self.add if i not in self.remove)]))
        return merged or (None if current is None else [])

    def __repr__(self) -> str:
        return f"ListEdit(add={self.add}, remove={sorted(self.remove)})"


Patch = dict[str, Any] | Callable[[dict], dict[str, Any]]


def update(instance, spec: tables.TableSpec, record_id: int, patch: Patch, *,
           new_columns: dict | None = None, what: str | None = None) -> dict:
    """Apply ``patch`` to row ``record_id`` as it is in the snapshot the commit lands on, and
    return the row as committed.

    ``patch`` maps columns to new values, or to a :class:`ListEdit` of the current list; or it
    is a function of the current row that returns such a mapping (computed again after a lost
    race). ``new_columns`` are feature columns the table may not have yet."""

    def plan(snapshot: Snapshot) -> Change:
        row = _row(snapshot, record_id, what)
        updated = _patched(row, patch)
        if updated == row:
            return Change(result=row)
        return Change(replace=[updated], new_columns=dict(new_columns or {}), result=updated)

    return transact(instance, spec, plan).result


def update_rows(instance, spec: tables.TableSpec, patches: dict[int, Patch], *,
                new_columns: dict | None = None) -> int:
    """Apply each row's patch (as in :func:`update`) to the rows still in the table, in one
    commit; the number of rows changed."""
    ids = [int(i) for i in patches]

    def plan(snapshot: Snapshot) -> Change:
        rows = snapshot.read(filter=pc.field("id").isin(ids)).to_pylist() if ids else []
        changed = [new for new, old in ((_patched(r, patches[r["id"]]), r) for r in rows)
                   if new != old]
        return Change(replace=changed, new_columns=dict(new_columns or {}),
                      result=len(changed))

    return transact(instance, spec, plan).result or 0


def update_many(instance, spec: tables.TableSpec, ids: Sequence[int], patch: Patch) -> int:
    """Apply one ``patch`` to every row of ``ids`` still in the table, in one commit; the
    number of rows changed."""
    return update_rows(instance, spec, {int(i): patch for i in ids})


def _patched(row: dict, patch: Patch) -> dict:
    changes = patch(row) if callable(patch) else patch
    updated = dict(row)
    for column, value in changes.items():
        updated[column] = value.apply(row.get(column)) if isinstance(value, ListEdit) else value
    return updated


def _row(snapshot: Snapshot, record_id: int, what: str | None) -> dict:
    rows = snapshot.read(filter=pc.field("id") == record_id).to_pylist()
    if not rows:
        raise DoesNotExist(f"{what or f'{snapshot.spec.model} {record_id}'} no longer exists "
                           "(deleted by this or another process)")
    return rows[0]


def require_rows(instance, spec: tables.TableSpec, ids: Sequence[int]) -> None:
    """DoesNotExist naming the ids of ``ids`` that ``spec``'s table no longer holds: a link is
    only made to rows that exist (a delete refuses while links exist; this is the other side)."""
    if not ids:
        return
    wanted = [int(i) for i in ids]
    found = instance.store(spec).snapshot().read(["id"], pc.field("id").isin(wanted))
    missing = sorted(set(wanted) - set(found.column("id").to_pylist()))
    if missing:
        raise DoesNotExist(f"{spec.model} {', '.join(map(str, missing))} no longer exist(s) "
                           "(deleted by this or another process); nothing was linked")


# ---- deletes ------------------------------------------------------------------------------
# (table, column, how) of a reference to another row: a foreign key or a list of ids.
Reference = tuple[tables.TableSpec, str, str]


def references_to(spec: tables.TableSpec, table_specs: Iterable[tables.TableSpec]
                  ) -> list[Reference]:
    """Every column of ``table_specs`` that holds ids of ``spec``'s rows."""
    found = []
    for other in table_specs:
        for fk in other.foreign_keys:
            if fk.target == spec.qualified:
                found.append((other, fk.column, "fk"))
        for m2m in other.many_to_many:
            if m2m.target == spec.qualified:
                found.append((other, m2m.name, "list"))
    return found


def delete(instance, spec: tables.TableSpec, ids: Sequence[int], *,
           references: Sequence[Reference] = (), what: str | None = None) -> None:
    """Remove rows ``ids`` for good. Refused, naming the link, while a row of ``references``
    still points at one of them; an error naming the record if one no longer exists."""
    ids = [int(i) for i in ids]
    _refuse_if_linked(instance, spec, ids, references, what)

    def plan(snapshot: Snapshot) -> Change:
        found = snapshot.read(["id"], pc.field("id").isin(ids)).column("id").to_pylist()
        gone = sorted(set(ids) - set(found))
        if gone:
            raise DoesNotExist(f"{what or f'{spec.model} {gone[0]}'} no longer exists "
                               "(deleted by this or another process)")
        return Change(delete_ids=ids)

    transact(instance, spec, plan)


def _refuse_if_linked(instance, spec, ids: list[int], references: Sequence[Reference],
                      what: str | None) -> None:
    wanted = pa.array(ids, pa.int64())
    for other, column, how in references:
        snapshot = instance.store(other).snapshot()
        if column not in snapshot.schema.names or not snapshot.files:
            continue
        if how == "fk":
            linking = snapshot.read(["id"], pc.field(column).isin(wanted)).column("id")
        else:
            table = snapshot.read(["id", column])
            lists = table.column(column).combine_chunks()
            hit = pc.is_in(pc.list_flatten(lists), value_set=wanted)
            parents = pc.filter(pc.list_parent_indices(lists), hit)
            linking = pc.take(table.column("id"), pc.unique(parents))
        if other == spec:  # a row may point at itself: that link goes with it
            linking = pc.filter(linking, pc.invert(pc.is_in(linking, value_set=wanted)))
        if len(linking):
            shown = ", ".join(str(i) for i in linking.to_pylist()[:5])
            more = f" and {len(linking) - 5} more" if len(linking) > 5 else ""
            raise ValidationError(
                f"cannot delete {what or f'{spec.model} {ids[0]}'}: {other.model}.{column} of "
                f"{other.model} {shown}{more} still links to it; remove that link first")
