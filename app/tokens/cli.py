"""``wharf token create|list|revoke`` and ``wharf publisher add|list|remove``."""

from __future__ import annotations

import argparse
import sys

from .tokens import describe_time, parse_actions, parse_duration, parse_projects


def _settings(args: argparse.Namespace):
    """The settings, and the audit log to standard error: token changes leave a trace here too."""
    import logging

    from ..cli import settings_from_args

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings_from_args(args)


def _operator() -> str:
    import getpass
    import os
    import socket

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    return f"{who} on the command line on {socket.gethostname()}"


def cmd_token_create(args: argparse.Namespace) -> int:
    from passlib.apache import HtpasswdFile

    from . import open_tokens

    settings = _settings(args)
    try:
        known = settings.password_file not in ("", ".") and HtpasswdFile(settings.password_file).get_hash(args.user)
    except (OSError, ValueError):
        known = False
    if not known:
        print(f"wharf: {args.user!r} is not a user in the password file ({settings.password_file or 'none'}); "
              "add them with `wharf passwd` first", file=sys.stderr)
        return 1
    lifetime = parse_duration(args.expires) if args.expires not in (None, "", "never") else None
    token, record = open_tokens(settings).create(
        args.user, projects=parse_projects(args.projects), actions=parse_actions(args.actions),
        lifetime=lifetime, description=args.description or "", by=_operator())
    print(token)
    print(f"token {record.id} for {record.user}: projects {', '.join(record.projects) or '*'}, actions "
          f"{', '.join(record.actions)}, expires {describe_time(record.expires)}. It is shown only now.",
          file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from . import open_tokens

    import time

    rows = [("ID", "USER", "PROJECTS", "ACTIONS", "CREATED", "EXPIRES", "LAST USED", "STATE", "DESCRIPTION")]
    for r in open_tokens(_settings(args)).list(args.user):
        if r.kind == "oidc" and not args.all and (r.expires or 0) < time.time():
            continue
        state = "revoked" if r.revoked else "expired" if r.expires and r.expires < time.time() else "active"
        rows.append((r.id, r.user, ",".join(r.projects) or "*", ",".join(r.actions), describe_time(r.created),
                     describe_time(r.expires), describe_time(r.last_used), state, r.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from . import open_tokens

    if not open_tokens(_settings(args)).revoke(args.id, by=_operator()):
        print(f"wharf: no active token {args.id!r}", file=sys.stderr)
        return 1
    print(f"revoked token {args.id}")
    return 0


def _publishers_path(args: argparse.Namespace):
    settings = _settings(args)
    if settings.publishers_file is None:
        raise ValueError("no publishers file: give --publishers-file (or WHARF_PUBLISHERS_FILE)")
    return settings.publishers_file


def cmd_publisher_add(args: argparse.Namespace) -> int:
    from .publishers import load_publishers, make_publisher, save_publishers

    path = _publishers_path(args)
    claims = {}
    for item in args.claim:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--claim wants NAME=VALUE, not {item!r}")
        claims[key.strip()] = value.strip()
    new = make_publisher(args.name, args.issuer, args.projects, claims, args.description or "")
    publishers = [p for p in load_publishers(path) if p.name != new.name]
    save_publishers(path, [*publishers, new])
    print(f"trusted publisher {new.name}: {new.issuer} may publish {', '.join(new.projects)} when "
          + ", ".join(f"{k} = {v}" for k, v in new.claims))
    return 0


def cmd_publisher_list(args: argparse.Namespace) -> int:
    from .publishers import load_publishers

    for p in load_publishers(_publishers_path(args)):
        print(f"{p.name}: {p.issuer} -> {', '.join(p.projects)} when " + ", ".join(f"{k} = {v}" for k, v in p.claims))
    return 0


def cmd_publisher_remove(args: argparse.Namespace) -> int:
    from .publishers import load_publishers, save_publishers

    path = _publishers_path(args)
    publishers = load_publishers(path)
    kept = [p for p in publishers if p.name != args.name]
    if len(kept) == len(publishers):
        print(f"wharf: no publisher {args.name!r} in {path}", file=sys.stderr)
        return 1
    save_publishers(path, kept)
    print(f"removed trusted publisher {args.name}")
    return 0


def add_token_commands(commands: argparse._SubParsersAction) -> None:
    """The ``token`` and ``publisher`` command groups."""
    from ..cli import add_settings_options

    token = commands.add_parser("token", help="create, list and revoke API tokens",
                                description="Scoped API tokens: use one as the password, with the user name "
                                            "__token__ (docs/tokens.md).")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--user", required=True, help="the token's owner (a user of the password file)")
    create.add_argument("--projects", default="*", help="projects it may update: names or fnmatch patterns, "
                                                        "comma-separated (default: every project its user may)")
    create.add_argument("--actions", default="update", help="any of update, download, list, manage (default: update)")
    create.add_argument("--expires", default=None, help="lifetime, e.g. 90d, 12h (default: never)")
    create.add_argument("--description", default="", help="what it is for (shown by list)")
    create.set_defaults(func=cmd_token_create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--user", default=None, help="only this user's tokens")
    listing.add_argument("--all", action="store_true", help="also expired tokens minted by trusted publishing")
    listing.set_defaults(func=cmd_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token at once, on every worker")
    revoke.add_argument("id", help="the token's id (the 12 characters after wharf_)")
    revoke.set_defaults(func=cmd_token_revoke)

    publisher = commands.add_parser("publisher", help="add, list and remove trusted publishers (OIDC)",
                                    description="Trusted publishers: CI jobs that publish with no stored secret "
                                                "(docs/tokens.md). Edits the publishers file.")
    publisher_commands = publisher.add_subparsers(dest="publisher_command", required=True, metavar="ACTION")
    add = publisher_commands.add_parser("add", help="trust a CI identity to publish projects")
    add.add_argument("name", help="a name for this publisher (its section in the file)")
    add.add_argument("--projects", required=True, help="projects it may publish (names or patterns, comma-separated)")
    add.add_argument("--issuer", required=True, help="github, gitlab or an OIDC issuer URL")
    add.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                     help="a claim the identity token must carry, e.g. repository=acme/mylib (repeat)")
    add.add_argument("--description", default="")
    add.set_defaults(func=cmd_publisher_add)
    publisher_commands.add_parser("list", help="list trusted publishers").set_defaults(func=cmd_publisher_list)
    remove = publisher_commands.add_parser("remove", help="stop trusting a publisher")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_publisher_remove)
    for parser in (create, listing, revoke, *publisher_commands.choices.values()):
        add_settings_options(parser)  # --state-dir, --password-file, --publishers-file (or WHARF_*)
