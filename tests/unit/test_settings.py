"""Settings: defaults, WHARF_* parsing, the as_env round trip and validation (app/settings.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.auth import Access
from app.settings import HASH_ALGOS, Settings, env_name


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.packages == (Path("packages"),)
    assert settings.state_path == Path("packages") / ".wharf"
    assert settings.fallback_url == ""  # dependency confusion stays off unless asked for
    assert settings.authenticate == ("update",)
    assert settings.hash_algo == "sha256"


def test_every_field_is_documented_and_parseable():
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        default = getattr(Settings(), f.name)
        # The default, written as its variable, reads back as itself.
        assert Settings.parse_value(f.name, Settings().as_env()[env_name(f.name)]) == default, f.name


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("WHARF_PORT", "9000", "port", 9000),
        ("WHARF_WORKERS", " 3 ", "workers", 3),
        ("WHARF_SCAN_INTERVAL", "0.25", "scan_interval", 0.25),
        ("WHARF_OVERWRITE", "yes", "overwrite", True),
        ("WHARF_OVERWRITE", "TRUE", "overwrite", True),
        ("WHARF_OVERWRITE", "1", "overwrite", True),
        ("WHARF_OVERWRITE", "off", "overwrite", False),
        ("WHARF_OVERWRITE", "", "overwrite", False),
        ("WHARF_PACKAGES", "/srv/a,/srv/my packages", "packages", (Path("/srv/a"), Path("/srv/my packages"))),
        ("WHARF_STATE_DIR", "/var/lib/wharf", "state_dir", Path("/var/lib/wharf")),
        ("WHARF_STATE_DIR", "", "state_dir", None),
        ("WHARF_WELCOME_FILE", "  ", "welcome_file", None),
        ("WHARF_AUTHENTICATE", ".", "authenticate", ()),
        ("WHARF_AUTHENTICATE", "", "authenticate", ()),
        ("WHARF_TRUSTED_PROXIES", "10.0.0.0/8, ::1", "trusted_proxies", ("10.0.0.0/8", "::1")),
        ("WHARF_HASH_ALGO", "md5", "hash_algo", "md5"),
        ("WHARF_HASH_ALGO", "off", "hash_algo", "off"),
        ("WHARF_FALLBACK_URL", "https://pypi.org/simple/", "fallback_url", "https://pypi.org/simple/"),
        ("WHARF_TLS_CERT", "/etc/x.pem", "tls_cert", Path("/etc/x.pem")),
    ],
)
def test_environment_values_are_typed(variable, raw, field, expected):
    settings = Settings.from_env({variable: raw})
    assert getattr(settings, field) == expected


def test_unrelated_variables_are_ignored():
    assert Settings.from_env({"PORT": "1", "WHARF_NOT_AN_OPTION": "x", "wharf_port": "2"}) == Settings()


def test_overrides_win_over_environment_and_none_means_unset():
    settings = Settings.from_env({"WHARF_PORT": "9000", "WHARF_HOST": "::1"}, port=7000, host=None)
    assert settings.port == 7000
    assert settings.host == "::1"


def test_protecting_reads_with_a_password_file():
    settings = Settings.from_env({"WHARF_AUTHENTICATE": "update,download list", "WHARF_PASSWORD_FILE": "/etc/htpasswd"})
    assert settings.authenticate == ("update", "download", "list")
    assert all(Access(settings).protects(a) for a in ("update", "download", "list"))
    # Access alone decides what needs a user: uploads do even when authenticate names nothing.
    assert Settings(authenticate=()).authenticate == ()
    assert Access(Settings(authenticate=())).protects("update")
    assert not Access(Settings(authenticate=())).protects("download")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WHARF_PORT": "eighty"}, "WHARF_PORT"),
        ({"WHARF_PORT": "80.5"}, "WHARF_PORT"),
        ({"WHARF_SCAN_INTERVAL": "soon"}, "WHARF_SCAN_INTERVAL"),
        ({"WHARF_OVERWRITE": "maybe"}, "WHARF_OVERWRITE"),
        ({"WHARF_HASH_ALGO": "crc32"}, "hash_algo"),
        ({"WHARF_AUTHENTICATE": "update,delete"}, "delete"),
        ({"WHARF_AUTHENTICATE": "download"}, "password file"),
        ({"WHARF_AUTHENTICATE": "update,list"}, "password file"),
        ({"WHARF_PACKAGES": ""}, "packages"),
        ({"WHARF_PACKAGES": " , "}, "packages"),
        ({"WHARF_FILE_RECHECK": "-1"}, "file_recheck must be 0 or more"),
        ({"WHARF_INDEX_MAX_AGE": "-5"}, "index_max_age must be 0 or more"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(environ, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)


def test_parse_value_names_unknown_fields():
    with pytest.raises(KeyError):
        Settings.parse_value("no_such_option", "1")


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(
            packages=(Path("/srv/one"), Path("/srv/two")), state_dir=Path("/var/lib/wharf"), scan_interval=0.2,
            hash_algo="blake2b_256", index_max_age=5, fallback_url="https://pypi.org/simple/",
            trusted_proxies=("10.1.2.3", "192.168.0.0/16"), server_base_url="https://pypi.example.com/prefix",
            welcome_file=Path("/etc/wharf/welcome.html"), password_file="/etc/wharf/htpasswd",
            authenticate=("update", "download", "list"), overwrite=True, port=9999, workers=4,
            host="::1", listen=("127.0.0.1", "::1"), app_servers=("10.0.0.1:8080", "10.0.0.2:8080"),
            log_file="/var/log/wharf/app.log",
        ),
        Settings(authenticate=(), trusted_proxies=(), listen=(), hash_algo="off"),
    ],
)
def test_as_env_round_trip(settings):
    env = settings.as_env()
    assert set(env) == {env_name(f.name) for f in dataclasses.fields(Settings)}
    assert all(isinstance(v, str) and k.startswith("WHARF_") for k, v in env.items())
    assert Settings.from_env(env) == settings


def test_as_dict_is_plain_data_for_templates():
    data = Settings(packages=(Path("/srv/p"),), host="::1", port=8081).as_dict()
    assert data["packages"] == ["/srv/p"]
    assert data["state_path"] == "/srv/p/.wharf"
    assert data["app_server_addresses"] == ["[::1]:8081"]
    assert data["tls_cert"] == "/etc/wharf/tls/server.crt"


def test_every_hash_algorithm_is_known_to_hashlib():
    from app.storage import new_hasher

    for algo in HASH_ALGOS:
        if algo != "off":
            new_hasher(algo).update(b"x")
