"""``wharf status PROJECT active|archived|deprecated|quarantined [--reason ...]``."""

from __future__ import annotations

import argparse


def cmd_status(args: argparse.Namespace) -> int:
    from ..cli import log_cli, settings_from_args
    from ..dists import project_name
    from ..serving.appserver import configure_logging
    from .store import STATUSES, ProjectStatus, policy_store_for

    settings = settings_from_args(args)
    configure_logging(settings)
    project = project_name(args.project)
    if project is None:
        raise ValueError(f"not a valid project name: {args.project!r}")
    store = policy_store_for(settings)
    try:
        if args.status is None:
            current = store.status(project)
            print(f"{project}: {current.status}" + (f" ({current.reason})" if current.reason else ""))
            return 0
        if args.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        import getpass

        store.set_status(project, ProjectStatus(args.status, args.reason.strip()), f"{getpass.getuser()} (cli)")
    finally:
        store.close()
    log_cli("set the status of", project, f" to {args.status}" + (f" ({args.reason!r})" if args.reason else ""))
    _refresh_caches(settings, project)
    print(f"{project} is now {args.status}")
    return 0


def _refresh_caches(settings, project: str) -> None:
    """Make the nginx caches these settings name fetch the project's pages and files again."""
    from ..cache_refresh import CacheRefresher, shared_key
    from ..catalog import Catalog

    catalog = Catalog(settings)
    try:
        catalog.open(sweep=False)
        CacheRefresher(settings, shared_key(settings.state_path, catalog), catalog).refresh_project(
            project, catalog.project(project), catalog.view.seq)
    finally:
        catalog.close()


def record_cli_removals(settings, files) -> None:
    """Record files ``wharf remove`` is about to delete, so their names keep their bytes."""
    import getpass

    from .rules import LocalRules
    from .store import policy_store_for

    store = policy_store_for(settings)
    try:
        LocalRules(store).record_removals(files, f"{getpass.getuser()} (cli)")
    finally:
        store.close()


def add_status_command(commands: argparse._SubParsersAction) -> None:
    from ..cli import add_settings_options

    text = "show or set a local project's status (PEP 792): active, archived, deprecated, quarantined"
    parser = commands.add_parser(
        "status", help=text,
        description=text[0].upper() + text[1:] + ". Archived and quarantined projects take no uploads; "
                    "quarantined ones list no files and serve no downloads. A running index shows the change "
                    "on its next request.")
    parser.add_argument("project", metavar="PROJECT")
    parser.add_argument("status", nargs="?", default=None, metavar="STATUS",
                        help="active, archived, deprecated or quarantined; omit to show the current one")
    parser.add_argument("--reason", default="", help="why (shown on the simple API and web pages)")
    add_settings_options(parser, exclude=())
    parser.set_defaults(func=cmd_status)
