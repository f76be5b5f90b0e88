"""A Google Cloud Storage endpoint on loopback for tests: GCS's XML and JSON APIs translated to
the S3 API of a moto server.

No GCS emulator on the package registries serves every client lamina sends to a ``gs://`` root
(fake-gcs-server answers "invalid uploadType" to object_store's XML upload, gcp-storage-emulator
answers 501 to its reads). The four clients need:

- deltalake (object_store): the XML API, which is S3's with ``x-goog-`` headers; a commit is a
  PUT with ``x-goog-if-generation-match: 0`` (create only if absent), which becomes S3's
  ``If-None-Match: *``, so two writers can never both win a version;
- DuckDB (httpfs): GCS's S3-compatible interoperability API, forwarded as it comes;
- gcsfs and pyarrow: the JSON API (object metadata and media, listings, simple, multipart and
  resumable uploads, deletes, rewrites), translated here request by request.

Object generations are not kept: every object reports generation 1, and the only generation
precondition served is 0 ("does not exist yet"); any other is answered 501, not guessed.
Requests are not authenticated (the emulator convention: ``STORAGE_EMULATOR_HOST``).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import re
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlparse

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# Request headers object_store and DuckDB send that mean the same to S3 under another name.
_XML_HEADERS = {"x-goog-copy-source": "x-amz-copy-source"}
_DROPPED = {"host", "authorization", "connection", "transfer-encoding", "keep-alive"}


class _Backend:
    """Signed HTTP requests to the S3 server, one keep-alive connection per thread. Signed,
    because S3 serves an unsigned request as an anonymous reader, whom private objects refuse."""

    def __init__(self, endpoint: str):
        from botocore.credentials import Credentials

        parsed = urlparse(endpoint)
        self.endpoint, self.host, self.port = endpoint, parsed.hostname, parsed.port
        self._credentials = Credentials("testing", "testing")
        self._local = threading.local()

    def _signed(self, method: str, path: str, body: bytes, headers: dict) -> dict:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=self.endpoint + path, data=body,
                             headers=headers)
        S3SigV4Auth(self._credentials, "s3", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in range(2):  # a kept connection the server closed: reconnect once
            con = getattr(self._local, "con", None)
            if con is None:
                con = self._local.con = http.client.HTTPConnection(self.host, self.port,
                                                                   timeout=60)
            try:
                con.request(method, path, body=body,
                            headers=self._signed(method, path, body, headers or {}))
                response = con.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (http.client.HTTPException, ConnectionError):
                con.close()
                self._local.con = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class _Error(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    backend: _Backend  # set on the server's subclass
    uploads: dict  # resumable upload id -> (bucket, name, if_absent, bytearray)
    upload_ids = itertools.count(1)

    def log_message(self, format, *args):  # quiet: tests read failures from the clients
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that went away (a process exiting) needs no answer

    # ---- dispatch ------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        url = urlparse(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.body = self._read_body()
        precondition = (self.headers.get("x-goog-if-generation-match")
                        or self.query.get("ifGenerationMatch"))
        self.server.requests.append((method, self.path, precondition))
        try:
            json_path = re.match(r"/(?:download/)?storage/v1/b", url.path)
            if json_path:
                self._json_api(method, url.path[json_path.end():])
            elif url.path.startswith("/upload/storage/v1/b/"):
                self._upload(method, url.path[len("/upload/storage/v1/b/"):])
            else:
                self._xml_api(method)
        except _Error as exc:
            self._send_json(exc.status, {"error": {"code": exc.status, "message": exc.message,
                                                   "errors": [{"message": exc.message}]}})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # ---- XML API: S3's, forwarded ------------------------------------------------------
    def _xml_api(self, method: str):
        headers = {}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in _DROPPED:
                continue
            if lower == "x-goog-if-generation-match":
                if value != "0":
                    raise _Error(501, "only the generation precondition 0 is served")
                headers["If-None-Match"] = "*"
            elif lower.startswith("x-goog-meta-"):
                headers["x-amz-meta-" + lower[len("x-goog-meta-"):]] = value
            elif lower in _XML_HEADERS:
                headers[_XML_HEADERS[lower]] = value
            elif not lower.startswith(("x-goog-", "x-amz-")):
                headers[name] = value
        status, reply_headers, data = self.backend.request(method, self.path, self.body,
                                                           headers)
        self.send_response(status)
        for name, value in reply_headers:
            lower = name.lower()
            if lower in ("transfer-encoding", "connection", "content-length", "server", "date"):
                continue
            if lower.startswith("x-amz-meta-"):
                name = "x-goog-meta-" + lower[len("x-amz-meta-"):]
            self.send_header(name, value)
        length = dict((k.lower(), v) for k, v in reply_headers).get("content-length")
        self.send_header("Content-Length", length if method == "HEAD" and length
                         else str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    # ---- JSON API ----------------------------------------------------------------------
    def _json_api(self, method: str, rest: str):
        parts = rest.lstrip("/").split("/o/", 1) if rest.strip("/") else [""]
        bucket = unquote(parts[0].removesuffix("/o"))
        if not bucket:
            raise _Error(501, "bucket listing and creation are not served")
        if len(parts) == 1:
            if rest.endswith("/o"):
                return self._list(bucket)
            status, _, _ = self.backend.request("HEAD", f"/{quote(bucket)}")
            if status != 200:
                raise _Error(404, f"bucket {bucket} not found")
            return self._send_json(200, {"kind": "storage#bucket", "id": bucket,
                                         "name": bucket, "location": "US"})
        obj = parts[1]
        copy = re.match(r"(.+)/(?:rewriteTo|copyTo)/b/([^/]+)/o/(.+)$", obj)
        if copy and method == "POST":
            source, target_bucket, target = (unquote(g) for g in copy.groups())
            return self._copy(bucket, source, target_bucket, target)
        name = unquote(obj)
        if method == "DELETE":
            # S3 deletes a missing key quietly; GCS answers 404.
            if not self._exists(bucket, name):
                raise _Error(404, f"No such object: {bucket}/{name}")
            self.backend.request("DELETE", _s3_path(bucket, name))
            return self._send_empty(204)
        if method not in ("GET", "HEAD"):
            raise _Error(501, f"{method} on an object is not served")
        if self.query.get("alt") == "media":
            return self._media(bucket, name, method)
        return self._send_json(200, self._metadata(bucket, name))

    def _exists(self, bucket: str, name: str) -> bool:
        return self.backend.request("HEAD", _s3_path(bucket, name))[0] == 200

    def _metadata(self, bucket: str, name: str) -> dict:
        status, headers, _ = self.backend.request("HEAD", _s3_path(bucket, name))
        if status != 200:
            raise _Error(404, f"No such object: {bucket}/{name}")
        h = {k.lower(): v for k, v in headers}
        updated = parsedate_to_datetime(h["last-modified"])
        return _object_resource(bucket, name, int(h.get("content-length", 0)),
                                h.get("etag", ""), updated,
                                h.get("content-type", "application/octet-stream"))

    def _media(self, bucket: str, name: str, method: str):
        headers = {"Range": self.headers["Range"]} if self.headers.get("Range") else {}
        status, reply_headers, data = self.backend.request(method, _s3_path(bucket, name),
                                                           headers=headers)
        if status == 404:
            raise _Error(404, f"No such object: {bucket}/{name}")
        if status == 416:
            raise _Error(416, "requested range not satisfiable")
        self.send_response(status)
        for key, value in reply_headers:
            if key.lower() in ("content-range", "content-type", "etag", "last-modified"):
                self.send_header(key, value)
        self.send_header("x-goog-generation", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _list(self, bucket: str):
        q = self.query
        params = {"list-type": "2", "prefix": q.get("prefix", ""),
                  "max-keys": q.get("maxResults", "1000")}
        if q.get("delimiter"):
            params["delimiter"] = q["delimiter"]
        if q.get("pageToken"):
            params["continuation-token"] = q["pageToken"]
        if q.get("startOffset"):
            params["start-after"] = q["startOffset"]
        if q.get("matchGlob") or q.get("endOffset"):
            raise _Error(501, "matchGlob and endOffset are not served")
        path = f"/{quote(bucket)}?" + "&".join(f"{k}={quote(v, safe='')}"
                                               for k, v in params.items())
        status, _, data = self.backend.request("GET", path)
        if status != 200:
            raise _Error(404 if status == 404 else 502, f"listing {bucket}: S3 {status}")
        root = ET.fromstring(data)
        items = []
        for c in root.iter(_S3_NS + "Contents"):
            key = c.findtext(_S3_NS + "Key")
            if q.get("startOffset") and key < q["startOffset"]:
                continue
            items.append(_object_resource(
                bucket, key, int(c.findtext(_S3_NS + "Size")), c.findtext(_S3_NS + "ETag") or "",
                datetime.fromisoformat(c.findtext(_S3_NS + "LastModified").replace("Z",
                                                                                   "+00:00"))))
        result = {"kind": "storage#objects", "items": items,
                  "prefixes": [p.findtext(_S3_NS + "Prefix")
                               for p in root.iter(_S3_NS + "CommonPrefixes")]}
        token = root.findtext(_S3_NS + "NextContinuationToken")
        if token:
            result["nextPageToken"] = token
        self._send_json(200, result)

    def _copy(self, bucket: str, source: str, target_bucket: str, target: str):
        status, _, data = self.backend.request(
            "PUT", _s3_path(target_bucket, target),
            headers={"x-amz-copy-source": quote(f"/{bucket}/{source}")})
        if status != 200:
            raise _Error(404 if status == 404 else 502, f"copy {bucket}/{source}: S3 {status}")
        resource = self._metadata(target_bucket, target)
        self._send_json(200, {"kind": "storage#rewriteResponse", "done": True,
                              "totalBytesRewritten": resource["size"],
                              "objectSize": resource["size"], "resource": resource})

    # ---- uploads -----------------------------------------------------------------------
    def _upload(self, method: str, rest: str):
        bucket = unquote(rest.split("/", 1)[0])
        kind = self.query.get("uploadType")
        if_absent = self._if_absent()
        if kind == "media" and method == "POST":
            return self._store(bucket, self.query["name"], self.body, if_absent)
        if kind == "multipart" and method == "POST":
            metadata, data = _split_multipart(self.headers["Content-Type"], self.body)
            return self._store(bucket, metadata.get("name") or self.query["name"], data,
                               if_absent, metadata.get("contentType"))
        if kind == "resumable" and "upload_id" in self.query:  # gcsfs POSTs parts, others PUT
            return self._resume(self.query["upload_id"])
        if kind == "resumable" and method == "POST":
            metadata = json.loads(self.body or b"{}")
            upload_id = str(next(self.upload_ids))
            self.uploads[upload_id] = (bucket, metadata.get("name") or self.query["name"],
                                       if_absent, bytearray())
            host = self.headers.get("Host")
            self.send_response(200)
            self.send_header("Location", f"http://{host}/upload/storage/v1/b/{quote(bucket)}"
                                         f"/o?uploadType=resumable&upload_id={upload_id}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        raise _Error(501, f"upload type {kind!r} with {method} is not served")

    def _if_absent(self) -> bool:
        match = self.query.get("ifGenerationMatch")
        if match not in (None, "0"):
            raise _Error(501, "only the generation precondition 0 is served")
        return match == "0"

    def _resume(self, upload_id: str):
        if upload_id not in self.uploads:
            raise _Error(404, f"no resumable upload {upload_id}")
        bucket, name, if_absent, received = self.uploads[upload_id]
        received += self.body
        # "bytes 0-99/*" (more to come), "bytes 0-99/100" or "bytes */100" (the last part).
        total = (self.headers.get("Content-Range") or "").rpartition("/")[2]
        if total in ("*", "") or int(total) > len(received):
            self.send_response(308)
            if received:
                self.send_header("Range", f"bytes=0-{len(received) - 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        del self.uploads[upload_id]
        self._store(bucket, name, bytes(received), if_absent)

    def _store(self, bucket: str, name: str, data: bytes, if_absent: bool,
               content_type: str | None = None):
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if if_absent:
            headers["If-None-Match"] = "*"
        status, _, reply = self.backend.request("PUT", _s3_path(bucket, name), data, headers)
        if status == 412:
            raise _Error(412, f"{bucket}/{name} exists (ifGenerationMatch=0)")
        if status != 200:
            raise _Error(404 if status == 404 else 502, f"put {bucket}/{name}: S3 {status}")
        self._send_json(200, self._metadata(bucket, name))

    # ---- replies -----------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_empty(self, status: int):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _s3_path(bucket: str, name: str) -> str:
    return f"/{quote(bucket)}/{quote(name)}"


def _object_resource(bucket: str, name: str, size: int, etag: str, updated: datetime,
                     content_type: str = "application/octet-stream") -> dict:
    etag = etag.strip('"')
    stamp = updated.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    resource = {"kind": "storage#object", "id": f"{bucket}/{name}/1", "bucket": bucket,
                "name": name, "size": str(size), "etag": etag, "contentType": content_type,
                "generation": "1", "metageneration": "1", "updated": stamp,
                "timeCreated": stamp, "storageClass": "STANDARD"}
    if re.fullmatch(r"[0-9a-f]{32}", etag):  # a single-part upload: the ETag is its MD5
        resource["md5Hash"] = base64.b64encode(bytes.fromhex(etag)).decode()
    return resource


def _split_multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    """The JSON metadata and the data of a ``multipart/related`` upload."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    parts = body.split(b"--" + boundary)
    # parts: preamble, metadata part, data part, closing "--"
    meta_part, data_part = parts[1], parts[2]
    meta = json.loads(re.split(rb"\r?\n\r?\n", meta_part, maxsplit=1)[1])
    data = re.split(rb"\r?\n\r?\n", data_part, maxsplit=1)[1]
    return meta, re.sub(rb"\r?\n$", b"", data, count=1)


def serve(s3_endpoint: str) -> ThreadingHTTPServer:
    """A started proxy on a free loopback port in front of ``s3_endpoint``; stop it with
    ``shutdown()``. ``server.url`` is its address; ``server.requests`` lists every request it
    received as (method, path and query, generation precondition or None)."""
    handler = type("GcsHandler", (_Handler,), {"backend": _Backend(s3_endpoint),
                                               "uploads": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_port}"
    server.requests = []
    threading.Thread(target=server.serve_forever, name="gcs-proxy", daemon=True).start()
    return server
