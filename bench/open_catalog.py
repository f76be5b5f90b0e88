"""What the open catalog costs (issue 13): ``ln.connect`` now reads instance.json only, and
``ln.sql`` runs on a sandboxed connection that is rebuilt when a registry gets a new version.

Figures, on a local root and on an S3 root served by moto_server on 127.0.0.1:
- connect: ``ln.connect(root)`` (no table read), and the bootstrap lookups that connect used to
  run (``instance.user_id`` on an instance whose rows exist: reads of user, branch, space and
  storage tables), each median of N fresh connects;
- ln.sql: the same ``count(*)`` through ``ln.sql`` with the sandbox reused (no write since the
  last call), with the sandbox rebuilt (a record saved before each call), and through the query
  API on the main connection, medians of N.

Usage: python bench/open_catalog.py [--n 15] [--no-s3] [--json bench/open_catalog_results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import lamina as ln  # noqa: E402
from lamina import testing  # noqa: E402
from helpers import reset_process_state  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(root: str, n: int) -> dict:
    ln.init(storage=root)
    for i in range(20):
        ln.Record(name=f"r{i}").save()
    connect, lookups = [], []
    for _ in range(n):
        reset_process_state()
        connect.append(timed(lambda: ln.connect(root)))
        lookups.append(timed(lambda: ln.current().user_id))
    query = "SELECT count(*) AS n FROM record"
    ln.sql(query)
    reused = [timed(lambda: ln.sql(query)) for _ in range(n)]
    rebuilt = []
    for i in range(n):
        ln.Record(name=f"extra{i}").save()
        rebuilt.append(timed(lambda: ln.sql(query)))
    api = [timed(lambda: ln.Record.filter().count()) for _ in range(n)]
    assert ln.sql(query)["n"][0] == 20 + n == ln.Record.filter().count()
    reset_process_state()
    return {"connect_ms": median_ms(connect), "bootstrap_lookups_ms": median_ms(lookups),
            "sql_reused_ms": median_ms(reused), "sql_rebuilt_ms": median_ms(rebuilt),
            "api_count_ms": median_ms(api), "n": n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=15)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__),
                                                       "open_catalog_results.json"))
    args = parser.parse_args()
    os.environ["LAMINA_HOME"] = tempfile.mkdtemp()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "load_average_start": os.getloadavg()}
    results["local"] = measure(tempfile.mkdtemp(), args.n)
    if not args.no_s3:
        with testing.s3_server():
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            testing.create_bucket(bucket)
            results["s3"] = measure(f"s3://{bucket}/root", args.n)
    results["load_average_end"] = os.getloadavg()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    rows = [("ln.connect (no table read)", "connect_ms"),
            ("bootstrap lookups connect used to run", "bootstrap_lookups_ms"),
            ("ln.sql count, sandbox reused", "sql_reused_ms"),
            ("ln.sql count, sandbox rebuilt after a save", "sql_rebuilt_ms"),
            ("Record.filter().count() (main connection)", "api_count_ms")]
    kinds = [k for k in ("local", "s3") if k in results]
    print("| figure (median ms) | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for label, key in rows:
        print(f"| {label} | " + " | ".join(str(results[k][key]) for k in kinds) + " |")
    print(f"load average {results['load_average_start']} -> {results['load_average_end']}")


if __name__ == "__main__":
    main()
