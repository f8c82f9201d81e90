"""The ``wharf`` command line: serve | index | ... (``wharf COMMAND --help``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from .settings import Settings, env_name


def add_settings_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ("packages",)) -> None:
    """One --option per Settings field, documented with its default and variable."""
    group = parser.add_argument_group("settings (each also read from its WHARF_* variable)")
    for f in dataclasses.fields(Settings):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, tuple):
            default = ",".join(str(d) for d in default) or "none"
        help_text = f"{f.metadata.get('help', '')} [default: {default}; {env_name(f.name)}]"
        option = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(option, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(option, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {}
    for f in dataclasses.fields(Settings):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        overrides[f.name] = Settings.parse_value(f.name, value) if isinstance(value, str) else value
    if getattr(args, "packages_dirs", None):
        overrides["packages"] = tuple(Path(p) for p in args.packages_dirs)
    return Settings.from_env(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(settings_from_args(args))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .server import index_now

    settings = settings_from_args(args)
    projects, files = index_now(settings)
    print(f"{projects} projects, {files} files in {', '.join(str(p) for p in settings.packages)}")
    return 0


def _packages_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packages_dirs", nargs="*", metavar="PACKAGES_DIR",
                        help="package directories (default: ./packages, or WHARF_PACKAGES)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wharf", description="Wharf, a private Python package index.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the index under gunicorn",
                                description="Run the index on PACKAGES_DIR under gunicorn.")
    _packages_argument(serve)
    add_settings_options(serve)
    serve.set_defaults(func=cmd_serve)

    index = commands.add_parser("index", help="bring the file catalog up to date and exit",
                                description="Hash and read every new or changed file now.")
    _packages_argument(index)
    add_settings_options(index)
    index.set_defaults(func=cmd_index)

    for register in EXTRA_COMMANDS:
        register(commands)
    return parser


# Other modules' commands: each entry adds a subparser to ``commands``.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as exc:
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
