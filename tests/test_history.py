"""The catalog's history in public: ``ln.history()`` and read-only ``ln.connect(root, as_of=)``."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

import lamina as ln


def test_history_lists_commits_newest_first(instance):
    ln.Record(name="a").save()
    record = ln.Record(name="b").save()
    record.name = "b2"
    record.save()
    record.delete(permanent=True)
    history = ln.history()
    assert list(history.columns) == ["time", "table", "version", "user", "operation", "rows"]
    assert list(history.index) == list(range(len(history), 0, -1))
    records = history[history["table"] == "record"]
    # Deleting the newest row first raises the table's id mark (ids are never reused).
    assert list(records["operation"]) == ["delete", "id mark", "update", "insert", "insert",
                                          "create"]
    assert list(records["version"]) == [5, 4, 3, 2, 1, 0]
    assert list(records["rows"]) == [1, 0, 1, 1, 1, 0]
    assert set(history["user"]) == {"testuser1"}
    assert history["time"].is_monotonic_decreasing
    assert str(history["time"].dt.tz) == "UTC"
    assert list(ln.history(limit=2).index) == list(history.index[:2])


def test_as_of_a_commit_shows_that_state_and_refuses_writes(instance, tmp_path):
    ln.Record(name="before").save()
    commit = int(ln.history().index[0])
    late = ln.Record(name="after").save()
    late.name = "renamed"
    late.save()
    ln.Feature(name="speed", dtype=float).save()  # a table created after the commit
    past = ln.connect(instance.root, as_of=commit)
    assert list(ln.Record.filter().values_list("name", flat=True)) == ["before"]
    assert ln.Feature.filter().count() == 0
    assert ln.sql("SELECT count(*) AS n FROM record")["n"][0] == 1
    assert int(ln.history().index[0]) == commit
    with pytest.raises(ln.InstanceError, match="read-only"):
        ln.Record(name="new").save()
    with pytest.raises(ln.InstanceError, match="read-only"):
        ln.Record.get(name="before").delete(permanent=True)
    path = tmp_path / "x.txt"
    path.write_text("x")
    with pytest.raises(ln.InstanceError, match="read-only"):
        ln.Artifact(str(path), key="x.txt").save()
    assert past.root == instance.root
    live = ln.connect(instance.root)
    assert sorted(ln.Record.filter().values_list("name", flat=True)) == ["before", "renamed"]
    assert ln.Artifact.filter().count() == 0
    assert live is ln.current()


def test_as_of_a_time(instance):
    ln.Record(name="first").save()
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    ln.Record(name="second").save()
    ln.connect(instance.root, as_of=between)
    assert ln.Record.filter().values_list("name", flat=True) == ["first"]
    ln.connect(instance.root, as_of=between.replace(tzinfo=None).isoformat())
    assert ln.Record.filter().values_list("name", flat=True) == ["first"]


def test_as_of_rejects_what_is_not_a_point_of_the_history(instance):
    total = len(ln.history())
    with pytest.raises(ln.ValidationError, match=f"commits 1 to {total}"):
        ln.connect(instance.root, as_of=total + 1)
    with pytest.raises(ln.ValidationError, match="before the catalog's first commit"):
        ln.connect(instance.root, as_of="2000-01-01")
    with pytest.raises(ln.ValidationError, match="not an ISO time"):
        ln.connect(instance.root, as_of="yesterday")
