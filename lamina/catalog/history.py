"""The catalog's history: every commit of every registry table, numbered across the whole
catalog, and read-only views of the catalog as it was after one of them (``ln.history()``,
``ln.connect(root, as_of=...)``).

Each registry is its own Delta table with its own versions, so "the catalog at commit N" is,
for every table, its last version among the first N commits in time order (ties by table
name and version). Numbers count the commits the Delta logs still hold.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..errors import InstanceError, ValidationError
from .snapshot import Snapshot
from .store import OPERATION_KEY, USER_KEY, TableStore

# Delta operations as users name them; a predicate overwrite is lamina's update of rows.
_OPERATIONS = {"CREATE TABLE": "create", "DELETE": "delete", "OPTIMIZE": "compact"}


def commits(instance) -> list[dict]:
    """Every commit of the instance's tables, oldest first, numbered from 1 as ``commit``."""
    found = []
    for spec in instance.table_specs():
        for entry in instance.store(spec).history():
            found.append({
                "time": datetime.fromtimestamp(entry["timestamp"] / 1000, tz=timezone.utc),
                "table": spec.view, "version": entry["version"], "user": entry.get(USER_KEY),
                "operation": _operation(entry), "rows": _rows_changed(entry),
                "qualified": spec.qualified})
    found.sort(key=lambda c: (c["time"], c["table"], c["version"]))
    for number, commit in enumerate(found, 1):
        commit["commit"] = number
    return found


def _operation(entry: dict) -> str:
    if entry.get(OPERATION_KEY):
        return entry[OPERATION_KEY]
    name = entry.get("operation", "")
    if name == "WRITE":
        parameters = entry.get("operationParameters") or {}
        return "update" if parameters.get("predicate") else "insert"
    return _OPERATIONS.get(name, name.lower())


def _rows_changed(entry: dict) -> int:
    metrics = entry.get("operationMetrics") or {}
    return int(metrics.get("num_added_rows") or 0) + int(metrics.get("num_deleted_rows") or 0)


def versions_as_of(instance, as_of) -> tuple[dict[str, int], str]:
    """{qualified table name: version} of the catalog after commit ``as_of`` (an int, as
    numbered by :func:`commits`) or at time ``as_of`` (a datetime or ISO text; naive means
    UTC), and a phrase naming that point. Tables created later are absent."""
    history = commits(instance)
    if isinstance(as_of, bool) or not isinstance(as_of, (int, datetime, str)):
        raise ValidationError(f"as_of takes a commit number (see ln.history()), a datetime or an "
                              f"ISO time, got {as_of!r}")
    if isinstance(as_of, int):
        if not 1 <= as_of <= len(history):
            raise ValidationError(f"as_of={as_of}: the catalog has commits 1 to {len(history)} "
                                  "(see ln.history())")
        chosen = history[:as_of]
        phrase = f"commit {as_of} ({chosen[-1]['time']:%Y-%m-%d %H:%M:%S} UTC)"
    else:
        when = _parse_time(as_of)
        chosen = [c for c in history if c["time"] <= when]
        if not chosen:
            first = history[0]["time"] if history else None
            raise ValidationError(f"as_of={as_of!r} is before the catalog's first commit "
                                  f"({first:%Y-%m-%d %H:%M:%S} UTC)" if first else
                                  f"as_of={as_of!r}: the catalog has no commits")
        phrase = f"{when:%Y-%m-%d %H:%M:%S} UTC (commit {chosen[-1]['commit']})"
    return {c["qualified"]: c["version"] for c in chosen}, phrase


def _parse_time(value) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"as_of={value!r} is not an ISO time such as "
                                  "'2026-05-01T12:00' or a commit number") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class PastTableStore(TableStore):
    """A registry table as it was at ``past_version`` (None: not created yet): every read sees
    that snapshot; every write is refused."""

    def __init__(self, location, spec, past_version: int | None, phrase: str):
        super().__init__(location, spec)
        self.past_version = past_version
        self.phrase = phrase
        self._past: Snapshot | None = None

    def _past_snapshot(self) -> Snapshot:
        if self._past is None:
            if self.past_version is None:
                self._past = Snapshot(self.spec, -1, (), self.spec.arrow_schema(), 0)
            else:
                self._past = super().snapshot(self.past_version)
        return self._past

    def snapshot(self, version=None) -> Snapshot:
        return self._past_snapshot() if version is None else super().snapshot(version)

    def snapshot_newer_than(self, version: int | None) -> Snapshot | None:
        past = self._past_snapshot()
        return None if past.version == version else past

    def version(self) -> int:
        return -1 if self.past_version is None else self.past_version

    def history(self, limit: int | None = None) -> list[dict]:
        entries = [e for e in super().history() if self.past_version is not None
                   and e["version"] <= self.past_version]
        return entries[:limit] if limit else entries

    def _refuse(self, *args, **kwargs):
        raise InstanceError(f"this connection shows the catalog as of {self.phrase} and is "
                            "read-only; ln.connect(root) without as_of to change it")

    transact = ensure = compact = vacuum = _refuse
