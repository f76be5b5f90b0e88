"""Instances: init, connect from other processes, the remembered current instance, and the
refusals that keep one root from being taken over by a second instance."""

from __future__ import annotations

import json

import pytest

import lamina as ln
from lamina.catalog import instance as lamina_instance
from lamina.catalog import settings

from helpers import (every_root, exists, new_s3_root, python, read_bytes, reset_process_state,
                     spawn)


def meta_path(root: str) -> str:
    return f"{root}/.lamina/instance.json"


def write_file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@every_root
def test_init_creates_instance_metadata_and_bootstrap_rows(root):
    instance = ln.init(storage=root)

    meta = json.loads(read_bytes(root, meta_path(root)))
    assert meta["uid"] == instance.uid
    assert meta["owner"] == "testuser1"
    assert meta["modules"] == []
    assert ln.current() is instance
    user = ln.User.get(handle="testuser1")
    assert user.name == "Test User1"
    assert instance.user_id == user.id
    storage = ln.Storage.get(root=root)
    assert storage.instance_uid == instance.uid
    assert storage.type == {"s3": "s3", "gs": "gs"}.get(root.split("://")[0], "local")
    assert instance.storage_id == storage.id
    assert settings.current_instance_root() == root


@every_root
def test_init_twice_by_the_same_user_connects_to_the_same_instance(root):
    first = ln.init(storage=root)
    before = read_bytes(root, meta_path(root))
    reset_process_state()
    second = ln.init(storage=root)
    assert second.uid == first.uid
    assert read_bytes(root, meta_path(root)) == before
    # Bootstrap rows are inserted only when missing: one user, one storage, three branches.
    assert ln.User.filter().count() == 1
    assert ln.Storage.filter().count() == 1
    assert sorted(ln.Branch.filter().to_arrow(columns=["name"])["name"].to_pylist()) == [
        "archive", "main", "trash"]


@every_root
def test_second_process_connects_and_sees_saved_artifacts(root, tmp_path):
    ln.init(storage=root)
    saved = {}
    for i in range(2):
        artifact = ln.Artifact(write_file(tmp_path, f"f{i}.txt", f"content {i}".encode()),
                               key=f"dir/f{i}.txt").save()
        saved[artifact.uid] = artifact.key

    out = python(f"""
        ln.connect({root!r})
        rows = ln.Artifact.filter().to_arrow(columns=["uid", "key"]).to_pylist()
        print(json.dumps({{r["uid"]: r["key"] for r in rows}}))
        # ... and writes something the first process must see too.
        path = os.path.join({str(tmp_path)!r}, "from_child.txt")
        open(path, "w").write("written by the child")
        print(ln.Artifact(path, key="child.txt").save().uid)
    """).stdout.splitlines()
    assert json.loads(out[0]) == saved
    child_uid = out[1]
    # The first process's views move to the snapshot the child committed.
    assert ln.Artifact.get(child_uid).key == "child.txt"
    assert ln.Artifact.filter().count() == 3


@every_root
def test_a_colleagues_later_processes_save_as_the_colleague_in_the_roots_storage(
        root, tmp_path_factory):
    ln.init(storage=root)
    ln.Record(name="first row").save()
    # The colleague's machine: its own settings. Their first save registers them (id 2);
    # the next process on that machine takes both ids from what the machine remembered.
    colleague = {"LAMINA_HOME": str(tmp_path_factory.mktemp("colleague-home")),
                 "LAMINA_USER_HANDLE": "colleague"}
    folder = tmp_path_factory.mktemp("colleague-files")
    for name in ("first", "second"):
        python(f"""
            ln.connect({root!r})
            path = os.path.join({str(folder)!r}, "{name}.txt")
            open(path, "w").write("{name} by the colleague")
            ln.Artifact(path, key="colleague/{name}.txt").save()
        """, env=colleague)

    users = dict(zip(*ln.User.filter().to_arrow(columns=["id", "handle"]).to_pydict().values()))
    storages = dict(zip(*ln.Storage.filter().to_arrow(columns=["id", "root"])
                        .to_pydict().values()))
    assert sorted(users.values()) == ["colleague", "testuser1"]
    for name in ("first", "second"):
        artifact = ln.Artifact.get(key=f"colleague/{name}.txt")
        assert users[artifact.created_by_id] == "colleague"
        assert storages[artifact.storage_id] == root
        with open(artifact.cache()) as f:
            assert f.read() == f"{name} by the colleague"
    # The user's own machine still saves as the user.
    own = ln.Record(name="second row").save()
    assert users[own.created_by_id] == "testuser1"


@every_root
def test_current_instance_is_remembered_across_processes(root, tmp_path):
    ln.init(storage=root)
    artifact = ln.Artifact(write_file(tmp_path, "a.csv", b"x,y\n1,2\n"), key="a.csv").save()
    out = python("""
        print(ln.current().root)
        print(ln.Artifact.get(key="a.csv").uid)
    """).stdout.splitlines()
    assert out == [root, artifact.uid]


def test_lamina_instance_variable_overrides_the_remembered_instance(tmp_path_factory):
    first = str(tmp_path_factory.mktemp("first"))
    second = str(tmp_path_factory.mktemp("second"))
    ln.init(storage=first)
    ln.Record(name="only-in-first").save()
    ln.init(storage=second)  # now remembered
    out = python("""
        print(ln.current().root, ln.Record.filter(name="only-in-first").count())
    """, env={"LAMINA_INSTANCE": first}).stdout.split()
    assert out == [first, "1"]
    out = python("print(ln.current().root)").stdout.split()
    assert out == [second]


def test_no_instance_anywhere_is_a_clear_error():
    with pytest.raises(ln.InstanceError, match=r"ln\.init"):
        ln.Artifact.filter().count()


@every_root
def test_init_over_another_users_instance_is_refused(root, monkeypatch):
    original = ln.init(storage=root)
    ln.Record(name="owned by testuser1").save()
    before = read_bytes(root, meta_path(root))

    reset_process_state()
    monkeypatch.setenv("LAMINA_USER_HANDLE", "intruder")
    with pytest.raises(ln.InstanceError, match="testuser1") as error:
        ln.init(storage=root)
    assert "ln.connect" in str(error.value)
    assert read_bytes(root, meta_path(root)) == before

    # The other user can still connect and work in it as a collaborator; the instance is intact.
    connected = ln.connect(root)
    assert connected.uid == original.uid
    assert ln.Record.get(name="owned by testuser1").created_by.handle == "testuser1"
    # Connecting writes nothing; the collaborator is registered by their first save.
    assert ln.User.filter().to_arrow(columns=["handle"])["handle"].to_pylist() == ["testuser1"]
    ln.Record(name="by the collaborator").save()
    assert ln.Record.get(name="by the collaborator").created_by.handle == "intruder"
    assert sorted(ln.User.filter().to_arrow(columns=["handle"])["handle"].to_pylist()) == [
        "intruder", "testuser1"]


@every_root
def test_init_with_other_modules_over_an_instance_is_refused(root):
    ln.init(storage=root)
    before = read_bytes(root, meta_path(root))
    reset_process_state()
    with pytest.raises(ln.InstanceError, match="refusing to overwrite"):
        ln.init(storage=root, modules="bionty")
    assert read_bytes(root, meta_path(root)) == before
    assert ln.connect(root).modules == []


@every_root
def test_connect_to_a_root_without_instance_is_a_clear_error(root, tmp_path_factory):
    remembered = str(tmp_path_factory.mktemp("remembered"))
    ln.init(storage=remembered)
    with pytest.raises(ln.InstanceError, match="holds no lamina instance"):
        ln.connect(root)
    # Nothing was created there, and the remembered instance is still the previous one.
    assert not exists(root, meta_path(root))
    assert settings.current_instance_root() == remembered
    assert ln.current().root == remembered


@every_root
def test_unknown_module_is_refused_before_anything_is_written(root):
    with pytest.raises(ln.InstanceError, match="bionty"):
        ln.init(storage=root, modules="biontyy")
    assert not exists(root, meta_path(root))


@every_root
def test_concurrent_inits_of_one_root_make_one_instance(root):
    """Exclusive create of instance.json: two processes racing to init one root agree."""
    code = f"""
        import time
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.01)
        print(ln.init(storage={root!r}).uid)
    """
    go = settings.home() / "go"
    children = [spawn(code, env={"GO": str(go)}) for _ in range(2)]
    go.write_text("go")
    uids = []
    for child in children:
        stdout, stderr = child.communicate(timeout=180)
        assert child.returncode == 0, stderr
        uids.append(stdout.strip())
    meta = json.loads(read_bytes(root, meta_path(root)))
    assert uids == [meta["uid"], meta["uid"]]
    instance = ln.connect(root)
    assert ln.User.filter().count() == 1
    assert ln.Storage.filter(root=instance.root).count() == 1


def test_cli_init_remembers_and_refuses_other_users(tmp_path, monkeypatch):
    root = str(tmp_path / "cli-root")
    python(f"""
        from lamina.cli import main
        sys.exit(main(["init", "--storage", {root!r}, "--modules", "bionty"]))
    """)
    instance = ln.current()  # remembered by the CLI's process
    assert instance.root == root and instance.modules == ["bionty"]
    refused = python(f"""
        from lamina.cli import main
        sys.exit(main(["init", "--storage", {root!r}]))
    """, env={"LAMINA_USER_HANDLE": "someoneelse"}, check=False)
    assert refused.returncode == 1
    assert "already managed" in refused.stderr


@every_root
def test_disconnect_forgets_the_process_instance_but_not_the_settings(root):
    instance = ln.init(storage=root)
    lamina_instance.disconnect()
    assert lamina_instance._current is None
    # The next query reconnects to the remembered root.
    assert ln.current().uid == instance.uid
    assert ln.current() is not instance


@every_root
def test_another_instance_root_is_linked_not_the_default_storage(tmp_path_factory, root):
    other = ln.init(storage=root)  # the other instance, on a local or an object-store root
    mine = ln.init(storage=str(tmp_path_factory.mktemp("mine")))
    with pytest.raises(ln.InstanceError, match=f"managed by instance {other.uid}.*linked"):
        ln.settings.storage = root
    assert mine.storage_id == ln.Storage.get(root=mine.root).id
    # Registered as linked storage: managed by the other instance, readable from this one.
    assert ln.Storage.get(root=other.root).instance_uid == other.uid


def test_child_process_environment_is_isolated():
    # The children above rely on inheriting this test's LAMINA_HOME; make sure they do.
    out = python("from lamina.catalog import settings; print(settings.home())").stdout.strip()
    assert out == str(settings.home())


@pytest.mark.parametrize("profile", [None, "lab"])
def test_an_s3_instance_takes_its_region_from_the_aws_config_file(s3_endpoint, tmp_path,
                                                                  monkeypatch, profile):
    """With no region in the environment, the region comes from the AWS config file, for the
    profile in use, as ``aws configure`` writes it; the environment still wins over the file."""
    root = new_s3_root()  # before: creating a bucket outside us-east-1 takes a location constraint
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n\n[profile lab]\nregion = ap-south-1\n")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    if profile:
        monkeypatch.setenv("AWS_PROFILE", profile)
    expected = "ap-south-1" if profile else "eu-west-1"
    ln.init(storage=root)
    ln.Record(name="r").save()
    assert ln.Record.get(name="r").name == "r"
    location = ln.current().location
    assert location.delta_options["AWS_REGION"] == expected
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert location.delta_options["AWS_REGION"] == "us-west-2"
