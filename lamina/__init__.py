"""lamina: a data catalog whose registries live as Delta tables inside your storage root.

    import lamina as ln
    ln.init(storage="./mydata")
    ln.Artifact("data.csv", key="raw/data.csv").save()
    ln.Artifact.filter(suffix=".csv").to_dataframe()
"""

from __future__ import annotations

from . import bionty, examples
from .catalog.instance import connect, current, init
from .engine.planner import Q
from .errors import (DoesNotExist, FieldError, InstanceError, InvalidPath, LaminaError,
                     MultipleResultsFound, PermissionDenied, ValidationError)
from .models.lineage import finish, track
from .models.maintenance import gc
from .models.overview import history, sql, view
from .models.settings import settings
from .models import (Artifact, Branch, Collection, Feature, Project, Record, Run, Schema, Space,
                     Storage, Transform, ULabel, User)

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("lamina")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Artifact", "Branch", "Collection", "DoesNotExist", "Feature", "FieldError", "InstanceError",
    "InvalidPath", "LaminaError", "MultipleResultsFound", "PermissionDenied", "Project", "Q",
    "Record", "Run", "Schema", "Space", "Storage", "Transform", "ULabel", "User",
    "ValidationError", "bionty", "connect", "current", "examples", "finish", "gc", "history",
    "init", "save", "settings", "sql", "track", "view",
]


def __getattr__(name: str):
    # Bulk saving pulls in Polars; import it when first used, not with every `import lamina`.
    if name == "save":
        from .models.saving import save

        return save
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")
