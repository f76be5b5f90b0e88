"""Fixtures shared by every test: an isolated home and user, loopback S3 and GCS servers, and the
storage roots (local folder, ``s3://`` and, for the tests that ask, ``gs://``) on which catalog
tests run."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from lamina import testing

from helpers import new_gcs_root, new_s3_root, reset_process_state

# CI runs the property tests on the same examples every time, so a run that lands is
# reproducible; elsewhere Hypothesis explores new ones (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TEST_USER = {"LAMINA_USER_HANDLE": "testuser1", "LAMINA_USER_NAME": "Test User1"}


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own LAMINA_HOME (settings file), cache and the same test user."""
    home = tmp_path_factory.mktemp("lamina-home")
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("LAMINA_INSTANCE", raising=False)
    for key, value in TEST_USER.items():
        monkeypatch.setenv(key, value)
    reset_process_state()
    yield home
    reset_process_state()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto_server on 127.0.0.1 for the whole session; AWS_* variables point at it."""
    with testing.s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint(s3_endpoint):
    """A GCS endpoint for the whole session, in front of the S3 server (lamina.testing_gcs);
    STORAGE_EMULATOR_HOST points at it. The server: ``.url``, ``.requests``."""
    with testing.gcs_server(s3_endpoint) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path_factory) -> str:
    """A fresh, empty storage root: a local folder, or a prefix in a new bucket on moto (S3, or
    GCS for tests parametrized with ``helpers.every_root``)."""
    if request.param == "local":
        return str(tmp_path_factory.mktemp("root"))
    if request.param == "gs":
        request.getfixturevalue("gcs_endpoint")
        return new_gcs_root()
    request.getfixturevalue("s3_endpoint")
    return new_s3_root()


@pytest.fixture
def local_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("root"))


@pytest.fixture
def instance(root):
    import lamina as ln

    return ln.init(storage=root)


@pytest.fixture
def block_reads(monkeypatch) -> list:
    """The blocks of rows the row index reads from data files themselves (engine/row_index.py),
    as (row group, start in the group); rows from a decoded copy (row_cache.py) are not."""
    from lamina.engine import row_index

    reads = []
    read_block = row_index._DataFile.read_block

    def counted(self, group, start):
        reads.append((group, start))
        return read_block(self, group, start)

    monkeypatch.setattr(row_index._DataFile, "read_block", counted)
    return reads
