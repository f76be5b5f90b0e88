"""Looking at a whole instance: ``ln.view()``, ``ln.sql()`` and ``ln.history()``."""

from __future__ import annotations

import pandas as pd

from .. import log
from ..catalog.history import commits
from ..catalog.instance import current
from ..engine.frames import to_pandas
from ..engine.session import session_for
from .base import model_for

# Bookkeeping registries the overview leaves out, as the seed system does.
HIDDEN = {"core.user", "core.space", "core.branch"}


def view(df: pd.DataFrame | None = None, limit: int = 7,
         modules: list[str] | None = None) -> None:
    """Print the newest rows of every non-empty registry, module by module; or, given a
    DataFrame (``ln.view(ln.Artifact.to_dataframe(features=True))``), that frame with each
    column's dtype under its name."""
    if df is not None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"ln.view() takes a pandas DataFrame or nothing, got "
                            f"{type(df).__name__}; the row limit is ln.view(limit=...)")
        annotated = df.copy(deep=False)
        annotated.columns = pd.MultiIndex.from_arrays(
            [[str(c) for c in df.columns], [str(t) for t in df.dtypes]])
        with pd.option_context("display.max_columns", 20, "display.width", 250):
            print(annotated)
        return
    instance = current()
    names = modules or ["core", *instance.modules]
    with pd.option_context("display.max_columns", 20, "display.width", 250):
        for module in names:
            specs = sorted((s for s in instance.table_specs()
                            if s.module == module and s.qualified not in HIDDEN),
                           key=lambda s: s.model)
            banner = "*" * (len(module) + 12)
            print(f"{banner}\n* module: {module} *\n{banner}")
            for spec in specs:
                qs = model_for(spec).filter()
                count = qs.count()
                if not count:
                    continue
                if count > limit:
                    log.warning(f"truncated query result to limit={limit} {spec.model} objects")
                print(spec.model)
                print(qs.to_dataframe(limit=limit))


def sql(query: str, params: list | None = None, *, polars: bool = False):
    """Run a read-only SQL query over the registries (tables named like ``artifact``,
    ``record``, ``bionty_gene``); a pandas DataFrame, or Polars with ``polars=True``."""
    table = session_for(current()).read_only(query, params)
    if polars:
        import polars as pl

        return pl.from_arrow(table)
    return to_pandas(table)


def history(limit: int | None = None) -> pd.DataFrame:
    """The catalog's commits, newest first: ``commit`` (its number, for
    ``ln.connect(root, as_of=commit)``), ``time`` (UTC), ``table``, ``version`` (of that
    table), ``user``, ``operation`` (create, insert, update, delete, compact) and ``rows``
    (rows written or deleted)."""
    rows = commits(current())[::-1][:limit]
    columns = ["commit", "time", "table", "version", "user", "operation", "rows"]
    frame = pd.DataFrame([{c: row[c] for c in columns} for row in rows], columns=columns)
    return frame.set_index("commit")
