"""The ``wharf`` command line, run in-process: parsing, help, and the commands that need no server."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from app.cli import build_parser, main, settings_from_args
from app.reference import render_reference

COMMANDS = ("serve", "index", "passwd", "yank", "unyank", "remove", "mirror", "render", "stack", "docs")


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a terminal: one line is read
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_is_listed(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys, command):
    code, out, err = run(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: wharf {command}")


def test_serve_help_documents_each_setting_with_its_default_and_variable(capsys):
    _, out, _ = run(capsys, "serve", "--help")
    assert "--server-name SERVER_NAME" in out and "WHARF_SERVER_NAME" in out
    assert "--overwrite, --no-overwrite" in out
    assert "[default: 127.0.0.1,::1; WHARF_TRUSTED_PROXIES]" in " ".join(out.split())
    assert "--packages" not in out  # serve takes the directories as arguments


def test_options_become_typed_settings(monkeypatch, tmp_path: Path):
    for name in [n for n in os.environ if n.startswith("WHARF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WHARF_WORKERS", "3")
    args = build_parser().parse_args(["serve", str(tmp_path / "a"), str(tmp_path / "b"), "--port", "9000",
                                      "--authenticate", "update,list", "--overwrite",
                                      "--password-file", "users", "--trusted-proxies", "10.0.0.0/8 ::1"])
    settings = settings_from_args(args)
    assert settings.packages == (tmp_path / "a", tmp_path / "b")
    assert settings.port == 9000 and settings.workers == 3  # option, then WHARF_* variable
    assert settings.authenticate == ("update", "list") and settings.overwrite is True
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    args = build_parser().parse_args(["serve", "--no-overwrite", "--port", "9001"])
    assert settings_from_args(args).overwrite is False and settings_from_args(args).packages == (Path("packages"),)


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--port", "eighty"], "WHARF_PORT: cannot read 'eighty' as int"),
    (["render", "all", "--authenticate", "delete"], "unknown action(s) delete"),
    (["render", "bogus"], "unknown render target 'bogus'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_are_usage_errors(capsys, tmp_path: Path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_passwd_reads_stdin_and_deletes(capsys, monkeypatch, tmp_path: Path):
    users = tmp_path / "htpasswd"
    code, out, _ = run(capsys, "passwd", str(users), "carol", "--rounds", "4",
                       stdin="s3cret pw\nignored\n", monkeypatch=monkeypatch)
    assert code == 0 and out == f"added carol in {users} (bcrypt)\n"
    assert HtpasswdFile(str(users)).check_password("carol", "s3cret pw")
    assert stat.S_IMODE(users.stat().st_mode) == 0o640
    code, out, _ = run(capsys, "passwd", str(users), "carol", "--rounds", "4", stdin="new\n", monkeypatch=monkeypatch)
    assert code == 0 and out.startswith("updated carol")
    assert HtpasswdFile(str(users)).check_password("carol", "new")
    assert run(capsys, "passwd", "--delete", str(users), "carol")[:2] == (0, f"removed carol from {users}\n")
    code, _, err = run(capsys, "passwd", "--delete", str(users), "carol")
    assert code == 1 and "no user 'carol'" in err
    code, _, err = run(capsys, "passwd", "--delete", str(tmp_path / "missing"), "carol")
    assert code == 1 and not (tmp_path / "missing").exists()


def test_render_writes_configs_from_the_settings_and_leaves_unchanged_ones(capsys, tmp_path: Path):
    out_dir = tmp_path / "conf"
    argv = ["render", "nginx", "gunicorn", "--out", str(out_dir), "--server-name", "pypi.test",
            "--https-port", "9443", "--config-dir", "/srv/conf"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    written = sorted(line.removeprefix("wrote ") for line in out.splitlines())
    assert str(out_dir / "nginx" / "site.conf") in written and not (out_dir / "supervisor").exists()
    site = (out_dir / "nginx" / "site.conf").read_text()
    assert "pypi.test" in site and "9443" in site
    assert "/srv/conf" in (out_dir / "nginx" / "nginx.conf").read_text() + site  # files refer to --config-dir
    assert run(capsys, *argv)[:2] == (0, f"{out_dir}: up to date\n")
    code, out, _ = run(capsys, *argv[:-2], "--server-name", "other.test")
    assert code == 0 and f"wrote {out_dir / 'nginx' / 'site.conf'}" in out


def test_docs_prints_writes_and_checks_the_reference(capsys, tmp_path: Path):
    code, out, _ = run(capsys, "docs")
    assert code == 0 and out == render_reference()
    target = tmp_path / "docs" / "configuration.md"
    assert run(capsys, "docs", "--out", str(target), "--check")[0] == 1  # missing is stale
    assert run(capsys, "docs", "--out", str(target))[:2] == (0, f"wrote {target}\n")
    assert target.read_text() == render_reference()
    assert run(capsys, "docs", "--out", str(target), "--check")[:2] == (0, f"{target}: up to date\n")
    target.write_text(render_reference().replace("Package directories", "Package folders"))
    code, _, err = run(capsys, "docs", "--out", str(target), "--check")
    assert code == 1 and "stale" in err and "python3 -m app docs --out" in err


# --- issue 15: the command line as a pypiserver user tries it --------------------------------
@pytest.mark.parametrize("command", ["serve", "index"])
def test_a_packages_directory_that_does_not_exist_is_an_error_naming_it(capsys, tmp_path: Path, command):
    typo = tmp_path / "pakages"
    code, out, err = run(capsys, command, str(typo), "--state-dir", str(tmp_path / "state"))
    assert code == 1 and out == ""
    assert f"packages directory {typo} does not exist" in err
    assert not typo.exists() and not (tmp_path / "state").exists()  # nothing made, nothing indexed


def test_options_may_follow_and_sit_between_positional_arguments(tmp_path: Path):
    from app.cli import parse_args

    args = parse_args(build_parser(), ["stack", str(tmp_path), "--port", "8081", str(tmp_path / "p"),
                                       "--https-port", "9443"])
    assert (args.command, args.dir, args.port, args.https_port) == ("stack", tmp_path, "8081", "9443")
    assert args.packages_dirs == [str(tmp_path / "p")]
    settings = settings_from_args(parse_args(build_parser(), ["serve", "a", "--port", "9000", "b"]))
    assert settings.packages == (Path("a"), Path("b")) and settings.port == 9000


def test_a_taken_port_is_named_with_the_option_that_changes_it(tmp_path: Path):
    import socket

    from app.serving.local_ca import SetupError
    from app.serving.stack import check_ports, stack_settings
    from app.settings import Settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for name, option in (("https_port", "--https-port"), ("http_port", "--http-port"), ("port", "--port")):
            free = {n: 0 for n in ("https_port", "http_port", "port")}
            free[name] = port
            settings = stack_settings(Settings(**free), tmp_path, explicit=set(free))
            with pytest.raises(SetupError) as raised:
                check_ports(settings)
            assert f"port {port}" in str(raised.value) and f"choose another with {option} PORT" in str(raised.value)


def test_render_out_alone_refers_to_out_and_says_so_otherwise(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WHARF_CONFIG_DIR", raising=False)
    out_dir = tmp_path / "rendered"
    code, _, err = run(capsys, "render", "all", "--out", str(out_dir))
    assert code == 0 and err == ""
    nginx = (out_dir / "nginx" / "nginx.conf").read_text()
    assert f"include {out_dir}/nginx/" in nginx and "/etc/wharf" not in nginx
    assert f"{out_dir}/wharf.env" in (out_dir / "gunicorn" / "gunicorn.conf.py").read_text()
    assert f"--config {out_dir}/gunicorn/gunicorn.conf.py" in (out_dir / "supervisor" / "wharf.conf").read_text()
    assert f"files = {out_dir}/supervisor/wharf.conf" in (out_dir / "supervisor" / "supervisord.conf").read_text()
    code, _, err = run(capsys, "render", "all", "--out", str(tmp_path / "elsewhere"), "--config-dir", "/srv/conf")
    assert code == 0 and "refer to each other under /srv/conf (--config-dir): copy them there" in err


def test_root_is_warned_with_how_not_to(capsys):
    from app.serving.preflight import root_warning

    warning = root_warning("run it as USER")
    if os.geteuid() == 0:
        assert warning.startswith("running as root") and warning.endswith("run it as USER")
    else:
        assert warning is None
