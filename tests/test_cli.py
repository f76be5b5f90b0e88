"""The command line: every command answers in a line or a table, and failures are one
``error:`` line naming the cause, never a traceback."""

from __future__ import annotations

import socket
import uuid
from importlib.metadata import version

import pytest

import lamina as ln
from lamina.cli import main

from helpers import local_only, write_file


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err



def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"lamina {version('lamina')}"


@local_only
def test_ls_lists_artifacts_under_a_key_prefix(instance, tmp_path, capsys):
    for key in ("raw/b.txt", "raw/a.txt", "processed/c.txt"):
        ln.Artifact(write_file(tmp_path, key.replace("/", "_"), key), key=key).save()
    code, out, _ = run(capsys, "ls", "raw/")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["key", "size", "uid", "created_at"]
    assert [line.split()[0] for line in lines[1:]] == ["raw/a.txt", "raw/b.txt"]
    code, out, _ = run(capsys, "ls")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        "processed/c.txt", "raw/a.txt", "raw/b.txt"]
    assert run(capsys, "ls", "nothing/")[1].strip() == "no artifact with a key starting 'nothing/'"


@local_only
def test_search_and_history(instance, tmp_path, capsys):
    ln.Record(name="Experiment 1").save()
    ln.Record(name="Control").save()
    code, out, _ = run(capsys, "search", "experiment", "--registry", "record")
    assert code == 0 and "Experiment 1" in out and "Control" not in out
    code, _, err = run(capsys, "search", "x", "--registry", "Recrod")
    assert code == 1 and err.strip() == "error: unknown registry 'Recrod'; did you mean 'record'?"
    code, out, _ = run(capsys, "history", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["time", "table", "version", "user", "operation",
                                              "rows"]
    assert lines[2].split()[3:] == ["record", "2", "testuser1", "insert", "1"]
    assert len(lines) == 4


@local_only
def test_info_and_compact_say_what_they_did(instance, tmp_path, capsys):
    for i in range(3):
        ln.Record(name=f"r{i}").save()
    code, out, _ = run(capsys, "info")
    assert code == 0 and "version -1" not in out
    assert any(line.split() == ["Collection", "not", "written", "yet"] for line in out.splitlines())
    assert any(line.split() == ["Record", "version", "3"] for line in out.splitlines())
    code, out, _ = run(capsys, "compact")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and "merged 3 files (3 rows) into version 4" in lines["Record"]
    assert "nothing to merge" in lines["Collection"]


@local_only
def test_sql_error_is_one_line(instance, capsys):
    code, out, err = run(capsys, "sql", "SELECT no_such_column FROM artifact")
    assert code == 1 and out == ""
    assert err.startswith("error: Binder Error") and "no_such_column" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_init_on_an_unwritable_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "init", "--storage", str(blocker / "root"))
    assert code == 1
    assert err.startswith(f"error: cannot create an instance in {blocker / 'root'}: ")


def test_a_missing_manifest_names_the_file(instance, tmp_path):
    with pytest.raises(ln.InvalidPath, match="manifest '.*missing.parquet' does not exist"):
        ln.Artifact.from_manifest(str(tmp_path / "missing.parquet"))


@pytest.mark.parametrize("scheme, store, variable", [("s3", "S3", "AWS_ENDPOINT_URL"),
                                                     ("gs", "GCS", "STORAGE_EMULATOR_HOST")])
def test_an_unreachable_endpoint_fails_fast(monkeypatch, capsys, scheme, store, variable):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    code, _, err = run(capsys, "connect", f"{scheme}://some-bucket/root")
    assert code == 1
    assert err.startswith(f"error: cannot reach the {store} endpoint http://127.0.0.1:{port} "
                          f"for {scheme}://some-bucket/root")


@pytest.mark.parametrize("scheme, server", [("s3", "s3_endpoint"), ("gs", "gcs_endpoint")])
def test_a_missing_bucket_is_named(capsys, request, scheme, server):
    request.getfixturevalue(server)
    bucket = f"lamina-missing-{uuid.uuid4().hex[:12]}"
    code, _, err = run(capsys, "connect", f"{scheme}://{bucket}/root")
    assert code == 1
    assert err.strip() == (f"error: bucket '{bucket}' of {scheme}://{bucket}/root does not "
                           "exist; create it first")
