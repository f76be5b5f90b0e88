"""The log hints in ``instance.json`` (a recent checkpoint version per table, where a reader
lists a long Delta log from): moved by writers with a PUT conditional on the file's ETag, so no
writer loses another's change, every other field kept, on S3 only. Expected contents are read
straight from the bucket with fsspec, never through lamina."""

from __future__ import annotations

import json

import lamina as ln

from helpers import filesystem, new_s3_root, reset_process_state, s3_requests, spawn


def meta_path(root: str) -> str:
    return f"{root}/.lamina/instance.json"


def stored_meta(root: str) -> dict:
    return json.loads(filesystem(root).cat(meta_path(root)))


def methods(requests) -> list[str]:
    """The methods of the requests for instance.json, in order."""
    return [m for m, u in requests if u.split("?")[0].endswith("/.lamina/instance.json")]


def made_instance() -> tuple[str, dict]:
    """A new S3 instance, and its instance.json as init wrote it."""
    root = new_s3_root()
    ln.init(storage=root)
    reset_process_state()
    return root, stored_meta(root)


def test_a_hint_moves_with_one_put_once_a_checkpoint_is_300_versions_past_it(s3_endpoint):
    root, made = made_instance()
    hints = ln.connect(root).hints
    # version 298 is the 299th: a log from the start that still fits a LIST page with room
    assert s3_requests(lambda: hints.advance("core.record", 298)) == []
    assert methods(s3_requests(lambda: hints.advance("core.record", 299))) == ["PUT"]
    assert s3_requests(lambda: hints.advance("core.record", 598)) == []
    assert methods(s3_requests(lambda: hints.advance("core.record", 599))) == ["PUT"]
    assert stored_meta(root) == {**made, "log_hints": {"core.record": 599}}
    assert ln.connect(root).hints.start("core.record") == 599


def test_a_move_lost_to_another_writer_is_made_on_the_file_read_again(s3_endpoint):
    """Two connections read instance.json; the second to move a hint finds the file changed
    (the PUT is refused), reads it again and keeps the first one's hint."""
    root, made = made_instance()
    first, second = ln.connect(root).hints, ln.connect(root).hints
    assert methods(s3_requests(lambda: first.advance("core.record", 400))) == ["PUT"]
    assert methods(s3_requests(lambda: second.advance("core.feature", 350))) == [
        "PUT", "GET", "PUT"]
    assert stored_meta(root) == {**made, "log_hints": {"core.record": 400,
                                                       "core.feature": 350}}


def test_a_hint_another_writer_moved_far_enough_is_left_as_it_is(s3_endpoint):
    root, made = made_instance()
    first, second = ln.connect(root).hints, ln.connect(root).hints
    first.advance("core.record", 400)
    # 420 is not a step past the 400 the file now names: read again, nothing written
    assert methods(s3_requests(lambda: second.advance("core.record", 420))) == ["PUT", "GET"]
    assert stored_meta(root) == {**made, "log_hints": {"core.record": 400}}
    assert second.start("core.record") == 400


def test_the_process_that_made_the_instance_reads_its_etag_before_a_first_move(s3_endpoint):
    root = new_s3_root()
    instance = ln.init(storage=root)
    made = stored_meta(root)
    assert methods(s3_requests(lambda: instance.hints.advance("core.record", 300))) == [
        "GET", "PUT"]
    assert stored_meta(root) == {**made, "log_hints": {"core.record": 300}}


def test_a_file_a_newer_lamina_rewrote_is_left_as_it_is(s3_endpoint):
    root, made = made_instance()
    hints = ln.connect(root).hints
    newer = json.dumps({**made, "format": 2, "sharding": {"record": 4}}).encode()
    filesystem(root).pipe_file(meta_path(root), newer)
    assert methods(s3_requests(lambda: hints.advance("core.record", 300))) == ["PUT", "GET"]
    assert filesystem(root).cat(meta_path(root)) == newer


def test_a_local_root_gets_no_hint(local_root):
    """A local folder is listed whole in one call: no hint is written there."""
    ln.init(storage=local_root)
    before = filesystem(local_root).cat(meta_path(local_root))
    hints = ln.connect(local_root).hints
    hints.advance("core.record", 10_000)
    assert filesystem(local_root).cat(meta_path(local_root)) == before
    assert hints.start("core.record") is None


def test_writers_in_two_processes_moving_hints_at_once_lose_nothing(s3_endpoint):
    """Two processes save to two tables at once, each moving its table's hint every few
    versions (the step scaled down to 3 in them): every save lands, instance.json stays
    whole with every field init wrote, and each table's hint names a checkpoint of its log."""
    root, made = made_instance()
    saves = 12
    prelude = f"""
        from lamina.catalog import log_hints
        log_hints.HINT_STEP = 3
        ln.connect({root!r})
    """
    writers = [
        spawn(prelude + f"""
        for i in range({saves}):
            ln.Record(name=f"record-{{i}}").save()
    """),
        spawn(prelude + f"""
        for i in range({saves}):
            ln.Feature(name=f"feature_{{i}}", dtype="str").save()
    """)]
    for writer in writers:
        writer.wait(timeout=300)
        assert writer.returncode == 0, writer.stderr.read()

    meta = stored_meta(root)
    assert {k: v for k, v in meta.items() if k != "log_hints"} == made
    assert set(meta["log_hints"]) == {"core.record", "core.feature"}
    fs = filesystem(root)
    for table, hint in meta["log_hints"].items():
        log = f"{root}/.lamina/catalog/{table.replace('.', '/')}/_delta_log"
        assert fs.exists(f"{log}/{hint:020d}.checkpoint.parquet"), (table, hint)
    ln.connect(root)
    assert ln.Record.filter(name__startswith="record-").count() == saves
    assert ln.Feature.filter(name__startswith="feature_").count() == saves
