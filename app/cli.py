"""The ``wharf`` command line: serve | index | ... (``wharf COMMAND --help``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import Settings, env_name

if TYPE_CHECKING:
    from .catalog import Catalog, DistFile


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
    from .serving.appserver import serve
    from .serving.local_ca import SetupError

    try:
        serve(settings_from_args(args))
    except SetupError as exc:
        print(f"wharf serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .serving.appserver import counted, index_now
    from .serving.local_ca import SetupError
    from .serving.preflight import require_packages

    settings = settings_from_args(args)
    try:
        require_packages(settings)
    except SetupError as exc:
        print(f"wharf index: error: {exc}", file=sys.stderr)
        return 1
    projects, files = index_now(settings)
    print(f"{counted(projects, 'project')}, {counted(files, 'file')} in {', '.join(str(p) for p in settings.packages)}")
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


# --- publishing: passwd, yank, unyank, remove (app.auth, app.publishing) ----------------
def _read_password(user: str) -> str:
    """Prompt twice on a terminal; otherwise read one line from standard input."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass(f"Password for {user}: ")
        if getpass.getpass("Repeat it: ") != first:
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_passwd(args: argparse.Namespace) -> int:
    from .auth import delete_user, set_password

    try:
        if args.delete:
            if not Path(args.file).exists() or not delete_user(args.file, args.user):
                print(f"wharf: no user {args.user!r} in {args.file}", file=sys.stderr)
                return 1
            print(f"removed {args.user} from {args.file}")
            return 0
        existed = set_password(args.file, args.user, _read_password(args.user), rounds=args.rounds)
    except OSError as exc:
        print(f"wharf: cannot update {args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"{'updated' if existed else 'added'} {args.user} in {args.file} (bcrypt)")
    return 0


def cli_targets(catalog: Catalog, target: list[str]) -> tuple[list[DistFile], str]:
    """``FILENAME`` or ``NAME VERSION`` as given on the command line: (files, what to call them)."""
    from packaging.utils import canonicalize_name

    from .publishing.changes import select_files

    if len(target) == 1:
        files = select_files(catalog, filename=target[0])
        what = target[0]
    elif len(target) == 2:
        files = select_files(catalog, name=target[0], version=target[1])
        what = f"{canonicalize_name(target[0])} {target[1]}"
    else:
        raise ValueError("give a FILENAME, or a project NAME and VERSION")
    if not files:
        raise LookupError(f"{what} not found")
    return files, what


def log_cli(action: str, what: str, detail: str = "") -> None:
    """Log a change made from the command line: who, what, where."""
    import getpass
    import logging
    import os
    import socket

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    logging.getLogger("wharf.upload").info("%s %s%s by %s from the command line on %s",
                                           action, what, detail, who, socket.gethostname())


def cmd_catalog_change(args: argparse.Namespace) -> int:
    from .catalog import Catalog
    from .publishing.changes import remove_files, yank_files
    from .serving.appserver import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings)
    # No sweep: a running index keeps the catalog current; one that never ran gets indexed.
    catalog = Catalog(settings).open(sweep=False)
    try:
        files, what = cli_targets(catalog, args.target)
        names = ", ".join(f.filename for f in files)
        if args.command == "remove":
            record_cli_removals(settings, files)  # app/policy: immutable file names
            remove_files(catalog, files)
            log_cli("removed", what, f" ({names})")
            print(f"removed {names}")
        else:
            reason = args.reason if args.command == "yank" else None
            yank_files(catalog, files, reason)
            log_cli(f"{args.command}ed", what, f" ({names})" + (f" reason {reason!r}" if reason else ""))
            print(f"{args.command}ed {names}")
    except LookupError as exc:
        print(f"wharf: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        catalog.close()
    return 0


def add_publishing_commands(commands: argparse._SubParsersAction) -> None:
    passwd = commands.add_parser(
        "passwd", help="add or change a user in an htpasswd file (bcrypt)",
        description="Create or update USER in the htpasswd FILE with a bcrypt hash. The password is "
                    "asked for on a terminal, else read as one line from standard input.")
    passwd.add_argument("file", type=Path, metavar="FILE")
    passwd.add_argument("user", metavar="USER")
    passwd.add_argument("--delete", action="store_true", help="remove USER instead")
    passwd.add_argument("--rounds", type=int, default=12, metavar="COST",
                        help="bcrypt cost factor, 4-31 (like htpasswd -C; default 12)")
    passwd.set_defaults(func=cmd_passwd)
    for name, text in (("yank", "mark a file or release as yanked (PEP 592): installers skip it "
                                "unless pinned"),
                       ("unyank", "undo a yank"),
                       ("remove", "delete a file or every file of a release from disk and index")):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ". "
                                  "TARGET is a FILENAME or a project NAME and VERSION; the change "
                                  "shows in a running index within a second.")
        sub.add_argument("target", nargs="+", metavar="TARGET")
        if name == "yank":
            sub.add_argument("--reason", default="", help="why (shown by pip and uv)")
        add_settings_options(sub, exclude=())
        sub.set_defaults(func=cmd_catalog_change)


EXTRA_COMMANDS.append(add_publishing_commands)

# `wharf status PROJECT STATUS` (PEP 792): app/policy/cli.py
from .policy.cli import add_status_command, record_cli_removals  # noqa: E402

EXTRA_COMMANDS.append(add_status_command)
from .maintenance.cli import add_maintenance_commands  # noqa: E402  (backup, restore, migrate)
EXTRA_COMMANDS.append(add_maintenance_commands)


# --- availability: mirror (app/mirror/cli.py) ---------------------------------------------
from .mirror.cli import add_mirror_command  # noqa: E402

EXTRA_COMMANDS.append(add_mirror_command)


# --- deployment: render, stack, container (app.serving) -----------------------------------
def _explicit_settings(args: argparse.Namespace) -> set[str]:
    """Settings given on the command line or as WHARF_* variables (not left at defaults)."""
    import os

    given = {f.name for f in dataclasses.fields(Settings)
             if getattr(args, f.name, None) is not None or env_name(f.name) in os.environ}
    if getattr(args, "packages_dirs", None):
        given.add("packages")
    return given


def cmd_render(args: argparse.Namespace) -> int:
    from .serving.render import templates_for, write

    settings = settings_from_args(args)
    templates_for(args.targets)  # unknown targets fail before anything is written
    out = args.out or settings.config_dir
    if args.out is not None and "config_dir" not in _explicit_settings(args):
        # The files refer to each other by absolute path: to where they are written.
        settings = dataclasses.replace(settings, config_dir=args.out.resolve())
    written = write(settings, out, args.targets)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{out}: up to date")
    if out.resolve() != settings.config_dir.resolve():
        print(f"wharf render: note: these files refer to each other under {settings.config_dir} "
              f"(--config-dir): copy them there before use", file=sys.stderr)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from .serving.stack import SetupError, run, stack_settings

    settings = stack_settings(settings_from_args(args), args.dir, _explicit_settings(args))
    try:
        run(settings, args.dir)  # becomes supervisord
    except SetupError as exc:
        print(f"wharf stack: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_container(args: argparse.Namespace) -> int:
    from .serving.container import start
    from .serving.local_ca import SetupError

    try:
        start(settings_from_args(args))  # becomes supervisord
    except SetupError as exc:
        print(f"wharf: error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_deploy_commands(commands: argparse._SubParsersAction) -> None:
    from .serving.render import TARGETS

    render = commands.add_parser(
        "render", help="write the nginx, supervisord and gunicorn configs",
        description="Render deploy/'s templates from the settings (options, WHARF_* variables) into "
                    "--config-dir, where the files refer to each other. With --out DIR alone they are "
                    "written to DIR and refer to DIR; with --out and --config-dir they refer to "
                    "--config-dir, to be copied there. Unchanged files are left alone.")
    render.add_argument("targets", nargs="+", metavar="TARGET",
                        help=f"any of {', '.join(TARGETS)}, or all")
    render.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="directory to write into; the files refer to it unless --config-dir "
                             "is given too [default: the config dir]")
    add_settings_options(render, exclude=())
    render.set_defaults(func=cmd_render)

    stack = commands.add_parser(
        "stack", help="run nginx (HTTPS, cache), gunicorn and supervisord locally, without root",
        description="Start the whole stack under DIR: a local CA and certificate (tls/), configs "
                    "(conf/), logs/, cache/ and packages/ unless PACKAGES_DIRs are given; nginx on "
                    "127.0.0.1 ports 8443 (HTTPS, --https-port) and 8880 (redirect, --http-port) unless "
                    "set; gunicorn behind it on --port (8080). Options may come before or after DIR. "
                    "Runs supervisord in the foreground; Ctrl-C stops everything.")
    stack.add_argument("dir", type=Path, metavar="DIR")
    _packages_argument(stack)
    add_settings_options(stack)
    stack.set_defaults(func=cmd_stack)

    container = commands.add_parser(
        "container", help="start the container image's services (its entrypoint runs this)",
        description="As the image's unprivileged user: use the mounted TLS certificate or make a local "
                    "CA, add WHARF_FIRST_USER if asked, render and check the configs, then become "
                    "supervisord running gunicorn and nginx.")
    add_settings_options(container, exclude=())
    container.set_defaults(func=cmd_container)


EXTRA_COMMANDS.append(add_deploy_commands)


# --- documentation: docs (app.reference) ------------------------------------------------------
def cmd_docs(args: argparse.Namespace) -> int:
    from .reference import render_reference

    text = render_reference()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"wharf docs: {args.out} is stale; regenerate it with "
                  f"`python3 -m app docs --out {args.out}`", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def add_docs_command(commands: argparse._SubParsersAction) -> None:
    docs = commands.add_parser(
        "docs", help="print or write the settings reference (docs/configuration.md)",
        description="Render the settings reference from the Settings fields: every option with its "
                    "WHARF_* variable, Ansible variable, type, default and help. Prints it, or "
                    "writes it to --out.")
    docs.add_argument("--out", type=Path, default=None, metavar="FILE",
                      help="write the reference to FILE (e.g. docs/configuration.md)")
    docs.add_argument("--check", action="store_true",
                      help="with --out: write nothing, exit 1 if FILE differs from the reference")
    docs.set_defaults(func=cmd_docs)


EXTRA_COMMANDS.append(add_docs_command)


def add_token_commands(commands: argparse._SubParsersAction) -> None:
    from .tokens.cli import add_token_commands as add

    add(commands)  # wharf token | publisher (app/tokens/cli.py)


EXTRA_COMMANDS.append(add_token_commands)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with options and positional arguments in any order.

    ``wharf stack DIR --port 8081 PACKAGES_DIR`` is one command: each subcommand parses
    its arguments intermixed (argparse cannot do that across subparsers itself).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # A command with subcommands of its own (token, publisher) cannot be parsed intermixed.
    if argv and argv[0] in commands.choices and commands.choices[argv[0]]._subparsers is None:
        args = commands.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return args.func(args) or 0
    except ValueError as exc:
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
