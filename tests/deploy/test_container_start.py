"""The container's start (app/serving/container.py) on this machine: certificates, first user, messages.

test_container.py runs the same code inside the image under podman (slow); these run the
steps directly, with real openssl and real files, so a change to them fails in seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from app.serving import container
from app.serving.local_ca import SetupError
from app.settings import Settings

from .conftest import LocalCA

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def image_settings(root: Path, **overrides) -> Settings:
    """The image's settings (Dockerfile ENV) with its directories under ``root``."""
    values = dict(tls_cert=root / "tls" / "server.crt", tls_key=root / "tls" / "server.key",
                  password_file=str(root / "users" / "htpasswd"), https_port=8443, http_port=8080,
                  packages=(root / "packages",))
    values.update(overrides)
    (root / "tls").mkdir(parents=True, exist_ok=True)
    (root / "users").mkdir(parents=True, exist_ok=True)
    return Settings(**values).validated()


@needs_openssl
def test_first_start_makes_a_local_ca_once_and_says_how_to_trust_it(tmp_path: Path, capsys):
    settings = image_settings(tmp_path, public_https_port=9443)
    container.ensure_certificate(settings)
    logs = capsys.readouterr().err
    assert "made a local certificate authority and a certificate for localhost" in logs
    assert "pip install --cert wharf-ca.crt --index-url https://localhost:9443/simple/" in logs
    assert "SSL_CERT_FILE=wharf-ca.crt uv pip install" in logs
    ca = (tmp_path / "tls" / "ca.crt").read_bytes()
    container.ensure_certificate(settings)
    logs = capsys.readouterr().err
    assert "made a local" not in logs and "clients trust this index through its local CA" in logs
    assert (tmp_path / "tls" / "ca.crt").read_bytes() == ca
    assert "does not name" not in logs and "expires within" not in logs


@needs_openssl
def test_a_mounted_certificate_is_used_and_checked_against_the_server_name(tmp_path: Path, test_ca: LocalCA,
                                                                            capsys):
    settings = image_settings(tmp_path, server_name="pypi.example.com")
    shutil.copy(test_ca.cert, settings.tls_cert)
    shutil.copy(test_ca.key, settings.tls_key)
    container.ensure_certificate(settings)
    logs = capsys.readouterr().err
    assert f"using the certificate {settings.tls_cert}" in logs
    assert f"warning: {settings.tls_cert} does not name pypi.example.com; mount a new one" in logs
    assert sorted(p.name for p in settings.tls_cert.parent.iterdir()) == ["server.crt", "server.key"]


def test_a_certificate_without_its_key_stops_the_start(tmp_path: Path, test_ca: LocalCA):
    settings = image_settings(tmp_path)
    shutil.copy(test_ca.cert, settings.tls_cert)
    with pytest.raises(SetupError, match=f"found only one of {settings.tls_cert} and {settings.tls_key}"):
        container.ensure_certificate(settings)


def test_the_first_user_is_added_once_and_never_reset(tmp_path: Path, capsys):
    settings = image_settings(tmp_path)
    with pytest.raises(SetupError, match="WHARF_FIRST_USER needs WHARF_FIRST_PASSWORD"):
        container.ensure_users(settings, {"WHARF_FIRST_USER": "alice"})
    assert Path(settings.password_file).read_text() == ""  # no users yet: uploads are refused
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    container.ensure_users(settings, {"WHARF_FIRST_USER": "alice", "WHARF_FIRST_PASSWORD_FILE": str(secret)})
    assert HtpasswdFile(settings.password_file).check_password("alice", "s3cret")
    container.ensure_users(settings, {"WHARF_FIRST_USER": "alice", "WHARF_FIRST_PASSWORD": "other"})
    assert HtpasswdFile(settings.password_file).check_password("alice", "s3cret")
    assert "user alice exists" in capsys.readouterr().err


def test_a_first_user_needs_a_password_file(tmp_path: Path):
    settings = image_settings(tmp_path, password_file="", authenticate=())
    with pytest.raises(SetupError, match="WHARF_FIRST_USER needs WHARF_PASSWORD_FILE"):
        container.ensure_users(settings, {"WHARF_FIRST_USER": "alice", "WHARF_FIRST_PASSWORD": "x"})
