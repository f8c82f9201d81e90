"""The projects a worker has recently served, kept in memory up to a bounded number of files.

A worker does not hold the whole catalog: at a million files that would be over a GB per
worker. It holds the projects its requests asked for, least recently used first out, and
loads any other one from the database (one indexed query) when asked. The cache counts
files, not projects, so one project with thousands of files cannot crowd it past its
bound. What a change makes stale is dropped by the catalog's sync; a load that raced a
sync is answered but not kept (``generation``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .records import Project


class ProjectCache:
    """An LRU of Projects bounded by their total number of files."""

    def __init__(self, max_files: int):
        self.max_files = max(max_files, 1)
        self._projects: OrderedDict[str, Project] = OrderedDict()
        self._files = 0
        self._lock = threading.Lock()
        #: Bumped by every ``drop``: a load that began before it may be stale.
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._projects)

    @property
    def files(self) -> int:
        return self._files

    def get(self, name: str) -> Project | None:
        with self._lock:
            project = self._projects.get(name)
            if project is None:
                self.misses += 1
                return None
            self._projects.move_to_end(name)
            self.hits += 1
            return project

    def peek(self, name: str) -> Project | None:
        """The cached project, without counting a use."""
        return self._projects.get(name)

    def put(self, project: Project, generation: int) -> None:
        """Keep ``project``, loaded when ``generation`` was current (else it may be stale: not kept)."""
        with self._lock:
            if generation != self.generation:
                return
            old = self._projects.pop(project.name, None)
            if old is not None:
                self._files -= len(old.files)
            self._projects[project.name] = project
            self._files += len(project.files)
            while self._files > self.max_files and len(self._projects) > 1:
                _name, evicted = self._projects.popitem(last=False)
                self._files -= len(evicted.files)

    def drop(self, names) -> None:
        """Forget these projects (they changed); loads in flight are not kept."""
        with self._lock:
            self.generation += 1
            for name in names:
                old = self._projects.pop(name, None)
                if old is not None:
                    self._files -= len(old.files)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._projects.clear()
            self._files = 0
