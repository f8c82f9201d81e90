"""``wharf backup DEST``, ``wharf restore SRC`` and ``wharf migrate --to-...``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def _run(name: str, action) -> int:
    from .backup import BackupError

    try:
        report = action()
    except (BackupError, ValueError, OSError) as exc:
        print(f"wharf {name}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wharf {name}: {report.summary()}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from ..cli import settings_from_args
    from .backup import backup

    return _run("backup", lambda: backup(settings_from_args(args), Path(args.dest)))


def cmd_restore(args: argparse.Namespace) -> int:
    from ..cli import settings_from_args
    from .backup import restore

    return _run("restore", lambda: restore(settings_from_args(args), Path(args.src)))


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..cli import settings_from_args
    from ..settings import Settings
    from .migrate import migrate

    source = settings_from_args(args)
    changes = {"storage_url": args.to_storage_url, "database_url": args.to_database_url}
    if args.to_packages:
        changes["packages"] = (Path(args.to_packages),)
        Path(args.to_packages).mkdir(parents=True, exist_ok=True)
    if args.to_state_dir:
        changes["state_dir"] = Path(args.to_state_dir)
    target = Settings.from_env(**{f.name: getattr(source, f.name) for f in dataclasses.fields(Settings)} | changes)
    if (target.storage_url, target.database_url, target.packages, target.state_path) == \
            (source.storage_url, source.database_url, source.packages, source.state_path):
        print("wharf migrate: error: the target is the source; give --to-storage-url, --to-database-url, "
              "--to-packages or --to-state-dir", file=sys.stderr)
        return 2
    return _run("migrate", lambda: migrate(source, target))


# (name, positional argument, help, description, handler) of the two commands on a directory.
DIRECTORY_COMMANDS = (
    ("backup", "DEST", "save the durable state (and local package files) while the index runs",
     "Save yanks, upload records, statuses, removals, tokens and their keys (SQLite files by SQLite's backup "
     "API, or the PostgreSQL rows in one snapshot), and with local storage the package files, each checked "
     "by sha256, into the new directory DEST.", cmd_backup),
    ("restore", "SRC", "put a backup into a fresh state directory or database",
     "Restore a `wharf backup` directory into the state directory or database (and the storage) these "
     "settings name; they must not hold durable records yet.", cmd_restore),
)


def add_maintenance_commands(commands: argparse._SubParsersAction) -> None:
    from ..cli import add_settings_options

    for name, argument, help_text, description, handler in DIRECTORY_COMMANDS:
        parser = commands.add_parser(name, help=help_text, description=description)
        parser.add_argument(argument.lower(), metavar=argument)
        add_settings_options(parser, exclude=())
        parser.set_defaults(func=handler)

    parser = commands.add_parser(
        "migrate", help="copy an index's files and durable state to other storage / another database",
        description="Copy the package files (verifying every sha256) and the durable state of the index "
                    "these settings name into the target; running it again copies only what is missing.")
    parser.add_argument("--to-storage-url", default="", help="the target storage: s3://BUCKET/PREFIX, or empty "
                                                             "for the --to-packages directory")
    parser.add_argument("--to-database-url", default="", help="the target database: postgresql://..., or empty "
                                                              "for SQLite files in --to-state-dir")
    parser.add_argument("--to-packages", default="", help="the target packages directory (local storage)")
    parser.add_argument("--to-state-dir", default="", help="the target state directory")
    add_settings_options(parser, exclude=())
    parser.set_defaults(func=cmd_migrate)
