"""DuckDB's settings on a session's connections (engine/connections.py): its memory is
bounded, and what passes the bound spills to a folder of the connection's own, which a
confined connection may write."""

from __future__ import annotations

import os

import lamina as ln
from lamina.engine import connections
from lamina.engine.session import session_for


def _bytes(setting: str) -> float:
    number, unit = setting.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def test_every_connection_of_a_session_has_the_memory_limit_and_its_own_spill_folder(
        local_root):
    ln.init(storage=local_root)
    ln.Record(name="A").save()
    session = session_for(ln.current())
    assert ln.sql("SELECT count(*) AS n FROM record")["n"].tolist() == [1]
    sandbox = next(iter(session._sandbox._connections.values()))[0]
    cons = [session.con, sandbox, session.objects_connection()]
    folders = set()
    for con in cons:
        limit, folder = con.execute("SELECT current_setting('memory_limit'), "
                                    "current_setting('temp_directory')").fetchone()
        assert _bytes(limit) == 512 * 2**20
        assert os.path.isdir(folder)
        folders.add(folder)
    assert len(folders) == len(cons)


def test_a_statement_past_the_memory_limit_spills_and_answers(local_root, monkeypatch):
    """With the limit scaled down to 16 MiB, a GROUP BY of 1e6 keys on the confined main
    connection answers (spilling into its folder) where it would need more memory."""
    monkeypatch.setattr(connections, "MEMORY_LIMIT", "16MiB")
    ln.init(storage=local_root)
    con = session_for(ln.current()).con
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert _bytes(limit) == 16 * 2**20
    n = con.execute("SELECT count(*) FROM (SELECT 'key-' || i::VARCHAR AS k, count(*) "
                    "FROM range(1000000) t(i) GROUP BY k)").fetchone()[0]
    assert n == 1_000_000
