"""What a validation or a save found and did: issues per row and column, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ...errors import ValidationError


@dataclass(frozen=True)
class Issue:
    """One problem: ``row`` is the 0-based position in the manifest (None: the whole column)."""

    row: int | None
    column: str | None
    reason: str


@dataclass
class IngestReport:
    """What a validation or a save found and did."""

    rows: int = 0
    new: int = 0
    existing: int = 0
    # Existing artifacts whose annotations the manifest changed, and per field or feature
    # how many rows it changed.
    updated: int = 0
    changed: dict = field(default_factory=dict)
    linked: int = 0
    copied: int = 0
    reused_uploads: int = 0
    failed: int = 0
    labels_created: dict = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    chunks: int = 0
    # (first id, last id) of the artifact rows each committed chunk added.
    id_ranges: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def failed_rows(self) -> list[int]:
        return sorted({i.row for i in self.issues if i.row is not None})

    def to_dataframe(self):
        """The issues, one per row and column."""
        import pandas as pd

        return pd.DataFrame([{"row": i.row, "column": i.column, "reason": i.reason}
                             for i in self.issues], columns=["row", "column", "reason"])

    def artifact_ids(self) -> np.ndarray:
        if not self.id_ranges:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in self.id_ranges])

    def __repr__(self) -> str:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        text = (f"IngestReport(rows={self.rows}, new={self.new} (linked={self.linked}, "
                f"copied={self.copied}, reused uploads={self.reused_uploads}), "
                f"existing={self.existing} (updated={self.updated}), failed={self.failed}, "
                f"chunks={self.chunks}")
        if self.changed:
            text += f", changed={self.changed}"
        if self.labels_created:
            text += f", labels created={self.labels_created}"
        text += f"; {phases})"
        for issue in self.issues[:10]:
            where = f"row {issue.row}" if issue.row is not None else "manifest"
            text += f"\n  {where}, column {issue.column!r}: {issue.reason}"
        if len(self.issues) > 10:
            text += f"\n  ... {len(self.issues) - 10} more (report.to_dataframe())"
        return text


class IngestError(ValidationError):
    """The manifest has invalid rows; ``.report`` lists every problem."""

    def __init__(self, report: IngestReport):
        self.report = report
        super().__init__(f"the manifest has {len(report.issues)} problem(s) in "
                         f"{report.failed} row(s); nothing was written (pass on_error='skip' "
                         f"to write the valid rows):\n{issue_lines(report.issues)}")


def issue_lines(issues: list[Issue], limit: int = 20) -> str:
    lines = [f"  {'row ' + str(i.row) if i.row is not None else 'manifest'}, column "
             f"{i.column!r}: {i.reason}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... {len(issues) - limit} more")
    return "\n".join(lines)


class Issues:
    """Issues of one chunk, gathered as frames of failing rows (no per-row Python work for the
    rows that pass)."""

    def __init__(self):
        self.frames: list[pl.DataFrame] = []
        self.columns: list[Issue] = []  # problems of a whole column

    def add(self, df: pl.DataFrame, mask, column: str, reason) -> None:
        """Rows of ``df`` where ``mask`` holds; ``reason`` text or an expression giving it."""
        if isinstance(mask, pl.Expr):
            mask = df.select(mask.fill_null(False)).to_series()
        if not mask.any():  # the usual case: an aggregate, no filtered copy of the chunk
            return
        bad = df.filter(mask)
        reason_expr = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
        self.frames.append(bad.select(pl.col("_row").alias("row"), pl.lit(column).alias("column"),
                                      reason_expr.cast(pl.String).alias("reason")))

    def rows(self) -> np.ndarray:
        if not self.frames:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([f["row"].to_numpy() for f in self.frames]))

    def to_list(self) -> list[Issue]:
        found = list(self.columns)
        if self.frames:
            frame = pl.concat(self.frames).sort("row", maintain_order=True)
            found.extend(Issue(r, c, m) for r, c, m in frame.iter_rows())
        return found
