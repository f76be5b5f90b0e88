"""Lineage: ``ln.track()`` records the running script as a Transform and this execution as a
Run; artifacts saved meanwhile point to the run, artifacts loaded become its inputs."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from .. import log
from ..catalog.ids import next_version_uid
from ..catalog.instance import on_disconnect
from ..errors import ValidationError
from .registries import Run, Transform

_active: dict = {"run": None}
# A run belongs to one instance: forgetting the instance ends its tracking in this process.
on_disconnect(lambda: _active.update(run=None))


def active_run() -> Run | None:
    return _active["run"]


_warned = {"untracked": False}


def output_run() -> Run | None:
    """The run new artifacts are outputs of; without one, says once per process (it would say
    the same on every save) that none is tracked."""
    run = _active["run"]
    if run is None and not _warned["untracked"]:
        _warned["untracked"] = True
        log.warning("no run & transform got linked, call `ln.track()` & re-run")
    return run


def _caller_path() -> Path | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return Path(path).resolve() if path else None


def _source_hash(source: str) -> str:
    # git's blob hash: the same file gives the same hash everywhere.
    data = source.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()[:22]


def track(key: str | None = None, *, params: dict | None = None,
          source_code: str | None = None, description: str | None = None) -> Run:
    """Start a Run of the calling script (or of ``key``/``source_code`` given explicitly)."""
    path = _caller_path()
    if source_code is None and path is not None and path.exists():
        source_code = path.read_text()
    key = key or (path.name if path is not None else None)
    if key is None:
        raise ValidationError("ln.track() could not find the running script; pass key='...'")
    if params is not None and not isinstance(params, dict):
        raise ValidationError(f"params must be a dict, got {params!r}")
    code_hash = _source_hash(source_code) if source_code is not None else None
    latest = Transform.filter(key=key, is_latest=True).order_by("-id").first()
    if latest is not None and latest.hash == code_hash:
        transform = latest
    else:
        transform = Transform(key=key, description=description, kind="script" if path else
                              "function", source_code=source_code, hash=code_hash)
        if latest is not None:
            transform._data["uid"] = next_version_uid(latest.uid, [latest.uid[-4:]])
            latest.is_latest = False
            latest.save()
        transform.save()
    now = datetime.now(timezone.utc)
    run = Run(transform=transform, started_at=now, entrypoint=str(path) if path else None,
              cli_args=" ".join(sys.argv[1:]) or None)
    run._data["params"] = json.dumps(params, sort_keys=True, default=str) if params else None
    run.save()
    _active["run"] = run
    log.info(f"started Transform('{transform.uid}', key='{key}'), Run('{run.uid}')")
    return run


def finish() -> None:
    """Mark the active run finished."""
    run = _active["run"]
    if run is None:
        raise ValidationError("no active run: call ln.track() first")
    run.finished_at = datetime.now(timezone.utc)
    run.save()
    _active["run"] = None
    log.info(f"finished Run('{run.uid}') after {(run.finished_at - run.started_at)}")


def record_input(artifact) -> None:
    """Add a loaded artifact to the active run's inputs (once)."""
    run = _active["run"]
    if run is None or artifact._data.get("id") is None:
        return
    if artifact._data.get("run_id") == run._lamina_id():
        return  # produced by this run, not an input
    if artifact._lamina_id() not in (run._data.get("input_artifacts") or []):
        run.input_artifacts.add(artifact)


__all__ = ["track", "finish", "active_run", "record_input"]
