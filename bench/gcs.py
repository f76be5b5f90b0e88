"""Requests and latency of lamina on a ``gs://`` root, through the GCS endpoint of the test
helpers (``lamina.testing_gcs`` in front of a local moto S3 server).

The request counts are what a real GCS bucket would be sent (each request is one round trip
and one billed operation); the latencies are those of loopback + the translating endpoint +
moto, not of GCS. Prints a table and writes ``bench/gcs_results.json``.

    python bench/gcs.py [--saves 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse


def api_of(path: str) -> str:
    """Which GCS API a request used: JSON (gcsfs, pyarrow), upload (gcsfs), XML (deltalake,
    DuckDB)."""
    route = urlparse(path).path
    if route.startswith("/upload/"):
        return "json upload"
    if route.startswith(("/storage/v1/", "/download/storage/v1/")):
        return "json"
    return "xml"


def counted(server, action) -> tuple[float, Counter]:
    """Seconds ``action()`` took, and its requests by (API, method)."""
    server.requests.clear()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    return seconds, Counter((api_of(p), m) for m, p, _ in server.requests)


def per_call(counters: list[Counter]) -> dict[str, float]:
    total = sum(counters, Counter())
    return {f"{api} {method}": n / len(counters) for (api, method), n in sorted(total.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("LAMINA_HOME", tempfile.mkdtemp(prefix="lamina-bench-gcs-"))
    os.environ.setdefault("LAMINA_USER_HANDLE", "bench")

    from lamina import testing

    load_before = os.getloadavg()
    with testing.s3_server() as s3, testing.gcs_server(s3) as server:
        import lamina as ln

        bucket = f"lamina-bench-{uuid.uuid4().hex[:12]}"
        testing.create_bucket(bucket)
        root = f"gs://{bucket}/root"
        init_s, init_requests = counted(server, lambda: ln.init(storage=root))

        folder = Path(tempfile.mkdtemp())
        save_times, save_requests = [], []
        for i in range(args.saves):
            path = folder / f"{i}.txt"
            path.write_text(f"content {i}")
            seconds, requests = counted(
                server, lambda: ln.Artifact(str(path), key=f"bench/{i}.txt").save())
            save_times.append(seconds)
            save_requests.append(requests)

        query_times, query_requests = [], []
        for _ in range(args.saves):
            seconds, requests = counted(
                server, lambda: ln.Artifact.filter(key__startswith="bench/").count())
            query_times.append(seconds)
            query_requests.append(requests)

        code = (f"import lamina as ln; ln.connect({root!r}); "
                "print(ln.Artifact.filter(key__startswith='bench/').count())")
        cold_s, cold_requests = counted(server, lambda: subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True))
    load_after = os.getloadavg()

    results = {
        "root": "gs:// through lamina.testing_gcs + moto_server on 127.0.0.1",
        "load_average_before": load_before, "load_average_after": load_after,
        "init": {"seconds": init_s, "requests": per_call([init_requests])},
        "warm_save": {"n": args.saves, "p50_ms": 1000 * statistics.median(save_times),
                      "p90_ms": 1000 * statistics.quantiles(save_times, n=10)[-1],
                      "requests_per_save": per_call(save_requests)},
        "warm_count_query": {"n": args.saves, "p50_ms": 1000 * statistics.median(query_times),
                             "requests_per_query": per_call(query_requests)},
        "cold_process_connect_and_count": {"seconds": cold_s,
                                           "requests": per_call([cold_requests])},
    }
    out = Path(__file__).with_name("gcs_results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"| figure | time | requests (API method: per call) |")
    print("|---|---|---|")
    rows = [("ln.init", f"{init_s * 1000:.0f} ms", results["init"]["requests"]),
            (f"warm Artifact save p50 (n={args.saves})",
             f"{results['warm_save']['p50_ms']:.0f} ms",
             results["warm_save"]["requests_per_save"]),
            (f"warm filter().count() p50 (n={args.saves})",
             f"{results['warm_count_query']['p50_ms']:.1f} ms",
             results["warm_count_query"]["requests_per_query"]),
            ("new process: connect + count", f"{cold_s * 1000:.0f} ms",
             results["cold_process_connect_and_count"]["requests"])]
    for name, seconds, requests in rows:
        shown = ", ".join(f"{k}: {v:g}" for k, v in requests.items()) or "none"
        print(f"| {name} | {seconds} | {shown} |")
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
