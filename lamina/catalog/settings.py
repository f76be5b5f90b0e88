"""What a machine remembers across processes: the current instance, the local user, the ids
of the rows each instance's first write found or made for this user (bootstrap), and a recent
checkpoint of each long Delta log it read.

Stored in ``$LAMINA_HOME/settings.json`` (default ``~/.lamina``), for the ids
``$LAMINA_HOME/bootstrapped.json``, and for where long Delta logs end (delta_log.py)
``$LAMINA_HOME/checkpoints.json``. ``LAMINA_INSTANCE`` overrides the current instance,
``LAMINA_USER_HANDLE`` / ``LAMINA_USER_NAME`` the user.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .ids import uid_from_text


def home() -> Path:
    return Path(os.environ.get("LAMINA_HOME") or Path.home() / ".lamina")


def _path() -> Path:
    return home() / "settings.json"


def _bootstrapped_path() -> Path:
    return home() / "bootstrapped.json"


def load() -> dict:
    return _read(_path())


def save(settings: dict) -> None:
    _write(_path(), settings)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def _bootstrap_key(instance_uid: str, root: str, user_uid: str) -> str:
    # The instance's uid changes when a root is initialised again, and the storage row is
    # the root's: both are part of the key, so ids are never carried to another catalog.
    return f"{instance_uid} {root} {user_uid}"


def bootstrapped_ids(instance_uid: str, root: str, user_uid: str) -> dict[str, int] | None:
    """The ids (``user_id``, ``storage_id``) this machine recorded when user ``user_uid``
    bootstrapped the instance in ``root``; None if it never did (or the file is unreadable)."""
    try:
        found = _read(_bootstrapped_path()).get(_bootstrap_key(instance_uid, root, user_uid))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not all(
            isinstance(found.get(k), int) for k in ("user_id", "storage_id")):
        return None
    return {"user_id": found["user_id"], "storage_id": found["storage_id"]}


def remember_bootstrapped_ids(instance_uid: str, root: str, user_uid: str,
                              ids: dict[str, int]) -> None:
    """Record ``ids`` for :func:`bootstrapped_ids`. Best effort: a machine that cannot write
    its settings bootstraps again in the next process (a read of four tables)."""
    try:
        known = _read(_bootstrapped_path())
        known[_bootstrap_key(instance_uid, root, user_uid)] = dict(ids)
        _write(_bootstrapped_path(), known)
    except (OSError, ValueError):
        pass


def _checkpoints_path() -> Path:
    return home() / "checkpoints.json"


def remembered_checkpoint(log_uri: str) -> int | None:
    """The version of a checkpoint this machine saw in the Delta log at ``log_uri`` (only logs
    longer than one LIST page are remembered); None if none (or the file is unreadable)."""
    try:
        found = _read(_checkpoints_path()).get(log_uri)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, int) else None


def remember_checkpoint(log_uri: str, version: int) -> None:
    """Record ``version`` for :func:`remembered_checkpoint`. Best effort, as the ids above."""
    try:
        known = _read(_checkpoints_path())
        known[log_uri] = version
        _write(_checkpoints_path(), known)
    except (OSError, ValueError):
        pass


def current_instance_root() -> str | None:
    return os.environ.get("LAMINA_INSTANCE") or load().get("instance")


def remember_instance(root: str) -> None:
    settings = load()
    settings["instance"] = root
    save(settings)


@dataclass(frozen=True)
class LocalUser:
    uid: str
    handle: str
    name: str


def local_user() -> LocalUser:
    """The user of this machine. The uid derives from the handle, so one person is one user
    in every instance and on every machine."""
    settings = load().get("user") or {}
    handle = os.environ.get("LAMINA_USER_HANDLE") or settings.get("handle") or getpass.getuser()
    name = os.environ.get("LAMINA_USER_NAME") or settings.get("name") or handle
    return LocalUser(uid_from_text(handle, 8), handle, name)
