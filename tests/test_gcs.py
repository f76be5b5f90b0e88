"""A ``gs://`` root reached through GCS's own APIs (the loopback endpoint of
``lamina.testing_gcs``): commits are put-if-absent there, so two writers never both win a
version. The instance, concurrency and ``ln.sql`` tests marked ``every_root`` run on a
``gs://`` root as well."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from urllib.parse import quote, unquote, urlparse

import pytest
import s3fs

import lamina as ln

from helpers import new_gcs_root, python, write_file


@pytest.fixture
def gcs_root(gcs_endpoint) -> str:
    return new_gcs_root()


def s3_side(endpoint: str) -> s3fs.S3FileSystem:
    """The objects as the S3 server behind the GCS endpoint holds them: an oracle that does
    not go through the endpoint under test."""
    return s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing",
                             skip_instance_cache=True, use_listings_cache=False)


def gcs_request(url: str, method: str, path: str, body: bytes = b"",
                headers: dict | None = None) -> int:
    parsed = urlparse(url)
    con = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        con.request(method, path, body=body, headers=headers or {})
        response = con.getresponse()
        response.read()
        return response.status
    finally:
        con.close()


def first_commit(root: str) -> tuple[str, str]:
    """Bucket and object name of the first commit of the user registry's Delta log (made by
    init, which registers the user)."""
    bucket, _, prefix = root.removeprefix("gs://").partition("/")
    return bucket, f"{prefix}/.lamina/catalog/core/user/_delta_log/{0:020d}.json"


def test_lamina_commits_on_gcs_are_put_if_absent(gcs_root, gcs_endpoint, tmp_path):
    ln.init(storage=gcs_root)
    gcs_endpoint.requests.clear()
    ln.Artifact(write_file(tmp_path, "a.txt", "a"), key="a.txt").save()
    commits = [(method, precondition) for method, path, precondition in gcs_endpoint.requests
               if method == "PUT" and "/_delta_log/0" in unquote(path)
               and unquote(path).endswith(".json")]
    assert commits, "the save committed nothing through the GCS endpoint"
    assert all(precondition == "0" for _, precondition in commits), commits


def test_an_existing_version_is_never_replaced(gcs_root, gcs_endpoint, s3_endpoint):
    ln.init(storage=gcs_root)
    bucket, name = first_commit(gcs_root)
    stored = s3_side(s3_endpoint).cat_file(f"{bucket}/{name}")
    xml_path = f"/{quote(bucket)}/{quote(name, safe='')}"
    # The XML API (deltalake's) and the JSON API (gcsfs's) both refuse, with 412.
    assert gcs_request(gcs_endpoint.url, "PUT", xml_path, b'{"forged": 1}',
                       {"x-goog-if-generation-match": "0"}) == 412
    json_path = (f"/upload/storage/v1/b/{quote(bucket)}/o?uploadType=media"
                 f"&name={quote(name, safe='')}&ifGenerationMatch=0")
    assert gcs_request(gcs_endpoint.url, "POST", json_path, b'{"forged": 2}') == 412
    assert s3_side(s3_endpoint).cat_file(f"{bucket}/{name}") == stored


def test_racing_creators_of_one_version_have_one_winner(gcs_root, gcs_endpoint, s3_endpoint):
    bucket, name = first_commit(gcs_root)
    name = name.replace(f"{0:020d}", f"{7:020d}")
    path = f"/{quote(bucket)}/{quote(name, safe='')}"
    start = threading.Barrier(6)
    statuses: dict[int, int] = {}

    def create(i: int) -> None:
        start.wait()
        statuses[i] = gcs_request(gcs_endpoint.url, "PUT", path, f"writer {i}".encode(),
                                  {"x-goog-if-generation-match": "0"})

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, status in statuses.items() if status == 200]
    assert len(winners) == 1 and sorted(statuses.values()) == [200] + [412] * 5, statuses
    assert s3_side(s3_endpoint).cat_file(f"{bucket}/{name}") == f"writer {winners[0]}".encode()


def test_a_large_artifact_round_trips_through_a_resumable_upload(gcs_root, gcs_endpoint,
                                                                  tmp_path):
    ln.init(storage=gcs_root)
    content = bytes(range(256)) * (24 * 4096)  # 24 MiB: gcsfs uploads it in parts
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    gcs_endpoint.requests.clear()
    artifact = ln.Artifact(str(path), key="big.bin").save()
    assert any("uploadType=resumable" in p for _, p, _ in gcs_endpoint.requests)
    out = python(f"""
        import hashlib
        ln.connect({gcs_root!r})
        data = open(ln.Artifact.get(key="big.bin").cache(), "rb").read()
        print(len(data), hashlib.sha256(data).hexdigest())
    """).stdout.split()
    assert out == [str(len(content)), hashlib.sha256(content).hexdigest()]
    assert artifact.size == len(content)


def test_queries_on_gcs_read_through_duckdb(gcs_root, tmp_path):
    ln.init(storage=gcs_root)
    for i in range(3):
        ln.Record(name=f"r{i}").save()
    assert ln.Record.filter(name__startswith="r").count() == 3
    assert sorted(ln.sql("SELECT name FROM record")["name"]) == ["r0", "r1", "r2"]
    assert json.loads(python(f"""
        ln.connect({gcs_root!r})
        print(json.dumps(sorted(ln.Record.filter().to_arrow(columns=["name"])["name"]
                                .to_pylist())))
    """).stdout) == ["r0", "r1", "r2"]
