"""Orphan collection: object files in managed storage that no artifact row references.

A save uploads an artifact's file first and commits its row after, so that no row ever points
at a missing file. A writer killed between the two leaves a file no row references. Such
files are harmless but take space; :func:`collect` removes them.

It is safe while others save: the objects are listed *before* the artifact table is read, so a
row committed meanwhile is seen; and only files older than a grace period (default one hour)
are candidates, so a file uploaded by a save that has not committed yet is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from . import objects, tables
from .location import Location

DEFAULT_GRACE = timedelta(hours=1)


@dataclass
class Orphan:
    path: str
    size: int
    modified: datetime


@dataclass
class GcReport:
    orphans: list[Orphan] = field(default_factory=list)
    removed: bool = False

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.orphans)

    def __repr__(self) -> str:
        verb = "removed" if self.removed else "would remove"
        lines = [f"gc {verb} {len(self.orphans)} orphan object file(s), {self.bytes:,} bytes"]
        lines += [f"  {o.size:>12,}  {o.modified:%Y-%m-%d %H:%M}  {o.path}"
                  for o in self.orphans[:50]]
        if len(self.orphans) > 50:
            lines.append(f"  ... and {len(self.orphans) - 50} more")
        return "\n".join(lines)


def collect(instance, grace: timedelta = DEFAULT_GRACE, dry_run: bool = False) -> GcReport:
    """Remove (or with ``dry_run`` only list) the object files of ``instance``'s managed
    storage that no artifact row references and that are older than ``grace``."""
    location = instance.location
    base = location.join(objects.OBJECTS_DIR)
    listed = _listing(location, base)  # before the table is read: see the module docstring
    cutoff = datetime.now(timezone.utc) - grace
    candidates = {top: entries for top, entries in listed.items()
                  if all(modified < cutoff for _, _, modified in entries)}
    if candidates:
        referenced = _referenced(instance)
        # A leftover partial copy is never referenced, even when its artifact was saved.
        candidates = {top: entries for top, entries in candidates.items()
                      if objects.PARTIAL in top or _stem(top) not in referenced}
    report = GcReport([Orphan(path, size, modified)
                       for entries in candidates.values() for path, size, modified in entries])
    if not dry_run:
        for top in candidates:
            objects.remove(location, f"{objects.OBJECTS_DIR}/{top}")
        report.removed = True
    return report


def _listing(location: Location, base: str) -> dict[str, list[tuple[str, int, datetime]]]:
    """Files under ``base`` grouped by their top-level name (a folder artifact is one)."""
    fs = location.fs
    fs.invalidate_cache(base)
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    prefix = base.split("://", 1)[-1].rstrip("/") + "/"
    grouped: dict[str, list] = {}
    for path, info in found.items():
        relative = path.split("://", 1)[-1][len(prefix):]
        top = relative.split("/", 1)[0]
        grouped.setdefault(top, []).append((location.join(objects.OBJECTS_DIR, relative),
                                            int(info.get("size") or 0), _modified(info)))
    return grouped


def _modified(info: dict) -> datetime:
    value = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(timezone.utc)  # unknown age: treated as new, never collected


def _stem(name: str) -> str:
    """The uid part of an object's name, ``<uid><suffix>``."""
    return name.split(".", 1)[0]


def _referenced(instance) -> set[str]:
    """Uids of every artifact row, any branch and any storage: a uid is unique, so a file
    named after one is never mistaken for another's."""
    snapshot = instance.store(tables.get("core.artifact")).snapshot()
    return set(snapshot.read(["uid"]).column("uid").to_pylist())
