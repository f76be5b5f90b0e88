"""One-row lookups of a registry read from its data files (get by key, uid, hash or id;
``first()`` of a text equality; the two lookups of ``Artifact(file, key=)``) are answered from
an index of each data file and the rows already read (engine/row_index.py). Every answer must
still follow what another process commits: checked after a real second process saved."""

from __future__ import annotations

import pytest

import lamina as ln
from lamina.catalog import append_commit
from lamina.engine import connections, row_cache, row_index, session, value_lookup

from helpers import python, write_file


@pytest.fixture(params=["dict", "hashed"])
def on_files(request, monkeypatch):
    """Registries stay on their data files (no copy in memory, no whole read of a small
    remote registry into local copies); each file indexed by a dict of its values, or by sorted hashes as a
    large file is."""
    monkeypatch.setattr(session, "IN_MEMORY_VALUES", 0)
    monkeypatch.setattr(connections, "LOCAL_COPY_BYTES", 0)
    monkeypatch.setattr(row_index, "DICT_ROWS", 4096 if request.param == "dict" else 0)


class Statements:
    """The queries the session's DuckDB connection runs (not the views it points at a new
    version), and the rows each returned as Arrow."""

    def __init__(self, con):
        self._con = con
        self.sql: list[str] = []
        self.rows: list[int] = []

    def execute(self, sql, *args):
        result = self._con.execute(sql, *args)
        if not sql.lstrip().upper().startswith("SELECT"):
            return result
        self.sql.append(sql)
        return _Counted(result, self.rows)

    def __getattr__(self, name):
        return getattr(self._con, name)


class _Counted:
    def __init__(self, result, rows: list[int]):
        self._result, self._rows = result, rows

    def to_arrow_table(self):
        table = self._result.to_arrow_table()
        self._rows.append(table.num_rows)
        return table

    def __getattr__(self, name):
        return getattr(self._result, name)


@pytest.fixture
def statements(instance):
    current = session.session_for(instance)
    counting = Statements(current.con)
    current.con = counting
    yield counting
    current.con = counting._con


def test_get_by_key_uid_hash_and_id_follow_another_processes_commits(instance, on_files,
                                                                     tmp_path):
    first = ln.Artifact(write_file(tmp_path, "a.txt", "a1"), key="a.txt").save()
    other = ln.Artifact(write_file(tmp_path, "b.txt", "b"), key="b.txt").save()
    for _ in range(2):  # a row read once is then served from what was read
        assert ln.Artifact.get(key="a.txt").id == first.id
        assert ln.Artifact.get(first.uid).key == "a.txt"
        assert ln.Artifact.get(other.id).key == "b.txt"
        assert ln.Artifact.filter(hash=other.hash).first().id == other.id
        assert ln.Artifact.get(key="a.txt").is_latest is True

    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact({write_file(tmp_path, "a2.txt", "a2")!r}, key="a.txt").save()
        ln.Artifact({write_file(tmp_path, "c.txt", "c")!r}, key="c.txt").save()
        ln.Artifact.get(key="b.txt").delete()
    """)
    newest = ln.Artifact.get(key="a.txt")
    assert newest.id > other.id and newest.is_latest is True
    # The row of the first version changed in the other process (no longer the latest).
    assert ln.Artifact.get(first.uid).is_latest is False
    assert ln.Artifact.get(first.id).is_latest is False
    assert ln.Artifact.filter(key="a.txt").order_by("id").first().id == first.id
    assert ln.Artifact.filter(key="a.txt").order_by("-id").first().id == newest.id
    assert ln.Artifact.get(key="c.txt").key == "c.txt"
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Artifact.get(key="b.txt")  # in the trash
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Artifact.get(other.id)
    assert ln.Artifact.filter(hash=other.hash).first() is None


def test_get_keeps_the_rules_of_the_statement_on_files(instance, on_files, tmp_path):
    a = ln.Artifact(write_file(tmp_path, "x.txt", "same"), key="x.txt").save()
    ln.Artifact(write_file(tmp_path, "y.txt", "other"), key="y.txt").save()
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Artifact.get(key="nothing.txt")
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Artifact.get(key="x.txt", description="not this one")
    assert ln.Artifact.filter(key="x.txt", is_latest=False).first() is None
    # The same content under another key is the same artifact.
    again = ln.Artifact(write_file(tmp_path, "copy.txt", "same"), key="copy.txt")
    assert again.id == a.id


def test_a_warm_get_and_a_new_files_lookups_run_no_statement(instance, on_files, statements,
                                                             tmp_path):
    for i in range(3):
        ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"k/{i}.txt").save()
    ln.Artifact.get(key="k/1.txt")
    statements.sql.clear()
    assert ln.Artifact.get(key="k/1.txt").key == "k/1.txt"
    assert ln.Artifact.filter(key="k/1.txt", is_latest=True).first().key == "k/1.txt"
    assert statements.sql == []
    # The content check and the key lookup of a new file find nothing without a statement.
    fresh = ln.Artifact(write_file(tmp_path, "new.txt", "new"), key="k/new.txt")
    assert statements.sql == []
    fresh.save()
    # A row not read before is read from its data file, without a statement.
    statements.sql.clear()
    assert ln.Artifact.get(key="k/2.txt").key == "k/2.txt"
    assert statements.sql == []


def test_rows_read_by_position_equal_the_rows_saved(instance, on_files, statements,
                                                    monkeypatch):
    """Rows of one file spread over several row groups, some groups with a column that is
    NULL throughout (filled in, not read), others with values in it, and empty lists."""
    monkeypatch.setattr(append_commit, "ROW_GROUP_ROWS", 3)
    monkeypatch.setattr(row_index, "BLOCK_ROWS", 2)  # a group's last block is shorter
    saved = ln.save([ln.Record(name=f"r{i}", description="told" if i in (4, 9) else None)
                     for i in range(11)])
    statements.sql.clear()
    for record in reversed(saved):
        got = ln.Record.get(name=record.name)
        assert (got.id, got.uid, got.name, got.description) == (
            record.id, record.uid, record.name, record.description)
        assert got.created_at == record.created_at and got.is_type is False
        assert got.type_id is None and got.created_by_id == record.created_by_id
    assert ln.Record.get(saved[5].id).name == "r5"
    # (The registry's size may be counted, to decide on a copy in memory; no row is fetched.)
    assert [sql for sql in statements.sql if "WHERE" in sql] == []


@pytest.mark.parametrize("copies", ["building", "built"])
def test_rows_read_before_a_compaction_in_another_process_come_from_the_merged_file(
        instance, on_files, copies, block_reads, monkeypatch):
    """Read while the decoded copies of the files (row_cache.py) are still being built, or
    from the copies once built: the copies of the files the compaction dropped are not used.
    Each file holds one row: its copy starts on the first row asked, and no row or block read
    is kept, so every answer comes from a copy or a file."""
    monkeypatch.setattr(row_cache, "MISSES_BEFORE_BUILD", 1)
    monkeypatch.setattr(row_index, "CACHED_ROWS", 0)
    monkeypatch.setattr(row_index, "BLOCKS_KEPT", 0)
    saved = [ln.Record(name=f"m{i}").save() for i in range(6)]  # a file each
    assert ln.Record.get(name="m1").description is None
    assert ln.Record.get(name="m2").id == saved[2].id
    cache = session.session_for(instance)._by_value.row_index.row_cache
    if copies == "built":
        cache.wait()
        block_reads.clear()
        assert ln.Record.get(name="m1").description is None
        assert ln.Record.get(name="m2").id == saved[2].id
        assert block_reads == []  # from the copies of their files
    python(f"""
        ln.connect({instance.root!r})
        edited = ln.Record.get(name="m1")
        edited.description = "edited"
        edited.save()
        ln.Record.get(name="m2").delete(permanent=True)
        ln.current().store(ln.Record._spec).compact()
    """)
    assert len(ln.current().store(ln.Record._spec).snapshot().files) == 1  # the merged file
    assert ln.Record.get(name="m1").description == "edited"
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Record.get(name="m2")
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Record.get(saved[2].id)
    assert [ln.Record.get(name=f"m{i}").id for i in (0, 3, 4, 5)] == [
        saved[i].id for i in (0, 3, 4, 5)]
    assert ln.Record.get(saved[1].id).description == "edited"
    if copies == "built":  # the merged file's copy answers once built
        cache.wait()
        block_reads.clear()
        assert ln.Record.get(name="m5").id == saved[5].id
        assert ln.Record.get(name="m1").description == "edited"
        assert block_reads == []
        # Only the merged file's copy is still mapped: those of the files it replaced are let go.
        files = ln.current().store(ln.Record._spec).snapshot().files
        assert set(cache._opened) == set(files)


def test_a_query_after_lookups_from_the_index_reads_the_version_they_saw(instance, on_files,
                                                                         tmp_path):
    ln.Artifact(write_file(tmp_path, "1.txt", "1"), key="1.txt").save()
    assert ln.Artifact.filter().count() == 1
    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact({write_file(tmp_path, "2.txt", "2")!r}, key="2.txt").save()
    """)
    # Answered from the index without a statement: the view of the registry is re-pointed
    # by the next statement, also within one call that checked the table once.
    with session.session_for(instance).one_view():
        assert ln.Artifact.filter(key="3.txt").first() is None
        assert ln.Artifact.filter().count() == 2
    assert sorted(ln.Artifact.filter().values_list("key", flat=True)) == ["1.txt", "2.txt"]
    assert set(ln.Artifact.to_dataframe()["key"]) == {"1.txt", "2.txt"}


def test_a_common_value_is_left_to_one_statement(instance, on_files, statements, tmp_path,
                                                 monkeypatch):
    monkeypatch.setattr(value_lookup, "ROW_INDEX_CANDIDATES", 2)
    saved = [ln.Artifact(write_file(tmp_path, f"{i}.txt", str(i)), key=f"c/{i}.txt").save()
             for i in range(3)]
    statements.sql.clear()
    assert ln.Artifact.filter(suffix=".txt").first().id == saved[0].id
    assert ln.Artifact.filter(suffix=".txt").last().id == saved[-1].id
    # One statement and one row each, not a fetch of every matching row.
    assert len(statements.sql) == 2 and statements.rows == [1, 1]
    with pytest.raises(ln.errors.MultipleResultsFound):
        ln.Artifact.get(suffix=".txt")


def test_get_by_uid_stem_names_the_newest_version_after_another_process_saved_one(
        instance, on_files, statements, tmp_path):
    first = ln.Artifact(write_file(tmp_path, "v.txt", "v1"), key="v.txt").save()
    ln.Artifact(write_file(tmp_path, "w.txt", "w"), key="w.txt").save()
    stem = first.uid[:16]
    assert ln.Artifact.get(stem).id == first.id
    python(f"""
        ln.connect({instance.root!r})
        ln.Artifact({write_file(tmp_path, "v2.txt", "v2")!r}, key="v.txt").save()
    """)
    newest = ln.Artifact.get(stem)
    assert newest.id > first.id and newest.uid[:16] == stem and newest.uid != first.uid
    assert newest.key == "v.txt" and newest.is_latest is True
    statements.sql.clear()
    assert ln.Artifact.get(stem).id == newest.id
    with pytest.raises(ln.errors.DoesNotExist):
        ln.Artifact.get(stem[:-1] + ("A" if stem[-1] != "A" else "B"))
    assert [sql for sql in statements.sql if "WHERE" in sql] == []


def test_rows_of_one_block_asked_one_by_one_read_the_block_once(instance, on_files,
                                                                block_reads, monkeypatch):
    """A local file is read in aligned blocks of a row group, a remote one a group at a time
    (without the decoded copy of the file, which answers once its build ends)."""
    monkeypatch.setenv("LAMINA_ROW_CACHE_MB", "0")
    monkeypatch.setattr(append_commit, "ROW_GROUP_ROWS", 4)
    monkeypatch.setattr(row_index, "BLOCK_ROWS", 2)
    saved = ln.save([ln.Record(name=f"n{i}") for i in range(8)])  # groups of 4 rows
    block_reads.clear()
    assert [ln.Record.get(name=f"n{i}").id for i in range(8)] == [r.id for r in saved]
    local = not instance.root.startswith("s3://")
    assert block_reads == ([(0, 0), (0, 2), (1, 0), (1, 2)] if local else [(0, 0), (1, 0)])
