"""Artifact files: LaminDB's hash rule, upload into managed storage, a local cache."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .location import Location

HASH_CHUNK = 50 * 1024 * 1024
OBJECTS_DIR = ".lamina/objects"
# A local copy is written under ``<target>.partial-<host>-<pid>`` and renamed into place, so a
# crash never leaves a half-written file under its final name, and a later run can tell
# whether the writer of a leftover is gone (``remove_stale_partials``). Object stores need no
# such name: a PUT becomes visible only when it completes.
PARTIAL = ".partial-"


def partial_name(target: str) -> str:
    return f"{target}{PARTIAL}{socket.gethostname()}-{os.getpid()}"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


def hash_file(path: str | os.PathLike, chunk_size: int = HASH_CHUNK) -> tuple[str, str]:
    """md5 of the bytes up to ``chunk_size``; above it, sha1 over the first and last chunk."""
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        fp.seek(0)
        first = fp.read(chunk_size)
        if size <= chunk_size:
            return _b64(hashlib.md5(first).digest()), "md5"
        fp.seek(-chunk_size, 2)
        last = fp.read(chunk_size)
    digest = hashlib.sha1(hashlib.sha1(first).digest() + hashlib.sha1(last).digest()).digest()
    return _b64(digest), "sha1-fl"


def hash_from_file_hashes(hashes: list[str]) -> tuple[str, str]:
    """A folder's hash: md5 over the md5 digests of its files' hashes, sorted."""
    digests = b"".join(hashlib.md5(h.encode()).digest() for h in sorted(hashes))
    return _b64(hashlib.md5(digests).digest()), "md5-d"


def _b16_to_b64(text: str) -> str | None:
    try:
        return _b64(base64.b16decode(text.strip('"'), casefold=True))
    except (ValueError, TypeError):
        return None


def hash_from_listing(info: dict) -> str | None:
    """LaminDB's hash of a cloud object from its listing metadata, without reading it: GCS
    ``md5Hash``; S3 ``ETag`` (an md5 for single-part uploads; for multipart uploads the hash of
    the ETag's digits, LaminDB's ``md5-<parts>``)."""
    if info.get("md5Hash"):
        return info["md5Hash"].strip('"=')[:22]
    etag = info.get("ETag") or info.get("etag")
    if not etag:
        return None
    etag = etag.strip('"')
    return _b16_to_b64(etag.split("-")[0])


def describe_local(path: Path) -> tuple[int, str, int | None]:
    """(size, hash, n_files) of a local file or folder; n_files is None for a file."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise ValueError(f"folder {path} holds no files")
        hashes = [hash_file(f)[0] for f in files]
        return sum(f.stat().st_size for f in files), hash_from_file_hashes(hashes)[0], len(files)
    return path.stat().st_size, hash_file(path)[0], None


# LaminDB's suffix rule: a single suffix is kept unless it is all digits; of several, a known
# composite one (".ome.zarr") is kept whole, a known suffix followed by another is kept with it
# (".fastq.gz", ".tar.gz", ".csv.gz"), and anything else keeps only its last suffix
# (".final.gz" of "results.final.gz" is ".gz").
KNOWN_SUFFIXES = frozenset({
    ".fasta", ".fastq", ".fa", ".fq", ".jpg", ".mtx", ".obo", ".pdf", ".png", ".tar", ".tiff",
    ".txt", ".tsv", ".zip", ".xml", ".qs", ".rds", ".h5ad", ".parquet", ".csv", ".fcs",
    ".xlsx", ".zarr", ".json", ".vcf", ".bed", ".sam", ".bam", ".gtf", ".gff",
})
COMPOSITE_SUFFIXES = (".anndata.zarr", ".ome.zarr", ".vitessce.json", ".spatialdata.zarr")


def suffix_of(path: str) -> str:
    """The suffix LaminDB records for a file name: ``.fastq.gz``, ``.ome.zarr``, ``.csv``."""
    name = os.path.basename(path.rstrip("/"))
    suffixes = ["." + part for part in name.lstrip(".").split(".")[1:]]
    if len(suffixes) >= 2:
        total = "".join(suffixes)
        for composite in COMPOSITE_SUFFIXES:
            if total.endswith(composite):
                return composite
        if suffixes[-2] in KNOWN_SUFFIXES:
            return suffixes[-2] + suffixes[-1]
    suffix = suffixes[-1] if suffixes else ""
    return "" if suffix[1:].isdigit() else suffix


def object_key(uid: str, suffix: str) -> str:
    """Where a managed artifact lives under the root; a folder is a prefix."""
    return f"{OBJECTS_DIR}/{uid}{suffix}"


def start_upload(location: Location, local: Path, key: str,
                 exclusive: bool = False) -> Callable[[], None]:
    """:func:`upload`, running in the background on an object store: returns a function that
    waits for it (raising what it raised). A save uploads its object while it writes the row's
    data file, and commits once both are there: one round trip less per save. On a local root
    the copy is done before this returns (a thread would cost more than it overlaps)."""
    if location.is_local:
        upload(location, local, key, exclusive=exclusive)
        return lambda: None
    global _UPLOADS
    with _UPLOADS_LOCK:
        if _UPLOADS is None:
            _UPLOADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lamina-upload")
    future = _UPLOADS.submit(upload, location, local, key, exclusive=exclusive)
    return lambda: future.result()


_UPLOADS: ThreadPoolExecutor | None = None
_UPLOADS_LOCK = threading.Lock()


def upload(location: Location, local: Path, key: str, progress=None,
           exclusive: bool = False) -> None:
    """Copy a local file or folder to ``key`` under the root; written under a temporary name
    and moved into place, so a crash leaves no partial object under its final name.

    With ``exclusive`` an existing object at ``key`` is never replaced (FileExistsError):
    the object store's put-if-absent for files, a check before copying for folders."""
    target = location.join(key)
    with location.writing(target):
        _upload(location, local, target, exclusive)


def _upload(location: Location, local: Path, target: str, exclusive: bool) -> None:
    fs = location.fs
    if local.is_dir():
        if exclusive and fs.exists(target):
            raise FileExistsError(target)
        fs.put(str(local), target, recursive=True)
        return
    if location.is_local:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = partial_name(target)
        fs.put_file(str(local), tmp)
        if not exclusive:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)  # atomic, and fails if the target exists
        finally:
            os.unlink(tmp)
    else:
        # Object stores make a PUT visible only when it completes.
        fs.put_file(str(local), target, **({"mode": "create"} if exclusive else {}))


def remove(location: Location, key: str) -> None:
    """Delete the file or folder ``key`` under the root; already gone is fine."""
    target = location.join(key)
    try:
        if location.is_local and os.path.isdir(target):
            shutil.rmtree(target)
        else:
            location.fs.rm(target, recursive=True)
    except FileNotFoundError:
        pass


def remove_stale_partials(location: Location) -> int:
    """Delete half-written local copies left by killed writers of this host (pid gone)."""
    if not location.is_local:
        return 0
    host = socket.gethostname()
    removed = 0
    try:
        entries = list(os.scandir(location.join(OBJECTS_DIR)))
    except FileNotFoundError:
        return 0
    for entry in entries:
        _, sep, owner = entry.name.rpartition(PARTIAL)
        owner_host, _, pid = owner.rpartition("-")
        if not sep or owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.remove(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_exclusive(location: Location, key: str, data: bytes) -> None:
    """Create the object ``key`` holding ``data``: FileExistsError if it exists, and a reader
    never sees it empty or partial (an exclusive create that then writes would show both)."""
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "object"
        local.write_bytes(data)
        upload(location, local, key, exclusive=True)


def cache_dir() -> Path:
    base = os.environ.get("LAMINA_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "lamina"
    )
    return Path(base)
