#!/usr/bin/env python
"""Which S3 client lamina reads its own catalog files with (issue 15): import and first requests
of s3fs, obstore and pyarrow's S3FileSystem, each in a fresh process.

    python bench/s3_clients.py [--n 7]

On moto (loopback), each client in a new interpreter does what a first query's log reads do: GET
one small file (``instance.json``), LIST a folder of 20 files, GET 10 of them concurrently, HEAD
a file that does not exist. Per client: the process's CPU time and wall time from its start to
the last answer (the import included), median and minimum of N runs with the clients
interleaved, and the requests the server saw (moto's recorder) by method. Writes
``s3_clients_results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

BUCKET, FOLDER = "clients", "log"
FILES = [f"{FOLDER}/{i:020d}.json" for i in range(20)]

# The child: {client} reads, then prints its CPU and wall time since start.
CHILD = """
import json, os, sys, time
started = time.perf_counter()
client, endpoint = sys.argv[1], os.environ["AWS_ENDPOINT_URL"]
files = {files!r}
if client == "s3fs":
    import asyncio
    import s3fs
    from fsspec.asyn import sync
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    # One GET each, as lamina's s3fs reads were (fsspec's cat HEADs first).
    sync(fs.loop, fs._cat_file, "{bucket}/meta.json", max_concurrency=1)
    fs.call_s3("list_objects_v2", Bucket="{bucket}", Prefix="{folder}/", Delimiter="/")
    async def all_files():
        return await asyncio.gather(*(fs._cat_file("{bucket}/" + f, max_concurrency=1)
                                      for f in files[:10]))
    sync(fs.loop, all_files)
    try:
        fs.call_s3("head_object", Bucket="{bucket}", Key="missing")
    except FileNotFoundError:
        pass
elif client == "obstore":
    from concurrent.futures import ThreadPoolExecutor
    from obstore.store import S3Store
    store = S3Store("{bucket}", config={{"endpoint": endpoint, "region": "us-east-1",
                    "access_key_id": "testing", "secret_access_key": "testing"}},
                    client_options={{"allow_http": True}})
    bytes(store.get("meta.json").bytes())
    next(store.list("{folder}/", chunk_size=1000))
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda f: bytes(store.get(f).bytes()), files[:10]))
    try:
        store.head("missing")
    except FileNotFoundError:
        pass
else:
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlparse
    import pyarrow.fs as pafs
    url = urlparse(endpoint)
    fs = pafs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme,
                           region="us-east-1", access_key="testing", secret_key="testing")
    def read(path):
        with fs.open_input_stream(path) as f:
            return f.read()
    read("{bucket}/meta.json")
    fs.get_file_info(pafs.FileSelector("{bucket}/{folder}"))
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(read, ["{bucket}/" + f for f in files[:10]]))
    fs.get_file_info("{bucket}/missing")
print(json.dumps({{"cpu_s": time.process_time(), "wall_s": time.perf_counter() - started}}))
"""
CLIENTS = ["s3fs", "obstore", "pyarrow"]


def recorder(endpoint: str, path: str) -> bytes:
    method = "GET" if path == "download-recording" else "POST"
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{path}",
                                     data=None if method == "GET" else b"", method=method)
    return urllib.request.urlopen(request).read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=7)
    parser.add_argument("--json", default=os.path.join(HERE, "s3_clients_results.json"))
    args = parser.parse_args()

    from _common import machine

    from lamina import testing

    code = CHILD.format(files=FILES, bucket=BUCKET, folder=FOLDER)
    results = {"machine": machine(), "n": args.n, "load_before": os.getloadavg(), "clients": {}}
    runs: dict[str, list] = {c: [] for c in CLIENTS}
    with testing.s3_server() as endpoint:
        testing.create_bucket(BUCKET)
        from obstore.store import S3Store

        store = S3Store(BUCKET, config={"endpoint": endpoint, "region": "us-east-1",
                                        "access_key_id": "testing",
                                        "secret_access_key": "testing"},
                        client_options={"allow_http": True})
        store.put("meta.json", b'{"name": "clients"}')
        for f in FILES:
            store.put(f, b'{"add": {"path": "part-0.parquet"}}\n' * 20)
        requests: dict[str, list] = {}
        for i in range(args.n):
            for client in CLIENTS:
                recorder(endpoint, "reset-recording")
                recorder(endpoint, "start-recording")
                proc = subprocess.run([sys.executable, "-c", code, client], capture_output=True,
                                      text=True, check=True)
                recorder(endpoint, "stop-recording")
                runs[client].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                lines = recorder(endpoint, "download-recording").decode().splitlines()
                seen = [json.loads(line) for line in lines if line.strip()]
                requests[client] = [f"{'LIST' if 'list-type=' in r['url'] else r['method']}"
                                    for r in seen]
    results["load_after"] = os.getloadavg()
    for client in CLIENTS:
        cpu = [r["cpu_s"] for r in runs[client]]
        wall = [r["wall_s"] for r in runs[client]]
        kinds = {k: requests[client].count(k) for k in sorted(set(requests[client]))}
        results["clients"][client] = {
            "cpu_s": cpu, "wall_s": wall, "requests": kinds,
            "cpu_median_s": round(statistics.median(cpu), 3),
            "wall_median_s": round(statistics.median(wall), 3)}
    print(f"\nS3 clients on moto (loopback), {args.n} fresh processes each; load average before "
          f"{results['load_before']}, after {results['load_after']}\n")
    print("| client | CPU, median (min) | wall, median (min) | requests |")
    print("| --- | --- | --- | --- |")
    for client, row in results["clients"].items():
        print(f"| {client} | {row['cpu_median_s']} s ({min(row['cpu_s']):.3f}) "
              f"| {row['wall_median_s']} s ({min(row['wall_s']):.3f}) | {row['requests']} |")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
