"""The policy rules for local projects: what a status (PEP 792) allows, and immutable file names.

- archived and quarantined projects take no uploads; quarantined ones list no files and
  serve no downloads (deprecated behaves as active, as the PEP says);
- a file name that was published and then removed cannot be published again with other
  bytes (the public index's rule), unless the index runs with ``overwrite``; the same
  bytes again are accepted. Removals are recorded in the durable policy store, so the
  rule survives a rebuild of the catalog.
Each refusal is logged with the rule that fired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..auth import Refusal
from ..catalog import DistFile
from .store import PolicyStore, ProjectStatus

log = logging.getLogger("wharf.policy")


class LocalRules:
    """The policy's checks on uploads, downloads and removals of local projects."""

    def __init__(self, store: PolicyStore, overwrite: bool = False):
        self.store = store
        self.overwrite = overwrite

    def status(self, project: str) -> ProjectStatus:
        return self.store.status(project)

    def check_upload(self, project: str, filename: str = "") -> None:
        """Refuse (403) an upload to an archived or quarantined project, with the status's reason."""
        status = self.store.status(project)
        if status.refuses_uploads:
            reason = f": {status.reason}" if status.reason else ""
            log.info("refused upload %s: project %s is %s (PEP 792 status)", filename, project, status.status)
            raise Refusal(403, f"project {project!r} is {status.status}{reason}; it takes no uploads")

    def check_download(self, project: str, filename: str) -> None:
        """Refuse (403) a download of a quarantined project's file."""
        status = self.store.status(project)
        if status.hides_files:
            reason = f": {status.reason}" if status.reason else ""
            log.info("refused download of %s: project %s is quarantined (PEP 792 status)", filename, project)
            raise Refusal(403, f"project {project!r} is quarantined{reason}; its files are not served")

    def check_republish(self, filename: str, sha256: str) -> None:
        """Refuse (409) other bytes under the name of a file that was published and removed."""
        if self.overwrite:
            return
        for removal in self.store.removals(filename):
            if removal.sha256 != sha256:
                log.info("refused upload of %s: removed before with other bytes (immutable file names; "
                         "sha256 was %s)", filename, removal.sha256)
                raise Refusal(409, f"{filename} was published before and removed; a file name cannot be "
                                   "reused for other bytes (publish a new version, or yank instead of removing)")

    def record_removals(self, files: Iterable[DistFile], by: str | None) -> None:
        """Remember removed files (name, sha256, who, when) so their names stay bound to their bytes."""
        for f in files:
            self.store.record_removal(f.filename, f.sha256, by or "-")
