"""When the store compacts a table, and which of its files a compaction merges
(the merge itself is :meth:`TableStore.compact`, committed in the table's turn)."""

from __future__ import annotations

import re

from .delta_log import LogState

# Compaction merges small files once a table has this many; readers keep their snapshot.
COMPACT_AFTER_FILES = 32
# Only the commit that brings the count to the threshold, or to one of every this many files
# past it, compacts: one writer does it instead of every racing writer after every commit
# (8 writers on a local root: p99 save 4.4 s when all of them tried; bench/README.md).
COMPACT_RETRY_FILES = 8
# Commits a compaction may lose to other writers' appends before it gives up this round.
COMMIT_ATTEMPTS = 5
# Files below this size are merged by compaction (a one-row commit writes a few KB)...
SMALL_FILE_BYTES = 16 * 2**20
# ... provided each is at most this many times the size of the smaller files merged with it
# (small_files).
MERGE_RATIO = 2
# Paths a compaction may merge: characters the log never percent-encodes.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._-]+")


def due(n_files: int) -> bool:
    """Whether the commit that left the table with ``n_files`` data files compacts it."""
    return n_files >= COMPACT_AFTER_FILES and (
        n_files - COMPACT_AFTER_FILES) % COMPACT_RETRY_FILES == 0


def small_files(state: LogState) -> dict[str, int]:
    """The data files of ``state`` a compaction merges: path relative to the table, as its
    log names it, and size. Files below SMALL_FILE_BYTES, smallest first, each at most
    MERGE_RATIO times the size of the smaller ones merged with it, so a large file is
    rewritten only once the small files have grown comparable to it (each row is rewritten
    a logarithmic number of times). Paths with characters that the log would percent-encode
    (partition folders; never lamina's own names) are left out.

    Why: merging every file below SMALL_FILE_BYTES rewrote the 11 MB file of a 1e5-artifact
    catalog (and every chunk of one ingested in chunks) each time 32 one-row saves had
    gathered: ~1.3 s of CPU, ~40 ms per save on average (bench/README.md, "Saves")."""
    small = sorted((f.size, path) for path, f in state.files.items()
                   if f.size < SMALL_FILE_BYTES and _PLAIN_PATH.fullmatch(path))
    merged: dict[str, int] = {}
    total = 0
    for size, path in small:
        if merged and size > MERGE_RATIO * total:
            break
        merged[path] = size
        total += size
    return merged
