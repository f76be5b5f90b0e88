"""DuckDB extensions shipped in PyPI packages (``INSTALL`` cannot reach the internet).

Below both ``engine/`` (httpfs for object stores) and ``search/`` (fts), which load them."""

from __future__ import annotations

import glob
import os


def extension_path(package: str) -> str:
    """The extension file inside the PyPI package ``package`` (e.g. duckdb_extension_fts)."""
    module = __import__(package)
    found = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*",
                                   "*.duckdb_extension"))
    if not found:
        raise RuntimeError(f"{package} ships no DuckDB extension; reinstall it")
    return found[0]


def load_statement(package: str) -> str:
    """``LOAD '<path>'`` for the extension of ``package``, its path quoted as a SQL literal."""
    return "LOAD '" + extension_path(package).replace("'", "''") + "'"
