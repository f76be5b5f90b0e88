"""``lamina init / connect / info / ls / search / history / sql / export-views / compact / gc``.

Every failure lamina or the query engine can explain is one ``error: ...`` line on stderr and
exit code 1, never a traceback."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("lamina")
    except PackageNotFoundError:
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="lamina", description="A data catalog in your storage root.")
    parser.add_argument("--version", action="version", version=f"lamina {installed}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create an instance in a storage root")
    p_init.add_argument("--storage", required=True, help="./folder, s3://bucket/prefix or gs://...")
    p_init.add_argument("--modules", default=None, help="comma-separated, e.g. bionty")
    p_init.add_argument("--name", default=None)
    p_connect = sub.add_parser("connect", help="make an existing instance the current one")
    p_connect.add_argument("root")
    sub.add_parser("info", help="the current instance and its registries")
    p_ls = sub.add_parser("ls", help="artifacts whose key starts with a prefix")
    p_ls.add_argument("prefix", nargs="?", default="", help="a key prefix, e.g. raw/")
    p_ls.add_argument("--limit", type=int, default=100, help="rows to show (0: all)")
    p_search = sub.add_parser("search", help="rank the records of a registry for a text")
    p_search.add_argument("text")
    p_search.add_argument("--registry", default="Artifact",
                          help="Artifact (default), Record, Feature, CellType, Gene, ...")
    p_search.add_argument("--limit", type=int, default=20)
    p_history = sub.add_parser("history", help="the catalog's commits, newest first")
    p_history.add_argument("--limit", type=int, default=30, help="commits to show (0: all)")
    p_sql = sub.add_parser("sql", help="run a read-only SQL query over the registries")
    p_sql.add_argument("query")
    p_views = sub.add_parser(
        "export-views", help="print DuckDB views over the registries' Delta tables, feature "
        "columns named (for engines without lamina)")
    p_views.add_argument("--write", action="store_true",
                         help="also write _lamina_views.sql and _lamina_dictionary.json beside "
                         "the tables")
    p_compact = sub.add_parser("compact", help="merge small files of every registry table")
    p_compact.add_argument("--vacuum-hours", type=int, default=None,
                           help="also delete files older snapshots than this no longer need")
    p_gc = sub.add_parser("gc", help="remove object files no artifact references")
    p_gc.add_argument("--dry-run", action="store_true", help="only list them, with sizes")
    p_gc.add_argument("--grace-hours", type=float, default=1.0,
                      help="leave files younger than this (default 1): saves in flight")
    return parser


def _registry(name: str):
    from . import bionty  # noqa: F401  (its registries join MODELS when imported)
    from .errors import ValidationError, did_you_mean
    from .models.base import MODELS

    by_name = {m._spec.model.lower(): m for m in MODELS.values()}
    by_name.update({q.lower(): m for q, m in MODELS.items()})
    found = by_name.get(name.lower()) or by_name.get(name.lower().removeprefix("bt."))
    if found is None:
        raise ValidationError(f"unknown registry {name!r}"
                              f"{did_you_mean(name.lower(), by_name)}")
    return found


def _print(frame) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.max_colwidth", 60):
        print(frame)


def _run(args) -> None:
    import lamina as ln

    if args.command == "init":
        ln.init(storage=args.storage, modules=args.modules, name=args.name)
    elif args.command == "connect":
        ln.connect(args.root)
    elif args.command == "info":
        instance = ln.current()
        print(f"instance: {instance.slug}\nroot: {instance.root}\nmodules: {instance.modules}")
        for spec in instance.table_specs():
            version = instance.store(spec).version()
            state = "not written yet" if version < 0 else f"version {version}"
            print(f"  {spec.model:<16} {state}")
    elif args.command == "ls":
        qs = ln.Artifact.filter(key__startswith=args.prefix) if args.prefix else ln.Artifact.all()
        frame = qs.order_by("key").to_dataframe(limit=args.limit or None)
        if frame.empty:
            print(f"no artifact with a key starting {args.prefix!r}" if args.prefix
                  else "no artifacts")
            return
        _print(frame[["key", "size", "uid", "created_at"]].to_string(index=False))
    elif args.command == "search":
        result = _registry(args.registry).search(args.text, limit=args.limit)
        frame = result.scores
        _print(frame.to_string() if len(frame) else f"nothing matches {args.text!r}")
    elif args.command == "history":
        _print(ln.history(limit=args.limit or None).to_string())
    elif args.command == "sql":
        _print(ln.sql(args.query))
    elif args.command == "compact":
        instance = ln.current()
        for spec in instance.table_specs():
            store = instance.store(spec)
            merged = store.compact()
            line = (f"merged {merged['numFilesRemoved']} files ({merged['numRowsRewritten']} "
                    f"rows) into version {merged['version']}" if merged else "nothing to merge")
            if args.vacuum_hours is not None:
                removed = store.vacuum(retention_hours=args.vacuum_hours)
                line += f"; deleted {len(removed)} unreferenced files"
            print(f"{spec.model:<16} {line}")
    elif args.command == "export-views":
        from .engine import interop
        from .engine.session import session_for

        instance = ln.current()
        print(interop.views_sql(session_for(instance)), end="")
        if args.write:
            interop.write_data_dictionary(instance)
    elif args.command == "gc":
        print(ln.gc(grace=args.grace_hours * 3600, dry_run=args.dry_run))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import duckdb

    from .errors import LaminaError

    try:
        _run(args)
    except (LaminaError, duckdb.Error) as exc:
        # DuckDB's messages start with the kind of error and say what was wrong (a column it
        # does not know, and which ones it does): that line, not the traceback.
        message = str(exc).strip().splitlines()
        print(f"error: {' '.join(m.strip() for m in message[:3])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
