"""``record.describe()``: one record as a tree of its fields, lineage, labels and features."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..engine.relations import relations

if TYPE_CHECKING:
    from .base import SQLRecord

# Fields shown under "Lineage" rather than "General" (foreign keys named as their relation).
LINEAGE = ("transform", "run", "created_by")


def describe(record: SQLRecord) -> str:
    spec, data = record._spec, record._data
    title = data.get("key") or data.get("name") or data.get("root") or ""
    lines = [f"{spec.model}: {title}".rstrip() + f" (uid {data.get('uid')!r})"]
    hops = relations(spec)
    fks = {hop.column: name for name, hop in hops.items() if hop.kind == "fk"}
    general = [(name, _shown(data[name])) for name in spec.display_columns
               if name not in fks and data.get(name) is not None and name != "uid"]
    lineage = []
    for column, name in fks.items():
        target_id = data.get(column)
        if target_id is None or name not in (*LINEAGE, "storage"):
            continue
        target = getattr(record, name)
        label = _label(target)
        (general if name == "storage" else lineage).append((name, label))
    run = record.run if "run" in hops and data.get("run_id") is not None else None
    if run is not None and run.transform is not None:
        lineage.insert(0, ("transform", _label(run.transform)))
    labels = []
    for name, hop in hops.items():
        ids = data.get(hop.column) if hop.kind == "m2m" else None
        if ids:
            field = hop.target.name_field or "uid"
            names = getattr(record, name).order_by("id").values_list(field, flat=True)
            labels.append((name, ", ".join(str(n) for n in names)))
    sections = [("General", general), ("Lineage", lineage), ("Labels", labels)]
    if hasattr(type(record), "features"):
        sections.append(("Features", [(n, repr(v)) for n, v in
                                      record.features.get_values().items()]))
    sections = [(title, rows) for title, rows in sections if rows]
    for i, (title, rows) in enumerate(sections):
        last_section = i == len(sections) - 1
        lines.append(f"{'└' if last_section else '├'}── {title}")
        stem = "    " if last_section else "│   "
        for j, (name, value) in enumerate(rows):
            lines.append(f"{stem}{'└' if j == len(rows) - 1 else '├'}── {name}: {value}")
    return "\n".join(lines)


def _shown(value) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return repr(value)


def _label(record: SQLRecord) -> str:
    data = record._data
    name = (data.get("key") or data.get("name") or data.get("handle") or data.get("root")
            or data.get("uid"))
    return f"{name} (uid {data.get('uid')!r})" if data.get("uid") and name != data.get("uid") \
        else str(name)
