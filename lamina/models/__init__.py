from .artifact import Artifact
from .base import MODELS, SQLRecord, model_for
from .registries import (Branch, Collection, Feature, Project, Record, Run, Schema, Space,
                         Storage, Transform, ULabel, User)

__all__ = ["Artifact", "Branch", "Collection", "Feature", "MODELS", "Project", "Record", "Run",
           "SQLRecord", "Schema", "Space", "Storage", "Transform", "ULabel", "User", "model_for"]
