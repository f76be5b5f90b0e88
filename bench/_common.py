"""What the benches share: lamina imported from the work tree the bench belongs to (in the
processes it starts too), the machine a run was made on, the load average beside each figure,
and the raw results written as JSON beside the script."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)


def use_this_tree() -> None:
    """Import lamina from this work tree, not whichever one the interpreter has installed, and
    the other benches by name; child processes inherit the choice through PYTHONPATH."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != TREE]
    os.environ["PYTHONPATH"] = os.pathsep.join([TREE, *paths])
    for path in (HERE, TREE):  # TREE ends first
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def machine() -> str:
    """Cores, CPU model and the versions of the libraries the figures depend on."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    import deltalake
    import duckdb
    import polars
    import pyarrow

    return (f"{os.cpu_count()} cores ({cpu}), python {platform.python_version()}, "
            f"pyarrow {pyarrow.__version__}, polars {polars.__version__}, "
            f"deltalake {deltalake.__version__}, duckdb {duckdb.__version__}")


def load() -> float:
    """The one-minute load average now: the machine is shared, so every figure carries it."""
    return round(os.getloadavg()[0], 2)


def new_results(**fields) -> dict:
    """The raw results of a run about to start: the machine and the load averages now."""
    return {"machine": machine(), "load_start": os.getloadavg(), **fields}


def run_sizes(doc: str, results_file: str, run_size, sizes=("1e5", "1e6")) -> tuple[dict, str]:
    """The benches measured per catalog size: parse ``--sizes`` and ``--json`` (default
    ``results_file`` beside the benches), run ``run_size(n)`` for each size into the raw
    results; returns them and the path to write them to."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(sizes))
    parser.add_argument("--json", default=os.path.join(HERE, results_file))
    args = parser.parse_args()
    results = new_results(sizes=[])
    for size in args.sizes:
        results["sizes"].append(run_size(int(float(size))))
    return results, args.json


def write_results(results: dict, path: str) -> None:
    """Write a bench's raw results (with the load average now) and say on what machine."""
    results["load_end"] = os.getloadavg()
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"machine: {results['machine']}; load average at start "
          f"{results['load_start'][0]:.1f}, at end {results['load_end'][0]:.1f}")
