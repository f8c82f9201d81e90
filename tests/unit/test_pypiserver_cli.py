"""pypi-server's command line maps onto Wharf's settings as pypiserver users expect."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.serving.pypiserver_cli import build_parser, main, settings_from_args


def settings(*argv: str):
    args = list(argv)
    if args[:1] == ["run"]:
        args = args[1:]
    return settings_from_args(build_parser().parse_args(args))


def test_the_classic_command_line(tmp_path: Path):
    s = settings("-p", "8080", "-P", "htpasswd.txt", "-a", "update,download,list", str(tmp_path))
    assert s.port == 8080
    assert s.password_file == "htpasswd.txt"
    assert s.authenticate == ("update", "download", "list")
    assert s.packages == (tmp_path,)
    assert s.host == "0.0.0.0"  # pypiserver listens on every interface by default


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["-a", ".", "-P", "."], "authenticate", ()),
        (["-a", ".", "-P", "."], "password_file", ""),
        (["-i", "127.0.0.1"], "host", "127.0.0.1"),
        (["--host", "::1"], "host", "::1"),
        (["-o"], "overwrite", True),
        ([], "overwrite", False),
        (["--hash-algo", "md5"], "hash_algo", "md5"),
        (["--hash-algo", "off"], "hash_algo", "off"),
        (["--cache-control", "3600"], "file_max_age", 3600),
        (["--health-endpoint", "/ping"], "health_endpoint", "/ping"),
        (["--server-base-url", "https://pypi.example.com/x"], "server_base_url", "https://pypi.example.com/x"),
        (["--fallback-url", "https://pypi.org/simple/"], "fallback_url", "https://pypi.org/simple/"),
        (["--disable-fallback", "--fallback-url", "https://pypi.org/simple/"], "fallback_url", ""),
        ([], "fallback_url", ""),  # off by default, unlike pypiserver: dependency confusion
        (["-v"], "log_level", "info"),
        (["-vv"], "log_level", "debug"),
        (["--log-file", "x.log"], "log_file", "x.log"),
        (["run", "-p", "9000"], "port", 9000),
    ],
)
def test_options(argv, field, expected, tmp_path):
    assert getattr(settings(*argv, str(tmp_path)), field) == expected


def test_welcome_file(tmp_path: Path):
    welcome = tmp_path / "welcome.html"
    assert settings("--welcome", str(welcome), str(tmp_path)).welcome_file == welcome


def test_default_directory_is_home_packages():
    assert settings().packages == (Path("~/packages").expanduser(),)


def test_protecting_downloads_without_a_password_file_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-a", "download", "-P", ".", "/tmp/none"])
    assert exc.value.code == 2
    assert "password file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["update", "packages"], ["-U", "packages"]])
def test_update_says_it_is_not_implemented(argv, capsys):
    assert main(argv) == 2
    assert "not implemented" in capsys.readouterr().err


def test_mirror_is_refused_clearly(capsys):
    with pytest.raises(SystemExit):
        main(["--mirror", "packages"])
    assert "not implemented" in capsys.readouterr().err


def test_state_dir_is_a_wharf_option(tmp_path: Path):
    assert settings("--state-dir", str(tmp_path / "state"), str(tmp_path)).state_dir == tmp_path / "state"
    assert settings(str(tmp_path)).state_dir is None  # PACKAGES_DIR/.wharf, as `wharf serve`


def test_a_missing_packages_directory_is_an_error_naming_it(tmp_path: Path, capsys):
    typo = tmp_path / "pakages"
    assert main(["-p", "0", "-i", "127.0.0.1", str(typo)]) == 1
    err = capsys.readouterr().err
    assert f"pypi-server: error: packages directory {typo} does not exist" in err
    assert not typo.exists()


def test_messages_name_pypi_servers_own_flags(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["-a", "update,download,list", str(tmp_path)])
    err = capsys.readouterr().err
    assert "give -P htpasswd.txt" in err and "--password-file" not in err
    # A state directory that cannot be used is named with the option that chooses another.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["-p", "0", "-i", "127.0.0.1", "--state-dir", str(blocker / "state"), str(tmp_path)]) == 1
    assert f"cannot keep the catalog in {blocker / 'state'} (--state-dir)" in capsys.readouterr().err
