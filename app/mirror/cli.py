"""``wharf mirror``: its command line (the work is in app/mirror/run.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..settings import Settings


def add_mirror_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "mirror", help="copy packages and their dependencies from an upstream index",
        description="Download REQUIREMENTs and all their dependencies from an upstream index into the "
                    "packages directory, for each target Python version and platform (wheels, plus each "
                    "project's sdist), checking every file against the upstream's hashes. Files already "
                    "there are skipped, so re-running is cheap.")
    parser.add_argument("requirements", nargs="*", metavar="REQUIREMENT",
                        help="requirement specifiers, e.g. 'requests>=2.31' or 'django[argon2]'")
    parser.add_argument("-r", "--requirement", dest="requirement_files", action="append", default=[],
                        type=Path, metavar="FILE",
                        help="a requirements file (hashes in it are enforced by pip) or a PEP 751 "
                             "pylock.toml (its exact files are mirrored); repeatable")
    parser.add_argument("-i", "--index-url", default=None,
                        help="the upstream simple index; user:password@ in the URL if needed "
                             "[default: upstream_url, WHARF_UPSTREAM_URL]")
    parser.add_argument("--cert", type=Path, default=None,
                        help="CA bundle (PEM) for the upstream's certificate [default: upstream_cert]")
    parser.add_argument("--python-version", dest="python_versions", action="append", default=[],
                        metavar="VERSION", help="a target Python version, as pip takes it (3.12, 311); "
                                                "repeatable [default: the running Python]")
    parser.add_argument("--platform", dest="platforms", action="append", default=[], metavar="PLATFORM",
                        help="a target platform tag (manylinux_2_28_x86_64, win_amd64, ...); repeatable, "
                             "one target each; 'tag1,tag2' is one target accepting both [default: this one]")
    parser.add_argument("--implementation", default=None, help="target implementation: cp, pp, py, ...")
    parser.add_argument("--abi", dest="abis", action="append", default=[], help="target ABI tag; repeatable")
    parser.add_argument("--no-sdist", dest="sdists", action="store_false", help="mirror wheels only")
    parser.add_argument("-d", "--dest", type=Path, default=None,
                        help="where new files go; only files already there (or in the index's other "
                             "packages directories, if DEST is one of them) are skipped "
                             "[default: the first packages directory, WHARF_PACKAGES]")
    parser.add_argument("--retries", type=int, default=None,
                        help="how often pip retries a failed connection [default: pip's, 5]")
    parser.add_argument("-n", "--dry-run", action="store_true", help="say what would be added, add nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
    parser.set_defaults(func=cmd_mirror)


def cmd_mirror(args: argparse.Namespace) -> int:
    from .progress import TerminalProgress, human_size
    from ..serving.appserver import counted
    from .resolve import MirrorError, targets
    from .run import mirror, mirror_storage
    from ..upstream.client import UpstreamIndex
    from ..upstream.listings import UpstreamError

    settings = Settings.from_env()
    index_url = args.index_url or settings.upstream_url
    if not index_url:
        raise ValueError("no upstream: give --index-url or set WHARF_UPSTREAM_URL")
    if not args.requirements and not args.requirement_files:
        raise ValueError("nothing to mirror: give requirements or -r FILE")
    for path in args.requirement_files:
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
    cert = args.cert or settings.upstream_cert
    dest = args.dest or settings.packages[0]
    dest.mkdir(parents=True, exist_ok=True)
    index = UpstreamIndex(index_url, cert, settings.upstream_timeout)
    target_list = targets(args.python_versions, args.platforms, args.implementation, args.abis)
    progress = TerminalProgress(sys.stderr, sys.stderr.isatty() and not args.quiet,
                                None if args.quiet else sys.stdout)
    try:
        result = mirror(index, mirror_storage(settings, args.dest), index_url=index_url, cert=cert,
                        timeout=settings.upstream_timeout, requirements=args.requirements,
                        requirement_files=args.requirement_files, target_list=target_list, sdists=args.sdists,
                        dry_run=args.dry_run, retries=args.retries, progress=progress,
                        policy=settings)  # the upstream cooldown: app/policy/cooldown.py
    except (MirrorError, UpstreamError) as exc:
        progress.clear()
        print(f"wharf mirror: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        for filename, size in result.added:
            print(f"would add {filename}" + (f" ({human_size(size)})" if size else ""))
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    total = sum(size for _name, size in result.added)
    verb = "would add" if args.dry_run else "added"
    print(f"mirror of {index.display_url} into {dest}, for {', '.join(map(str, target_list))}: "
          f"{verb} {counted(len(result.added), 'file')} ({human_size(total)}), {len(result.present)} already there"
          + (f", {len(result.errors)} failed" if result.errors else ""))
    return 1 if result.errors else 0
