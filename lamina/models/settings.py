"""``ln.settings``: the current instance, user and default storage of this process."""

from __future__ import annotations

import os

from ..catalog.instance import Instance, current
from .registries import Storage, User


class Settings:
    @property
    def instance(self) -> Instance:
        return current()

    @property
    def user(self) -> User:
        return User.get(id=current().user_id)

    @property
    def storage(self) -> Storage:
        """Where new artifacts go; assign a root (``ln.settings.storage = "s3://b/p"``) to
        register it and make it the default."""
        return Storage.get(id=current().storage_id)

    @storage.setter
    def storage(self, root: str | os.PathLike) -> None:
        current().use_storage(root)

    def __repr__(self) -> str:
        instance = current()
        return (f"Settings(instance={instance.slug!r}, user={instance.user.handle!r}, "
                f"storage={self.storage.root!r})")


settings = Settings()
