"""A decoded copy of registry data files on this machine, read by row position: what a
database keeps in its buffer pool, kept on disk as uncompressed Arrow IPC and memory-mapped.

Why: a row not read before is otherwise decoded from its Parquet file, which costs a block of
its row group (pages decompressed, dictionaries decoded, the footer parsed again): 5-9 ms of
CPU per ``get()`` of the guide's catalog (bench/row_lookups_results.json). From a mapped
Arrow file it is one record batch located by the file's footer and one row turned into
Python values: a whole ``get()`` of a new row then costs 0.3-0.7 ms of CPU at 1e5 and 1e6
artifacts (bench/row_lookups_runs/after-rowcache.json, load 5-6.5). Uncompressed, because
decompressing is the cost: reading one row of the guide's 933k-row artifact file took 0.29 ms
from uncompressed 2,048-row batches and 0.9-1.2 ms from LZ4 batches of 256 to 2,048 rows,
whose every column buffer is decompressed (a hand measurement, load ~2; LZ4 would take 157
instead of 432 MiB on disk).

Why it never goes stale: a Delta data file never changes (commits add and remove whole
files, under new names), so a copy named by the file's URI and size holds what the file holds
for as long as any snapshot lists it; a file a version dropped is simply no longer asked.

Built once per data file, on the second row asked of it that no copy answers yet (a file asked
once, as by a script's one get(), is not worth the copy: a whole download of it on S3), in a
background thread: that row is read the way it was before (row_index.py), and the rows asked
after the copy is in place come from it. A build reads one row group at a time (the memory of
one decoded group), writes a temporary file and links it into place, so a reader sees a whole
copy or none, and two processes building the same file both end with a right one (the first
link wins; a copy in place is never replaced under a process that mapped it). The thread is a
daemon: a short script does not wait at exit for a copy it will not use; a build cut short
leaves only its temporary file, removed by the next eviction. A copy whose footer or row
count does not match its data file (a truncated or foreign file) is not trusted: it is removed
and built again.

Bounded: copies take ~480 bytes a row for the guide's artifacts (4.4x the Parquet file); when
a build ends the least recently opened copies are removed until the folder holds at most
``LAMINA_ROW_CACHE_MB`` (default ROW_CACHE_MB); 0 turns the copies off. A copy that alone
passes the bound is given up while it is written (its file's rows are read from the file) and
removes no other copy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from ..catalog.objects import cache_dir

log = logging.getLogger(__name__)

# Rows of a record batch of a copy: a lookup maps one batch (its footer entry) and turns one
# row of it into Python values; uncompressed 2,048-row batches cost 0.29 ms a row against
# 0.9-1.2 ms for LZ4 ones (module docstring), and keep the IPC footer small (456 batches
# for the guide's 933k-row file).
BATCH_ROWS = 2048
# Default bound of the folder of copies: the guide's 1e6 artifacts take ~470 MiB.
ROW_CACHE_MB = 4096
# Rows of a file asked (and read from it) before a copy of it is built: a second one says the
# file is being browsed.
MISSES_BEFORE_BUILD = 2
# A temporary file older than this is a build that was cut short (its process ended).
STALE_TEMPORARY_S = 3600
SUFFIX = ".arrow"
_ROWS_KEY, _BATCH_KEY = b"lamina.rows", b"lamina.batch_rows"


def limit_bytes() -> int:
    return int(float(os.environ.get("LAMINA_ROW_CACHE_MB", ROW_CACHE_MB)) * 2**20)


def folder() -> Path:
    """Where the copies live: the machine's cache folder (LAMINA_CACHE_DIR), with the copies
    of objects, not the settings folder."""
    return cache_dir() / "rows"


def copy_path(file: str, size: int | None) -> Path:
    """Where the copy of data file ``file`` (a URI) of ``size`` bytes lives, in BATCH_ROWS-row
    batches (a version of lamina that batches otherwise has copies of its own)."""
    digest = hashlib.sha256(f"{file}\0{size}\0{BATCH_ROWS}".encode()).hexdigest()[:32]
    return folder() / f"{digest}{SUFFIX}"


class DecodedFile:
    """A copy of one data file, memory-mapped: its rows by position."""

    __slots__ = ("_inode", "_reader")

    def __init__(self, reader: pa.ipc.RecordBatchFileReader, inode: int):
        self._reader, self._inode = reader, inode

    @classmethod
    def open(cls, path: Path, num_rows: int) -> DecodedFile | None:
        """The copy at ``path`` if it holds ``num_rows`` rows in BATCH_ROWS-row batches; None
        when there is none, or it cannot be opened now (too many open files, no room to map
        it); a copy that does not match (truncated, partial, foreign) is removed, and None."""
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
        except FileNotFoundError:
            return None
        except pa.ArrowInvalid as exc:  # not a whole Arrow file
            log.debug("row cache %s not trusted: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        except OSError as exc:  # the copy may be right: left for this process or another
            log.debug("row cache %s not opened: %s", path, exc)
            return None
        metadata = reader.schema.metadata or {}
        if metadata.get(_BATCH_KEY) != str(BATCH_ROWS).encode():
            return None  # another version's batches (its path is another's only by a clash)
        if (metadata.get(_ROWS_KEY) != str(num_rows).encode()
                or reader.num_record_batches != math.ceil(num_rows / BATCH_ROWS)):
            log.debug("row cache %s not trusted: not %s rows", path, num_rows)
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # the copy's last use, for eviction
            inode = path.stat().st_ino
        except OSError:
            inode = -1  # evicted by another process meanwhile: still mapped here
        return cls(reader, inode)

    def is_at(self, path: Path) -> bool:
        """Whether ``path`` still holds the copy mapped here (not removed, nor built again)."""
        try:
            return path.stat().st_ino == self._inode
        except OSError:
            return False

    def row(self, position: int) -> dict:
        # Value by value: a one-row slice's to_pylist() costs 3x more (0.20 against 0.06 ms
        # for an artifact's 51 columns).
        batch = self._reader.get_batch(position // BATCH_ROWS)
        offset = position % BATCH_ROWS
        return {name: column[offset].as_py()
                for name, column in zip(self._reader.schema.names, batch.columns)}


class TooLarge(Exception):
    """A copy that alone would take more than the bound of the folder of copies."""


def build(path: Path, num_rows: int, groups: Iterator[pa.Table], limit: int) -> None:
    """Write the copy of a data file of ``num_rows`` rows whose row groups ``groups`` yields,
    in BATCH_ROWS-row batches (a group's last rows join the next group's first), through a
    temporary file linked into place (a copy already there, another process's, is kept).
    Raises TooLarge, and writes no copy, once the copy passes ``limit`` bytes; writes none
    either unless the groups held ``num_rows`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    writer, written = None, 0
    try:
        with pa.OSFile(str(temporary), "wb") as sink:
            pending: list[pa.Table] = []
            for group in groups:
                if writer is None:
                    schema = group.schema.with_metadata({
                        **(group.schema.metadata or {}),
                        _ROWS_KEY: str(num_rows).encode(), _BATCH_KEY: str(BATCH_ROWS).encode()})
                    writer = pa.ipc.new_file(sink, schema)
                pending.append(group.replace_schema_metadata(schema.metadata))
                rows = pa.concat_tables(pending).combine_chunks()
                whole = rows.num_rows - rows.num_rows % BATCH_ROWS
                if whole:
                    writer.write_table(rows.slice(0, whole), max_chunksize=BATCH_ROWS)
                    written += whole
                    if sink.tell() > limit:
                        raise TooLarge(f"{path.name} passed {limit} bytes")
                pending = [rows.slice(whole)] if whole < rows.num_rows else []
            if pending:
                rows = pa.concat_tables(pending)
                writer.write_table(rows, max_chunksize=BATCH_ROWS)
                written += rows.num_rows
            if writer is not None:
                writer.close()
            if sink.tell() > limit:
                raise TooLarge(f"{path.name} passed {limit} bytes")
        if written != num_rows:
            raise ValueError(f"{written} rows read for a file of {num_rows}")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # built by another process meanwhile, and maybe mapped there
    finally:
        temporary.unlink(missing_ok=True)


def evict(limit: int, keep: Path) -> list[Path]:
    """Remove the least recently opened copies until the folder of the copy ``keep`` holds at
    most ``limit`` bytes (``keep`` last of all), and temporary files of builds cut short.
    Returns what was removed. A ``keep`` larger than ``limit`` alone is removed, and no other
    copy for it."""
    entries, removed = [], []
    now = time.time()
    for entry in os.scandir(keep.parent):
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue  # removed by another process
        if entry.name.endswith(".tmp"):
            if now - stat.st_mtime > STALE_TEMPORARY_S:
                removed.append(Path(entry.path))
        elif entry.name.endswith(SUFFIX):
            entries.append((Path(entry.path) == keep, stat.st_mtime, stat.st_size,
                            Path(entry.path)))
    if any(is_kept and size > limit for is_kept, _, size, _ in entries):
        entries = [e for e in entries if e[0]]  # removing others would not make room for it
    total = sum(e[2] for e in entries)
    for _, _, size, path in sorted(entries):
        if total <= limit:
            break
        removed.append(path)
        total -= size
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class RowCache:
    """This process's copies of data files: those opened, and those being built."""

    def __init__(self):
        _caches.add(self)
        self._opened: dict[str, tuple[Path, DecodedFile]] = {}
        self._builds: dict[str, threading.Thread] = {}
        # Rows asked of each file without a copy so far, until its build starts.
        self._misses: dict[str, int] = {}
        # Files whose copy failed, or would not fit under the bound alone: not built again
        # by this process (their rows are read from the files).
        self._not_built: set[str] = set()
        self._lock = threading.Lock()

    def file(self, file: str, size: int | None, num_rows: int,
             groups: Callable[[], Iterator[pa.Table]]) -> DecodedFile | None:
        """The copy of data file ``file`` if there is one; else None, and, on the
        MISSES_BEFORE_BUILD-th row asked of the file, a build of it starts in the background
        from ``groups()`` (the file's row groups, in order)."""
        opened = self._opened.get(file)
        if opened is not None:
            return opened[1]
        if file in self._builds or file in self._not_built:
            return None
        limit = limit_bytes()
        if limit <= 0 or num_rows == 0:
            return None
        path = copy_path(file, size)
        decoded = DecodedFile.open(path, num_rows)
        if decoded is not None:
            self._opened[file] = (path, decoded)
            return decoded
        misses = self._misses[file] = self._misses.get(file, 0) + 1
        if misses < MISSES_BEFORE_BUILD:
            return None
        del self._misses[file]
        thread = threading.Thread(target=self._build, args=(file, path, num_rows, groups, limit),
                                  name="lamina-row-cache", daemon=True)
        with self._lock:
            self._builds[file] = thread
        thread.start()
        return None

    def _build(self, file: str, path: Path, num_rows: int,
               groups: Callable[[], Iterator[pa.Table]], limit: int) -> None:
        try:
            build(path, num_rows, groups(), limit)
            # The decoded groups' memory goes back to the system, not to the pool's cache
            # (60 MiB of the 1e6 catalog's build, measured by hand).
            pa.default_memory_pool().release_unused()
            removed = set(evict(limit, keep=path))
            if path in removed:
                self._not_built.add(file)
            # A copy removed while mapped here keeps its disk space until it is unmapped:
            # those removed here or by another process (or built again there) are let go.
            for opened, (opened_path, decoded) in list(self._opened.items()):
                if not decoded.is_at(opened_path):
                    self._opened.pop(opened, None)
        except TooLarge as exc:
            self._not_built.add(file)
            log.debug("no row cache of %s: %s", file, exc)
        except Exception as exc:  # noqa: BLE001 - the rows are still read from the file
            self._not_built.add(file)
            log.warning("no row cache of %s: %s", file, exc)
        finally:
            with self._lock:
                self._builds.pop(file, None)

    def wait(self) -> None:
        """Until the builds started so far have ended (tests, benches)."""
        with self._lock:
            builds = list(self._builds.values())
        for thread in builds:
            thread.join()

    def forget(self, files) -> None:
        """Stop using the copies of ``files`` (no snapshot holds them any more)."""
        for file in files:
            self._opened.pop(file, None)
            self._misses.pop(file, None)


# A child forked while a build ran has no thread building: it may build the copy itself.
_caches: weakref.WeakSet[RowCache] = weakref.WeakSet()


def _forget_builds_in_child() -> None:
    for cache in list(_caches):
        cache._lock = threading.Lock()  # maybe held by a thread the child does not have
        cache._builds.clear()


os.register_at_fork(after_in_child=_forget_builds_in_child)
