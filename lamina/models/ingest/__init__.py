"""Bulk ingestion: register a whole atlas of files with their metadata in a few commits.

    batch = ln.Artifact.from_manifest("manifest.parquet", create_labels=True)
    len(batch); batch.to_dataframe(); batch.validate()
    report = ln.save(batch)          # or batch.save()

A manifest holds one row per file: a ``path`` column, an optional ``key`` column, artifact fields
(``description``, ``kind``, ``otype``, ``n_observations``, ``version_tag``, and ``size`` /
``hash`` when they are already known) and one column per feature. An annotated artifact is one
row of the artifact table (feature values are typed columns ``f_<id>``, label links are list
columns), so a chunk of ``chunk_size`` rows lands in exactly one commit.

How a save runs:

1. **Validate** (pass 1, streaming the manifest chunk by chunk). Everything is checked with
   vectorised Arrow/Polars expressions, never row by row in Python: paths (scheme, inside a
   registered storage root or not, present on disk / in the bucket listing), keys (safe, unique
   in the manifest, ending with the file's suffix), artifact fields and feature values against
   their dtypes. Categorical names are resolved with one read per label registry (only names
   not seen before in this batch are asked for). Each problem is an :class:`Issue` with its row
   (0-based position in the manifest) and column. With ``on_error="raise"`` (the default) a
   single invalid row stops the save before anything is written.
2. **Labels**: with ``create_labels=True`` the missing labels are created first, one commit per
   registry (Records of the feature's Record type; bionty terms through the registry's
   ``from_values``, i.e. validated against the offline ontology), so no artifact row can point
   at a label that is not there.
3. **Per chunk** (pass 2): local files are hashed in parallel threads (LaminDB's hash rule);
   rows whose ``(hash, key)`` is already in the catalog are reported as existing and skipped;
   local files outside every registered storage root are copied into managed storage
   concurrently; files under a registered root (local or ``s3://``) are linked in place, and on
   object stores their size and hash come from the listing (the ETag, LaminDB's rule), so their
   bytes are never read. Then the chunk is one commit through the write layer
   (``writer.transact``): ids from ``snapshot.next_id``, feature columns declared via
   ``new_columns``, the many-to-many label lists (``records``, ``cell_types``, ...) filled
   like ``FeatureManager._write`` does.

Resuming: a copied file's uid (and so its object key) is derived from its hash, key and storage,
so a rerun after a crash finds the objects that were uploaded without a row and reuses them
instead of uploading again; committed chunks are found by ``(hash, key)`` and skipped. A chunk
is one Delta commit, so readers see none or all of it, and an interrupted run leaves a valid
catalog.

Identity: a row is *existing* when an artifact with the same hash and the same key (both null
counts as the same) is in the catalog, on any branch (a trashed one counts: restore it).
The same content under another key is a new artifact. A key already used by an artifact of
other content is a new artifact too (bulk ingestion does not create version families).

The phases, one module each: ``manifest`` (reading it in chunks), ``context`` (what its columns
are), ``prepare`` (one chunk normalised), ``encode`` (feature values), ``labels`` (label names to
ids), ``staging`` (stat, hash, copy files), ``commit`` (rows through the write layer),
``report`` (issues and the report) and ``batch`` (the phases in order).
"""

from __future__ import annotations

from ...catalog.objects import hash_from_listing
from ..labels import create_labels, labels_from_values
from .batch import DEFAULT_CHUNK_SIZE, IngestBatch, from_dir, from_manifest
from .manifest import manifest_of_dir
from .report import IngestError, IngestReport, Issue
from .staging import LOCAL_COPY_THREADS, UPLOAD_THREADS, copy_uid

__all__ = ["DEFAULT_CHUNK_SIZE", "IngestBatch", "IngestError", "IngestReport", "Issue",
           "LOCAL_COPY_THREADS", "UPLOAD_THREADS", "copy_uid", "create_labels", "from_dir",
           "from_manifest", "hash_from_listing", "labels_from_values", "manifest_of_dir"]
