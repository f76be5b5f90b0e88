"""Writers of one table taking turns instead of racing for the next version.

Correctness never depends on a turn: every commit is put-if-absent at exactly the next Delta
version, and a writer that loses re-plans on the newer snapshot. Turns are about time. Racing
writers each plan and write a data file for a version only one of them gets; on an object store
every lost attempt costs its round trips again, and a compaction that loses rewrites every small
file again (8 writers on loopback S3, racing: p99 save 27 s, 119 lost races in 327 attempts;
bench/README.md, "Racing writers").

- On a local root, writers on this machine hold an flock on ``.lamina/locks/<table>.lock``
  from reading the snapshot to the commit (:class:`MachineTurn`).
- On S3, a table's turn is a queue (:class:`TurnQueue`): a writer that wants the turn puts a
  ticket ``.lamina/locks/<table>.turns/<nanoseconds>-<pid>-<random>``, named by the time it
  began waiting, and holds the turn while its ticket is the oldest in a listing (by the
  store's clock, then by name); it deletes the ticket when done. So the turn goes to the
  writers in the order they began to wait. A ticket that stays first for ``TURN_SECONDS`` of a waiter's watch belongs to a writer
  that died or stalled; that waiter deletes it.

Who takes the turn on S3: a writer that lost the commit race twice (store.TURN_AFTER_LOSSES),
and a writer whose first attempt on a table others committed to lately finds the queue not
empty: the check is one LIST, issued while its rows are encoded (:func:`turn_taken`); it then
joins the queue before uploading anything (:class:`TurnTaken`) instead of waiting for the
release and racing again. A compaction does not queue (TableStore.compact says why).

Before the queue, the turn was a lease object created with put-if-absent, and whoever polled
first after a release took it: a writer could lose the turn several times in a row (8 writers
× 25 saves on loopback S3, quiet: p50 140 ms, p99 3.7 s, 27 saves over 2 s while a fair queue
would give each about 1.1 s). Racing alone let a writer that lost keep losing (up to 24 losses
in a row, a 15.7 s save). Figures: bench/README.md, "Save latency of racing writers".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from .location import Location

LOCKS_DIR = ".lamina/locks"
# A ticket first in the queue this long (by the watch of a waiter) is taken to be a dead or
# stalled writer's: a compaction of 32 small files holds the turn for well under a second on
# loopback S3 (a few seconds on a machine at load 15).
TURN_SECONDS = 5.0
# A waiter's first guess of how long one turn lasts, before it has seen one pass (a save's
# turn on loopback S3: a log read and two PUTs).
FIRST_TURN_GUESS_SECONDS = 0.1
# Waiters poll the queue about when their turn may come (every poll is a request the store
# serves beside the holder's commit): the next in line every MIN_POLL_SECONDS at first, then
# every NEXT_POLL_SHARE of the time the holder has held the turn so far (a compaction's turn,
# or a dead writer's, is not polled 50 times a second); the others about when they will be
# next, by the pace they have seen turns pass. Never less often than MAX_POLL_SECONDS.
MIN_POLL_SECONDS = 0.02
NEXT_POLL_SHARE = 0.2
MAX_POLL_SECONDS = 0.5


def turn_for(location: Location, qualified: str):
    """The context in which one writer of table ``qualified`` makes one attempt at a commit:
    the machine's flock on a local root, nothing elsewhere."""
    if location.is_local:
        path = location.join(LOCKS_DIR, f"{qualified}.lock")
        with _REGISTRY_LOCK:
            turn = _MACHINE_TURNS.setdefault(path, MachineTurn(path))
        return turn.held()
    return contextlib.nullcontext()


def queued_turn(location: Location, qualified: str):
    """The table's turn on S3, taken in the order writers asked for it (held by a compaction
    and by a writer that lost the race or found others waiting); nothing elsewhere."""
    if location.type == "s3":
        return TurnQueue(location, queue_uri(location, qualified)).held()
    return contextlib.nullcontext()


def turn_taken(location: Location, qualified: str) -> Future | None:
    """Whether writers hold or wait for the table's turn (a future: one LIST, issued while the
    caller encodes its data file); None where there is no queue."""
    if location.type != "s3":
        return None
    return _CHECKS.submit(TurnQueue(location, queue_uri(location, qualified)).is_taken)


def queue_uri(location: Location, qualified: str) -> str:
    """Where the tickets of table ``qualified`` live (a folder)."""
    return location.join(LOCKS_DIR, f"{qualified}.turns")


class TurnTaken(Exception):
    """Writers hold or wait for the table's turn: a first attempt queues for it instead of
    racing them."""


# A few threads for the turn checks that run beside a save's encoding of its rows.
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


class TurnQueue:
    """A table's queue of tickets for its turn on S3 (see the module docstring).

    Tickets are served in the order the store received them (their ``Last-Modified``, by the
    store's clock), and within one tick of that clock (a second on AWS S3) by their names,
    the time their writer began to wait by its own clock: strictly in order on one machine,
    and a writer on a machine whose clock is off waits at most one tick more or less. Two
    writers may for a moment both see their ticket first (two tickets of one tick, the one
    named earlier put just after the other listed); their commits are still put-if-absent
    (the turn is about time, never about correctness)."""

    def __init__(self, location: Location, uri: str):
        self.location = location
        self.uri = uri
        self.bucket, _, prefix = uri.split("://", 1)[1].partition("/")
        self.prefix = prefix.rstrip("/") + "/"

    @contextlib.contextmanager
    def held(self):
        ticket = self.acquire()
        try:
            yield
        finally:
            self.release(ticket)

    def acquire(self) -> str:
        """Wait until this writer holds the turn; its ticket (for :meth:`release`)."""
        ticket = self.join()
        self.wait_first(ticket)
        return ticket

    def join(self) -> str:
        """Put this writer's ticket at the end of the queue; the ticket."""
        ticket = f"{self.prefix}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.location.fs.call_s3("put_object", Bucket=self.bucket, Key=ticket, Body=b"")
        return ticket

    def wait_first(self, ticket: str) -> None:
        """Wait until ``ticket`` is the first in the queue (the tickets before it released,
        or deleted once they stayed first for TURN_SECONDS)."""
        started = time.monotonic()
        ahead_at_start = None
        first, first_since = None, started
        while True:
            tickets = self.tickets()
            if ticket not in tickets:  # deleted as stalled (we waited too long): queue again
                self.location.fs.call_s3("put_object", Bucket=self.bucket, Key=ticket,
                                         Body=b"")
                continue
            ahead = tickets.index(ticket)
            if ahead == 0:
                return
            now = time.monotonic()
            if tickets[0] != first:
                first, first_since = tickets[0], now
            elif now - first_since >= TURN_SECONDS:
                self._delete(first)  # a dead or stalled writer's
                continue
            if ahead_at_start is None:
                ahead_at_start = ahead
            if ahead == 1:
                wait = NEXT_POLL_SHARE * (now - first_since)
            else:
                # How long a turn lasts, as this waiter has seen them pass.
                passed = ahead_at_start - ahead
                turn = (now - started) / passed if passed > 0 else FIRST_TURN_GUESS_SECONDS
                wait = 0.75 * turn * (ahead - 1)
            time.sleep(random.uniform(0.8, 1.2)
                       * min(MAX_POLL_SECONDS, max(MIN_POLL_SECONDS, wait)))

    def tickets(self) -> list[str]:
        """The tickets in the queue, first first (one LIST)."""
        answer = self.location.fs.call_s3("list_objects_v2", Bucket=self.bucket,
                                          Prefix=self.prefix)
        items = sorted(answer.get("Contents", ()),
                       key=lambda item: (item["LastModified"], item["Key"]))
        return [item["Key"] for item in items]

    def is_taken(self) -> bool:
        """Whether any writer holds or waits for the turn (or left a ticket when it died:
        whoever queues behind it deletes it after TURN_SECONDS)."""
        answer = self.location.fs.call_s3("list_objects_v2", Bucket=self.bucket,
                                          Prefix=self.prefix, MaxKeys=1)
        return bool(answer.get("Contents"))

    def release(self, ticket: str) -> None:
        """Hand the turn to the next ticket."""
        self._delete(ticket)

    def _delete(self, ticket: str) -> None:
        try:
            self.location.fs.call_s3("delete_object", Bucket=self.bucket, Key=ticket)
        except OSError:  # gone already
            pass
