"""``lamina init / connect / info / sql / export-views / compact``."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lamina", description="A data catalog in your storage root.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create an instance in a storage root")
    p_init.add_argument("--storage", required=True, help="./folder, s3://bucket/prefix or gs://...")
    p_init.add_argument("--modules", default=None, help="comma-separated, e.g. bionty")
    p_init.add_argument("--name", default=None)
    p_connect = sub.add_parser("connect", help="make an existing instance the current one")
    p_connect.add_argument("root")
    sub.add_parser("info", help="the current instance and its registries")
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
    args = parser.parse_args(argv)

    import lamina as ln
    from lamina.errors import LaminaError

    try:
        if args.command == "init":
            ln.init(storage=args.storage, modules=args.modules, name=args.name)
        elif args.command == "connect":
            ln.connect(args.root)
        elif args.command == "info":
            instance = ln.current()
            print(f"instance: {instance.slug}\nroot: {instance.root}\nmodules: {instance.modules}")
            for spec in instance.table_specs():
                print(f"  {spec.model:<12} version {instance.store(spec).version()}")
        elif args.command == "sql":
            import pandas as pd

            with pd.option_context("display.width", 200, "display.max_columns", 30):
                print(ln.sql(args.query))
        elif args.command == "export-views":
            from lamina.engine import interop
            from lamina.engine.session import session_for

            instance = ln.current()
            print(interop.views_sql(session_for(instance)), end="")
            if args.write:
                interop.write_data_dictionary(instance)
        elif args.command == "compact":
            instance = ln.current()
            for spec in tqdm(instance.table_specs(), desc="compacting", unit="table",
                             disable=not sys.stderr.isatty()):
                store = instance.store(spec)
                store.compact()
                if args.vacuum_hours is not None:
                    store.vacuum(retention_hours=args.vacuum_hours)
    except LaminaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
