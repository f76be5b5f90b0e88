#!/usr/bin/env python
"""A first answer straight from the bucket (issue 15): requests and time of the guide's calls on
an S3 catalog, each in a fresh Python process, with and without injected network latency.

    python bench/s3.py                 # 1e5 artifacts + 10,000 records
    python bench/s3.py --quick         # 1e4 artifacts + 1,000 records

The catalog lives on moto_server (loopback). It is built in a child process the way
``bench/ingest.py`` builds its world: 50 perturbation records, 30 donors, 10 cell-type labels and
10 features saved one by one (so the record and feature tables have tens of commits and small
files, as a catalog grown by hand has), then ``records`` more records in one ``ln.save`` and
``n`` artifacts with feature values in one ``ln.save(ln.Artifact.from_manifest(...))``.

Each call then runs in a fresh process: ``import lamina as ln; ln.connect(root); <call>``.
Reported per call and latency (0 ms, and 30 ms added to every request by
``lamina.testing.latency_proxy``):
- cold: every request the server saw from process start to the first answer, by kind
  (GET, HEAD, PUT, LIST = a GET with ``list-type``), the time from spawning the process
  to the answer (interpreter start and ``import lamina`` included), and the CPU time the
  process had used by then (all its threads; less disturbed by a busy machine than the time);
- warm: the same call repeated in that process: requests of one repeat and the median time
  of 5 repeats.
Requests come from moto's request recorder; with latency the proxy's own count is checked
against it. lamina's bytecode is compiled once before the calls (into the run's temporary
folder), as an installed package's is. Writes ``s3_results.json`` beside this script; times depend on the machine's load,
recorded before and after each run.
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

CALLS = {
    "field filter count": 'ln.Artifact.filter(key__startswith="atlas/cells_1").count()',
    "feature filter count": "ln.Artifact.filter(temperature__gt=25).count()",
    "label filter to_dataframe": 'len(ln.Artifact.filter(perturbation="DMSO").to_dataframe())',
    "Record.get(name=)": 'ln.Record.get(name="record-00042").id',
}
WARM_REPEATS = 5
SAVES = 20

# The start of each child: moto's request recorder (``record``), and ``requests()``, what the
# server saw since recording started (recording stops).
RECORDER = """
import json, os, time, urllib.request
recorder = os.environ["BENCH_RECORDER"]
def record(path):
    method = "GET" if path == "download-recording" else "POST"
    request = urllib.request.Request(recorder + path, data=None if method == "GET" else b"",
                                     method=method)
    return urllib.request.urlopen(request).read()
def requests():
    record("stop-recording")
    lines = record("download-recording").decode().splitlines()
    return [(r["method"], r["url"]) for r in map(json.loads, filter(str.strip, lines))]
"""

# Single saves in one process (after a query, as a session that looks and then adds does), each
# save's requests (the checkpoint it writes in the background after its commit included) and
# time (until the save returns; and until its checkpoint is written too); then what
# deltalake's own create_checkpoint costs on the same table.
SAVING = RECORDER + """
try:
    from lamina.catalog.checkpoint import wait_written
except ImportError:  # a tree that writes checkpoints within the save (for A/B runs)
    def wait_written():
        pass
times, written_times = [], []
def counted(action):
    record("reset-recording"); record("start-recording")
    started = time.perf_counter()
    action()
    times.append(time.perf_counter() - started)
    wait_written()
    written_times.append(time.perf_counter() - started)
    return requests()
import lamina as ln
from lamina.catalog import tables
from lamina.catalog.store import CATALOG_DIR
ln.connect({root!r})
ln.Record.filter(name__startswith="record-").count()
ln.Record(name="saved-first").save()  # a process's first save reads what saves need
wait_written()  # its checkpoint, written in the background, is not the next save's
saves = [counted(lambda i=i: ln.Record(name=f"saved-{{i}}").save()) for i in range({saves})]
from deltalake import DeltaTable
spec = tables.get("core.record")
uri = {root!r} + f"/{{CATALOG_DIR}}/{{spec.module}}/{{spec.name}}"
from lamina.catalog.location import Location
options = Location.of({root!r}).delta_options
deltalake_checkpoint = counted(
    lambda: DeltaTable(uri, storage_options=options).create_checkpoint())
print(json.dumps({{"saves": saves, "times": times[:len(saves)],
                  "written_times": written_times[:len(saves)],
                  "deltalake_checkpoint": deltalake_checkpoint}}))
"""

BUILD = """
import os, sys
sys.path.insert(0, {here!r})
import ingest
import lamina as ln
root, n, records, workdir = {root!r}, {n}, {records}, {workdir!r}
ln.init(storage=root)
ingest.register_world()
ln.save([ln.Record(name=f"record-{{i:05d}}") for i in range(records)])
manifest = os.path.join(workdir, "manifest.parquet")
ingest.write_manifest(manifest, n, root)
report = ln.save(ln.Artifact.from_manifest(manifest, progress=False))
assert report.new == n, report
"""

CHILD = RECORDER + """
import lamina as ln
ln.connect({root!r})
answer = {call}
answered, answered_cpu = time.time(), time.process_time()
cold = requests()
warm_times = []
for _ in range({repeats}):
    record("reset-recording"); record("start-recording")
    started = time.perf_counter()
    again = {call}
    warm_times.append(time.perf_counter() - started)
    warm = requests()
    assert again == answer, (again, answer)
print(json.dumps({{"answer": answer, "answered": answered, "answered_cpu": answered_cpu,
                  "cold": cold, "warm": warm, "warm_times": warm_times}}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kind(method: str, url: str) -> str:
    return "LIST" if method == "GET" and "list-type=" in url else method


def by_kind(requests: list) -> dict:
    counts = {"GET": 0, "HEAD": 0, "PUT": 0, "LIST": 0}
    for method, url in requests:
        counts[kind(method, url)] = counts.get(kind(method, url), 0) + 1
    return counts


def recorder(endpoint: str, path: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{path}", data=b"",
                                     method="POST")
    urllib.request.urlopen(request).read()


def run_call(root: str, call: str, moto: str, env: dict) -> dict:
    """``call`` in a fresh process; its requests and times."""
    recorder(moto, "reset-recording")
    recorder(moto, "start-recording")
    code = CHILD.format(root=root, call=call, repeats=WARM_REPEATS)
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"answer": out["answer"], "cold_s": round(out["answered"] - spawned, 3),
            "cold_cpu_s": round(out["answered_cpu"], 3),
            "cold_requests": len(out["cold"]), "cold_by_kind": by_kind(out["cold"]),
            "cold_log": [f"{kind(m, u)} {u.split('/', 3)[-1]}" for m, u in out["cold"]],
            "warm_requests": len(out["warm"]), "warm_by_kind": by_kind(out["warm"]),
            "warm_ms": round(statistics.median(out["warm_times"]) * 1000, 1)}


def run_saves(root: str, env: dict) -> dict:
    """SAVES single saves in a fresh process: requests and time of each (what it wrote to
    the log), and the requests of deltalake's create_checkpoint on the same table."""
    proc = subprocess.run([sys.executable, "-c", SAVING.format(root=root, saves=SAVES)],
                          check=False, env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    saves = [{"requests": len(r), "by_kind": by_kind(r), "ms": round(t * 1000, 1),
              "checkpoint_written_ms": round(w * 1000, 1),
              "checkpoint": any(".checkpoint." in u for _, u in r),
              "last_checkpoint": any(u.endswith("/_last_checkpoint") for _, u in r),
              "compacted": sum(m == "PUT" and "/part-" in u for m, u in r) > 1}
             for r, t, w in zip(out["saves"], out["times"], out["written_times"])]
    plain = [s for s in saves if not s["last_checkpoint"] and not s["compacted"]]
    return {"saves": saves, "mean_requests_per_save": round(
                sum(s["requests"] for s in saves) / len(saves), 2),
            "median_ms": round(statistics.median(s["ms"] for s in saves), 1),
            "plain_save_requests": sorted({s["requests"] for s in plain}),
            "plain_save_median_ms": round(statistics.median(s["ms"] for s in plain), 1),
            "plain_save_checkpoint_written_median_ms": round(
                statistics.median(s["checkpoint_written_ms"] for s in plain), 1),
            "last_checkpoint_save_requests": [s["requests"] for s in saves
                                              if s["last_checkpoint"]],
            "compacting_save_requests": [s["requests"] for s in saves if s["compacted"]],
            "deltalake_create_checkpoint_requests": len(out["deltalake_checkpoint"]),
            "deltalake_create_checkpoint_by_kind": by_kind(out["deltalake_checkpoint"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=30)
    parser.add_argument("--json", default=os.path.join(HERE, "s3_results.json"))
    args = parser.parse_args()
    n, records = (10_000, 1_000) if args.quick else (100_000, 10_000)

    from _common import machine

    from lamina import testing

    results = {"machine": machine(), "n_artifacts": n, "n_records": records,
               "latency_ms": args.latency_ms, "load_before": os.getloadavg(), "calls": {}}
    with tempfile.TemporaryDirectory() as workdir, testing.s3_server() as moto:
        testing.create_bucket("bench")
        root = "s3://bench/catalog"
        env = dict(os.environ, LAMINA_HOME=os.path.join(workdir, "home"),
                   PYTHONPATH=REPO, BENCH_RECORDER=f"{moto}/moto-api/recorder/",
                   PYTHONPYCACHEPREFIX=os.path.join(workdir, "pycache"))
        # lamina's bytecode compiled once beforehand, as an installed package has it: a
        # session that sets PYTHONDONTWRITEBYTECODE would otherwise have every child compile
        # lamina's modules from source (~0.1 s of CPU in each first answer).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "lamina")],
                       env=env, check=True)
        log(f"building {n} artifacts + {records} records on {root} ...")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD.format(here=HERE, root=root, n=n,
                                                           records=records, workdir=workdir)],
                       env=env, check=True, cwd=REPO)
        results["build_s"] = round(time.perf_counter() - started, 1)
        for name, call in CALLS.items():
            row = {"call": call, "0ms": run_call(root, call, moto, env)}
            with testing.latency_proxy(args.latency_ms, upstream=moto) as proxy:
                slow = run_call(root, call, moto, dict(env, AWS_ENDPOINT_URL=proxy.endpoint))
                # The proxy is really in the path: it forwarded what the server saw.
                assert len(proxy.requests) == slow["cold_requests"] + (
                    WARM_REPEATS * slow["warm_requests"]), (len(proxy.requests), slow)
            row[f"{args.latency_ms:g}ms"] = slow
            assert slow["answer"] == row["0ms"]["answer"]
            results["calls"][name] = row
            log(f"{name}: {row['0ms']['cold_requests']} requests, "
                f"{row['0ms']['cold_s']} s / {slow['cold_s']} s with latency")
        # Last: the saves change the record table the calls above read.
        results["single_saves"] = run_saves(root, env)
        with testing.latency_proxy(args.latency_ms, upstream=moto) as proxy:
            results[f"single_saves_{args.latency_ms:g}ms"] = run_saves(
                root, dict(env, AWS_ENDPOINT_URL=proxy.endpoint))
    results["load_after"] = os.getloadavg()
    print_table(results, args.latency_ms)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


def print_table(results: dict, latency_ms: float) -> None:
    slow = f"{latency_ms:g}ms"
    print(f"\n{results['n_artifacts']:,} artifacts + {results['n_records']:,} records on moto "
          f"(loopback); load average before {results['load_before']}, after "
          f"{results['load_after']}\n")
    print(f"| first call in a fresh process | requests (GET/HEAD/LIST) | start → answer "
          f"| CPU | with {slow} | warm repeat: requests | warm | warm with {slow} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in results["calls"].items():
        cold, lat = row["0ms"], row[slow]
        k = cold["cold_by_kind"]
        print(f"| `{row['call']}` | {cold['cold_requests']} ({k['GET']}/{k['HEAD']}/{k['LIST']}) "
              f"| {cold['cold_s']} s | {cold['cold_cpu_s']} s | {lat['cold_s']} s "
              f"| {cold['warm_requests']} "
              f"| {cold['warm_ms']} ms | {lat['warm_ms']} ms |")
    for key, label in (("single_saves", "0 ms"), (f"single_saves_{slow}", slow)):
        saves = results[key]
        print(f"\n{SAVES} single Record saves in one process, {label}: "
              f"{saves['mean_requests_per_save']} requests per save (plain "
              f"{saves['plain_save_requests']}, with _last_checkpoint "
              f"{saves['last_checkpoint_save_requests']}, compacting "
              f"{saves['compacting_save_requests']}); median {saves['median_ms']} ms (plain "
              f"{saves['plain_save_median_ms']} ms, "
              f"{saves['plain_save_checkpoint_written_median_ms']} ms until its checkpoint is "
              f"written); deltalake's create_checkpoint on the same "
              f"table: {saves['deltalake_create_checkpoint_requests']} requests")


if __name__ == "__main__":
    main()
