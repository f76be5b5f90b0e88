"""Request budgets of reads on S3 (issue 15): each request to the bucket is a network round
trip, so a first answer in a fresh process, and a warm repeat, may make only so many. Counted
with moto's request recorder, which sees every request the server gets; a change that adds a
round trip fails here. Expected answers come from the manifest, never from lamina."""

from __future__ import annotations

import json
import os
from collections import Counter
from contextlib import contextmanager
from urllib.parse import unquote

import pandas as pd
import pytest

import lamina as ln
from lamina import testing

from helpers import (filesystem, new_s3_root, python, reset_process_state, s3_requests,
                     spawn, wait_until_lasted)

N_ARTIFACTS = 300
PERTURBATIONS = ["DMSO", "IFNG", "TNF"]


def manifest(root: str) -> pd.DataFrame:
    """Artifacts linked in place under the root (size and hash known: nothing is uploaded),
    with a float feature and a categorical one."""
    n = N_ARTIFACTS
    return pd.DataFrame({
        "path": [f"{root}/atlas/cells_{i:04d}.h5ad" for i in range(n)],
        "key": [f"atlas/cells_{i:04d}.h5ad" for i in range(n)],
        "size": [1000 + i for i in range(n)],
        "hash": [f"{i:022d}" for i in range(n)],
        "temperature": [15 + (i % 16) for i in range(n)],
        "perturbation": [[PERTURBATIONS[i % 3]] if i % 4 else [PERTURBATIONS[i % 3], "TNF"]
                         for i in range(n)],
    })


@contextmanager
def new_catalog(request, tmp_path_factory, home: str):
    """A new instance in a new S3 bucket, made on a machine of its own (a LAMINA_HOME for
    the module); yields its root."""
    request.getfixturevalue("s3_endpoint")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAMINA_HOME", str(tmp_path_factory.mktemp(home)))
        root = new_s3_root()
        ln.init(storage=root)
        yield root


@pytest.fixture(scope="module")
def catalog(request, tmp_path_factory):
    """A new S3 catalog as a bulk load makes it: records and features in one save each, then
    the artifacts with their feature values from a manifest. Yields (root, manifest)."""
    with new_catalog(request, tmp_path_factory, "requests-home") as root:
        ln.save([ln.Record(name=name) for name in [*PERTURBATIONS,
                                                  *(f"record-{i:03d}" for i in range(50))]])
        ln.save([ln.Feature(name="temperature", dtype="float"),
                 ln.Feature(name="perturbation", dtype="cat[Record]")])
        frame = manifest(root)
        report = ln.save(ln.Artifact.from_manifest(frame, progress=False))
        assert report.new == N_ARTIFACTS
        reset_process_state()
        yield root, frame


def fresh_process(root: str, call: str) -> tuple[object, list[tuple[str, str]]]:
    """The answer of ``call`` in a new Python process that connects to ``root`` first, and
    every request the server saw from that process."""
    found = {}

    def run():
        proc = python(f"ln.connect({root!r})\nprint(json.dumps({call}))")
        found["answer"] = json.loads(proc.stdout.strip().splitlines()[-1])

    requests = s3_requests(run)
    return found["answer"], requests


def shown(requests) -> str:
    return "\n".join(f"{m} {u.split('/', 3)[-1]}" for m, u in requests)


def kinds(requests) -> Counter:
    return Counter("LIST" if m == "GET" and "list-type=" in u else m for m, u in requests)


# ---- first answers in a fresh process ----------------------------------------------------
def test_connect_reads_the_instance_file_only(catalog):
    root, _ = catalog
    requests = s3_requests(lambda: ln.connect(root))
    assert [(m, u.rsplit("/", 2)[-2:]) for m, u in requests] == [
        ("GET", [".lamina", "instance.json"])]


def test_a_field_filter_answers_in_six_requests(catalog):
    root, frame = catalog
    answer, requests = fresh_process(
        root, 'ln.Artifact.filter(key__startswith="atlas/cells_01").count()')
    assert answer == frame.key.str.startswith("atlas/cells_01").sum()
    assert len(requests) <= 6, shown(requests)
    # instance.json; the artifact log: one LIST, the checkpoint of its latest version; the
    # table's one data file
    only_reads_of(requests, ["artifact"], log_files=1)
    assert kinds(requests)["HEAD"] == 0, requests


def test_record_get_answers_in_six_requests(catalog):
    root, _ = catalog
    answer, requests = fresh_process(root, 'ln.Record.get(name="record-007").name')
    assert answer == "record-007"
    assert len(requests) <= 6, shown(requests)
    only_reads_of(requests, ["record"], log_files=1)


def test_a_feature_filter_answers_in_ten_requests(catalog):
    root, frame = catalog
    answer, requests = fresh_process(root, "ln.Artifact.filter(temperature__gt=25).count()")
    assert answer == (frame.temperature > 25).sum()
    # the field filter's requests, and the feature table's LIST, checkpoint and data file
    assert len(requests) <= 10, shown(requests)
    only_reads_of(requests, ["feature", "artifact"], log_files=1)


def test_a_label_filter_dataframe_answers_in_ten_requests(catalog):
    root, frame = catalog
    answer, requests = fresh_process(
        root, 'sorted(ln.Artifact.filter(perturbation="DMSO").to_dataframe(limit=None).key)')
    assert answer == sorted(frame.key[frame.perturbation.map(lambda p: "DMSO" in p)])
    # the feature filter's requests, the record table's LIST, checkpoint and data file
    assert len(requests) <= 10, shown(requests)
    only_reads_of(requests, ["feature", "artifact", "record"], log_files=1)


@pytest.mark.parametrize("call", ["ln.Artifact.filter(temperature__gt=25).count()",
                                  'ln.Artifact.filter(perturbation="DMSO").count()'])
def test_a_feature_filter_lists_the_artifact_log_beside_the_feature_log(catalog, call):
    """Each round trip on S3 waits on the network, so a first feature filter does not wait
    for the feature to be found before it lists the log of the table it queries. With 50 ms
    added to every request, the artifact log's LIST reaches the bucket before the feature
    table's checkpoint is asked for (which waits on the answer to the feature log's LIST)."""
    root, frame = catalog
    with testing.latency_proxy(50) as proxy:
        answer, requests = fresh_process(root, call)
    expected = ((frame.temperature > 25).sum() if "temperature" in call
                else frame.perturbation.map(lambda p: "DMSO" in p).sum())
    assert answer == expected
    order = [unquote(path) for _, path in proxy.requests if "/moto-api/" not in path]
    artifact_list = next(i for i, p in enumerate(order)
                         if "list-type=" in p and "core/artifact/_delta_log/" in p)
    feature_checkpoint = next(i for i, p in enumerate(order)
                              if "core/feature/_delta_log/" in p and ".checkpoint." in p)
    assert artifact_list < feature_checkpoint, "\n".join(order)
    # the same requests as before, in fewer rounds
    assert len(requests) <= 10, shown(requests)


def test_a_process_reads_no_file_twice(catalog):
    """Log and data files are immutable: once read, a process keeps them until the table
    moves. Only the checks for new commits (LISTs) repeat."""
    root, _ = catalog
    _, requests = fresh_process(root, " ".join("""[
        ln.Artifact.filter(temperature__gt=20).count(),
        ln.Artifact.filter(perturbation="TNF").count(),
        len(ln.Artifact.filter(perturbation="DMSO").to_dataframe()),
        ln.Record.get(name="record-001").name,
        ln.Artifact.filter(key__startswith="atlas/cells_02").count()]""".split()))
    fetched = Counter(u for m, u in requests if m in ("GET", "HEAD") and "list-type=" not in u)
    assert [u for u, times in fetched.items() if times > 1] == []


# ---- warm repeats -------------------------------------------------------------------------
def test_a_warm_repeat_checks_each_table_once_for_new_commits(catalog):
    root, frame = catalog
    ln.connect(root)
    query = lambda: ln.Artifact.filter(temperature__gt=25).count()  # noqa: E731
    assert query() == (frame.temperature > 25).sum()
    requests = s3_requests(query)
    # one LIST of the feature log (names checked) and one of the artifact log, nothing else
    assert sorted(u.split("prefix=")[1].split("&")[0] for _, u in requests) == sorted(
        f"{root.split('/', 3)[3]}/.lamina/catalog/core/{t}/_delta_log/"
        for t in ("artifact", "feature"))
    assert set(kinds(requests)) == {"LIST"}


def test_a_warm_repeat_sees_a_commit_another_process_made(catalog):
    root, _ = catalog
    ln.connect(root)
    before = ln.Record.filter(name__startswith="late-").count()
    python(f"""
        ln.connect({root!r})
        ln.Record(name="late-1").save()
    """)
    assert ln.Record.filter(name__startswith="late-").count() == before + 1


# ---- the latency proxy --------------------------------------------------------------------
def test_the_latency_proxy_forwards_every_request_of_a_query(catalog):
    root, frame = catalog
    with testing.latency_proxy(5) as proxy:
        answer, requests = fresh_process(
            root, 'ln.Artifact.filter(key__startswith="atlas/cells_00").count()')
        assert proxy.endpoint == os.environ["AWS_ENDPOINT_URL"]
    assert answer == frame.key.str.startswith("atlas/cells_00").sum()
    # what the server saw came through the proxy, request for request (the recorder's own
    # calls aside)
    forwarded = [(m, p) for m, p in proxy.requests if not p.startswith("/moto-api/")]
    assert len(forwarded) == len(requests) > 0
    assert [m for m, _ in forwarded] == [m for m, _ in requests]


# ---- a long-lived table -------------------------------------------------------------------
COMMITS = 1_200
# A checkpoint of the long log with more than one LIST page of names (1000) after it.
STALE_HINT = 100


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    """A local catalog whose record table has COMMITS one-row commits, each replacing the row,
    checkpointed every CHECKPOINT_INTERVAL versions and vacuumed: a log of more than one LIST
    page of files. Built locally (a commit takes milliseconds there); each test copies it to
    a bucket of its own (copied_to_s3). Yields its folder."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from lamina.catalog import tables
    from lamina.catalog.checkpoint import CHECKPOINT_INTERVAL
    from lamina.catalog.snapshot import to_arrow
    from lamina.catalog.store import CATALOG_DIR

    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAMINA_HOME", str(tmp_path_factory.mktemp("long-log-home")))
        local = str(tmp_path_factory.mktemp("long-log") / "root")
        ln.init(storage=local)
        ln.Record(name="first").save()
        spec = tables.get("core.record")
        uri = os.path.join(local, CATALOG_DIR, spec.module, spec.name)
        table = DeltaTable(uri)
        schema = pa.schema(table.schema().to_arrow())
        for i in range(table.version() + 1, COMMITS):
            row = {"id": i, "uid": f"{i:016d}", "name": f"r{i}", "branch_id": 1}
            write_deltalake(table, to_arrow([row], schema), mode="overwrite")
            if table.version() % CHECKPOINT_INTERVAL == 0:
                table.create_checkpoint()
        table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        reset_process_state()
    log = os.listdir(os.path.join(uri, "_delta_log"))
    assert len([n for n in log if n > f"{STALE_HINT:020d}"]) > 1000
    yield local


def copied_to_s3(local: str) -> str:
    """A new S3 root holding a copy of the catalog in the folder ``local``."""
    root = new_s3_root()
    filesystem(root).put(local + "/", root.split("://", 1)[1] + "/", recursive=True)
    return root


def record_log(root: str) -> tuple[list[int], list[int]]:
    """The versions of the record table's commits and of its checkpoints, as S3 lists them."""
    names = [p.rsplit("/", 1)[1] for p in filesystem(root).ls(
        f"{root}/.lamina/catalog/core/record/_delta_log", detail=False)]
    return ([int(n.split(".")[0]) for n in names if n.endswith(".json")],
            [int(n.split(".")[0]) for n in names if n.endswith(".checkpoint.parquet")])


def meta_file(root: str) -> str:
    return f"{root}/.lamina/instance.json"


def test_a_table_of_a_thousand_commits_answers_in_as_few_requests_as_a_new_one(
        s3_endpoint, long_log, tmp_path):
    """A log of more than one LIST page of files is listed from the checkpoint its writer
    names in ``instance.json`` (log_hints.py): a save through lamina that checkpoints a
    version far enough past the last one named moves the hint there, with one PUT. From then
    on the first process on any machine reads the table with the requests of a new one (one
    LIST, the checkpoint and the commits after it) where it made two more
    (``_last_checkpoint`` and a second LIST)."""
    root = copied_to_s3(long_log)
    assert "log_hints" not in json.loads(filesystem(root).cat(meta_file(root)))
    # Another machine saves a record; its connect read the ETag the hint's PUT is
    # conditional on.
    saved = s3_requests(lambda: python(f"""
        ln.connect({root!r})
        ln.Record(name="late").save()
    """, env={"LAMINA_HOME": str(tmp_path / "writer-home")}))
    assert [m for m, u in saved if u.split("?")[0].endswith("/.lamina/instance.json")] == [
        "GET", "PUT"], shown(saved)
    commits, checkpoints = record_log(root)
    hint = json.loads(filesystem(root).cat(meta_file(root)))["log_hints"]["core.record"]
    assert hint == max(commits) == max(checkpoints)

    new_table = 1 + 1 + 1 + 1  # instance.json, the LIST, the checkpoint, one data file
    for _ in range(2):  # the first process on this machine, then the next one
        answer, requests = fresh_process(root, f'ln.Record.get(name="r{COMMITS - 1}").name')
        assert answer == f"r{COMMITS - 1}"
        assert log_reads(requests) == [f"{hint:020d}.checkpoint.parquet"], shown(requests)
        assert len(requests) == new_table, shown(requests)
        assert kinds(requests)["LIST"] == 1, shown(requests)


def test_a_stale_log_hint_costs_requests_not_the_answer(s3_endpoint, long_log):
    """A hint with more than one LIST page of the log after it (its writers have not moved
    it since) still finds the newest checkpoint: the first page from the hint is followed by
    ``_last_checkpoint`` and a LIST from there, two requests more than a new table."""
    root = copied_to_s3(long_log)
    fs = filesystem(root)
    meta = json.loads(fs.cat(meta_file(root)))
    fs.pipe_file(meta_file(root), json.dumps({**meta, "log_hints": {
        "core.record": STALE_HINT}}).encode())
    commits, checkpoints = record_log(root)
    newest = max(checkpoints)
    after = [f"{v:020d}.json" for v in sorted(commits) if v > newest]

    answer, requests = fresh_process(root, f'ln.Record.get(name="r{COMMITS - 1}").name')
    assert answer == f"r{COMMITS - 1}"
    assert sorted(log_reads(requests)) == sorted([f"{newest:020d}.checkpoint.parquet", *after])
    new_table = 1 + 1 + (1 + len(after)) + 1  # instance.json, LIST, log files, one data file
    assert len(requests) == new_table + 2, shown(requests)
    assert kinds(requests)["LIST"] == 2, shown(requests)


# ---- consistency ---------------------------------------------------------------------------
def test_a_reader_sees_whole_commits_only_while_a_writer_commits(catalog):
    """Another process saves records in batches of five, one commit each; every count this
    process reads meanwhile is a whole number of batches."""
    root, _ = catalog
    ln.connect(root)
    writer = spawn(f"""
        ln.connect({root!r})
        for batch in range(8):
            ln.save([ln.Record(name=f"batch-{{batch}}-{{i}}") for i in range(5)])
        print("done", flush=True)
    """)
    seen = []
    while writer.poll() is None:
        seen.append(ln.Record.filter(name__startswith="batch-").count())
    assert writer.returncode == 0, writer.stderr.read()
    seen.append(ln.Record.filter(name__startswith="batch-").count())
    assert all(n % 5 == 0 for n in seen), seen
    assert seen == sorted(seen) and seen[-1] == 40


def test_a_query_after_a_save_fetches_only_the_data_file_the_save_added(s3_endpoint):
    """A small registry is read whole into memory per version; its data files never change, so
    after a save the next query fetches the one new file, not every file again."""
    ln.init(storage=new_s3_root())
    for i in range(5):
        ln.Record(name=f"r{i}").save()
    assert ln.Record.filter(name__startswith="r").count() == 5
    ln.Record(name="r-new").save()
    requests = s3_requests(lambda: ln.Record.filter(name__startswith="r").count())
    data_files = [url for method, url in requests
                  if method == "GET" and url.split("?")[0].endswith(".parquet")]
    assert len(data_files) == 1, requests
    assert ln.Record.filter(name__startswith="r").count() == 6


# ---- a catalog grown by single saves -------------------------------------------------------
SINGLE_SAVES = 125


def log_reads(requests) -> list[str]:
    """The names of the Delta log files fetched (checkpoints and commits; not LISTs)."""
    return [u.split("?")[0].rsplit("/", 1)[1] for m, u in requests
            if m == "GET" and "list-type=" not in u and "/_delta_log/0" in u]


@pytest.fixture(scope="module")
def saved_one_by_one(request, tmp_path_factory):
    """An S3 catalog whose record table grew by SINGLE_SAVES single saves, each in a process
    of its own (as people add records by hand). Yields (root, names)."""
    with new_catalog(request, tmp_path_factory, "single-saves-home") as root:
        reset_process_state()
        names = [f"hand-{i:03d}" for i in range(SINGLE_SAVES)]
        # a few saves per process: a process that only saves holds no log state of its own
        for start in range(0, SINGLE_SAVES, 25):
            python(f"""
                ln.connect({root!r})
                for name in {names[start:start + 25]!r}:
                    ln.Record(name=name).save()
            """)
        yield root, names


def test_a_catalog_grown_by_single_saves_is_read_from_its_latest_checkpoint(saved_one_by_one):
    """Every save checkpoints the version it committed: a new reader's log is one LIST and one
    checkpoint, however many saves the table had (79 requests for a get before checkpoints,
    8 with a checkpoint every ten versions)."""
    root, names = saved_one_by_one
    answer, requests = fresh_process(root, f'ln.Record.get(name={names[-1]!r}).name')
    assert answer == names[-1]
    # the 125 saves after the table's creation; compactions every 32 files add versions
    fetched = log_reads(requests)
    assert len(fetched) == 1 and fetched[0].endswith(".checkpoint.parquet"), shown(requests)
    assert int(fetched[0].split(".")[0]) >= SINGLE_SAVES
    # instance.json, the LIST, the checkpoint, the one data file that may hold the name
    only_reads_of(requests, ["record"], log_files=1)
    assert len(requests) == 4, shown(requests)


def test_every_save_checkpoints_its_version_without_reading(saved_one_by_one):
    """A save also writes the checkpoint of the version it committed, from the log state the
    process holds (one PUT more, no read of the log), and at every tenth version
    ``_last_checkpoint`` too."""
    root, _ = saved_one_by_one
    ln.connect(root)
    ln.Record(name="later").save()  # a process's first save reads what saves need
    saves = [s3_requests(lambda i=i: ln.Record(name=f"later-{i}").save()) for i in range(12)]
    for requests in saves:
        version = int(next(u for m, u in requests if m == "PUT" and u.endswith(".json"))
                      .rsplit("/", 1)[1].split(".")[0])
        written = sorted(u.split("?")[0].rsplit("/", 1)[1] for m, u in requests if m == "PUT")
        hint = ["_last_checkpoint"] if version % 10 == 0 else []
        if len(written) > 3 + len(hint):  # a save that compacted the table's small files
            continue
        assert [n for n in written if not n.startswith("part-")] == [
            f"{version:020d}.checkpoint.parquet", f"{version:020d}.json", *hint], shown(requests)
        assert [u for m, u in requests if m != "PUT"] == [], shown(requests)
    assert sum("_last_checkpoint" in shown(r) for r in saves) >= 1


def test_a_new_reader_sees_whole_versions_while_a_writer_checkpoints(saved_one_by_one):
    """Readers that start from a checkpoint while another process commits and checkpoints
    see exactly the files of some version, as deltalake reads that version."""
    from deltalake import DeltaTable

    from lamina.catalog import tables
    from lamina.catalog.delta_log import DeltaLogReader
    from lamina.catalog.location import Location
    from lamina.catalog.store import CATALOG_DIR

    root, _ = saved_one_by_one
    location = Location.of(root)
    spec = tables.get("core.record")
    uri = location.join(CATALOG_DIR, spec.module, spec.name)
    writer = spawn(f"""
        ln.connect({root!r})
        for i in range(25):
            ln.Record(name=f"racing-{{i}}").save()
    """)
    seen = {}
    while writer.poll() is None:
        state = DeltaLogReader(location, uri).load()
        seen[state.version] = {f.uri for f in state.files.values()}
    assert writer.returncode == 0, writer.stderr.read()
    assert len(seen) > 1
    for version, files in seen.items():
        table = DeltaTable(uri, storage_options=location.delta_options)
        table.load_as_version(version)
        assert files == set(table.file_uris()), version


# ---- a catalog grown by hand: features and records each their own save ------------------
HAND_FEATURES = ["temperature", "perturbation", "donor", "batch", "dose", "operator"]
HAND_RECORDS = 150


@pytest.fixture(scope="module")
def grown_by_hand(request, tmp_path_factory):
    """An S3 catalog whose features and records were each saved on their own, in processes
    of a few dozen saves each (as people add them by hand: hundreds of commits, a data file
    per row since the last compaction), and whose artifacts came from a manifest. Yields
    (root, manifest)."""
    with new_catalog(request, tmp_path_factory, "by-hand-home") as root:
        reset_process_state()
        names = [*PERTURBATIONS, *(f"hand-{i:03d}" for i in range(HAND_RECORDS))]
        python(f"""
            ln.connect({root!r})
            dtypes = {{"temperature": "float", "perturbation": "cat[Record]", "dose": "float"}}
            for name in {HAND_FEATURES!r}:
                ln.Feature(name=name, dtype=dtypes.get(name, "str")).save()
        """)
        for start in range(0, len(names), 50):
            python(f"""
                ln.connect({root!r})
                for name in {names[start:start + 50]!r}:
                    ln.Record(name=name).save()
            """)
        ln.connect(root)
        frame = manifest(root)
        assert ln.save(ln.Artifact.from_manifest(frame, progress=False)).new == N_ARTIFACTS
        reset_process_state()
        yield root, frame


def data_files(requests) -> Counter:
    """Data files fetched, by table."""
    return Counter(u.split("/catalog/core/")[1].split("/")[0] for _, u in requests
                   if u.split("?")[0].endswith(".snappy.parquet"))


def only_reads_of(requests, tables: list[str], log_files: int | None = None) -> None:
    """Each request is the instance file, or a LIST of one of ``tables``' logs (one each),
    or a fetch of its checkpoint and the commits after it (``log_files`` files per table, if
    given), or of a data file; none twice."""
    fetched = [u for m, u in requests if "list-type=" not in u]
    assert len(fetched) == len(set(fetched)), shown(requests)
    lists = sorted(u.split("/catalog/core/")[1].split("/")[0] for _, u in requests
                   if "list-type=" in u)
    assert lists == sorted(tables), shown(requests)
    logs = Counter(u.split("/catalog/core/")[1].split("/")[0] for u in fetched
                   if "/_delta_log/" in u)
    assert set(logs) <= set(tables), shown(requests)
    for table in tables:
        names = [u.rsplit("/", 1)[1] for u in fetched if f"/core/{table}/_delta_log/" in u]
        checkpoints = [int(n.split(".")[0]) for n in names if ".checkpoint." in n]
        start = max(checkpoints, default=-1)
        commits = sorted(int(n.split(".")[0]) for n in names if n.endswith(".json"))
        assert len(checkpoints) <= 1 and commits == list(range(start + 1, start + 1 + len(commits)))
        assert log_files is None or len(names) == log_files, shown(requests)
    assert len(requests) == 1 + len(tables) + sum(logs.values()) + sum(data_files(
        requests).values()), shown(requests)


def test_a_get_on_a_catalog_grown_by_hand_fetches_one_data_file(grown_by_hand):
    """Each of the 150 records is a file of its own until compaction merges them; the
    statistics in the log name the one file that may hold the name (46 -> 1 data file)."""
    root, _ = grown_by_hand
    answer, requests = fresh_process(root, 'ln.Record.get(name="hand-042").name')
    assert answer == "hand-042"
    assert data_files(requests) == {"record": 1}, shown(requests)
    only_reads_of(requests, ["record"], log_files=1)
    assert len(requests) <= 6, shown(requests)


def test_a_missing_name_on_a_catalog_grown_by_hand_fetches_no_data_file(grown_by_hand):
    """A name past every file's range (compacted files hold ranges of names) is answered
    from the log alone."""
    root, _ = grown_by_hand
    answer, requests = fresh_process(
        root, 'ln.Record.filter(name="unsaved").one_or_none() is None')
    assert answer is True
    assert data_files(requests) == {}, shown(requests)


def test_a_feature_filter_on_a_catalog_grown_by_hand_fetches_one_feature_file(grown_by_hand):
    """The feature is looked up by name: one file of the feature table, not all six."""
    root, frame = grown_by_hand
    answer, requests = fresh_process(root, "ln.Artifact.filter(temperature__gt=25).count()")
    assert answer == (frame.temperature > 25).sum()
    assert data_files(requests) == {"feature": 1, "artifact": 1}, shown(requests)
    only_reads_of(requests, ["feature", "artifact"], log_files=1)


def test_a_label_display_on_a_catalog_grown_by_hand_fetches_one_label_file(grown_by_hand):
    """The label is looked up by name too: one file of the record table, whose view the
    statement does not read (the label's id is a constant in it)."""
    root, frame = grown_by_hand
    answer, requests = fresh_process(
        root, 'sorted(ln.Artifact.filter(perturbation="DMSO").to_dataframe(limit=None).key)')
    assert answer == sorted(frame.key[frame.perturbation.map(lambda p: "DMSO" in p)])
    assert data_files(requests) == {"feature": 1, "artifact": 1, "record": 1}, shown(requests)
    # each table's log at its latest checkpoint: 1 + 3 x (LIST, checkpoint) + 3 data files
    only_reads_of(requests, ["feature", "artifact", "record"], log_files=1)
    assert len(requests) <= 10, shown(requests)


def test_answers_on_a_catalog_grown_by_hand_equal_the_saved_rows(grown_by_hand):
    """Several lookups in one process, by name and by record, against the manifest."""
    root, frame = grown_by_hand
    answer, _ = fresh_process(root, " ".join("""[
        ln.Artifact.filter(perturbation="TNF").count(),
        ln.Artifact.filter(perturbation=ln.Record.get(name="IFNG")).count(),
        ln.Artifact.filter(perturbation="hand-001").count(),
        ln.Artifact.filter(temperature=20).count(),
        [f.name for f in ln.Feature.filter(name="dose")],
        ln.Record.filter(name__startswith="hand-").count()]""".split()))
    holds = lambda label: int(frame.perturbation.map(lambda p: label in p).sum())  # noqa: E731
    assert answer == [holds("TNF"), holds("IFNG"), 0, int((frame.temperature == 20).sum()),
                      ["dose"], HAND_RECORDS]


def test_a_warm_repeat_on_a_catalog_grown_by_hand_fetches_no_file(grown_by_hand):
    """Past the age at which a small registry is copied into memory, a repeated feature
    filter checks its two tables for new commits and fetches nothing: the feature files
    its first run did not need are not fetched for a copy either."""
    root, frame = grown_by_hand
    ln.connect(root)
    query = lambda: ln.Artifact.filter(temperature__gt=25).count()  # noqa: E731
    assert query() == (frame.temperature > 25).sum()
    wait_until_lasted()
    requests = s3_requests(query)
    assert kinds(requests) == {"LIST": 2}, shown(requests)


def test_a_features_display_on_a_catalog_grown_by_hand_fetches_the_label_files_only(
        grown_by_hand):
    """``include="features"`` shows label names: the rows of the ids on the page are read
    from the record files whose id bounds take them in (one compacted file holds the three
    labels), not from every file of the record table."""
    root, frame = grown_by_hand
    answer, requests = fresh_process(root, " ".join("""[
        [key, sorted(v) if isinstance(v, (set, list)) else [v]] for key, v in
        ln.Artifact.filter(key__startswith="atlas/cells_000").to_dataframe(
            include="features")[["key", "perturbation"]].itertuples(index=False)]""".split()))
    shown_rows = frame[frame.key.str.startswith("atlas/cells_000")]
    assert sorted(answer) == sorted([key, sorted(set(labels))] for key, labels
                                    in zip(shown_rows.key, shown_rows.perturbation))
    assert data_files(requests)["record"] == 1, shown(requests)
