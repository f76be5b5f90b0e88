"""The README's quickstart, run as written in a fresh interpreter in an empty folder, so that
what a new user pastes keeps working."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lamina as ln

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_code() -> str:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S)[1]


def test_the_readme_quickstart_runs_as_written(tmp_path):
    code = quickstart_code()
    assert "ln.init(" in code and "from_manifest(" in code  # the section is still there
    # The lamina under test, whichever folder the session starts in.
    source = str(Path(ln.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (source, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ln.connect(str(tmp_path / "mydata"))
    keys = set(ln.Artifact.filter().values_list("key", flat=True))
    assert {"raw/reads.fastq.gz", "iris.parquet", "batch/sample_0.csv", "batch/sample_1.csv",
            "batch/sample_2.csv", "summary.parquet"} == keys
    latest = ln.Artifact.get(key="summary.parquet", is_latest=True)
    assert len(latest.versions) == 2
    assert "└── input batch/sample_0.csv" in str(latest.versions.first().view_lineage())
    assert ln.Record.filter(name__in=["DMSO", "IFNG"]).count() == 2
    iris = ln.Artifact.get(key="iris.parquet")
    assert iris.features.get_values() == {"temperature": 21.6}
    assert (tmp_path / "manifest.parquet").exists()
