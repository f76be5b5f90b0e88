"""lamina: a data catalog whose registries live as Delta tables inside your storage root.

    import lamina as ln
    ln.init(storage="./mydata")
    ln.Artifact("data.csv", key="raw/data.csv").save()
    ln.Artifact.filter(suffix=".csv").to_dataframe()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (DoesNotExist, FieldError, InstanceError, InvalidPath, LaminaError,
                     MultipleResultsFound, PermissionDenied, ValidationError)

if TYPE_CHECKING:
    from . import bionty, examples
    from .catalog.instance import connect, current, init
    from .engine.filter_tree import Q
    from .models import (Artifact, Branch, Collection, Feature, Project, Record, Run, Schema,
                         Space, Storage, Transform, ULabel, User)
    from .models.lineage import finish, track
    from .models.maintenance import gc
    from .models.overview import history, sql, view
    from .models.saving import save
    from .models.settings import settings

# Every other public name, and the module that defines it. `import lamina` loads none of them:
# the registries pull in pyarrow, DuckDB and deltalake (~0.3 s of CPU), pandas and Polars more,
# and a script's first call needs only some of these. A name is imported when first used.
_LAZY_NAMES = {
    **dict.fromkeys(["bionty", "examples"], ""),
    **dict.fromkeys(["connect", "current", "init"], ".catalog.instance"),
    "Q": ".engine.filter_tree",
    **dict.fromkeys(["Artifact", "Branch", "Collection", "Feature", "Project", "Record", "Run",
                     "Schema", "Space", "Storage", "Transform", "ULabel", "User"], ".models"),
    **dict.fromkeys(["finish", "track"], ".models.lineage"),
    "gc": ".models.maintenance",
    **dict.fromkeys(["history", "sql", "view"], ".models.overview"),
    "save": ".models.saving",
    "settings": ".models.settings",
}

__all__ = [
    "Artifact", "Branch", "Collection", "DoesNotExist", "Feature", "FieldError", "InstanceError",
    "InvalidPath", "LaminaError", "MultipleResultsFound", "PermissionDenied", "Project", "Q",
    "Record", "Run", "Schema", "Space", "Storage", "Transform", "ULabel", "User",
    "ValidationError", "bionty", "connect", "current", "examples", "finish", "gc", "history",
    "init", "save", "settings", "sql", "track", "view",
]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("lamina")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            value = "0.0.0+unknown"
    elif name in _LAZY_NAMES:
        source = _LAZY_NAMES[name]
        value = (importlib.import_module(f".{name}", __name__) if not source
                 else getattr(importlib.import_module(source, __name__), name))
    else:
        raise AttributeError(f"module 'lamina' has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})
