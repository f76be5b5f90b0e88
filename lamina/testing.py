"""A real S3 endpoint on loopback for tests and benchmarks: ``moto_server`` in a child process,
optionally enforcing IAM policies (users, keys, roles and session tokens made with boto3)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Two fixes make moto's IAM checks those of AWS for the requests lamina sends:
# - moto recomputes each request's SigV4 signature from the query string it received,
#   re-encoding values that object_store (deltalake) sent percent-encoded ('/' as %2F), so every
#   LIST deltalake signs fails with SignatureDoesNotMatch: that one comparison is skipped
#   (access keys, deleted ones refused, session tokens' roles and policies are still enforced);
# - moto checks operation names (s3:HeadObject, s3:ListObjectsV2) where AWS checks the IAM
#   actions that cover them (s3:GetObject, s3:ListBucket): they are mapped to those.
_IAM_SERVER = """
import sys
from moto.iam import access_control
AWS_ACTIONS = {"s3:HeadObject": "s3:GetObject", "s3:ListObjectsV2": "s3:ListBucket",
               "s3:ListObjects": "s3:ListBucket", "s3:HeadBucket": "s3:ListBucket",
               "s3:CreateMultipartUpload": "s3:PutObject", "s3:UploadPart": "s3:PutObject",
               "s3:CompleteMultipartUpload": "s3:PutObject", "s3:CopyObject": "s3:PutObject",
               "s3:DeleteObjects": "s3:DeleteObject"}
access_control.IAMRequestBase.check_signature = lambda self: None
check = access_control.IAMRequestBase.check_action_permitted
def check_as_aws(self, resource):
    self._action = AWS_ACTIONS.get(self._action, self._action)
    return check(self, resource)
access_control.IAMRequestBase.check_action_permitted = check_as_aws
from moto.server import main
main(sys.argv[1:])
"""


@contextmanager
def s3_server():
    """Start moto_server on 127.0.0.1, point the AWS environment at it, stop it afterwards.

    Yields the endpoint URL. The environment variables are what users set for any S3-compatible
    store, so lamina's code under test takes its ordinary path.
    """
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable),
                                                      "moto_server")
    with _moto([exe]) as endpoint:
        yield endpoint


@contextmanager
def iam_s3_server():
    """Like :func:`s3_server`, for a server that will enforce IAM (see :func:`enforce_iam`)."""
    with _moto([sys.executable, "-c", _IAM_SERVER]) as endpoint:
        yield endpoint


@contextmanager
def _moto(command: list[str]):
    port = _free_port()
    # moto's request recorder writes to ./moto_recording unless told otherwise (a caller that
    # reads the file itself sets MOTO_RECORDER_FILEPATH).
    recording = os.path.join(tempfile.mkdtemp(prefix="lamina-moto-"), "recording")
    proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"MOTO_RECORDER_FILEPATH": recording, **os.environ})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        with _environ(_ENV, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint):
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(os.path.dirname(recording), ignore_errors=True)


_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@contextmanager
def gcs_server(s3_endpoint: str | None = None):
    """A GCS endpoint on 127.0.0.1 (:mod:`lamina.testing_gcs`, GCS's APIs translated to S3)
    in front of the S3 server ``s3_endpoint`` (a new one when None); ``STORAGE_EMULATOR_HOST``
    points at it while it runs. Buckets are made on the S3 side
    (:func:`create_bucket`). Yields the server: ``.url``, and ``.requests``, every request it
    received."""
    from . import testing_gcs

    with (nullcontext(s3_endpoint) if s3_endpoint else s3_server()) as backend:
        server = testing_gcs.serve(backend)
        try:
            with _environ(STORAGE_EMULATOR_HOST=server.url):
                yield server
        finally:
            server.shutdown()
            server.server_close()
# ---- a slower network ----------------------------------------------------------------------
# Loopback answers in microseconds; a bucket in the same region in 20-50 ms. The proxy puts that
# latency in front of the test server, so request counts show up in times as they would there.

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "expect"}


class LatencyProxy:
    """An HTTP proxy in front of ``upstream`` that waits ``latency_ms`` before forwarding each
    request (bodies, headers and responses passed through, responses streamed), and records
    every request it forwards as (method, path)."""

    def __init__(self, upstream: str, latency_ms: float):
        self.upstream = urlparse(upstream)
        self.latency = latency_ms / 1000
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LatencyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _handler(self):
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clients of a real store expect
            upstream: http.client.HTTPConnection | None = None

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self):
                body = self._body()
                proxy._record(self.command, self.path)
                time.sleep(proxy.latency)
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(
                        proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                self.upstream.putrequest(self.command, self.path, skip_host=True,
                                         skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.upstream.putheader(name, value)
                if body is not None:
                    self.upstream.putheader("Content-Length", str(len(body)))
                self.upstream.endheaders(body)
                response = self.upstream.getresponse()
                self.send_response_only(response.status, response.reason)
                length = response.getheader("Content-Length")
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                if self.command == "HEAD" or length is not None:
                    self.end_headers()
                    while chunk := response.read(1 << 16):
                        self.wfile.write(chunk)
                else:  # no length given: pass the body on chunked
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while chunk := response.read(1 << 16):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                response.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Forward


@contextmanager
def latency_proxy(latency_ms: float, upstream: str | None = None):
    """A :class:`LatencyProxy` in front of ``upstream`` (default: the S3 server the environment
    points at), with ``AWS_ENDPOINT_URL`` pointing at the proxy until the block ends."""
    upstream = upstream or os.environ["AWS_ENDPOINT_URL"]
    proxy = LatencyProxy(upstream, latency_ms).start()
    try:
        with _environ(AWS_ENDPOINT_URL=proxy.endpoint):
            yield proxy
    finally:
        proxy.stop()


@contextmanager
def _environ(restored=(), **values: str):
    """``os.environ`` with ``values`` set until the block ends; then those and the variables
    named in ``restored`` are as they were."""
    saved = {key: os.environ.get(key) for key in (*restored, *values)}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_bucket(name: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    fs.mkdir(name)


# ---- IAM on the test server --------------------------------------------------------------
# moto checks signatures and policies once told to (POST /moto-api/reset-auth with 0); until
# then any key works, which is when the users, keys and roles below are made.

def enforce_iam(endpoint: str) -> None:
    """From now on, ``endpoint`` accepts only known keys, and only what their policies allow.
    Server-wide: use it on a server of its own, not the shared one."""
    # Not form-encoded (urllib's default), or the server parses the body away.
    request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0",
                                     method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()


def _client(service: str, credentials: dict | None = None):
    import boto3

    credentials = credentials or {"AWS_ACCESS_KEY_ID": "testing",
                                  "AWS_SECRET_ACCESS_KEY": "testing"}
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name="us-east-1",
                        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=credentials.get("AWS_SESSION_TOKEN"))


def s3_policy(bucket: str, actions: list[str]) -> dict:
    """A policy allowing ``actions`` on ``bucket`` and its objects."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": actions,
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}


READ_ACTIONS = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
WRITE_ACTIONS = [*READ_ACTIONS, "s3:PutObject", "s3:DeleteObject"]


def iam_user(name: str, policy: dict, admin: dict | None = None) -> dict[str, str]:
    """Create user ``name`` with ``policy``; its first access key as AWS_* variables."""
    iam = _client("iam", admin)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                        PolicyDocument=json.dumps(policy))
    return new_access_key(name, admin)


def new_access_key(user: str, admin: dict | None = None) -> dict[str, str]:
    key = _client("iam", admin).create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def delete_access_key(user: str, key_id: str, admin: dict | None = None) -> None:
    _client("iam", admin).delete_access_key(UserName=user, AccessKeyId=key_id)


def iam_role(name: str, policy: dict, admin: dict | None = None) -> str:
    """Create role ``name`` (assumable by anyone in the account) with ``policy``; its ARN."""
    iam = _client("iam", admin)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName=f"{name}-policy",
                        PolicyDocument=json.dumps(policy))
    return arn


def remove_role_policy(name: str, admin: dict | None = None) -> None:
    _client("iam", admin).delete_role_policy(RoleName=name, PolicyName=f"{name}-policy")


def assume_role(arn: str, credentials: dict) -> dict[str, str]:
    """Temporary credentials (with a session token) for role ``arn``, as AWS_* variables."""
    found = _client("sts", credentials).assume_role(RoleArn=arn, RoleSessionName="lamina-test")
    c = found["Credentials"]
    return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"]}
