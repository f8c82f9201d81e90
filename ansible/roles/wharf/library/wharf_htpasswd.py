#!/usr/bin/python
"""Ansible module owning one user's entry in Wharf's htpasswd file.

It runs with the Python of Wharf's virtual environment (``ansible_python_interpreter``),
so the hash is made on the target with the same passlib that checks it, and the password
never leaves the module (``no_log``). An entry whose password already verifies is left
as it is: re-hashing would give a new salt and report a change on every run.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: wharf_htpasswd
short_description: Add, update or remove a user in an htpasswd file (bcrypt)
description:
  - Verifies the current entry first and rewrites the file only when the password differs.
  - Needs passlib (libpass) and bcrypt on the target; Wharf's virtual environment has both.
options:
  path:
    description: The htpasswd file; created when missing.
    type: path
    required: true
  name:
    description: The user name.
    type: str
    required: true
  password:
    description: The password (at most 72 bytes, bcrypt's limit). Required with O(state=present).
    type: str
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment: [files]
"""

EXAMPLES = r"""
- name: Ensure alice can upload
  wharf_htpasswd:
    path: /etc/wharf/htpasswd
    name: alice
    password: "{{ vault_alice_password }}"
    owner: root
    group: wharf
    mode: "0640"
  vars:
    ansible_python_interpreter: /opt/wharf/venv/bin/python
  no_log: true
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

BCRYPT_MAX_BYTES = 72


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "password": {"type": "str", "no_log": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["password"])],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    try:
        from passlib.apache import HtpasswdFile
    except ImportError:
        module.fail_json(msg="passlib is not importable: run wharf_htpasswd with the Python of "
                             "Wharf's virtual environment (ansible_python_interpreter)")

    path, name, password, state = (module.params[k] for k in ("path", "name", "password", "state"))
    if ":" in name or "\n" in name or not name:
        module.fail_json(msg="user name %r cannot be written to an htpasswd file" % name)
    if password is not None and len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        module.fail_json(msg="the password of %s is longer than bcrypt's %d bytes" % (name, BCRYPT_MAX_BYTES))

    exists = os.path.exists(path)
    users = HtpasswdFile(path, new=not exists, default_scheme="bcrypt")
    changed = False
    if state == "present":
        # An entry is kept only if it verifies and is bcrypt: passlib would also verify a
        # plaintext entry, which the app refuses.
        current = users.get_hash(name)
        if not (current and current.startswith(b"$2") and users.check_password(name, password)):
            users.set_password(name, password)
            changed = True
    elif users.delete(name):
        changed = True

    if changed and not module.check_mode:
        # Write a sibling temporary file and rename it: the app re-reads the file when it
        # changes and must never see half of it.
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".htpasswd-")
        with os.fdopen(fd, "wb") as out:
            out.write(users.to_string())
        module.atomic_move(tmp, path)

    file_args = module.load_file_common_arguments(module.params)
    if exists or (changed and not module.check_mode):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, path=path, name=name, state=state)


if __name__ == "__main__":
    main()
