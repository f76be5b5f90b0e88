"""Arrow results as pandas DataFrames that look the same on pandas 2 and 3.

pandas 3 turns text into its ``str`` dtype, where a missing value is NaN; pandas 2 keeps text in
object columns holding ``None``. lamina's frames keep the pandas 2 shape on both, so code that
checks ``is None`` (as the seed guide does) works whichever pandas is installed."""

from __future__ import annotations

import functools
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a DataFrame is built, not when lamina.engine loads
    import pandas as pd
    import pyarrow as pa


def to_pandas(table: pa.Table, index: str | None = None) -> pd.DataFrame:
    """``table`` as a DataFrame; ``index``: that column as its index. Why not
    ``set_index``: it copies every other column (half the conversion of a 100-row display,
    ~0.5 ms)."""
    if index is None:
        return plain_text(table.to_pandas())
    import pandas as pd

    frame = plain_text(table.drop_columns([index]).to_pandas())
    frame.index = pd.Index(table.column(index).to_numpy(), name=index)
    return frame


def plain_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text columns as object columns holding str or None (in place)."""
    import pandas as pd

    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.StringDtype):
            column = frame[name]
            frame[name] = column.astype(object).where(column.notna(), None)
    return frame


@functools.lru_cache(maxsize=1)
def import_pandas_meanwhile() -> None:
    """Start importing pandas on another thread (once per process).

    Why: DuckDB 1.5 imports pandas itself when it binds the first parameter of a process (it
    tests each value against ``pandas.NaT``; binding ints, strs or ``duckdb.Value`` objects
    alike), so a first query pays ~0.3 s of CPU for pandas whatever lamina imports. Begun when
    a session opens, the import overlaps the first call's object-store round trips and DuckDB
    work, which run without the GIL. Not a daemon thread: a process that ends sooner waits for
    the import to finish rather than being torn down in the middle of it."""
    if "pandas" in sys.modules:
        return

    def load() -> None:
        try:
            import pandas  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency; DuckDB then goes without
            pass

    threading.Thread(target=load, name="lamina-import-pandas").start()
