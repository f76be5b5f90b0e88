"""Core registries, with the fields and column order the seed system prints."""

from __future__ import annotations

from .spec import BOOL, DATE, DATETIME, INT, STR, Column, ForeignKey, ManyToMany, table

RECORD_BOOKKEEPING = (
    ForeignKey("branch", "core.branch"),
    ForeignKey("created_on", "core.branch"),
    ForeignKey("space", "core.space"),
    ForeignKey("created_by", "core.user", "created_{plural}"),
    ForeignKey("run", "core.run"),
)


def _bookkeeping(*names: str) -> list[tuple[str, object]]:
    types = {"is_locked": BOOL, "created_at": DATETIME}
    return [(n, types.get(n, INT)) for n in names]


USER = table(
    "core", "user", "User",
    [("uid", STR), ("handle", STR), ("name", STR), ("created_at", DATETIME)],
    uid_length=8, name_field="handle", search_fields=("handle", "name"), has_branch=False,
)

SPACE = table(
    "core", "space", "Space",
    [("uid", STR), ("name", STR), ("description", STR), ("created_at", DATETIME), ("created_by_id", INT)],
    foreign_keys=(ForeignKey("created_by", "core.user"),),
    uid_length=12, search_fields=("name", "description"), has_branch=False,
)

BRANCH = table(
    "core", "branch", "Branch",
    [("uid", STR), ("name", STR), ("description", STR), ("created_at", DATETIME), ("created_by_id", INT)],
    foreign_keys=(ForeignKey("created_by", "core.user"),),
    uid_length=12, search_fields=("name", "description"), has_branch=False,
)

STORAGE = table(
    "core", "storage", "Storage",
    [("uid", STR), ("root", STR), ("description", STR), ("type", STR), ("region", STR),
     ("instance_uid", STR),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "created_by_id", "run_id")],
    foreign_keys=RECORD_BOOKKEEPING,
    uid_length=12, name_field="root", search_fields=("root", "description"),
)

TRANSFORM = table(
    "core", "transform", "Transform",
    [("uid", STR), ("key", STR), ("description", STR), ("kind", STR), ("source_code", STR),
     ("hash", STR), ("reference", STR), ("reference_type", STR), ("version_tag", STR),
     ("is_latest", BOOL),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "environment_id", "plan_id", "created_by_id")],
    foreign_keys=(
        *[fk for fk in RECORD_BOOKKEEPING if fk.name != "run"],
        ForeignKey("environment", "core.artifact"),
        ForeignKey("plan", "core.artifact"),
    ),
    uid_length=16, name_field="key", search_fields=("key", "description"),
)

RUN = table(
    "core", "run", "Run",
    [("uid", STR), ("name", STR), ("entrypoint", STR), ("started_at", DATETIME),
     ("finished_at", DATETIME), ("reference", STR), ("reference_type", STR), ("cli_args", STR),
     ("is_locked", BOOL), ("created_at", DATETIME), ("branch_id", INT), ("created_on_id", INT),
     ("space_id", INT), ("transform_id", INT), ("report_id", INT), ("environment_id", INT),
     ("initiated_by_run_id", INT), ("created_by_id", INT)],
    foreign_keys=(
        *[fk for fk in RECORD_BOOKKEEPING if fk.name != "run"],
        ForeignKey("transform", "core.transform", "runs"),
        ForeignKey("report", "core.artifact"),
        ForeignKey("environment", "core.artifact"),
        ForeignKey("initiated_by_run", "core.run", "initiated_runs"),
    ),
    many_to_many=(ManyToMany("input_artifacts", "core.artifact", "input_of_runs"),),
    hidden=(Column("params", STR, display=False, json=True),),
    uid_length=20, search_fields=("name", "entrypoint"), has_features=True,
)

ARTIFACT = table(
    "core", "artifact", "Artifact",
    [("uid", STR), ("key", STR), ("description", STR), ("suffix", STR), ("kind", STR),
     ("otype", STR), ("size", INT), ("hash", STR), ("n_files", INT), ("n_observations", INT),
     ("version_tag", STR), ("is_latest", BOOL),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "storage_id", "run_id", "schema_id", "created_by_id")],
    foreign_keys=(
        *RECORD_BOOKKEEPING[:3],
        ForeignKey("storage", "core.storage", "artifacts"),
        ForeignKey("run", "core.run", "output_artifacts"),
        ForeignKey("schema", "core.schema", "validated_artifacts"),
        ForeignKey("created_by", "core.user", "created_artifacts"),
    ),
    many_to_many=(
        ManyToMany("records", "core.record", "artifacts"),
        ManyToMany("ulabels", "core.ulabel", "artifacts"),
        ManyToMany("schemas", "core.schema", "artifacts"),
        ManyToMany("projects", "core.project", "artifacts"),
        ManyToMany("genes", "bionty.gene", "artifacts"),
        ManyToMany("organisms", "bionty.organism", "artifacts"),
        ManyToMany("cell_types", "bionty.celltype", "artifacts"),
        ManyToMany("tissues", "bionty.tissue", "artifacts"),
        ManyToMany("diseases", "bionty.disease", "artifacts"),
        ManyToMany("proteins", "bionty.protein", "artifacts"),
        ManyToMany("cell_lines", "bionty.cellline", "artifacts"),
        ManyToMany("cell_markers", "bionty.cellmarker", "artifacts"),
        ManyToMany("phenotypes", "bionty.phenotype", "artifacts"),
        ManyToMany("pathways", "bionty.pathway", "artifacts"),
        ManyToMany("experimental_factors", "bionty.experimentalfactor", "artifacts"),
        ManyToMany("developmental_stages", "bionty.developmentalstage", "artifacts"),
        ManyToMany("ethnicities", "bionty.ethnicity", "artifacts"),
    ),
    # Where a file linked in place lives, relative to its storage root (LaminDB's _real_key);
    # None for files lamina manages at .lamina/objects/<uid><suffix>.
    hidden=(Column("_real_key", STR, display=False),),
    uid_length=20, name_field="key", search_fields=("key", "description", "suffix"),
    has_features=True,
)

COLLECTION = table(
    "core", "collection", "Collection",
    [("uid", STR), ("key", STR), ("description", STR), ("hash", STR), ("reference", STR),
     ("reference_type", STR), ("version_tag", STR), ("is_latest", BOOL),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "meta_artifact_id", "run_id", "created_by_id")],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("meta_artifact", "core.artifact")),
    many_to_many=(ManyToMany("artifacts", "core.artifact", "collections"),),
    uid_length=20, name_field="key", search_fields=("key", "description"),
)

RECORD = table(
    "core", "record", "Record",
    [("uid", STR), ("name", STR), ("description", STR), ("reference", STR),
     ("reference_type", STR), ("extra_data", STR), ("is_locked", BOOL), ("is_type", BOOL),
     *_bookkeeping("created_at", "branch_id", "created_on_id", "space_id", "created_by_id",
                   "type_id", "schema_id", "run_id")],
    foreign_keys=(
        *RECORD_BOOKKEEPING,
        ForeignKey("type", "core.record", "records"),
        ForeignKey("schema", "core.schema"),
    ),
    uid_length=16, search_fields=("name", "description"), has_features=True,
)

ULABEL = table(
    "core", "ulabel", "ULabel",
    [("uid", STR), ("name", STR), ("is_type", BOOL), ("description", STR), ("reference", STR),
     ("reference_type", STR),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "created_by_id", "type_id", "run_id")],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("type", "core.ulabel", "ulabels")),
    uid_length=16, search_fields=("name", "description"),
)

FEATURE = table(
    "core", "feature", "Feature",
    [("uid", STR), ("name", STR), ("_dtype_str", STR), ("unit", STR), ("description", STR),
     ("array_rank", INT), ("array_size", INT), ("array_shape", STR), ("synonyms", STR),
     ("default_value", STR), ("nullable", BOOL), ("coerce", BOOL), ("is_locked", BOOL),
     ("is_type", BOOL),
     *_bookkeeping("created_at", "branch_id", "created_on_id", "space_id", "created_by_id",
                   "run_id", "type_id")],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("type", "core.feature", "features")),
    uid_length=12, search_fields=("name", "synonyms", "description"),
)

SCHEMA = table(
    "core", "schema", "Schema",
    [("uid", STR), ("name", STR), ("description", STR), ("n_members", INT), ("coerce", BOOL),
     ("flexible", BOOL), ("itype", STR), ("otype", STR), ("hash", STR), ("minimal_set", BOOL),
     ("ordered_set", BOOL), ("maximal_set", BOOL), ("is_locked", BOOL), ("is_type", BOOL),
     *_bookkeeping("created_at", "branch_id", "created_on_id", "space_id", "created_by_id",
                   "run_id", "type_id")],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("type", "core.schema", "schemas")),
    many_to_many=(
        ManyToMany("features", "core.feature", "schemas"),
        ManyToMany("genes", "bionty.gene", "schemas"),
        ManyToMany("components", "core.schema", "composites"),
    ),
    # {slot name: component schema id} of a composite schema (AnnData obs / var).
    hidden=(Column("slots", STR, display=False, json=True),),
    uid_length=16, search_fields=("name", "description", "itype"),
)

PROJECT = table(
    "core", "project", "Project",
    [("uid", STR), ("name", STR), ("is_type", BOOL), ("abbr", STR), ("url", STR),
     ("start_date", DATE), ("end_date", DATE),
     *_bookkeeping("is_locked", "created_at", "branch_id", "created_on_id", "space_id",
                   "created_by_id", "run_id", "type_id")],
    foreign_keys=(*RECORD_BOOKKEEPING, ForeignKey("type", "core.project", "projects")),
    uid_length=12, search_fields=("name", "abbr"),
)

TABLES = (USER, SPACE, BRANCH, STORAGE, TRANSFORM, RUN, ARTIFACT, COLLECTION, RECORD, ULABEL,
          FEATURE, SCHEMA, PROJECT)
