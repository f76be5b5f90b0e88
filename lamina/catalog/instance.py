"""Instances: a storage root whose ``.lamina/`` folder holds the catalog and its metadata."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field

import pyarrow.compute as pc

from .. import log
from ..errors import InstanceError
from . import objects, settings, tables, writer
from .history import PastTableStore, versions_as_of
from .ids import new_uid
from .location import Location
from .log_hints import LogHints
from .store import TableStore
from .writer import ARCHIVE_BRANCH_ID, MAIN_BRANCH_ID, TRASH_BRANCH_ID

META_FILE = ".lamina/instance.json"
FORMAT_VERSION = 1


@dataclass
class Instance:
    """A connected instance. Connecting reads ``instance.json`` only: the rows every instance
    needs (this user, the branches, the default space, the root's storage) are looked up when
    :attr:`user_id` or :attr:`storage_id` is first asked for, and inserted only if missing,
    which happens on the first write; their ids are remembered on the machine (_bootstrap). So
    a user who may only read the bucket can connect and query."""

    location: Location
    meta: dict
    user: settings.LocalUser
    # Where the tables' long logs are listed from, moved by their writers (log_hints.py).
    hints: LogHints | None = field(default=None, repr=False)
    _user_id: int | None = field(default=None, repr=False)
    _storage_id: int | None = field(default=None, repr=False)
    # Set for a read-only view of the past: {qualified table: version} and what it shows.
    past: dict | None = None
    past_phrase: str | None = None
    _stores: dict = field(default_factory=dict, repr=False)
    _roots: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _bootstrap_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def root(self) -> str:
        return self.location.root

    @property
    def user_id(self) -> int:
        """This user's id (registered on first use if missing: that is a write)."""
        if self._user_id is None:
            _bootstrap(self)
        return self._user_id

    @property
    def storage_id(self) -> int:
        """The default storage for new artifacts (the root's own, registered if missing)."""
        if self._storage_id is None:
            _bootstrap(self)
        return self._storage_id

    @property
    def uid(self) -> str:
        return self.meta["uid"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def modules(self) -> list[str]:
        return list(self.meta.get("modules", []))

    @property
    def slug(self) -> str:
        return f"{self.meta['owner']}/{self.name}"

    def store(self, spec: tables.TableSpec) -> TableStore:
        with self._lock:
            found = self._stores.get(spec.qualified)
            if found is None:
                if self.past is not None:
                    found = PastTableStore(self.location, spec, self.past.get(spec.qualified),
                                           self.past_phrase)
                else:
                    found = TableStore(self.location, spec, self.hints)
                    found.committer = self.user.handle
                self._stores[spec.qualified] = found
            return found

    def storage_location(self, storage_id: int | None) -> Location:
        """Where the artifacts of storage ``storage_id`` live (the instance root by default)."""
        if storage_id is None:
            return self.location
        if storage_id not in self._roots:
            rows = self.store(tables.get("core.storage")).snapshot().read(
                ["id", "root"], pc.field("id") == storage_id).to_pylist()
            if not rows:
                raise InstanceError(f"storage {storage_id} is not registered in {self.slug}")
            root = rows[0]["root"]
            self._roots[storage_id] = self.location if root == self.root else Location.of(root)
        return self._roots[storage_id]

    def use_storage(self, root: str | os.PathLike) -> int:
        """Make ``root`` the default storage for new artifacts, registering it if new. A
        storage another instance manages is refused: it is linked, read-only."""
        storage_id = self.register_storage(root)
        self.writable_location(storage_id)
        self._storage_id = storage_id
        return storage_id

    def manager_of(self, root: str | os.PathLike) -> str:
        """The uid of the instance that manages ``root`` if it were registered now: the
        instance whose own root it is, else this one."""
        location = Location.of(root)
        meta = _read_meta(location) if location.root != self.root else None
        return meta["uid"] if meta is not None and meta.get("uid") else self.uid

    def register_storage(self, root: str | os.PathLike) -> int:
        """The id of storage ``root``, registered if new; the default storage is unchanged.
        The root of another instance is registered as linked storage (managed by that
        instance: its artifacts are read, never written, moved or deleted)."""
        location = Location.of(root)
        spec = tables.get("core.storage")
        storage_id = _ensure(self, spec, "root", {
            "root": location.root, "type": location.type,
            "instance_uid": self.manager_of(location.root)})
        self._roots[storage_id] = location
        return storage_id

    def writable_location(self, storage_id: int | None) -> Location:
        """Where artifact files of storage ``storage_id`` may be written, moved or deleted.
        Refused for a read-only view of the past and for linked storage: a storage another
        instance manages (or none does) is only read."""
        if self.past is not None:
            raise InstanceError(f"this connection shows the catalog as of {self.past_phrase} "
                                "and is read-only; ln.connect(root) without as_of to change it")
        location = self.storage_location(storage_id)
        if storage_id is None or storage_id == self.storage_id:
            return location
        rows = self.store(tables.get("core.storage")).snapshot().read(
            ["instance_uid"], pc.field("id") == storage_id).to_pylist()
        manager = rows[0]["instance_uid"] if rows else None
        if manager != self.uid:
            owner = f"instance {manager}" if manager else "no instance"
            raise InstanceError(
                f"storage {location.root} is managed by {owner}, not by {self.slug}: it is "
                "linked storage, whose artifacts lamina reads but never writes, moves or "
                "deletes. Write to a storage this instance manages (ln.settings.storage).")
        return location

    def table_specs(self) -> list[tables.TableSpec]:
        return [t for m in ("core", *self.modules) for t in tables.MODULES.get(m, ())]

    def __repr__(self) -> str:
        return f"Instance({self.slug!r}, root={self.root!r}, modules={self.modules})"


def _parse_modules(modules: str | list[str] | None) -> list[str]:
    if modules is None:
        return []
    names = [m.strip() for m in modules.split(",")] if isinstance(modules, str) else list(modules)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in tables.MODULES or m == "core"]
    if unknown:
        known = sorted(set(tables.MODULES) - {"core"})
        raise InstanceError(f"unknown module(s) {unknown}; available: {known}")
    return names


def _read_meta(location: Location) -> dict | None:
    """The instance metadata in ``location``; None when there is none."""
    return _read_tagged_meta(location)[0]


def _read_tagged_meta(location: Location) -> tuple[dict | None, str | None]:
    """The instance metadata in ``location`` (None when there is none) and its ETag on S3,
    which a move of a log hint is conditional on (log_hints.py). A bucket that does not exist
    or a store that refuses the read is an InstanceError saying so."""
    try:
        # One GET (opening a file object would HEAD it first).
        blob, tag = location.read_tagged(location.join(META_FILE))
        return json.loads(blob), tag
    except FileNotFoundError:
        if not location.is_local:
            bucket = location.root.split("://", 1)[1].split("/", 1)[0]
            if not _bucket_exists(location, bucket):
                raise InstanceError(f"bucket {bucket!r} of {location.root} does not exist; "
                                    "create it first") from None
        return None, None
    except (InstanceError, json.JSONDecodeError):
        raise
    except Exception as exc:  # the object store's own errors: credentials, permissions, ...
        raise InstanceError(f"cannot read {location.root}: {type(exc).__name__}: {exc}") from None


def _bucket_exists(location: Location, bucket: str) -> bool:
    try:
        return location.fs.exists(f"{location.type}://{bucket}")
    except Exception:
        return True  # cannot tell: say nothing of the bucket


def init(storage: str | os.PathLike, modules: str | list[str] | None = None,
         name: str | None = None) -> Instance:
    """Create an instance in ``storage``; connect if this user already made one there."""
    location = Location.of(storage)
    location.check_reachable()
    user = settings.local_user()
    module_names = _parse_modules(modules)
    meta = {
        "uid": new_uid(12),
        "name": name or os.path.basename(location.root.rstrip("/")) or "lamina",
        "owner": user.handle,
        "modules": module_names,
        "created_at": writer.now().isoformat(),
        "format": FORMAT_VERSION,
    }
    try:
        # Exclusive create: two processes initialising one root cannot both succeed, and an
        # existing instance is never overwritten.
        objects.write_exclusive(location, META_FILE, json.dumps(meta, indent=2).encode())
    except FileExistsError:
        existing = _read_meta(location) or {}
        wanted_other_modules = modules is not None and set(module_names) != set(
            existing.get("modules", []))
        if existing.get("owner") != user.handle or wanted_other_modules or (
                name and name != existing.get("name")):
            raise InstanceError(
                f"{location.root} is already managed by instance "
                f"{existing.get('owner')}/{existing.get('name')} (uid {existing.get('uid')}, "
                f"modules {existing.get('modules')}); refusing to overwrite it. "
                f"Use ln.connect({location.root!r}) to work in it."
            ) from None
        return connect(location.root)
    except OSError as exc:
        raise InstanceError(f"cannot create an instance in {location.root}: "
                            f"{exc.strerror or exc}") from None
    # The ETag of the file just created is not known: a first move of a hint reads it.
    instance = Instance(location, meta, user, LogHints(location, location.join(META_FILE),
                                                       meta, None))
    _bootstrap(instance)
    settings.remember_instance(location.root)
    log.info(f"initialized lamina: {instance.slug}")
    return _activate(instance)


def connect(root: str | os.PathLike | None = None, *, as_of=None) -> Instance:
    """Connect to the instance in ``root`` (default: the one remembered on this machine).

    ``as_of`` shows the catalog as it was after a commit (its number in ``ln.history()``) or
    at a time (a datetime or ISO text such as ``"2026-05-01T12:00"``; naive means UTC): every
    query sees that state, and every write is refused. Connect again without it to go on."""
    # Only an explicit root becomes the remembered one: the implicit connect of a process run
    # with LAMINA_INSTANCE must not change what every other process connects to.
    remember = root is not None
    if root is None:
        root = settings.current_instance_root()
        if root is None:
            raise InstanceError(
                "no lamina instance: call ln.init(storage='./mydata') or ln.connect('<root>')"
            )
    location = Location.of(root)
    location.check_reachable()
    meta, tag = _read_tagged_meta(location)
    if meta is None:
        raise InstanceError(
            f"{location.root} holds no lamina instance ({META_FILE} is missing); "
            f"create one with ln.init(storage={location.root!r})"
        )
    if meta.get("format", 1) > FORMAT_VERSION:
        raise InstanceError(f"{location.root} was written by a newer lamina; upgrade lamina")
    if as_of is not None:
        return _activate(_open_past(location, meta, settings.local_user(), as_of))
    instance = Instance(location, meta, settings.local_user(),
                        LogHints(location, location.join(META_FILE), meta, tag))
    if remember:
        settings.remember_instance(location.root)
    log.info(f"connected lamina: {instance.slug}")
    return _activate(instance)


def _open_past(location: Location, meta: dict, user: settings.LocalUser, as_of) -> Instance:
    """A read-only instance showing the catalog at ``as_of``; nothing is written, and the
    machine's remembered instance stays as it is."""
    versions, phrase = versions_as_of(Instance(location, meta, user), as_of)
    instance = Instance(location, meta, user, past=versions, past_phrase=phrase)
    users = instance.store(tables.get("core.user")).snapshot().read(
        ["id"], pc.field("uid") == user.uid)
    instance._user_id = users.column("id")[0].as_py() if users.num_rows else 0
    storages = instance.store(tables.get("core.storage")).snapshot().read(
        ["id"], pc.field("root") == location.root)
    instance._storage_id = storages.column("id")[0].as_py() if storages.num_rows else 0
    log.info(f"connected lamina: {instance.slug} as of {phrase}, read-only")
    return instance


_current: Instance | None = None
_current_lock = threading.Lock()


def _activate(instance: Instance) -> Instance:
    global _current
    with _current_lock:
        _current = instance
    return instance


_disconnect_hooks: list = []


def on_disconnect(hook) -> None:
    """Register ``hook()`` to run when :func:`disconnect` forgets the active instance; upper
    layers use it to drop what they keep per instance (connections, the active run)."""
    _disconnect_hooks.append(hook)


def disconnect() -> None:
    """Forget the active instance of this process and what was opened for it. The instance
    remembered in the settings file stays; the next query connects to it again."""
    global _current
    with _current_lock:
        _current = None
    for hook in list(_disconnect_hooks):
        hook()


def current() -> Instance:
    """The active instance, connecting to the remembered one on first use."""
    if _current is None:
        return connect()
    return _current


def _bootstrap(instance: Instance) -> None:
    """Find, and insert where missing, the rows every instance needs: branches, the default
    space, this user, its storage. Rows that exist are only read (no commit), so this is safe
    to repeat and to race, and writes nothing once another user has bootstrapped the root.

    The ids found are remembered on this machine (``settings.bootstrapped_ids``), so that the
    first write of a later process reads none of these tables again: on S3 those reads were
    about 30 of the 43 requests of a first save in a new process (bench/README.md, "Requests
    per save on S3"). A remembered id stays right because ids are never reused, and the key
    holds the instance's uid (a root deleted and initialised again has a new one) and this
    user's uid (another user on the machine has ids of its own). What it cannot see: a row
    deleted permanently since (only possible while nothing links to it; the fresh bootstrap
    of another machine brings it back), or a catalog put back from a copy older than this
    machine's first write (its ids start below the remembered ones). Checking costs the
    reads the memory saves (a LIST and the log of the user and storage tables on S3), so it
    is not done."""
    with instance._bootstrap_lock:
        if instance._user_id is not None and instance._storage_id is not None:
            return
        user = instance.user
        ids = settings.bootstrapped_ids(instance.uid, instance.root, user.uid)
        if ids is None:
            ids = _bootstrap_rows(instance)
            settings.remember_bootstrapped_ids(instance.uid, instance.root, user.uid, ids)
        instance._user_id = ids["user_id"]
        # The storage row was found by this root: its artifacts live here (no read of the
        # storage table to learn its root again).
        instance._roots.setdefault(ids["storage_id"], instance.location)
        if instance._storage_id is None:
            instance._storage_id = ids["storage_id"]


def _bootstrap_rows(instance: Instance) -> dict[str, int]:
    """The rows of :func:`_bootstrap`, read and inserted where missing; the ids of this
    user's row and of the root's storage row."""
    user = instance.user
    user_id = _ensure(instance, tables.get("core.user"), "uid",
                      {"uid": user.uid, "handle": user.handle, "name": user.name})
    # The three branches in one read of the table (on S3 a read per branch cost a LIST
    # and a GET per data file each time).
    branches = tables.get("core.branch")
    names = pc.field("name").isin(["main", "archive", "trash"])
    present = set(instance.store(branches).snapshot().read(["name"], names)
                  .column("name").to_pylist())
    for branch_id, branch_name in ((MAIN_BRANCH_ID, "main"), (ARCHIVE_BRANCH_ID, "archive"),
                                   (TRASH_BRANCH_ID, "trash")):
        if branch_name not in present:
            _ensure(instance, branches, "name", {"id": branch_id, "name": branch_name},
                    created_by=user_id)
    _ensure(instance, tables.get("core.space"), "name",
            {"id": writer.DEFAULT_SPACE_ID, "uid": "A" * 12, "name": "all"},
            created_by=user_id)
    storage_id = _ensure(
        instance, tables.get("core.storage"), "root",
        {"root": instance.root, "type": instance.location.type,
         "region": os.environ.get("AWS_REGION") if instance.location.type == "s3" else None,
         "instance_uid": instance.uid}, created_by=user_id)
    return {"user_id": user_id, "storage_id": storage_id}


def _ensure(instance: Instance, spec: tables.TableSpec, match: str, row: dict,
            created_by: int | None = None) -> int:
    """The id of the row whose ``match`` column equals ``row[match]``, inserting ``row`` if
    none. An existing row is found with a read of the latest snapshot, without a commit."""
    found = instance.store(spec).snapshot().read(["id"], pc.field(match) == row[match])
    if found.num_rows:
        return min(found.column("id").to_pylist())
    return writer.insert(instance, spec, [row], unique=match, created_by=created_by)[0]["id"]
