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
