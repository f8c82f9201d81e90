"""Mirroring (``wharf mirror``): copy what you depend on from an upstream index into storage.

How a run goes:
1. pip resolves, once per target (Python version x platform): ``pip install --dry-run
   --report`` gives the exact files pip would install there, dependencies included, and
   reads only PEP 658 metadata where the index has it, so resolving downloads (almost)
   nothing. pip runs ``--isolated`` with only ``--index-url``: no pip.conf, PIP_* variable
   or extra index can make it resolve from anywhere else;
2. for each chosen project version, its sdist is added too (``--no-sdist`` skips them);
3. each file not already in the target directory (``-d``, else the packages
   directories) is downloaded from the URL the
   upstream's own listing (PEP 691 JSON, HTML fallback) gives, checked against that
   listing's hash, written to a new file in storage and only then published (linked
   into place, never over an existing file).

A re-run asks pip and the listings again but downloads nothing that is there already.
A lock file (PEP 751 ``pylock.toml``) names exact files: those are mirrored as listed,
checked against the lock's hashes as well as the listing's. The command (``wharf mirror``)
is in app/cli.py.

- ``resolve``: what to mirror: targets, pip's resolution, lock files (steps 1-2);
- ``run``: the run itself: listings, what is there already, verified copies (step 3);
- ``progress``: the terminal's status line while it runs.
"""
