"""What a machine remembers across processes: the current instance and the local user.

Stored in ``$LAMINA_HOME/settings.json`` (default ``~/.lamina``). ``LAMINA_INSTANCE`` overrides
the current instance, ``LAMINA_USER_HANDLE`` / ``LAMINA_USER_NAME`` the user.
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


def load() -> dict:
    try:
        return json.loads(_path().read_text())
    except FileNotFoundError:
        return {}


def save(settings: dict) -> None:
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(settings, indent=2))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


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
