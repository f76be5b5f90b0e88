#!/usr/bin/env python
"""The guide's counts (issue 11), A/B: this work tree's lamina against another's on the same
catalog, minutes apart, next to raw DuckDB on the same files.

    python bench/counts.py --sizes 1e5 1e6 --against /work/main

The catalog is bench/guide.py's (built through ``Artifact.from_manifest``, once per size). Its
count calls, plus relation filters combined with other conditions (the peer bench's
``filter(suffix=".h5ad", records=r)`` and ``filter(records=r, size__gt=1e4)`` with a record of
this catalog, and a feature condition), are measured by a fresh child process per lamina
(``PYTHONPATH`` names its work tree), each connecting as a user would; the two alternate
``--rounds`` times, and the faster round per call is kept (the machine is shared: load drifts).
Each child first checks its answers against raw DuckDB's. Timed unit as guide.py's: building
the QuerySet plus ``count()``, warm, p50 of >= 15 runs, process CPU beside it. Also: the
first count of a combined filter on a version (what builds the list index and reads the
column), and the child's peak RSS. Writes ``counts_results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import guide  # the catalog, the timing and the raw connection
from _common import HERE, load, new_results, write_results

# Calls beyond guide.py's counts: a list test AND other conditions.
COMBINED = [
    ("suffix='.h5ad', records=dmso", "list_contains(records, {dmso}) AND suffix = '.h5ad'",
     lambda A, dmso: A.filter(suffix=".h5ad", records=dmso)),
    ("records=dmso, size__gt=1e4", "list_contains(records, {dmso}) AND size > 1e4",
     lambda A, dmso: A.filter(records=dmso, size__gt=1e4)),
    ("records=dmso, temperature__gt=21.5",
     "list_contains(records, {dmso}) AND {temperature} > 21.5",
     lambda A, dmso: A.filter(records=dmso, temperature__gt=21.5)),
    ("perturbation=DMSO, size__gt=1e6", "list_contains({perturbation}, {dmso}) AND size > 1e6",
     lambda A, dmso: A.filter(perturbation="DMSO", size__gt=1e6)),
]


def count_cases(ln, bt) -> list[dict]:
    """guide.py's count calls, then COMBINED; each with its raw SQL forms."""
    cases = [c for c in guide.cases(ln, bt) if c["target"] == "count"]
    dmso = ln.Record.get(name="DMSO")
    names = {f.name: f"f_{f.id}" for f in ln.Feature.filter()}
    for name, where, call in COMBINED:
        sql = where.format(dmso=dmso.id, **names)
        cases.append({"name": f"{name}: count()", "call": lambda call=call: call(
            ln.Artifact, dmso).count(), "raw": [f"SELECT count(*) FROM artifact WHERE "
                                                f"branch_id = 1 AND ({sql})"]})
    return cases


def child(root: str) -> dict:
    """Measure every count with the lamina this process imports (run with PYTHONPATH)."""
    import logging

    import lamina as ln
    from lamina import bionty as bt
    from lamina.engine import session

    ln.connect(root)
    logging.getLogger("lamina").setLevel(logging.WARNING)
    cases = count_cases(ln, bt)
    first_ms, answers = {}, []
    for case in cases:
        if case["name"].split(":")[0] in [c[0] for c in COMBINED]:
            # Once the version has lasted (the session builds nothing for younger ones).
            time.sleep(session.IN_MEMORY_AFTER_SECONDS + 0.05)
            t0 = time.perf_counter()
            answers.append(case["call"]())
            first_ms[case["name"]] = (time.perf_counter() - t0) * 1e3
        else:
            answers.append(case["call"]())
    rows = []
    for case in cases:
        rows.append({"name": case["name"], "lamina": guide.measure(case["call"]),
                     "first_ms": first_ms.get(case["name"]),
                     "load": load()})
    peak_rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # What the session keeps for these counts: the columns of count_among (absent in a
    # lamina without it) and the list indexes.
    kept = session.session_for(ln.current())
    columns_mib = sum(c.nbytes for c in getattr(kept, "_row_columns", {}).values()) / 2**20
    indexes_mib = sum(index.nbytes for _, index in kept._list_indexes.values()) / 2**20
    # Checked after the timing, so that the raw connection's memory is not in the peak above.
    con = guide.raw_connection(ln)
    for case, answer in zip(cases, answers):
        for sql in case["raw"]:
            assert con.execute(sql).fetchone()[0] == answer, (case["name"], sql)
    con.close()
    return {"lamina": ln.__file__, "rows": rows, "peak_rss_mib": peak_rss_mib,
            "kept_columns_mib": round(columns_mib, 1), "list_indexes_mib": round(indexes_mib, 1)}


def run_child(tree: str, root: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", root, tree],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child for {tree} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(n: int, trees: dict[str, str], rounds: int) -> dict:
    import lamina as ln
    from lamina import bionty as bt

    with guide.built_catalog(n, "counts") as built:
        root = ln.current().root
        by_tree: dict[str, list[dict]] = {label: [] for label in trees}
        for _ in range(rounds):
            for label, tree in trees.items():
                by_tree[label].append(run_child(tree, root))
                guide.log(f"  n={n:,} {label}: measured ({by_tree[label][-1]['lamina']})")
        con = guide.raw_connection(ln)
        raw = {}
        for case in count_cases(ln, bt):
            sql = case["raw"][0]
            raw[case["name"]] = dict(guide.measure(lambda sql=sql: con.execute(sql).fetchone()),
                                     sql=sql)
        con.close()
    rows = []
    for i, case_name in enumerate(raw):
        row = {"name": case_name, "raw": raw[case_name],
               "target_ms": guide.TARGETS["count"][0 if n <= 100_000 else 1]}
        for label, runs in by_tree.items():
            best = min((run["rows"][i] for run in runs), key=lambda r: r["lamina"]["p50_ms"])
            row[label] = best
        rows.append(row)
    return {"n": n, "build": built, "rounds": rounds, "rows": rows,
            "peak_rss_mib": {label: max(r["peak_rss_mib"] for r in runs)
                             for label, runs in by_tree.items()},
            "kept_columns_mib": {label: max(r["kept_columns_mib"] for r in runs)
                                 for label, runs in by_tree.items()},
            "list_indexes_mib": {label: max(r["list_indexes_mib"] for r in runs)
                                 for label, runs in by_tree.items()},
            "trees": trees}


def markdown(result: dict, labels: list[str]) -> str:
    head = " | ".join(f"{label} p50 (CPU)" for label in labels)
    lines = [f"### n = {result['n']:,} artifacts", "",
             f"| call | {head} | first call ({labels[0]}) | raw DuckDB | ÷ raw | target | load |",
             "|---|" + "---|" * (len(labels) + 5)]
    for row in result["rows"]:
        cells = [f"{row[label]['lamina']['p50_ms']:.2f} ms ({row[label]['lamina']['cpu_p50_ms']:.2f})"
                 for label in labels]
        mine = row[labels[0]]
        first = f"{mine['first_ms']:.1f} ms" if mine["first_ms"] is not None else "—"
        ratio = mine["lamina"]["p50_ms"] / row["raw"]["p50_ms"]
        lines.append(f"| `{row['name']}` | " + " | ".join(cells)
                     + f" | {first} | {row['raw']['p50_ms']:.2f} ms | {ratio:.2f}× | "
                     f"≤ {row['target_ms']} ms | {mine['load']} |")
    rss = ", ".join(f"{label} {mib:,.0f} MiB" for label, mib in result["peak_rss_mib"].items())
    kept = ", ".join(f"{label} {result['kept_columns_mib'][label]:,.1f} MiB of columns, "
                     f"{result['list_indexes_mib'][label]:,.1f} MiB of list indexes"
                     for label in labels)
    lines += ["", f"Peak RSS of the measuring process: {rss}. Kept by its session: {kept}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1e5"])
    parser.add_argument("--against", help="another work tree whose lamina is measured too")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=os.path.join(HERE, "counts_results.json"))
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "TREE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # guide.py put this tree's lamina first on the path; the child measures TREE's.
        sys.path.insert(0, args.child[1])
        print(json.dumps(child(args.child[0])))
        return
    trees = {"this tree": os.path.dirname(HERE)}
    if args.against:
        trees[os.path.basename(os.path.abspath(args.against))] = os.path.abspath(args.against)
    results = new_results(sizes=[])
    for size in args.sizes:
        result = run_size(int(float(size)), trees, args.rounds)
        results["sizes"].append(result)
        print(markdown(result, list(trees)) + "\n", flush=True)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
