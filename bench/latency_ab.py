#!/usr/bin/env python
"""The S3 writer race of ``foundation.py --only-latency`` (8 writers × 25 ``Record.save()`` on
the moto S3 root) with the lamina of another tree, for before/after comparisons run in turn
(A, B, A, B) on a shared machine, where latencies follow the load but lost races and requests
per save much less.

    git archive <commit> lamina | tar -x -C /tmp/before
    python bench/latency_ab.py /tmp/before bench/foundation_latency_runs/<name>.json

Prints the figures and the requests by kind; writes foundation.bench_latency's result.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    tree, out = os.path.abspath(sys.argv[1]), sys.argv[2]
    os.environ["LAMINA_BENCH_TREE"] = tree  # foundation.py puts it first, also in the writers
    sys.path.insert(0, HERE)
    import foundation
    work = tempfile.mkdtemp(prefix="latency-ab-")
    os.environ["LAMINA_HOME"] = os.path.join(work, "home")
    os.environ["LAMINA_CACHE_DIR"] = os.path.join(work, "cache")
    foundation.quiet_lamina()
    import lamina
    from lamina.testing import create_bucket, s3_server

    assert lamina.__file__.startswith(tree), lamina.__file__
    load_start = foundation.loadavg()
    with s3_server():
        create_bucket(foundation.BUCKET)
        result = foundation.bench_latency(
            foundation.Target("s3", f"s3://{foundation.BUCKET}"), 8, 25)
    result.update(tree=tree, load_start=load_start)
    print(f"lamina from {tree}; load {load_start} -> {result['load']}")
    print(foundation.render_latency([result]))
    print(result["requests_by_kind"])
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
