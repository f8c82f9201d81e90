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
    from .serving.appserver import serve

    serve(settings_from_args(args))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .serving.appserver import index_now

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


# --- publishing: passwd, yank, unyank, remove (app.auth, app.upload) --------------------
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


def cmd_catalog_change(args: argparse.Namespace) -> int:
    from . import upload
    from .catalog import Catalog
    from .serving.appserver import configure_logging
    from .storage import LocalStorage

    settings = settings_from_args(args)
    configure_logging(settings)
    # No sweep: a running index keeps the catalog current; one that never ran gets indexed.
    catalog = Catalog(settings, LocalStorage(settings.packages)).open(sweep=False)
    try:
        files, what = upload.cli_targets(catalog, args.target)
        names = ", ".join(f.filename for f in files)
        if args.command == "remove":
            upload.remove_files(catalog, files)
            upload.log_cli("removed", what, f" ({names})")
            print(f"removed {names}")
        else:
            reason = args.reason if args.command == "yank" else None
            upload.yank_files(catalog, files, reason)
            upload.log_cli(f"{args.command}ed", what, f" ({names})" + (f" reason {reason!r}" if reason else ""))
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


# --- availability: mirror (app.mirror) ------------------------------------------------------
def add_mirror_command(commands: argparse._SubParsersAction) -> None:
    from .mirror import add_mirror_command as add

    add(commands)


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
    written = write(settings, out, args.targets)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{out}: up to date")
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
                    "--out (default: --config-dir, where the files refer to each other). Unchanged "
                    "files are left alone.")
    render.add_argument("targets", nargs="+", metavar="TARGET",
                        help=f"any of {', '.join(TARGETS)}, or all")
    render.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="directory to write into [default: the config dir]")
    add_settings_options(render, exclude=())
    render.set_defaults(func=cmd_render)

    stack = commands.add_parser(
        "stack", help="run nginx (HTTPS, cache), gunicorn and supervisord locally, without root",
        description="Start the whole stack under DIR: a local CA and certificate (tls/), configs "
                    "(conf/), logs/, cache/ and packages/ unless PACKAGES_DIRs are given; nginx on "
                    "127.0.0.1 ports 8443 (HTTPS) and 8880 (redirect) unless set. Runs supervisord "
                    "in the foreground; Ctrl-C stops everything.")
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
