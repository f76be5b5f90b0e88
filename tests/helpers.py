"""Helpers for tests that need a second Python process or look at a root's files directly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import contextmanager

import fsspec
import pytest

from lamina import testing
from lamina.catalog import instance as lamina_instance
from lamina.catalog.location import Location
from lamina.engine import session as lamina_session

# For tests whose subject does not depend on the kind of root (argument checks, identity rules):
# run them on the local root only, which keeps the suite fast.
local_only = pytest.mark.parametrize("root", ["local"], indirect=True)
# For the tests that also run on a gs:// root (the GCS endpoint of lamina.testing_gcs): what
# reaches GCS differently from S3 (instance files, commits, queries, several processes).
every_root = pytest.mark.parametrize("root", ["local", "s3", "gs"], indirect=True)


def reset_process_state() -> None:
    """Forget the active instance and close the DuckDB sessions opened for earlier ones, once
    the checkpoints this process writes in the background are written and the sessions'
    decoded row copies built (a build must not outlive its test's folders)."""
    from lamina.catalog import checkpoint

    checkpoint.wait_written()
    lamina_instance.disconnect()
    with lamina_session._sessions_lock:
        sessions = list(lamina_session._sessions.values())
        lamina_session._sessions.clear()
    for found in sessions:
        found._by_value.row_index.row_cache.wait()
        found.close()


def wait_until_lasted() -> None:
    """Sleep until the table versions read so far have lasted long enough for the session to
    keep copies of them in memory (``IN_MEMORY_AFTER_SECONDS``, read at the call so a
    monkeypatched value counts)."""
    time.sleep(lamina_session.IN_MEMORY_AFTER_SECONDS + 0.05)


def each_way(check) -> None:
    """``check()`` on a version's files, then (once the version has lasted) on the copy in
    memory, twice: the copy is made by the first of the two."""
    check()
    wait_until_lasted()
    check()
    check()


def new_s3_root(prefix: str = "root") -> str:
    """A prefix in a new bucket on the test S3 server (which must be running)."""
    bucket = f"lamina-test-{uuid.uuid4().hex[:16]}"
    testing.create_bucket(bucket)
    return f"s3://{bucket}/{prefix}"


def new_gcs_root(prefix: str = "root") -> str:
    """A prefix in a new bucket on the test GCS endpoint (which must be running); the bucket
    is made on the S3 server behind it."""
    bucket = f"lamina-test-{uuid.uuid4().hex[:16]}"
    testing.create_bucket(bucket)
    return f"gs://{bucket}/{prefix}"

@contextmanager
def module_root(request, tmp_path_factory, user: dict):
    """For module-scoped fixtures that build a world once: an isolated LAMINA_HOME and ``user``
    while it is built, and a fresh root of the kind ``request.param`` names (local or s3)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAMINA_HOME", str(tmp_path_factory.mktemp("module-home")))
        for key, value in user.items():
            env.setenv(key, value)
        if request.param == "s3":
            request.getfixturevalue("s3_endpoint")
            yield new_s3_root()
        else:
            yield str(tmp_path_factory.mktemp("module-root"))


PRELUDE = "import json, os, sys\nimport lamina as ln\n"


def python(code: str, *, env: dict | None = None, timeout: float = 180,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this test's environment (LAMINA_HOME, user,
    AWS endpoint); raise with its stderr if it fails."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"child process failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def spawn(code: str, *, env: dict | None = None) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter without waiting for it (stdout piped, line mode)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-u", "-c", PRELUDE + textwrap.dedent(code)],
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def filesystem(root: str):
    """A fresh fsspec filesystem for ``root`` (no listing cache shared with lamina's own)."""
    location = Location.of(root)
    if location.is_local:
        return fsspec.filesystem("file")
    return location.fs_class(skip_instance_cache=True, use_listings_cache=False,
                             **location.fsspec_options)


def objects_under(root: str) -> list[str]:
    """Every object file of the root's managed storage, as paths relative to the objects dir."""
    location = Location.of(root)
    fs = filesystem(root)
    base = location.join(".lamina/objects")
    if not fs.exists(base):
        return []
    stripped = base.split("://", 1)[-1].rstrip("/") + "/"
    return sorted(p.split("://", 1)[-1][len(stripped):] for p in fs.find(base))


def read_bytes(root: str, path: str) -> bytes:
    return filesystem(root).cat_file(path)


def exists(root: str, path: str) -> bool:
    return filesystem(root).exists(path)


def s3_requests(action) -> list[tuple[str, str]]:
    """(method, path) of every request the test S3 server receives while ``action()`` runs
    (moto's request recorder)."""
    import json
    import urllib.request

    base = os.environ["AWS_ENDPOINT_URL"] + "/moto-api/recorder/"

    def call(path: str) -> bytes:
        method = "GET" if path == "download-recording" else "POST"
        request = urllib.request.Request(base + path, data=None if method == "GET" else b"",
                                         method=method)
        return urllib.request.urlopen(request).read()

    def wait_for_checkpoints() -> None:
        checkpoint = sys.modules.get("lamina.catalog.checkpoint")
        if checkpoint is not None:
            checkpoint.wait_written()

    # The checkpoints a save writes after its commit, on a thread of their own, belong to that
    # save: an earlier save's are not counted, this action's are.
    wait_for_checkpoints()
    call("reset-recording")
    call("start-recording")
    try:
        action()
        wait_for_checkpoints()
    finally:
        call("stop-recording")
    lines = call("download-recording").decode().splitlines()
    return [(r["method"], r["url"]) for r in map(json.loads, filter(str.strip, lines))]
def write_file(folder, name: str, text: str) -> str:
    """A small text file ``folder/name`` holding ``text``; its path."""
    path = folder / name
    path.write_text(text)
    return str(path)


def statements_of(monkeypatch, method: str) -> list[str]:
    """The SQL of every ``Session.<method>`` call (``arrow`` runs the query statements,
    ``scalar`` the counts) while the test runs, in order."""
    calls = []
    original = getattr(lamina_session.Session, method)

    def recorded(self, sql, params=None, specs=()):
        calls.append(sql)
        return original(self, sql, params, specs)

    monkeypatch.setattr(lamina_session.Session, method, recorded)
    return calls
