"""Access on an S3 server that enforces IAM policies: a user who may only read connects and
queries without writing anything; a save without write permission fails with an error naming
the bucket and the permission, leaving nothing behind; rotated keys and new session tokens are
picked up without reconnecting."""

from __future__ import annotations

import types
import uuid

import pytest
import s3fs

import lamina as ln
from lamina import testing
from lamina.catalog import append_commit
from lamina.engine import row_index

from helpers import reset_process_state

FULL_ACCESS = {"Version": "2012-10-17",
               "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def iam():
    """A moto server of its own (enforcing IAM is server-wide), a bucket, and its users."""
    with testing.iam_s3_server() as endpoint:
        bucket = f"lamina-iam-{uuid.uuid4().hex[:12]}"
        testing.create_bucket(bucket)
        admin = testing.iam_user("admin", FULL_ACCESS)
        world = types.SimpleNamespace(
            endpoint=endpoint, bucket=bucket, admin=admin,
            writer=testing.iam_user("writer", testing.s3_policy(bucket, testing.WRITE_ACTIONS)),
            reader=testing.iam_user("reader", testing.s3_policy(bucket, testing.READ_ACTIONS)),
            role=testing.iam_role("writer-role",
                                  testing.s3_policy(bucket, testing.WRITE_ACTIONS)),
            other_role=testing.iam_role("other-writer-role",
                                        testing.s3_policy(bucket, testing.WRITE_ACTIONS)))
        testing.enforce_iam(endpoint)
        yield world


def use(monkeypatch, credentials: dict) -> None:
    """Make ``credentials`` the ones in force (as a shell or an SSO helper would)."""
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)


def objects(iam) -> dict[str, str]:
    """Every object of the bucket and its ETag, listed with the admin's keys."""
    fs = s3fs.S3FileSystem(endpoint_url=iam.endpoint, key=iam.admin["AWS_ACCESS_KEY_ID"],
                           secret=iam.admin["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True,
                           use_listings_cache=False)
    return {path: info["ETag"] for path, info in fs.find(iam.bucket, detail=True).items()}


@pytest.fixture
def written(iam, monkeypatch, tmp_path):
    """A root the writer filled: records, a feature value, an artifact file."""
    use(monkeypatch, iam.writer)
    root = f"s3://{iam.bucket}/{uuid.uuid4().hex[:8]}"
    ln.init(storage=root)
    ln.Feature(name="temperature", dtype=float).save()
    for name in ("r1", "r2"):
        ln.Record(name=name).save()
    path = tmp_path / "data.txt"
    path.write_text("hello")
    artifact = ln.Artifact(str(path), key="data.txt").save()
    artifact.features.add_values({"temperature": 21.5})
    reset_process_state()
    return root


@pytest.mark.parametrize("handle", ["newreader", "testuser1"])
def test_a_read_only_user_connects_and_queries_without_writing(iam, written, monkeypatch,
                                                                handle):
    """Whether or not the reader was ever registered in the instance."""
    before = objects(iam)
    use(monkeypatch, iam.reader)
    monkeypatch.setenv("LAMINA_USER_HANDLE", handle)
    ln.connect(written)
    assert sorted(r.name for r in ln.Record.filter()) == ["r1", "r2"]
    assert [a.key for a in ln.Artifact.filter(temperature__gt=20)] == ["data.txt"]
    frame = ln.Artifact.filter().to_dataframe(include="features")
    assert list(frame["temperature"]) == [21.5]
    assert ln.sql("SELECT count(*) AS n FROM record")["n"][0] == 2
    assert ln.Record.search("r1").first().name == "r1"
    assert open(ln.Artifact.get(key="data.txt").cache()).read() == "hello"
    assert objects(iam) == before


@pytest.mark.parametrize("handle", ["newreader", "testuser1"])
def test_a_save_without_write_permission_fails_clearly_and_writes_nothing(
        iam, written, monkeypatch, tmp_path, handle):
    before = objects(iam)
    use(monkeypatch, iam.reader)
    monkeypatch.setenv("LAMINA_USER_HANDLE", handle)
    ln.connect(written)
    path = tmp_path / "new.txt"
    path.write_text("new")
    record = ln.Record.get(name="r1")
    record.description = "changed"
    # An append the store commits (s3fs: PermissionError), an upload, and an update
    # deltalake commits (object_store: the answer's 403 status and <Code>AccessDenied</Code>).
    for save in (lambda: ln.Record(name="r3").save(),
                 lambda: ln.Artifact(str(path), key="new.txt").save(),
                 record.save):
        with pytest.raises(ln.PermissionDenied) as info:
            save()
        message = str(info.value)
        assert iam.bucket in message and "s3:PutObject" in message
    assert objects(iam) == before
    assert ln.Record.filter().count() == 2


def test_rotated_keys_are_picked_up_without_reconnecting(iam, monkeypatch):
    use(monkeypatch, iam.writer)
    ln.init(storage=f"s3://{iam.bucket}/{uuid.uuid4().hex[:8]}")
    ln.Record(name="before").save()
    assert ln.Record.filter().count() == 1
    fresh = testing.new_access_key("writer", iam.admin)
    use(monkeypatch, fresh)
    testing.delete_access_key("writer", iam.writer["AWS_ACCESS_KEY_ID"], iam.admin)
    iam.writer = fresh  # the old key is gone for the tests after this one
    ln.Record(name="after").save()
    assert sorted(r.name for r in ln.Record.filter()) == ["after", "before"]
    assert sorted(ln.sql("SELECT name FROM record")["name"]) == ["after", "before"]


def test_a_row_copy_built_while_keys_rotate_reads_on_with_the_new_ones(iam, monkeypatch):
    """The build of a data file's decoded row copy (engine/row_cache.py) reads the file a row
    group at a time, on its own thread: a group read after the keys rotated uses the new
    ones."""
    monkeypatch.setattr(append_commit, "ROW_GROUP_ROWS", 2)
    use(monkeypatch, iam.writer)
    ln.init(storage=f"s3://{iam.bucket}/{uuid.uuid4().hex[:8]}")
    ln.save([ln.Record(name=f"g{i}") for i in range(4)])  # one file of two row groups
    snapshot = ln.current().store(ln.Record._spec).snapshot()
    (file,) = snapshot.files
    groups = row_index._DataFile(snapshot, file).row_groups()
    names = next(groups).column("name").to_pylist()
    fresh = testing.new_access_key("writer", iam.admin)
    use(monkeypatch, fresh)
    testing.delete_access_key("writer", iam.writer["AWS_ACCESS_KEY_ID"], iam.admin)
    iam.writer = fresh  # the old key is gone for the tests after this one
    names += [name for group in groups for name in group.column("name").to_pylist()]
    assert names == ["g0", "g1", "g2", "g3"]


def test_a_new_session_token_is_picked_up_without_reconnecting(iam, monkeypatch):
    use(monkeypatch, testing.assume_role(iam.role, iam.admin))
    ln.init(storage=f"s3://{iam.bucket}/{uuid.uuid4().hex[:8]}")
    ln.Record(name="first token").save()
    use(monkeypatch, testing.assume_role(iam.other_role, iam.admin))
    # The first session's credentials stop working, as when a token expires.
    testing.remove_role_policy("writer-role", iam.admin)
    ln.Record(name="second token").save()
    assert sorted(r.name for r in ln.Record.filter()) == ["first token", "second token"]
    assert sorted(ln.sql("SELECT name FROM record")["name"]) == ["first token", "second token"]
