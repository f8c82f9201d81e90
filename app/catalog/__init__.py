"""What the index knows: projects, their files, hashes and metadata.

The storage stays the source of truth; the catalog learns from it and remembers:
- ``records``: the immutable View, Projects and DistFiles that requests read;
- ``database``: the interface to its database, with ``sqlite`` (default) and ``postgres``
  implementations; the durable records (yanks, uploads) sit beside the derived tables;
- ``scanner``: the one process that keeps the database in step with the storage;
- ``catalog``: ``Catalog``, which loads the database into each worker, follows the
  journal of changes, and records uploads, removals and yanks.
"""

from .catalog import Catalog, CatalogUnavailable, FileConflict
from .records import DistFile, Project, View

__all__ = ["Catalog", "CatalogUnavailable", "DistFile", "FileConflict", "Project", "View"]
