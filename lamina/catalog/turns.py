"""Writers of one table taking turns instead of racing for the next version.

Correctness never depends on a turn: every commit is put-if-absent at exactly the next Delta
version, and a writer that loses re-plans on the newer snapshot. Turns are about time. Racing
writers each plan and write a data file for a version only one of them gets; on an object store
every lost attempt costs its round trips again, and a compaction that loses rewrites every small
file again (8 writers on loopback S3, racing: p99 save 27 s, 119 lost races in 327 attempts;
bench/README.md, "Racing writers").

- On a local root, writers on this machine hold an flock on ``.lamina/locks/<table>.lock``
  from reading the snapshot to the commit (:class:`MachineTurn`).
- On S3, a table has a lease: the object ``.lamina/locks/<table>.lease``, created with
  put-if-absent (``If-None-Match: *``) and deleted when done (:class:`Lease`). A lease older
  than ``LEASE_SECONDS`` (by the store's clock: its ``Last-Modified`` against the ``Date`` of
  the answer) belongs to a writer that died or stalled; it is removed, with ``If-Match`` on its
  ETag so a lease taken meanwhile by someone else stays.

Who holds the lease on S3: a compaction (two never merge the same files at once), and a writer
that lost the commit race twice (store.TURN_AFTER_LOSSES). Other writers race as before, except
that a first attempt on a table other writers committed to lately checks the lease with one
HEAD, issued while its rows are encoded (:func:`lease_taken`), and, while it is held, gives
way before uploading anything (:class:`TurnTaken`) and waits for the release
(:func:`wait_for_turn`), polling less often the longer it waits. Racing alone let a
writer that lost keep losing to writers that had just committed (8 writers × 25 saves: up to 24
losses in a row, a 15.7 s save); a lease for every writer that lost lately queued everyone
behind it (p99 28-34 s, bench/foundation_latency_runs/6-7). Figures: bench/README.md, "Save
latency of racing writers".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import parsedate_to_datetime

from .location import Location

LOCKS_DIR = ".lamina/locks"
# A lease older than this is taken to be a dead writer's: a compaction of 32 small files
# holds it for well under a second on loopback S3 (a few seconds on a machine at load 15).
LEASE_SECONDS = 5.0
# Waiters try to create the lease about this often (jittered, so they do not come in step),
# more often the longer they have waited (down to MIN_POLL_SECONDS): the longest waiter tends
# to be the next holder.
POLL_SECONDS = 0.05
MIN_POLL_SECONDS = 0.01
# A writer that gave way polls for the release every POLL_SECONDS at first, each poll this much
# later than the one before, up to MAX_WAIT_POLL_SECONDS.
WAIT_POLL_GROWTH = 1.5
MAX_WAIT_POLL_SECONDS = 0.25


def turn_for(location: Location, qualified: str):
    """The context in which one writer of table ``qualified`` makes one attempt at a commit:
    the machine's flock on a local root, nothing elsewhere."""
    if location.is_local:
        path = location.join(LOCKS_DIR, f"{qualified}.lock")
        with _REGISTRY_LOCK:
            turn = _MACHINE_TURNS.setdefault(path, MachineTurn(path))
        return turn.held()
    return contextlib.nullcontext()


def lease_for(location: Location, qualified: str):
    """The table's lease on S3 (held by a compaction, and by a writer that lost the race);
    nothing elsewhere."""
    if location.type == "s3":
        return Lease(location, _lease_uri(location, qualified)).held()
    return contextlib.nullcontext()


def lease_taken(location: Location, qualified: str) -> Future | None:
    """Whether another writer holds the table's lease (a future: one HEAD, issued while the
    caller encodes its data file); None where there is no lease."""
    if location.type != "s3":
        return None
    return _CHECKS.submit(Lease(location, _lease_uri(location, qualified)).is_held)


def wait_for_turn(location: Location, qualified: str) -> None:
    """Wait until the table's lease, which another writer holds, is released (or expired)."""
    if location.type == "s3":
        Lease(location, _lease_uri(location, qualified)).wait_released()


class TurnTaken(Exception):
    """Another writer holds the table's turn: a first attempt yields to it instead of racing."""


def _lease_uri(location: Location, qualified: str) -> str:
    return location.join(LOCKS_DIR, f"{qualified}.lease")


# A few threads for the lease checks that run beside a save's encoding of its rows.
_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lamina-turn")


class MachineTurn:
    """One lock file's flock, shared by the threads and stores of this process: re-entrant
    (a thread that holds it may commit again), and taken from the OS once per process (a
    second ``open`` of the same file would wait for the first)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._handle = None

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._depth == 0:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._handle = open(self.path, "a")
                fcntl.flock(self._handle, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._handle, fcntl.LOCK_UN)
                    self._handle.close()
                    self._handle = None


_MACHINE_TURNS: dict[str, MachineTurn] = {}
_REGISTRY_LOCK = threading.Lock()


class Lease:
    """A table's lease object on S3 (see the module docstring)."""

    def __init__(self, location: Location, uri: str):
        self.location = location
        self.uri = uri
        self.bucket, _, self.key = uri.split("://", 1)[1].partition("/")

    @contextlib.contextmanager
    def held(self):
        etag = self.acquire()
        try:
            yield
        finally:
            self.release(etag)

    def acquire(self) -> str:
        """Wait until this process holds the lease; its ETag."""
        fs = self.location.fs
        body = json.dumps({"holder": f"{os.getpid()}-{uuid.uuid4().hex[:8]}",
                           "expires_after_seconds": LEASE_SECONDS}).encode()
        started = time.monotonic()
        next_age_check = started + LEASE_SECONDS
        while True:
            try:
                answer = fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body,
                                    IfNoneMatch="*")
                return answer["ETag"]
            except FileExistsError:
                pass
            except OSError as exc:  # s3fs names a 412 without its condition an OSError
                if "PreconditionFailed" not in str(exc) and "412" not in str(exc):
                    raise
            if time.monotonic() >= next_age_check:
                next_age_check = time.monotonic() + LEASE_SECONDS
                if self._remove_if_expired():
                    continue
            waited = time.monotonic() - started
            time.sleep(max(MIN_POLL_SECONDS,
                           random.uniform(0.5, 1.5) * POLL_SECONDS / (1 + waited)))

    def wait_released(self) -> None:
        """Wait while the lease is held (polling; an expired one is removed). The polls
        spread out the longer the wait: a turn that lasts is one with writers queued for it,
        whose polls would cost the store CPU that the holder's commit needs."""
        started = time.monotonic()
        next_age_check = started + LEASE_SECONDS
        interval = POLL_SECONDS
        while self.is_held():
            if time.monotonic() >= next_age_check:
                next_age_check = time.monotonic() + LEASE_SECONDS
                if self._remove_if_expired():
                    return
            time.sleep(random.uniform(0.5, 1.5) * interval)
            interval = min(interval * WAIT_POLL_GROWTH, MAX_WAIT_POLL_SECONDS)

    def is_held(self) -> bool:
        """Whether the lease object exists (held, or left by a writer that died: whoever waits
        for it removes it once it is older than LEASE_SECONDS)."""
        try:
            self.location.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return False
        return True

    def release(self, etag: str) -> None:
        """Remove our lease (not one another writer took after ours expired)."""
        self._delete(etag)

    def _remove_if_expired(self) -> bool:
        try:
            head = self.location.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return True  # released meanwhile
        date = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else None
        if now is None or (now - head["LastModified"]).total_seconds() <= LEASE_SECONDS:
            return False
        self._delete(head["ETag"])
        return True

    def _delete(self, etag: str) -> None:
        try:
            self.location.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key,
                                     IfMatch=etag)
        except OSError:  # gone, or replaced by another writer's lease: theirs stays
            pass
