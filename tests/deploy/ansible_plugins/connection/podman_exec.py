"""Ansible connection plugin owning `podman exec` into a running container (the deploy tests' target).

containers.podman's plugin would do too (it ships in the `ansible` wheel, not with
ansible-core), but it cannot pipeline: every module costs it four podman processes, which
on a busy two-core machine makes a no-op run of the role take minutes. Here a module is one
`podman exec -i` with the module on standard input.
"""

from __future__ import annotations

DOCUMENTATION = """
name: podman_exec
short_description: Run tasks in a running podman container with podman exec
description:
  - Runs each command with C(podman exec) in the container named by the host's address;
    with pipelining a module is a single C(podman exec). Files travel through standard
    input and output of C(podman exec) as well.
  - No privilege escalation; commands run as the container's default user.
author: Wharf tests
options:
  remote_addr:
    description: The container's name or ID.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  podman_executable:
    description: The podman command (its environment, e.g. CONTAINERS_CONF, is inherited).
    type: str
    default: podman
    vars:
      - name: ansible_podman_executable
extends_documentation_fragment:
  - connection_pipelining
"""

import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase


class Connection(ConnectionBase):
    """podman exec, one process per command."""

    transport = "podman_exec"
    has_pipelining = True

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _podman(self, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        interactive = ["--interactive"] if stdin is not None else []
        command = [self.get_option("podman_executable"), "exec", *interactive,
                   self.get_option("remote_addr"), *args]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except OSError as exc:
            raise AnsibleConnectionFailure(f"cannot run podman: {exc}") from exc
        if done.returncode in (125, 126) and b"no such container" in done.stderr.lower():
            raise AnsibleConnectionFailure(to_text(done.stderr))
        return done.returncode, done.stdout, done.stderr

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._podman("/bin/sh", "-c", cmd, stdin=in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        try:
            with open(to_bytes(in_path), "rb") as source:
                data = source.read()
        except OSError as exc:
            raise AnsibleFileNotFound(f"cannot read {in_path}: {exc}") from exc
        rc, _, err = self._podman("/bin/sh", "-c", 'cat > "$1"', "put_file", out_path, stdin=data)
        if rc != 0:
            raise AnsibleConnectionFailure(f"cannot write {out_path}: {to_text(err)}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        rc, data, err = self._podman("cat", in_path)
        if rc != 0:
            raise AnsibleFileNotFound(f"cannot read {in_path}: {to_text(err)}")
        with open(to_bytes(out_path), "wb") as target:
            target.write(data)

    def close(self) -> None:
        self._connected = False
