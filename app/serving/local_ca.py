"""A local certificate authority and a server certificate it signs, for a stack or container without one.

Made with the ``openssl`` command line: EC P-256 keys and a 365-day leaf with CA:FALSE and
serverAuth, which Mozilla's intermediate profile and strict clients (uv's rustls) accept.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class SetupError(Exception):
    """Something the user can fix (a port in use, nginx or openssl missing, a bad certificate path)."""


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"{' '.join(cmd[:3])} failed: {result.stderr.strip()}")


def subject_alt_names(server_name: str) -> list[str]:
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    try:
        address = ipaddress.ip_address(server_name)
        names.append(f"IP:{address}")
    except ValueError:
        if _HOSTNAME.match(server_name) and server_name != "localhost":
            names.insert(0, f"DNS:{server_name}")
    return list(dict.fromkeys(names))


def make_local_ca(directory: Path, server_name: str) -> tuple[Path, Path, Path]:
    """A new CA and a server certificate it signs (``openssl`` CLI); (ca.crt, server.crt, server.key).

    EC P-256 keys and a 365-day leaf with CA:FALSE and serverAuth, which Mozilla's
    intermediate profile and strict clients (uv's rustls) accept.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SetupError("openssl is needed to make a local certificate authority (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".new-") as tmp:
        work = Path(tmp)
        (work / "ca.cnf").write_text(
            "[req]\ndistinguished_name = dn\nx509_extensions = ca\nprompt = no\n"
            "[dn]\nO = Wharf\nCN = Wharf local CA\n"
            "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\n")
        (work / "server.ext").write_text(
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid, issuer\n"
            f"subjectAltName = {', '.join(subject_alt_names(server_name))}\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256"]
        _run([openssl, "req", "-x509", "-new", *ec, "-days", "3650", "-config", "ca.cnf",
              "-keyout", "ca.key", "-out", "ca.crt"], work)
        _run([openssl, "req", "-new", *ec, "-subj", f"/O=Wharf/CN={server_name[:64]}",
              "-keyout", "server.key", "-out", "server.csr"], work)
        _run([openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-sha256", "-days", "365", "-extfile", "server.ext", "-out", "server.crt"], work)
        for name in ("ca.key", "server.key"):
            os.chmod(work / name, 0o600)
        # The certificate last: its presence marks a complete set.
        for name in ("ca.key", "ca.crt", "server.key", "server.crt"):
            os.replace(work / name, directory / name)
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"
