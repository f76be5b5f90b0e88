#!/usr/bin/env python
"""Where the time of racing S3 writers goes: P writer processes × K ``Record.save()`` on the
moto S3 root (as ``foundation.py --only-latency``), with every phase of every save timed in the
writer — planning, the data-file upload, the log PUT (won or lost), yielding to the turn, the
lease wait, the backoff sleeps, compaction and checkpoints.

    python bench/commit_race_probe.py 8 25 bench/foundation_latency_runs/probe-<name>.json

Prints the load average, p50/p99/max save, and each phase's count and total; writes every
save's phases (writer, save, seconds, [(phase, ms, outcome)]) to the given file.
"""

import collections
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time


def writer(uri, who, k, barrier, q, env):
    os.environ.update(env)
    import lamina as ln
    from lamina.catalog import store
    import logging; logging.getLogger("lamina").setLevel(logging.ERROR)
    log = []
    cur = {}
    def wrap(name):
        orig = getattr(store.TableStore, name)
        def w(self, *a, **kw):
            t = time.perf_counter()
            ok = "ok"
            try:
                return orig(self, *a, **kw)
            except Exception as e:
                ok = type(e).__name__; raise
            finally:
                cur.setdefault("phases", []).append((name, round((time.perf_counter()-t)*1e3, 1), ok))
        setattr(store.TableStore, name, w)
    if os.environ.get("TURN_AFTER"):
        store.TURN_AFTER_LOSSES = int(os.environ["TURN_AFTER"])
    from lamina.catalog import turns, append_commit
    def wrapf(mod, name, label):
        orig = getattr(mod, name)
        def w(*a, **kw):
            t = time.perf_counter()
            ok = "ok"
            try:
                return orig(*a, **kw)
            except Exception as e:
                ok = type(e).__name__; raise
            finally:
                cur.setdefault("phases", []).append((label, round((time.perf_counter()-t)*1e3, 1), ok))
        setattr(mod, name, w)
    wrapf(turns.Lease, "acquire", "lease_acquire")
    wrapf(store.Snapshot, "read", "snapshot_read")
    wrapf(append_commit, "write_data_file", "write_data_file")
    wrapf(append_commit, "put_log_entry", "put_log_entry")
    wrapf(store.TableStore, "_latest_log", "_latest_log")
    for n in ["ensure", "_latest_snapshot", "_commit", "_maybe_compact", "_checkpoint_if_due", "compact"]:
        wrap(n)
    osleep = store.time.sleep
    class T:  # only patch store's time.sleep
        def __getattr__(s, a): return getattr(time, a)
        def sleep(s, x):
            cur.setdefault("phases", []).append(("sleep", round(x*1e3, 1), "ok")); osleep(x)
    store.time = T()
    ln.connect(uri)
    ln.Record(name=f"warm-{who}").save()
    barrier.wait()
    for i in range(k):
        cur.clear()
        t = time.perf_counter()
        ln.Record(name=f"conc-{who}-{i}").save()
        log.append((who, i, time.perf_counter() - t, cur.get("phases", [])))
    q.put(log)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the lamina of this tree


if __name__ == "__main__":
    work = tempfile.mkdtemp()
    os.environ["LAMINA_HOME"] = work + "/home"; os.environ["LAMINA_CACHE_DIR"] = work + "/cache"
    os.environ.setdefault("LAMINA_USER_HANDLE", "bench")
    from lamina.testing import s3_server, create_bucket
    import lamina as ln
    p, k = int(sys.argv[1]), int(sys.argv[2])
    with s3_server():
        create_bucket("probe")
        uri = "s3://probe/r"
        ln.init(storage=uri); ln.Record(name="parent").save()
        ctx = mp.get_context("spawn"); b = ctx.Barrier(p); q = ctx.Queue()
        env = {a: v for a, v in os.environ.items() if a.startswith(("AWS_", "LAMINA_"))}
        ps = [ctx.Process(target=writer, args=(uri, w, k, b, q, env)) for w in range(p)]
        t0 = time.perf_counter()
        [x.start() for x in ps]
        logs = [e for _ in ps for e in q.get(timeout=900)]
        wall = time.perf_counter() - t0
        [x.join() for x in ps]
    logs.sort(key=lambda e: -e[2])
    xs = sorted(e[2] for e in logs)
    print("load", os.getloadavg(), "wall", round(wall, 1), "p50", round(xs[len(xs)//2], 3), "p99", round(xs[int(len(xs)*.99)], 3), "max", round(xs[-1], 3))
    tot = collections.Counter(); cnt = collections.Counter()
    for e in logs:
        for n, ms, ok in e[3]:
            tot[(n, ok)] += ms; cnt[(n, ok)] += 1
    for key in sorted(tot, key=lambda k: -tot[k]):
        print(key, cnt[key], round(tot[key]), "ms total", round(tot[key]/cnt[key], 1), "avg")
    for e in logs[:6]:
        print(round(e[2], 2), e[3])
    with open(sys.argv[3], "w") as f:
        json.dump({"load": os.getloadavg(), "saves": logs}, f)
