"""``pypi-server``: pypiserver's command line, so its users' scripts keep working.

``pypi-server [run] -p 8080 -P htpasswd.txt -a update,download,list packages`` starts
Wharf with the same meaning. Options Wharf does not implement are refused or reported
on standard error, never silently ignored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..settings import Settings

# pypiserver options that only change its own log formats: accepted, reported, ignored.
_IGNORED = ("log_stream", "log_frmt", "log_req_frmt", "log_res_frmt", "log_err_frmt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypi-server",
        description="Wharf's pypiserver-compatible command line: "
                    "pypi-server [run] [options] [PACKAGES_DIR ...]. "
                    "Unknown projects are NOT redirected to pypi.org unless --fallback-url is given.",
    )
    parser.add_argument("package_directory", nargs="*", help="package directories (default: ~/packages)")
    parser.add_argument("-p", "--port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("-i", "-H", "--interface", "--host", dest="host", default="0.0.0.0",
                        help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("-a", "--authenticate", default="update",
                        help="comma-separated actions that need a user: update, download, list; "
                             "'.' for none (default: update)")
    parser.add_argument("-P", "--passwords", dest="password_file", default="",
                        help="htpasswd file; '.' with '-a .' for an open index")
    parser.add_argument("--disable-fallback", action="store_true",
                        help="never redirect unknown projects (Wharf's default anyway)")
    parser.add_argument("--fallback-url", default="",
                        help="redirect unknown projects to this index (off unless given)")
    parser.add_argument("--health-endpoint", default="/health", help="health check path (default: /health)")
    parser.add_argument("--server", default="auto", metavar="METHOD",
                        help="accepted for compatibility; Wharf always runs gunicorn")
    parser.add_argument("--backend", default="auto", choices=["auto", "simple-dir", "cached-dir"],
                        help="accepted for compatibility; Wharf always uses its own file catalog")
    parser.add_argument("-o", "--overwrite", action="store_true", help="allow overwriting existing files")
    parser.add_argument("--welcome", dest="welcome_file", default=None, metavar="HTML_FILE",
                        help="HTML file to show as the welcome page")
    parser.add_argument("--cache-control", type=int, default=None, metavar="AGE",
                        help="Cache-Control max-age of package downloads, in seconds")
    parser.add_argument("--hash-algo", default="sha256",
                        help="hash in package links: sha256 (default), md5, sha1, sha512, ... or off")
    parser.add_argument("--server-base-url", default="", help="external base URL of the index")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    parser.add_argument("--log-file", default="", help="write logs to this file")
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="Wharf: where the file catalog lives [default: PACKAGES_DIR/.wharf, or a "
                             "directory under ~/.local/state/wharf/ when that is not writable]")
    parser.add_argument("--mirror", action="store_true", help="not supported: use `wharf mirror`")
    for name in _IGNORED:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            help="accepted for compatibility; Wharf's log format is fixed")
    parser.add_argument("--version", action="version", version="wharf (pypi-server compatible)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    actions = () if args.authenticate.strip() in (".", "") else tuple(
        a.strip() for a in args.authenticate.split(",") if a.strip())
    password_file = "" if args.password_file in (".", "") else args.password_file
    dirs = args.package_directory or [str(Path("~/packages").expanduser())]
    algo = "off" if args.hash_algo.lower() in ("off", "none", "false", "0") else args.hash_algo.lower()
    level = {0: "warning", 1: "info"}.get(args.verbose, "debug")
    overrides = dict(
        packages=tuple(Path(d).expanduser() for d in dirs),
        host=args.host,
        port=args.port,
        authenticate=actions,
        password_file=password_file,
        fallback_url="" if args.disable_fallback else args.fallback_url,
        health_endpoint=args.health_endpoint,
        overwrite=args.overwrite,
        welcome_file=Path(args.welcome_file) if args.welcome_file else None,
        hash_algo=algo,
        server_base_url=args.server_base_url,
        log_level=level,
        log_file=args.log_file,
        state_dir=Path(args.state_dir).expanduser() if args.state_dir else None,
    )
    if args.cache_control is not None:
        overrides["file_max_age"] = args.cache_control
    return Settings.from_env(**overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["update"] or "-U" in argv or "--update" in argv:
        print("pypi-server: 'update' is not implemented by Wharf; use `wharf mirror` to fetch "
              "distributions into the packages directory.", file=sys.stderr)
        return 2
    if argv[:1] == ["run"]:
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mirror:
        parser.error("--mirror is not implemented by Wharf; use `wharf mirror` or the pull-through cache")
    for name in _IGNORED:
        if getattr(args, name) is not None:
            print(f"pypi-server: note: --{name.replace('_', '-')} is not supported by Wharf and is ignored",
                  file=sys.stderr)
    if args.server not in ("auto", "gunicorn"):
        print(f"pypi-server: note: --server {args.server} is not supported; Wharf runs gunicorn",
              file=sys.stderr)
    if args.backend != "auto":
        print(f"pypi-server: note: --backend {args.backend} is not needed; Wharf keeps its own catalog",
              file=sys.stderr)
    protected = {a.strip() for a in args.authenticate.split(",")} & {"download", "list"}
    if protected and args.password_file in (".", ""):
        parser.error(f"-a {args.authenticate} needs a password file: give -P htpasswd.txt "
                     "(or '-a . -P .' for an open index)")
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    from .appserver import serve
    from .local_ca import SetupError

    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    try:
        serve(settings, flag=lambda name: flags.get(name, "--" + name.replace("_", "-")), command="pypi-server")
    except SetupError as exc:
        print(f"pypi-server: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
