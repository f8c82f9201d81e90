"""Publishing: uploads from twine and ``uv publish``, removals and yanks (the ``update`` action).

The upload API is Warehouse's legacy one, which pypiserver also speaks: a multipart POST to
``/`` or ``/legacy/`` with ``:action=file_upload``, the file in the ``content`` part and
its digests in ``sha256_digest``, ``blake2_256_digest`` and ``md5_digest``.

The body is parsed as it arrives: the file part goes in chunks to a new, unpublished file
in storage while its digests are computed, so memory does not grow with the file. Only a
complete, verified file is published, by a link that fails if the name is already taken,
so two uploads cannot race past the duplicate check; anything else removes the new file.

Other actions, all needing ``update`` and the right to the project:
``remove_pkg`` (name, version; as pypiserver), ``remove_file`` (filename),
``yank`` / ``unyank`` (filename, or name and version; optional reason; PEP 592), and
``DELETE /packages/<file>``.

- ``form``: the request body and its multipart form, the file going to storage as it arrives;
- ``changes``: what removals and yanks do to the catalog (shared by HTTP and the CLI);
- ``routes``: the HTTP side: checks, publishing, and the routes.
"""

from .routes import register

__all__ = ["register"]
