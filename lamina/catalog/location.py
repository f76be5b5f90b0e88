"""Where things live: storage roots as fsspec URIs, and the options each library needs to reach them.

One place knows how local, ``s3://`` and ``gs://`` roots are configured for fsspec, deltalake and
DuckDB. Credentials come from the standard environment variables of each cloud
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

from ..errors import InstanceError, InvalidPath

CLOUD_PROTOCOLS = ("s3", "gs")


def normalize_root(root: str | os.PathLike) -> str:
    """An absolute local path or a ``scheme://bucket/prefix`` URI, without a trailing slash."""
    root = os.fspath(root)
    if not root or not root.strip():
        raise InvalidPath("a storage root cannot be empty")
    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else root
        return os.path.abspath(os.path.expanduser(local))
    if parsed.scheme == "gcs":
        root = "gs://" + root[len("gcs://"):]
        parsed = urlparse(root)
    if parsed.scheme not in CLOUD_PROTOCOLS:
        raise InvalidPath(
            f"unsupported storage root {root!r}: use a local folder, s3://bucket/prefix "
            "or gs://bucket/prefix"
        )
    if not parsed.netloc:
        raise InvalidPath(f"storage root {root!r} names no bucket")
    return root.rstrip("/")


def storage_type(root: str) -> str:
    scheme = urlparse(root).scheme
    return scheme if scheme in CLOUD_PROTOCOLS else "local"


# What makes a key unsafe, one regular expression per reason. Shared by ``safe_key`` and by
# bulk ingest (which applies ``UNSAFE_KEY`` to a whole column at once), so both refuse the same.
KEY_RULES = (
    (r"[\x00-\x1f\x7f]", "contains a control character"),
    (r"^/|\\|^[A-Za-z][A-Za-z0-9+.\-]*:", "must be a relative path inside the storage root"),
    (r"(^|/)(\.|\.\.)?(/|$)",
     "may not contain empty, '.' or '..' segments; it could escape the storage root"),
)
UNSAFE_KEY = "|".join(f"(?:{pattern})" for pattern, _ in KEY_RULES)


def safe_key(key: str) -> str:
    """Validate a user-supplied key: relative, no empty, ``.`` or ``..`` segment, no control
    character."""
    if not isinstance(key, str) or not key:
        raise InvalidPath(f"a key must be a non-empty string, got {key!r}")
    for pattern, reason in KEY_RULES:
        if re.search(pattern, key):
            raise InvalidPath(f"key {key!r} {reason}")
    return key


@dataclass(frozen=True)
class Location:
    """A storage root, and how to reach it from fsspec, deltalake and DuckDB."""

    root: str

    @classmethod
    def of(cls, root: str | os.PathLike) -> Location:
        return cls(normalize_root(root))

    @property
    def type(self) -> str:
        return storage_type(self.root)

    @property
    def is_local(self) -> bool:
        return self.type == "local"

    def join(self, *parts: str) -> str:
        """A path under the root. Parts are ours or validated keys; the result stays inside."""
        joined = posixpath.join(self.root, *parts)
        if self.is_local:
            joined = os.path.normpath(joined)
            if os.path.commonpath([joined, self.root]) != self.root:
                raise InvalidPath(f"{'/'.join(parts)!r} escapes the storage root {self.root}")
        return joined

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_local:
            return fsspec.filesystem("file", auto_mkdir=True)
        return fsspec.filesystem(self.type, **self.fsspec_options)

    def has_file(self, path: str) -> bool:
        """Whether the file ``path`` exists: one stat, or one HEAD on an object store (fsspec's
        ``info``/``exists`` follow a missing key on S3 with a LIST, to look for a folder)."""
        if self.is_local:
            return os.path.isfile(path)
        if self.type == "s3":
            bucket, _, key = path.split("://", 1)[1].partition("/")
            try:
                self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return False
            return True
        self.fs.invalidate_cache(path)  # fsspec may answer from a cached listing
        try:
            self.fs.info(path)
        except FileNotFoundError:
            return False
        return True

    @cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """A native (C++) pyarrow filesystem for this root, for Parquet scans.

        Why not deltalake's or fsspec's: those are Python handlers, so arrow's IO threads call
        back into Python, and one still releasing a file when the interpreter exits aborts the
        process ("terminate called without an active exception")."""
        if self.is_local:
            return pafs.LocalFileSystem()
        if self.type == "s3":
            options: dict = {}
            endpoint = _aws_endpoint()
            if endpoint:
                parsed = urlparse(endpoint)
                options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
            region = _aws_region()
            if region:
                options["region"] = region
            return pafs.S3FileSystem(**options)
        return pafs.GcsFileSystem()

    def check_reachable(self, timeout: float = 3.0) -> None:
        """Fail fast, with the reason, when an ``s3://`` root's endpoint cannot be reached
        (botocore would retry for many seconds and end in a traceback of its own)."""
        if self.type != "s3":
            return
        endpoint = _aws_endpoint()
        url = urlparse(endpoint or "https://s3.amazonaws.com")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
        except OSError as exc:
            hint = ("" if endpoint else "; for an S3-compatible server set AWS_ENDPOINT_URL "
                    "(credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
            raise InstanceError(f"cannot reach the S3 endpoint {url.geturl()} for {self.root} "
                                f"({exc.strerror or exc}){hint}") from None

    def arrow_path(self, uri: str) -> str:
        """``uri`` as :attr:`arrow_fs` names it (object stores: ``bucket/key``)."""
        return uri if self.is_local else uri.split("://", 1)[1]

    @property
    def fsspec_options(self) -> dict:
        if self.type == "s3":
            endpoint = _aws_endpoint()
            opts: dict = {}
            if endpoint:
                opts["endpoint_url"] = endpoint
            return opts
        return {}

    @property
    def delta_options(self) -> dict[str, str] | None:
        """deltalake storage options; ``conditional_put`` makes concurrent commits safe on S3."""
        if self.type == "s3":
            opts = {"conditional_put": "etag"}
            endpoint = _aws_endpoint()
            if endpoint:
                opts["AWS_ENDPOINT_URL"] = endpoint
                if endpoint.startswith("http://"):
                    opts["AWS_ALLOW_HTTP"] = "true"
            region = _aws_region()
            if region:
                opts["AWS_REGION"] = region
            return opts
        return None

    def duckdb_secret(self) -> str | None:
        """A ``CREATE SECRET`` statement letting DuckDB read this root (it takes no parameters)."""
        if self.type != "s3":
            return None
        key_id = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            return "CREATE OR REPLACE SECRET lamina_s3 (TYPE s3, PROVIDER credential_chain)"
        options = {
            "KEY_ID": key_id,
            "SECRET": secret,
            "REGION": _aws_region() or "us-east-1",
        }
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
        endpoint = _aws_endpoint()
        if endpoint:
            parsed = urlparse(endpoint)
            options["ENDPOINT"] = parsed.netloc
            options["URL_STYLE"] = "path"
            options["USE_SSL"] = "true" if parsed.scheme == "https" else "false"
        # CREATE SECRET takes literals only; every value is quoted as a SQL string literal.
        body = ", ".join(f"{k} {_sql_literal(v)}" for k, v in options.items())
        return f"CREATE OR REPLACE SECRET lamina_s3 (TYPE s3, {body})"


def _aws_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")


def _aws_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _sql_literal(value: str) -> str:
    if value in ("true", "false"):
        return value
    return "'" + str(value).replace("'", "''") + "'"
