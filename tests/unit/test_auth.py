"""app.auth: htpasswd schemes, re-reading, the verification cache, project rights, wharf passwd."""

from __future__ import annotations

import base64
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from bottle import HTTPError, request
from passlib.hash import apr_md5_crypt, bcrypt, des_crypt, ldap_sha1, md5_crypt, sha256_crypt, sha512_crypt

from app import cli
from app.auth import Access, ProjectRules, set_password
from app.settings import Settings
from tests.support import ROOT

SCHEMES = {
    "bcrypt": bcrypt.using(rounds=4, ident="2y"),
    "sha256_crypt": sha256_crypt.using(rounds=1000),
    "sha512_crypt": sha512_crypt.using(rounds=1000),
    "apr_md5_crypt": apr_md5_crypt,
    "md5_crypt": md5_crypt,
    "ldap_sha1": ldap_sha1,  # {SHA}
}


class CountingContext:
    """Wraps the real CryptContext and counts hash checks (cost is what we assert on)."""

    def __init__(self, context):
        self.context, self.checks = context, 0

    def verify(self, secret, hash_):
        self.checks += 1
        return self.context.verify(secret, hash_)

    def __getattr__(self, name):
        return getattr(self.context, name)


def make_access(tmp_path: Path, lines: list[str], **settings) -> Access:
    path = tmp_path / "htpasswd"
    path.write_text("".join(line + "\n" for line in lines))
    options = {"packages": (tmp_path,), "password_file": str(path)}
    options.update(settings)
    return Access(Settings(**options))


def authorize(header: str | None) -> None:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "192.0.2.1"}
    if header is not None:
        environ["HTTP_AUTHORIZATION"] = header
    request.bind(environ)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_htpasswd_scheme(tmp_path: Path, scheme: str):
    access = make_access(tmp_path, [f"carol:{SCHEMES[scheme].hash('s3cret pass')}"])
    assert access.context.identify(access._load()[0].get_hash("carol")) == scheme
    assert access.verify("carol", "s3cret pass")
    assert not access.verify("carol", "s3cret pas")
    assert not access.verify("carol", "")
    assert not access.verify("dave", "s3cret pass")


@pytest.mark.parametrize("entry", ["secret", des_crypt.hash("secret"), "$2y$05$tooshort", "{SHA}???"])
def test_plaintext_des_and_broken_entries_never_verify(tmp_path: Path, entry: str):
    access = make_access(tmp_path, [f"carol:{entry}", f"ok:{ldap_sha1.hash('x')}"])
    assert not access.verify("carol", "secret")
    assert not access.verify("carol", entry)
    assert access.verify("ok", "x")


def test_bcrypt_passwords_longer_than_72_bytes(tmp_path: Path):
    # Apache's htpasswd hashes only the first 72 bytes; so does the check.
    long = "p" * 72 + "-tail"
    access = make_access(tmp_path, [f"carol:{bcrypt.using(rounds=4).hash(long[:72])}"])
    assert access.verify("carol", long)
    assert access.verify("carol", long[:72])
    assert not access.verify("carol", long[:71])


def test_wrong_user_costs_a_hash_check_and_every_answer_is_remembered(tmp_path: Path):
    access = make_access(tmp_path, [f"carol:{bcrypt.using(rounds=4).hash('pw')}", f"erin:{bcrypt.using(rounds=4).hash('pw2')}"])
    counter = access.context = CountingContext(access.context)
    assert not access.verify("nobody", "pw")
    assert counter.checks == 1  # the decoy check: an unknown name costs what a known one does
    assert not access.verify("carol", "wrong")
    assert counter.checks == 2
    assert not access.verify("carol", "wrong") and not access.verify("nobody", "pw")
    assert counter.checks == 2  # a known-bad pair is refused without another check (issue 14.6)
    assert access.verify("carol", "pw") and access.verify("carol", "pw") and access.verify("carol", "pw")
    assert counter.checks == 3  # pip's next requests don't pay for bcrypt again
    assert not access.verify("erin", "pw")  # the cache is per user and password
    assert counter.checks == 4


@pytest.mark.slow
def test_unknown_user_on_an_empty_file(tmp_path: Path):
    access = make_access(tmp_path, [])
    counter = access.context = CountingContext(access.context)
    assert not access.verify("nobody", "pw")
    assert counter.checks == 1


def test_file_is_reread_when_it_changes(tmp_path: Path):
    access = make_access(tmp_path, [])
    path = Path(access.path)
    set_password(path, "carol", "first", rounds=4)
    assert access.verify("carol", "first")
    set_password(path, "carol", "second", rounds=4)
    assert access.verify("carol", "second")
    assert not access.verify("carol", "first")  # the cached success went with the old file
    path.write_text(f"erin:{apr_md5_crypt.hash('apr')}\n")
    assert access.verify("erin", "apr") and not access.verify("carol", "second")
    path.unlink()
    assert not access.verify("erin", "apr")


@pytest.mark.parametrize("header", [None, "Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
def test_anonymous_or_garbled_credentials_get_401_with_challenge(tmp_path: Path, header: str | None):
    access = make_access(tmp_path, [f"carol:{ldap_sha1.hash('pw')}"], authenticate=("update", "download", "list"))
    authorize(header)
    with pytest.raises(HTTPError) as raised:
        access.require("list")
    assert raised.value.status_code == 401
    assert raised.value.headers["WWW-Authenticate"].startswith('Basic realm="wharf"')
    assert raised.value.status_line == "401 authentication required to list"


def test_require_per_action(tmp_path: Path):
    access = make_access(tmp_path, [f"carol:{ldap_sha1.hash('pw')}"], authenticate=())
    authorize(None)
    assert access.require("list") is None and access.require("download") is None
    with pytest.raises(HTTPError) as raised:
        access.require("update")  # uploads always need a user, even on an open index
    assert raised.value.status_code == 401
    authorize(basic("carol", "nope"))
    with pytest.raises(HTTPError) as raised:
        access.require("update")
    assert raised.value.status_line == "401 invalid username or password"
    authorize(basic("carol", "pw"))
    assert access.require("update") == "carol"


def test_no_password_file_refuses_uploads_clearly(tmp_path: Path):
    access = Access(Settings(packages=(tmp_path,), password_file="."))
    authorize(basic("carol", "pw"))
    with pytest.raises(HTTPError) as raised:
        access.require("update")
    assert raised.value.status_code == 403
    assert "no password file" in raised.value.body
    assert access.require("list") is None


# --- project rights ----------------------------------------------------------------------
RULES = """
[projects]
alice = mylib, mylib-*
bob = Other_Lib
ci = 
"""


@pytest.mark.parametrize("user, project, allowed", [
    ("alice", "mylib", True),
    ("alice", "MyLib", True),
    ("alice", "mylib-extras", True),
    ("alice", "mylib_extras", True),
    ("alice", "mylib.extras", True),
    ("alice", "mylibextras", False),
    ("alice", "otherlib", False),
    ("bob", "other-lib", True),
    ("bob", "other.lib", True),
    ("bob", "mylib", False),
    ("ci", "mylib", False),
    ("zed", "anything", True),
])
def test_project_rules(user: str, project: str, allowed: bool):
    assert ProjectRules.parse(RULES).allows(user, project) is allowed


def test_star_is_the_default_for_unlisted_users():
    rules = ProjectRules.parse("[projects]\nadmin = *\n* = sandbox-*\n")
    assert rules.allows("admin", "anything")
    assert rules.allows("zed", "sandbox-x") and not rules.allows("zed", "prod")


def test_permissions_file_reread_and_failing_closed(tmp_path: Path):
    rules = tmp_path / "permissions.ini"
    rules.write_text("[projects]\nalice = mylib\n")
    access = make_access(tmp_path, [], permissions_file=rules)
    assert access.may_update("alice", "mylib") and not access.may_update("alice", "other")
    rules.write_text("[projects]\nalice = other\n")
    assert access.may_update("alice", "other") and not access.may_update("alice", "mylib")
    rules.write_text("this is not an ini file\n")
    assert not access.may_update("alice", "other") and not access.may_update("zed", "x")
    rules.unlink()
    assert not access.may_update("zed", "x")


# --- wharf passwd --------------------------------------------------------------------------
def run_passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The real command, as an operator runs it (password piped in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    return subprocess.run([sys.executable, "-m", "app", "passwd", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def passwd(monkeypatch, *args: str, stdin: str = "") -> int:
    """The same command in this process (fast enough to run many times)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        return cli.main(["passwd", *args])
    except SystemExit as exc:
        return exc.code


@pytest.mark.slow
def test_wharf_passwd_command(tmp_path: Path):
    path = tmp_path / "conf" / "htpasswd"
    done = run_passwd(str(path), "alice", stdin="correct horse\n")
    assert done.returncode == 0, done.stderr
    assert "added alice" in done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    user, _, hash_ = path.read_text().strip().partition(":")
    assert user == "alice" and hash_.startswith("$2y$12$")  # bcrypt at Apache's default cost
    assert Access(Settings(packages=(tmp_path,), password_file=str(path))).verify("alice", "correct horse")


def test_wharf_passwd_updates_and_deletes(tmp_path: Path, monkeypatch, capsys):
    path = tmp_path / "htpasswd"
    access = Access(Settings(packages=(tmp_path,), password_file=str(path)))
    assert passwd(monkeypatch, str(path), "alice", "--rounds", "4", stdin="correct horse\n") == 0
    assert passwd(monkeypatch, str(path), "bob", "--rounds", "4", stdin="bobs pw") == 0  # no newline at the end
    assert access.verify("alice", "correct horse") and access.verify("bob", "bobs pw")
    assert passwd(monkeypatch, str(path), "alice", "--rounds", "4", stdin="battery staple\n") == 0
    assert "updated alice" in capsys.readouterr().out
    assert access.verify("alice", "battery staple") and not access.verify("alice", "correct horse")
    assert access.verify("bob", "bobs pw")
    assert passwd(monkeypatch, "--delete", str(path), "bob") == 0
    assert not access.verify("bob", "bobs pw") and access.verify("alice", "battery staple")
    assert passwd(monkeypatch, "--delete", str(path), "bob") == 1


@pytest.mark.parametrize("user, password, message", [
    ("alice", "\n", "empty"),
    ("al:ice", "pw\n", "not a valid user name"),
    ("alice", "x" * 73 + "\n", "72 bytes"),
])
def test_wharf_passwd_refuses(tmp_path: Path, monkeypatch, capsys, user: str, password: str, message: str):
    assert passwd(monkeypatch, str(tmp_path / "htpasswd"), user, "--rounds", "4", stdin=password) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "htpasswd").exists()


# --- issue 14: the permissions file fails closed, guessing is throttled ------------------------
@pytest.mark.parametrize("text", [
    "[project]\nalice = mylib\n", "alice = mylib\n", "[projects]\n", "", "[projects]\nalice = a\n[users]\nb = c\n",
    "[DEFAULT]\nalice = *\n[projects]\nbob = x\n", "[projects]\nalice = my lib; rm\n", "[projects]\na = x\na = y\n",
])
def test_permissions_not_in_the_documented_shape_refuse_every_update(tmp_path: Path, text: str, caplog):
    rules = tmp_path / "permissions.ini"
    rules.write_text(text)
    access = make_access(tmp_path, [f"alice:{bcrypt.using(rounds=4).hash('pw')}"], permissions_file=rules)
    assert not access.may_update("alice", "mylib") and not access.may_update("zed", "x")
    authorize(basic("alice", "pw"))
    with pytest.raises(HTTPError) as refused:
        access.require("update")  # refused at the gate, before any body is read
    assert refused.value.status_code == 403 and "permissions file" in refused.value.body
    assert any("permissions file" in p for p in access.problems())
    assert "refusing all updates" in caplog.text
    rules.write_text("[projects]\nalice = mylib\n")
    assert access.may_update("alice", "mylib") and access.problems() == []


def test_failed_logins_are_throttled_per_address(tmp_path: Path):
    access = make_access(tmp_path, [f"alice:{bcrypt.using(rounds=4).hash('pw')}"])
    counter = access.context = CountingContext(access.context)
    authorize(basic("alice", "pw"))
    assert access.authenticate("alice", "pw")  # alice logs in from 192.0.2.1
    for n in range(access.throttle.allowed):
        assert not access.authenticate("alice", f"guess-{n}")
    checks = counter.checks
    authorize(basic("alice", "another guess"))
    with pytest.raises(HTTPError) as throttled:
        access.require("update")
    assert throttled.value.status_code == 429 and 1 <= int(throttled.value.headers["Retry-After"]) <= 60
    assert counter.checks == checks  # refused without a hash check
    assert access.authenticate("alice", "pw")  # already logged in: still let through
    request.environ["REMOTE_ADDR"] = "192.0.2.2"  # another address is not affected
    assert not access.authenticate("alice", "guess-x") and access.authenticate("alice", "pw")
