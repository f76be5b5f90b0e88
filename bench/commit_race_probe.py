#!/usr/bin/env python
"""Where the time of racing S3 writers goes: P writer processes × K ``Record.save()`` on the
moto S3 root (as ``foundation.py --only-latency``), with every phase of every save timed in the
writer — the snapshot read, the data-file upload, the log PUT (won or lost), joining the queue for
the turn and waiting in it, the backoff sleeps, compaction and checkpoints; an attempt that
queued for the turn instead of racing shows as ``_commit`` with outcome ``TurnTaken``.

    python bench/commit_race_probe.py 8 25 bench/foundation_latency_runs/probe-<name>.json
    TURN_AFTER=1 python bench/commit_race_probe.py ...   # another store.TURN_AFTER_LOSSES

Prints the load average, p50/p99/max save and each phase's count and total; writes every
save's phases (writer, save, seconds, [(phase, ms, outcome, start, end)]) with the load to the
file; and how the queue for the turn was served: how long a turn was held, and the gap from one
release to the next holder's noticing.
"""

from __future__ import annotations

import collections
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the lamina of this tree

# The store's methods each writer times.
METHODS = ["ensure", "_planning_snapshot", "_latest_log", "_commit", "_maybe_compact",
           "_write_checkpoint", "compact"]


def timed(phases: list, owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that appends (label, ms, outcome, wall-clock start
    and end in seconds) to ``phases``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started, outcome, wall = time.perf_counter(), "ok", time.time()
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            phases.append((label, round((time.perf_counter() - started) * 1e3, 1), outcome,
                           wall, time.time()))

    setattr(owner, name, wrapper)


class SleepRecorder:
    """Stands in for the store module's ``time``: records each backoff sleep."""

    def __init__(self, phases: list):
        self.phases = phases

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.phases.append(("sleep", round(seconds * 1e3, 1), "ok", time.time(),
                            time.time() + seconds))
        time.sleep(seconds)


def writer(uri: str, who: int, k: int, barrier, results, env: dict) -> None:
    os.environ.update(env)
    import lamina as ln
    from lamina.catalog import append_commit, store, turns

    logging.getLogger("lamina").setLevel(logging.ERROR)
    if os.environ.get("TURN_AFTER"):
        store.TURN_AFTER_LOSSES = int(os.environ["TURN_AFTER"])
    phases: list = []
    for name in METHODS:
        timed(phases, store.TableStore, name, name)
    timed(phases, turns.TurnQueue, "join", "turn_join")
    timed(phases, turns.TurnQueue, "wait_first", "turn_wait")
    timed(phases, turns.TurnQueue, "release", "turn_release")
    timed(phases, store.Snapshot, "read", "snapshot_read")
    timed(phases, append_commit, "write_data_file", "write_data_file")
    timed(phases, append_commit, "put_log_entry", "put_log_entry")
    store.time = SleepRecorder(phases)
    ln.connect(uri)
    ln.Record(name=f"warm-{who}").save()
    barrier.wait()
    saves = []
    for i in range(k):
        phases.clear()
        started = time.perf_counter()
        ln.Record(name=f"conc-{who}-{i}").save()
        saves.append((who, i, time.perf_counter() - started, list(phases)))
    results.put(saves)


def turn_summary(saves: list) -> None:
    """Print how long turns were held (from the end of the wait to the end of the release)
    and the gaps between the end of one release and the end of the next holder's wait."""
    acquired = sorted(end for save in saves for label, _, _, _, end in save[3]
                      if label == "turn_wait")
    released = sorted(end for save in saves for label, _, _, _, end in save[3]
                      if label == "turn_release")
    if not acquired:
        return
    held = [r - a for a, r in zip(acquired, released)]
    gaps = [a - r for r, a in zip(released, acquired[1:]) if a > r]
    print(f"turns {len(acquired)}: held {sum(held) / len(held) * 1e3:.0f} ms on average; "
          f"release to next holder {sum(gaps) / max(1, len(gaps)) * 1e3:.0f} ms on average "
          f"({len(gaps)} gaps, {sum(gaps):.1f} s in all); wall covered by turns "
          f"{sum(held):.1f} s")


def main() -> None:
    p, k, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    work = tempfile.mkdtemp()
    os.environ["LAMINA_HOME"] = os.path.join(work, "home")
    os.environ["LAMINA_CACHE_DIR"] = os.path.join(work, "cache")
    os.environ.setdefault("LAMINA_USER_HANDLE", "bench")
    import lamina as ln
    from lamina.testing import create_bucket, s3_server

    with s3_server():
        create_bucket("probe")
        uri = "s3://probe/r"
        ln.init(storage=uri)
        ln.Record(name="parent").save()
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(p), ctx.Queue()
        env = {a: v for a, v in os.environ.items() if a.startswith(("AWS_", "LAMINA_"))}
        procs = [ctx.Process(target=writer, args=(uri, w, k, barrier, results, env))
                 for w in range(p)]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        saves = [s for _ in procs for s in results.get(timeout=900)]
        wall = time.perf_counter() - started
        for proc in procs:
            proc.join()
    load = os.getloadavg()
    xs = sorted(s[2] for s in saves)
    print(f"load {load} wall {wall:.1f} s; save p50 {xs[len(xs) // 2]:.3f} s, "
          f"p99 {xs[int(len(xs) * 0.99)]:.3f} s, max {xs[-1]:.3f} s")
    total, count = collections.Counter(), collections.Counter()
    for save in saves:
        for label, ms, outcome, *_ in save[3]:
            total[(label, outcome)] += ms
            count[(label, outcome)] += 1
    for key in sorted(total, key=lambda key: -total[key]):
        print(f"{key[0]:>18} {key[1]:<10} {count[key]:5d} × {total[key] / count[key]:7.1f} ms"
              f" = {total[key]:9.0f} ms")
    turn_summary(saves)
    with open(out, "w") as f:
        json.dump({"load_at_end": load, "writers": p, "saves_each": k, "saves": saves}, f)


if __name__ == "__main__":
    main()
