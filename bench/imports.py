"""What a fresh process pays before lamina answers (issue 15: ``import lamina`` <= 0.3 s).

Each case runs in a new interpreter, N times, the cases interleaved so that a change of load on
the shared machine spreads over all of them; ``python -c pass`` is measured in the same run as
the baseline. For each case: wall time and the child's user and user + system CPU time (from
``getrusage(RUSAGE_CHILDREN)``; less disturbed by other processes than wall time), median and
minimum, and the median above the baseline.

Cases: ``import lamina``; ``import lamina`` then ``ln.Artifact`` (the registries and the query
engine loaded); ``ln.connect`` of a local root (no query); the first answer on a local root
(import, ``ln.connect``, one ``count()``); the command line's ``--version`` and ``ls`` (a query).

Where the first answer's import time goes: ``-X importtime`` of that case on the work tree, the
self time of every module summed per top-level package, the minimum over N runs.

``--compare REV`` measures the same cases, in the same run, on the lamina package of a git
revision (exported to a temporary folder), e.g. the commit before the imports became lazy.

Usage: python bench/imports.py [--n 10] [--compare bbdbe66] [--json bench/imports_results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

FIRST_ANSWER = ("import lamina as ln; ln.connect({root!r}); "
                "assert ln.Artifact.filter(key__startswith='raw/').count() == 3")
CASES = {
    "python -c pass": ["-c", "pass"],
    "import lamina": ["-c", "import lamina"],
    "import lamina; ln.Artifact": ["-c", "import lamina as ln; ln.Artifact"],
    "import lamina; ln.connect": ["-c", "import lamina as ln; ln.connect({root!r})"],
    "first answer (local count)": ["-c", FIRST_ANSWER],
    "lamina --version": ["-m", "lamina.cli", "--version"],
    "lamina ls raw/": ["-m", "lamina.cli", "ls", "raw/"],
}


def export_revision(rev: str, folder: str) -> str:
    """The ``lamina`` package of git revision ``rev``, unpacked under ``folder``."""
    archive = os.path.join(folder, "lamina.tar")
    subprocess.run(["git", "-C", REPO, "archive", "-o", archive, rev, "lamina"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_once(argv: list[str], source: str, env: dict) -> tuple[float, float, float]:
    """Wall, user CPU and user + system CPU seconds of one fresh interpreter running ``argv``
    with ``source`` first on its path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=source, env={**env, "PYTHONPATH": source},
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    return wall, user, user + after.ru_stime - before.ru_stime


def imported_from(source: str, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-c", "import lamina; print(lamina.__file__)"],
                          cwd=source, env={**env, "PYTHONPATH": source}, check=True,
                          capture_output=True, text=True)
    return proc.stdout.strip()


def make_catalog(env: dict) -> str:
    """A local root with three artifacts under ``raw/``, for the cases that query."""
    root = tempfile.mkdtemp(prefix="imports-bench-root-")
    files = tempfile.mkdtemp()
    code = ["import lamina as ln", f"ln.init(storage={root!r})"]
    for i in range(3):
        path = os.path.join(files, f"f{i}.txt")
        with open(path, "w") as f:
            f.write(str(i))
        code.append(f"ln.Artifact({path!r}, key='raw/f{i}.txt').save()")
    subprocess.run([sys.executable, "-c", "\n".join(code)], cwd=REPO,
                   env={**env, "PYTHONPATH": REPO}, check=True, capture_output=True)
    return root


def import_time_by_package(argv: list[str], source: str, env: dict, n: int) -> dict:
    """Milliseconds of import (self time, summed per top-level package), minimum over ``n``."""
    runs = []
    for _ in range(n):
        proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=source,
                              env={**env, "PYTHONPATH": source}, check=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        totals: dict = {}
        for line in proc.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[0].strip().isdigit():
                package = parts[2].strip().split(".")[0]
                totals[package] = totals.get(package, 0) + int(parts[0]) / 1000
        runs.append(totals)
    packages = {p for totals in runs for p in totals}
    by_package = {p: round(min(t.get(p, 0) for t in runs), 1) for p in packages}
    return dict(sorted(by_package.items(), key=lambda item: -item[1]))


def summarize(samples: list[tuple[float, float, float]], baseline: dict | None) -> dict:
    row = {}
    for i, what in enumerate(("wall", "user", "cpu")):
        values = [sample[i] for sample in samples]
        row[f"{what}_median_s"] = round(statistics.median(values), 3)
        row[f"{what}_min_s"] = round(min(values), 3)
        if baseline is not None:
            row[f"{what}_above_baseline_s"] = round(
                row[f"{what}_median_s"] - baseline[f"{what}_median_s"], 3)
        row[f"{what}_s"] = [round(v, 4) for v in values]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--compare", default=None, help="a git revision to measure beside")
    parser.add_argument("--json", default=os.path.join(HERE, "imports_results.json"))
    args = parser.parse_args()
    env = dict(os.environ, LAMINA_HOME=tempfile.mkdtemp(prefix="imports-bench-home-"))
    root = make_catalog(env)
    sources = {"work tree": REPO}
    if args.compare:
        sources[args.compare] = export_revision(args.compare, tempfile.mkdtemp())
    cases = {name: [a.format(root=root) for a in argv] for name, argv in CASES.items()}
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}",
               "n": args.n, "load_average_start": [round(x, 2) for x in os.getloadavg()],
               "sources": {label: imported_from(path, env) for label, path in sources.items()}}
    samples: dict = {(label, case): [] for label in sources for case in cases}
    # Connect once in the home the cases share, so `lamina ls` has a current instance.
    subprocess.run([sys.executable, "-c", f"import lamina as ln; ln.connect({root!r})"],
                   cwd=REPO, env={**env, "PYTHONPATH": REPO}, check=True, capture_output=True)
    for _ in range(args.n):
        for label, path in sources.items():
            for case, argv in cases.items():
                samples[(label, case)].append(run_once(argv, path, env))
    results["first_answer_import_ms_by_package"] = import_time_by_package(
        cases["first answer (local count)"], REPO, env, args.n)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for label in sources:
        baseline = summarize(samples[(label, "python -c pass")], None)
        results[label] = {case: summarize(samples[(label, case)],
                                          None if case == "python -c pass" else baseline)
                          for case in cases}
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"{results['machine']}; n = {args.n}; load average "
          f"{results['load_average_start'][0]} at the start, {results['load_average_end'][0]} "
          "at the end")
    header = (f"| {'case':<28} | {'source':<10} | wall median | wall min | user median | "
              "user min | user+sys median |")
    print(header + "\n|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for case in cases:
        for label in sources:
            row = results[label][case]
            print(f"| {case:<28} | {label:<10} | {row['wall_median_s']:>11.3f} | "
                  f"{row['wall_min_s']:>8.3f} | {row['user_median_s']:>11.3f} | "
                  f"{row['user_min_s']:>8.3f} | {row['cpu_median_s']:>15.3f} |")
    top = list(results["first_answer_import_ms_by_package"].items())[:8]
    print("first answer, import ms by package: " + ", ".join(f"{p} {ms}" for p, ms in top))
    print(f"raw results: {args.json}")


if __name__ == "__main__":
    main()
