"""Where things live: storage roots as fsspec URIs, and the options each library needs to reach them.

One place knows how local, ``s3://`` and ``gs://`` roots are configured for fsspec, obstore (reads
of an S3 catalog's own files), deltalake and DuckDB. S3 credentials are resolved afresh on every
use: the environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) when set, else the standard AWS chain (profiles, SSO, assumed roles,
instance roles) through botocore, whose temporary credentials renew themselves before they expire.
Each library is handed the credentials of the moment, and its client is rebuilt when they change,
so rotated keys and new session tokens are picked up without reconnecting. Endpoints come from
``AWS_ENDPOINT_URL``.

GCS: each library finds Google's credentials itself (``GOOGLE_APPLICATION_CREDENTIALS``, the
gcloud user, the metadata server). ``STORAGE_EMULATOR_HOST`` (Google's convention for a local
GCS endpoint, read by gcsfs too) sends every library to that endpoint, unauthenticated: gcsfs
and pyarrow through GCS's JSON API, deltalake through its XML API, DuckDB through its
S3-compatible one.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ..errors import InstanceError, InvalidPath, LaminaError, PermissionDenied

if TYPE_CHECKING:
    import fsspec
    from obstore.store import S3Store

CLOUD_PROTOCOLS = ("s3", "gs")
# Keys in one S3 LIST answer (S3's maximum and default).
S3_LIST_PAGE = 1000
# Requests in flight at once when reading many objects.
MAX_CONCURRENT_GETS = 32


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

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """An fsspec filesystem for this root, holding the current credentials (fsspec keeps one
        instance per set of options, so this is the same object while they do not change)."""
        import fsspec  # ~0.1 s, and s3fs/gcsfs more: only for roots whose files it reads

        if self.is_local:
            return fsspec.filesystem("file", auto_mkdir=True)
        return self.fs_class(**self.fsspec_options)

    @property
    def fs_class(self) -> type[fsspec.AbstractFileSystem]:
        """The fsspec filesystem class for this root's kind of storage."""
        import fsspec

        if self.type == "gs" and gcs_endpoint():
            # gcsfs's default class first asks GCS's gRPC control API for the bucket's layout,
            # which a local endpoint does not serve: 60 s of retries per call, then it falls
            # back to the JSON API this class speaks directly.
            from gcsfs.core import GCSFileSystem

            return GCSFileSystem
        return fsspec.get_filesystem_class("file" if self.is_local else self.type)

    def has_file(self, path: str) -> bool:
        """Whether the file ``path`` exists: one stat, or one request on an object store
        (fsspec's ``info``/``exists`` also list, to look for a folder: gcsfs sends a GET, a
        listing and a second GET for a commit that does not exist yet)."""
        if self.is_local:
            return os.path.isfile(path)
        bucket, _, key = path.split("://", 1)[1].partition("/")
        try:
            if self.type == "s3":
                self.object_store.head(key)
            else:  # the object's metadata, from GCS's JSON API
                self.fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
        except FileNotFoundError:
            return False
        return True

    def list_names(self, folder: str, after: str | None = None,
                   first_page: bool = False) -> tuple[list[str], bool]:
        """The names of the files directly in ``folder`` sorting after ``after`` (all when
        None), sorted, and whether that is all of them: one LIST request on S3 per 1000 names
        (``StartAfter`` skips the older ones on the server). ``first_page``: stop after one
        request (then the answer may be incomplete)."""
        folder = folder.rstrip("/")
        if self.is_local:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                return [], True
        elif self.type == "s3":
            prefix = _s3_key(folder) + "/"
            # One chunk is one LIST page (S3 answers 1000 keys a page); a full first page may
            # have more after it. ``offset`` is S3's StartAfter. The listing is recursive:
            # names in sub-folders are left out, as a delimiter would.
            pages = self.object_store.list(prefix, offset=prefix + after if after else None,
                                           chunk_size=S3_LIST_PAGE)
            names = []
            for page in pages:
                names += [m["path"][len(prefix):] for m in page]
                if first_page and len(page) == S3_LIST_PAGE:
                    return sorted(n for n in names if "/" not in n), False
            names = [n for n in names if "/" not in n]
        else:
            self.fs.invalidate_cache(folder)  # fsspec may answer from a cached listing
            try:
                names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder,
                                                                                detail=False)]
            except FileNotFoundError:
                return [], True
        return sorted(n for n in names if after is None or n > after), True

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """The contents of ``paths``, fetched concurrently on object stores (one GET each, no
        HEAD first); FileNotFoundError if one is missing."""
        if not paths:
            return {}
        if self.is_local:
            found = {}
            for path in paths:
                with open(path, "rb") as f:
                    found[path] = f.read()
            return found
        if self.type == "s3":
            store = self.object_store

            def fetch(path: str) -> bytes:
                return bytes(store.get(_s3_key(path)).bytes())

            if len(paths) == 1:
                return {paths[0]: fetch(paths[0])}
            # obstore's calls wait without the GIL: one thread per request sends them at once.
            with ThreadPoolExecutor(min(len(paths), MAX_CONCURRENT_GETS)) as pool:
                return dict(zip(paths, pool.map(fetch, paths)))
        fs = self.fs
        if not fs.async_impl:
            return {path: fs.cat_file(path) for path in paths}
        # fsspec's ``cat`` of a list HEADs every path first (to expand globs): call the
        # one-GET coroutine of each path directly, all at once.
        import asyncio

        from fsspec.asyn import sync

        async def fetch_all():
            return await asyncio.gather(*(fs._cat_file(path) for path in paths))

        return dict(zip(paths, sync(fs.loop, fetch_all)))

    def read_tagged(self, path: str) -> tuple[bytes, str | None]:
        """The content of ``path`` (one GET) and, on S3, its ETag, which
        :meth:`replace_if_unchanged` takes; None elsewhere."""
        if self.type != "s3":
            return self.read_many([path])[path], None
        found = self.object_store.get(_s3_key(path))
        return bytes(found.bytes()), found.meta["e_tag"]

    def replace_if_unchanged(self, path: str, data: bytes, tag: str) -> str | None:
        """Replace the S3 object ``path`` with ``data`` in one PUT if its ETag is still
        ``tag`` (If-Match): the new ETag, or None when another writer replaced it since."""
        from obstore.exceptions import PreconditionError

        try:
            return self.object_store.put(_s3_key(path), data, mode={"e_tag": tag})["e_tag"]
        except PreconditionError:
            return None

    @property
    def object_store(self) -> S3Store:
        """obstore's client for this S3 root's bucket, holding the credentials in force (a new
        client when they change). lamina's own reads of an S3 catalog (the Delta logs, small
        registries' data files, ``instance.json``) go through it: one Rust extension that
        imports and sends the requests of a first query's log reads for an eighth of the CPU of
        s3fs with aiobotocore and aiohttp (~0.55 s, most of a fresh process's first answer:
        bench/s3_clients.py). Writes still go through fsspec (:attr:`fs`)."""
        bucket = self.root.split("://", 1)[1].split("/", 1)[0]
        return _s3_store(bucket, _aws_endpoint(), _aws_region(), self.aws_credentials())

    @property
    def arrow_fs(self) -> pafs.FileSystem:
        """A native (C++) pyarrow filesystem for this root, for Parquet scans; rebuilt when the
        credentials change.

        Why not deltalake's or fsspec's: those are Python handlers, so arrow's IO threads call
        back into Python, and one still releasing a file when the interpreter exits aborts the
        process ("terminate called without an active exception")."""
        credentials = self.aws_credentials()
        reached_with = (credentials, gcs_endpoint() if self.type == "gs" else None)
        cached = self.__dict__.get("_arrow_fs")
        if cached is not None and cached[0] == reached_with:
            return cached[1]
        if self.is_local:
            fs = pafs.LocalFileSystem()
        elif self.type == "s3":
            options: dict = {}
            endpoint = _aws_endpoint()
            if endpoint:
                parsed = urlparse(endpoint)
                options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
            region = _aws_region()
            if region:
                options["region"] = region
            if credentials is not None:
                options.update(access_key=credentials.key_id, secret_key=credentials.secret,
                               session_token=credentials.token)
            fs = pafs.S3FileSystem(**options)
        else:
            endpoint = gcs_endpoint()
            if endpoint:
                parsed = urlparse(endpoint)
                fs = pafs.GcsFileSystem(anonymous=True, endpoint_override=parsed.netloc,
                                        scheme=parsed.scheme)
            else:
                fs = pafs.GcsFileSystem()
        # The dataclass is frozen for its root; this cache is not part of its value.
        self.__dict__["_arrow_fs"] = (reached_with, fs)
        return fs

    def check_reachable(self, timeout: float = 3.0) -> None:
        """Fail fast, with the reason, when an object-store root's endpoint cannot be reached
        (botocore and gcsfs would retry for many seconds and end in a traceback of their own)."""
        if self.type == "s3":
            endpoint, default, store = _aws_endpoint(), "https://s3.amazonaws.com", "S3"
            hint = ("; for an S3-compatible server set AWS_ENDPOINT_URL "
                    "(credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        elif self.type == "gs":
            endpoint, default, store = gcs_endpoint(), "https://storage.googleapis.com", "GCS"
            hint = "; for a local GCS endpoint set STORAGE_EMULATOR_HOST"
        else:
            return
        url = urlparse(endpoint or default)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
        except OSError as exc:
            raise InstanceError(f"cannot reach the {store} endpoint {url.geturl()} for "
                                f"{self.root} ({exc.strerror or exc}){'' if endpoint else hint}"
                                ) from None

    def arrow_path(self, uri: str) -> str:
        """``uri`` as :attr:`arrow_fs` names it (object stores: ``bucket/key``)."""
        return uri if self.is_local else uri.split("://", 1)[1]

    @contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Around a write of ``what`` (a path under this root): the store's "access denied"
        becomes a :class:`PermissionDenied` naming the bucket, the credentials and the missing
        permission, instead of a transport error from whichever library wrote."""
        try:
            yield
        except LaminaError:  # ours, already saying what went wrong
            raise
        except Exception as exc:
            if not _storage_refused(exc):
                raise
            raise PermissionDenied(self._denied_message(what, exc)) from exc

    def _denied_message(self, what: str, exc: Exception) -> str:
        text = str(exc).strip()
        code = _ERROR_CODE.search(text)
        answer = code[1] if code else (text.splitlines()[0][:200] if text else
                                       type(exc).__name__)
        if self.is_local:
            return (f"cannot write {what}: this process may not write to {self.root} "
                    f"({answer}). Reading needs read permission only.")
        bucket = urlparse(self.root).netloc
        credentials = self.aws_credentials()
        who = f"access key {credentials.key_id}" if credentials else "no credentials found"
        if answer in _REFUSED_CREDENTIALS:
            return (f"cannot write {what}: the store refused the credentials in force ({who}) "
                    f"with {answer}: they are unknown, deleted or expired.")
        permission = "s3:PutObject" if self.type == "s3" else "storage.objects.create"
        return (f"cannot write {what}: the credentials in force ({who}) lack {permission} on "
                f"bucket {bucket!r} (the store answered {answer}). Connecting and querying "
                "need read permission only; saving needs write permission on the root's prefix.")

    def aws_credentials(self) -> AwsCredentials | None:
        """The S3 credentials in force now (None for other roots, or when none are found)."""
        if self.type != "s3":
            return None
        return aws_credentials()

    @property
    def fsspec_options(self) -> dict:
        if self.type == "s3":
            endpoint = _aws_endpoint()
            opts: dict = {}
            if endpoint:
                opts["endpoint_url"] = endpoint
            credentials = self.aws_credentials()
            if credentials is not None:
                opts.update(key=credentials.key_id, secret=credentials.secret,
                            token=credentials.token)
            return opts
        if self.type == "gs" and gcs_endpoint():
            return {"endpoint_url": gcs_endpoint(), "token": "anon"}
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
            credentials = self.aws_credentials()
            if credentials is not None:
                opts["AWS_ACCESS_KEY_ID"] = credentials.key_id
                opts["AWS_SECRET_ACCESS_KEY"] = credentials.secret
                if credentials.token:
                    opts["AWS_SESSION_TOKEN"] = credentials.token
            return opts
        if self.type == "gs" and gcs_endpoint():
            # object_store's way to an unauthenticated endpoint: a service-account key that
            # names the endpoint and turns OAuth off.
            key = {"gcs_base_url": gcs_endpoint(), "disable_oauth": True, "client_email": "",
                   "private_key": "", "private_key_id": ""}
            return {"google_service_account_key": json.dumps(key)}
        return None

    def duckdb_secret(self, name: str, scope: str | None = None) -> str | None:
        """A ``CREATE OR REPLACE SECRET`` statement letting DuckDB read S3 (only under
        ``scope`` when given) with the current credentials, or None when DuckDB needs none. The
        statement takes no parameters: every value in it is quoted as a SQL string literal."""
        if self.type == "gs":
            return _gcs_emulator_secret(name, scope)
        if self.type != "s3":
            return None
        options = {"REGION": _aws_region() or "us-east-1"}
        if scope:
            options["SCOPE"] = scope.rstrip("/") + "/"
        credentials = self.aws_credentials()
        if credentials is not None:
            options.update(KEY_ID=credentials.key_id, SECRET=credentials.secret)
            if credentials.token:
                options["SESSION_TOKEN"] = credentials.token
        endpoint = _aws_endpoint()
        if endpoint:
            parsed = urlparse(endpoint)
            options["ENDPOINT"] = parsed.netloc
            options["URL_STYLE"] = "path"
            options["USE_SSL"] = "true" if parsed.scheme == "https" else "false"
        body = ", ".join(f"{k} {_sql_literal(v)}" for k, v in options.items())
        return f'CREATE OR REPLACE SECRET "{name}" (TYPE s3, {body})'


@dataclass(frozen=True)
class AwsCredentials:
    key_id: str
    secret: str
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"AwsCredentials(key_id={self.key_id!r})"


def aws_credentials() -> AwsCredentials | None:
    """The environment's keys when set (read on every call, so a rotation is seen at once),
    else those of the standard AWS chain (botocore renews temporary ones before expiry)."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return AwsCredentials(key_id, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    chain = _aws_chain(os.environ.get("AWS_PROFILE"))
    if chain is None:
        return None
    frozen = chain.get_frozen_credentials()
    return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)


def _s3_key(uri: str) -> str:
    """The object key of ``uri`` (``s3://bucket/key``) in its bucket."""
    return uri.split("://", 1)[1].partition("/")[2]


@lru_cache(maxsize=8)
def _s3_store(bucket: str, endpoint: str | None, region: str | None,
              credentials: AwsCredentials | None) -> S3Store:
    """One obstore client per bucket, endpoint, region and credentials (building one costs a
    few ms). Endpoint, region and keys are passed as lamina resolved them for DuckDB's secret
    and deltalake's options, so all three reach the same store with the same identity."""
    from obstore.store import S3Store

    options: dict = {"region": region or "us-east-1"}
    if endpoint:
        options["endpoint"] = endpoint
    if credentials is None:  # no keys anywhere in the AWS chain: anonymous, public buckets
        options["skip_signature"] = True
    else:
        options.update(access_key_id=credentials.key_id,
                       secret_access_key=credentials.secret)
        if credentials.token:
            options["session_token"] = credentials.token
    client = {"allow_http": True} if endpoint and endpoint.startswith("http://") else None
    return S3Store(bucket, config=options, client_options=client)


@lru_cache(maxsize=8)
def _aws_chain(profile: str | None):
    """botocore's resolved credentials for ``profile`` (kept: they refresh themselves)."""
    import botocore.session

    return botocore.session.Session(profile=profile).get_credentials()


def _storage_refused(exc: Exception) -> bool:
    """Whether ``exc`` is the storage refusing a request (access denied, unknown or expired
    credentials), told by what the storage answered rather than by words anywhere in the
    message: a data error whose text holds "forbidden" or "access denied" stays itself.
    s3fs raises PermissionError; deltalake (object_store) an OSError carrying the answer's
    status line and S3 error code; gcsfs an OSError that starts with its 403 "Forbidden:"."""
    if isinstance(exc, PermissionError):
        return True
    text = str(exc)
    code = _ERROR_CODE.search(text)
    if code is not None:
        return code[1] in _REFUSED_CODES
    return isinstance(exc, OSError) and bool(_FORBIDDEN_STATUS.search(text)
                                             or text.startswith("Forbidden: "))


# S3 error codes of a refused request (the ``<Code>`` of the answer's XML body).
_REFUSED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem",
                            "InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
                            "SignatureDoesNotMatch"})
# object_store's line for an answer with HTTP status 403 (after its arrow and colour codes).
_FORBIDDEN_STATUS = re.compile(r"^[^\w<]*403 Forbidden\s*$", re.MULTILINE)
_ERROR_CODE = re.compile(r"<Code>(\w+)</Code>")
_REFUSED_CREDENTIALS = ("InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
                        "SignatureDoesNotMatch")


def _aws_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")


def gcs_endpoint() -> str | None:
    """The local GCS endpoint ``STORAGE_EMULATOR_HOST`` names, as a URL (None when unset)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host or host == "default":
        return None
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"


def _gcs_emulator_secret(name: str, scope: str | None) -> str | None:
    """DuckDB reads ``gs://`` through GCS's S3-compatible API: towards a local endpoint, with
    no credentials. Without one, None: DuckDB's GCS secret takes HMAC keys or a bearer token,
    and lamina does not yet turn Google's credentials into either (README, "Credentials")."""
    endpoint = gcs_endpoint()
    if endpoint is None:
        return None
    parsed = urlparse(endpoint)
    options = {"ENDPOINT": parsed.netloc, "URL_STYLE": "path",
               "USE_SSL": "true" if parsed.scheme == "https" else "false"}
    if scope:
        options["SCOPE"] = scope.rstrip("/") + "/"
    body = ", ".join(f"{k} {_sql_literal(v)}" for k, v in options.items())
    return f'CREATE OR REPLACE SECRET "{name}" (TYPE gcs, {body})'


def _aws_region() -> str | None:
    """The region as the AWS tools resolve it: the environment, else the ``region`` of the
    profile (``AWS_PROFILE``, else ``default``) in the AWS config file. Why read the file:
    lamina's own reads (obstore), DuckDB and deltalake all need the region given; s3fs, which
    read the catalog before, found it through botocore, and a bucket outside us-east-1 set up
    with ``aws configure`` must keep working."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    path = os.environ.get("AWS_CONFIG_FILE") or os.path.join("~", ".aws", "config")
    return _configured_region(os.path.expanduser(path), os.environ.get("AWS_PROFILE") or "default")


@lru_cache(maxsize=8)
def _configured_region(path: str, profile: str) -> str | None:
    """The ``region`` of ``profile`` in the AWS config file at ``path`` (its section is
    ``[default]`` or ``[profile NAME]``); None when the file or the setting is missing."""
    import configparser

    config = configparser.ConfigParser()
    try:
        config.read(path)
    except configparser.Error:
        return None
    section = profile if profile == "default" else f"profile {profile}"
    return config.get(section, "region", fallback=None) or None


def _sql_literal(value: str) -> str:
    if value in ("true", "false"):
        return value
    return "'" + str(value).replace("'", "''") + "'"
