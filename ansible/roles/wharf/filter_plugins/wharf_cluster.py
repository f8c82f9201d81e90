"""Ansible filter owning where the hosts of a Wharf cluster reach each other.

A cluster is laid out by inventory groups (wharf_app, wharf_proxy, wharf_db,
wharf_storage), and each host's configs name the others by address: the proxy's upstream
lists the app hosts, the app hosts name the database, the storage and the proxies. A
host's address is its ``wharf_address`` when the inventory sets one, else the IPv4
address of its default route from its gathered facts. A host whose address is known
neither way (facts not gathered: ``--limit`` left it out) is an error that says so,
never a config rendered with a hole in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def wharf_addresses(hosts: Iterable[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The address the other hosts of the cluster reach each of ``hosts`` at, in order."""
    addresses = []
    for host in hosts:
        variables = hostvars[host]
        address = variables.get("wharf_address") or ""
        if not address:
            facts = variables.get("ansible_facts") or {}
            address = (facts.get("default_ipv4") or {}).get("address") or ""
        if not address:
            raise AnsibleFilterError(
                f"wharf: no address for {host}: set wharf_address for it in the inventory, or run "
                "the play on it too (without --limit) so that its facts are gathered")
        addresses.append(str(address))
    return addresses


class FilterModule:
    """wharf_addresses."""

    def filters(self) -> dict[str, Any]:
        return {"wharf_addresses": wharf_addresses}
