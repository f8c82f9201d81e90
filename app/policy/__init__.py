"""Supply-chain policy: project statuses (PEP 792), immutable file names and the upstream cooldown.

- ``store``: the durable records (statuses, removals) in ``policy.sqlite3``, apart from the
  catalog database, which can be rebuilt from the files;
- ``rules``: what a status allows for local projects, and the immutable-file-name rule;
- ``cooldown``: which upstream files are too new to offer (pull-through cache, ``wharf mirror``);
- ``routes``: ``POST /_/status/<project>`` for users with the update right on the project;
- ``cli``: ``wharf status PROJECT STATUS [--reason ...]``.
"""
