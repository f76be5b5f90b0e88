"""Housekeeping users call: removing object files no artifact references."""

from __future__ import annotations

from datetime import timedelta

from ..catalog import gc as _gc
from ..catalog.gc import GcReport
from ..catalog.instance import current
from ..errors import ValidationError


def gc(grace: timedelta | float = _gc.DEFAULT_GRACE, dry_run: bool = False) -> GcReport:
    """Remove object files of managed storage that no artifact references and that are older
    than ``grace`` (a timedelta, or seconds; default one hour), left by saves that were
    killed between uploading and committing. Safe while others save. ``dry_run=True`` only
    lists them, with their sizes."""
    if not isinstance(grace, timedelta):
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ValidationError(f"grace must be a timedelta or a number of seconds >= 0, "
                                  f"got {grace!r}")
        grace = timedelta(seconds=grace)
    return _gc.collect(current(), grace=grace, dry_run=dry_run)
