"""Where each table's Delta log is listed from: a recent checkpoint version per table, kept in
``instance.json`` under ``log_hints`` (``{"core.record": 1200}``).

Why: the log reader lists a log in one request while it fits one S3 LIST page (1000 names:
about 500 versions, each a commit and its checkpoint); a longer log cost the first process on
a machine two requests more, ``_last_checkpoint`` and a second LIST (delta_log.py). Every
process reads ``instance.json`` at connect anyway, so a checkpoint named there is where its
one LIST starts: a table of thousands of commits costs what a new one does.

The store that has just written a checkpoint HINT_STEP versions past its table's hint moves
the hint there (once every few hundred commits of a table): one PUT of ``instance.json``,
on the checkpoint thread, conditional on the ETag the file was read with, so a change another
writer made meanwhile is never overwritten. When there was one, the file is read again and
the PUT tried once more; after that the move is skipped. A hint is only where a listing
starts: a reader that finds no checkpoint after it (a table made again) lists the log from
its start, one that finds more than a page (a stale hint) asks ``_last_checkpoint``.

Only on S3. A local folder is listed whole in one call; on GCS the reader lists the whole log
folder anyway (gcsfs's listing takes no start offset), so a hint would save nothing there.
"""

from __future__ import annotations

import json
import logging
import threading

from .location import Location

logger = logging.getLogger("lamina")

HINTS_KEY = "log_hints"
# Versions a checkpoint must be past a table's hint to move it. The log after a hint holds up
# to two names a version, 600 when the hint moves: within one LIST page (location.S3_LIST_PAGE,
# 1000) with 200 versions to spare for a move that was skipped. A table that never reaches it
# has no hint and costs no PUT.
HINT_STEP = 300
# A conditional PUT that lost to another writer is tried again once, on the file read again.
ATTEMPTS = 2


class LogHints:
    """The log hints of one instance, as this process last read or wrote ``instance.json``
    (at ``path``); ``tag`` is the ETag it was read with (None: not known, read it before the
    first move). Thread-safe."""

    def __init__(self, location: Location, path: str, meta: dict, tag: str | None):
        self.location = location
        self.path = path
        self._meta = meta
        self._tag = tag
        # Only a file of the format this process read is rewritten.
        self._format = meta.get("format", 1)
        self._writable = location.type == "s3"
        self._lock = threading.Lock()

    def start(self, table: str) -> int | None:
        """The checkpoint version the log of ``table`` (a qualified name) may be listed from;
        None when there is none."""
        return _hint(self._meta, table)

    def advance(self, table: str, checkpoint: int) -> None:
        """Note that ``table``'s log has a checkpoint at version ``checkpoint``: the hint moves
        there when it is HINT_STEP versions past it (otherwise nothing, no request). A store
        that cannot move it (the file is gone, writes are refused) logs why and stops trying in
        this process: readers are as right without it, at two requests more."""
        if not self._writable or not _due(self._meta, table, checkpoint):
            return
        from obstore.exceptions import BaseError

        with self._lock:
            try:
                self._move(table, checkpoint)
            except (OSError, ValueError, BaseError) as exc:
                self._writable = False
                logger.warning("the log hint of %s in %s was not moved: %s", table, self.path,
                               exc)

    def _move(self, table: str, checkpoint: int) -> None:
        for _ in range(ATTEMPTS):
            if self._tag is None:
                blob, tag = self.location.read_tagged(self.path)
                meta = json.loads(blob)
                if not isinstance(meta, dict):
                    raise ValueError(f"{self.path} holds no JSON object")
                self._meta, self._tag = meta, tag
            if (self._meta.get("format", 1) != self._format
                    or not _due(self._meta, table, checkpoint)):
                return  # another writer moved it, or a newer lamina rewrote the file
            kept = self._meta.get(HINTS_KEY)
            hints = {**(kept if isinstance(kept, dict) else {}), table: checkpoint}
            meta = {**self._meta, HINTS_KEY: hints}
            tag = self.location.replace_if_unchanged(
                self.path, json.dumps(meta, indent=2).encode(), self._tag)
            if tag is not None:
                self._meta, self._tag = meta, tag
                return
            self._tag = None  # replaced by another writer since it was read
        logger.info("the log hint of %s was not moved: instance.json kept changing", table)


def _hint(meta: dict, table: str) -> int | None:
    hints = meta.get(HINTS_KEY)
    found = hints.get(table) if isinstance(hints, dict) else None
    return found if type(found) is int and found >= 0 else None


def _due(meta: dict, table: str, checkpoint: int) -> bool:
    """Whether a checkpoint at version ``checkpoint`` moves ``table``'s hint in ``meta``."""
    hint = _hint(meta, table)
    return checkpoint - (-1 if hint is None else hint) >= HINT_STEP
