"""Finding projects: the project list in name order, searched by name and summary.

The search structure is one line of text per project, built once from the catalog
database and then brought up to date project by project as changes arrive, so a new
upload costs one line, not 330,000.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..catalog import Catalog, Project, View

log = logging.getLogger("wharf.web")

# How many recently updated projects the home page lists.
RECENT = 8

_SEPARATORS = re.compile(r"[-_.]+")


@dataclass(frozen=True, slots=True)
class Entry:
    """One project as the list shows it."""

    project: Project
    name: str  # normalized
    display_name: str
    latest: str
    summary: str
    updated: float  # newest upload time of any file


def make_entry(project: Project) -> Entry:
    """``project`` as the list shows it: latest version, its summary, last upload."""
    latest = [f for f in project.files if f.version == project.latest]
    summary = next((f.summary for f in latest if f.summary), "") or ""
    return Entry(project, project.name, project.display_name, project.latest or "",
                 " ".join(summary.split()), max(f.upload_time for f in project.files))


def _query_terms(query: str) -> list[str]:
    return [term for term in query.lower().split() if term]


def _line(name: str, display_name: str, summary: str) -> str:
    """What a search looks in: "name<TAB>display name summary", lower-case, one line."""
    return f"{name}\t{display_name.lower()} {' '.join(summary.split()).lower()}"


class Results(Sequence):
    """Found projects, best first, as Entries made only for the ones a page shows."""

    def __init__(self, catalog: Catalog, names: Sequence[str]):
        self.catalog, self.names = catalog, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            projects = (self.catalog.project(name) for name in self.names[index])
            return [make_entry(p) for p in projects if p is not None]
        project = self.catalog.project(self.names[index])
        if project is None:
            raise IndexError(index)
        return make_entry(project)


class SearchIndex:
    """Every project of one catalog View, in name order, as one line of text each.

    One line per project (~60 bytes), not an object: at 330,000 projects the index is
    ~35 MB, and a search scans it at C speed (a few tens of ms). What a page shows is made
    from the catalog's projects for that page only.
    """

    def __init__(self, serial: int, names: tuple[str, ...], lines: list[str]):
        self.serial, self.names, self.lines = serial, names, lines

    @classmethod
    def build(cls, catalog: Catalog, view: View) -> SearchIndex:
        names, lines = [], []
        for name, display_name, summary in catalog.summaries():
            names.append(name)
            lines.append(_line(name, display_name, summary))
        return cls(view.serial, tuple(names), lines)

    def updated(self, catalog: Catalog, view: View, changed: Sequence[str]) -> SearchIndex:
        """This index with the ``changed`` projects as they are in ``view``."""
        names, lines = list(self.names), list(self.lines)
        for name in sorted(set(changed)):
            i = bisect.bisect_left(names, name)
            if i < len(names) and names[i] == name:
                del names[i], lines[i]
            project = catalog.project(name) if view.lists(name) else None
            if project is not None:
                entry = make_entry(project)
                names.insert(i, name)
                lines.insert(i, _line(name, entry.display_name, entry.summary))
        return SearchIndex(view.serial, tuple(names), lines)

    def _containing(self, term: str) -> tuple[set[int], set[int]]:
        """Projects holding ``term`` anywhere, and those holding it in their (normalized) name."""
        lines, names = self.lines, self.names
        normalized = _SEPARATORS.sub("-", term)
        found: set[int] = set()
        for variant in {term, normalized}:
            if variant.strip("-"):
                found.update([i for i, line in enumerate(lines) if variant in line])
        in_name = {i for i, name in enumerate(names) if normalized in name} if normalized.strip("-") else set()
        return found, in_name & found

    def search(self, query: str) -> Sequence[str]:
        """Names of the projects whose name or summary holds every word of ``query``, best first.

        Best first: the exact name, then names starting with the query, then names holding
        every word, then the rest (summary matches); alphabetical within each group.
        """
        terms = _query_terms(query)
        if not terms:
            return self.names
        # Start from the rarest-looking (longest) term; later terms only narrow it down.
        terms.sort(key=len, reverse=True)
        hits, in_name = self._containing(terms[0])
        for term in terms[1:]:
            if not hits:
                break
            more, more_in_name = self._containing(term)
            hits &= more
            in_name &= more_in_name
        wanted = _SEPARATORS.sub("-", "-".join(terms))
        # Names are sorted, so those starting with the query are one run (the exact one first).
        first = bisect.bisect_left(self.names, wanted)
        last = bisect.bisect_left(self.names, wanted + "\U0010ffff", first)
        prefixed = [i for i in range(first, last) if i in hits]
        taken = set(prefixed)
        named = sorted((in_name & hits) - taken)
        others = sorted(hits - in_name - taken)
        names = self.names
        return [names[i] for i in (*prefixed, *named, *others)]


class CurrentSearch:
    """The SearchIndex of the catalog's current View, brought up to date (once, by one thread) when it changes."""

    # Beyond this many changed projects, one query rebuilds it faster than updates would.
    REBUILD_AFTER = 2000

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._index: SearchIndex | None = None
        self._view: View | None = None
        self._lock = threading.Lock()

    def index(self) -> SearchIndex:
        view = self.catalog.view
        current = self._index
        if current is not None and current.serial == view.serial:
            return current
        with self._lock:
            current = self._index
            if current is None or current.serial != view.serial:
                changes = self.catalog.changes_between(self._view, view) if current is not None else None
                if changes is None or len(changes) > self.REBUILD_AFTER:
                    current = SearchIndex.build(self.catalog, view)
                else:
                    current = current.updated(self.catalog, view, [name for name, _before in changes])
                self._index, self._view = current, view
            return current

    def prepare_in_background(self) -> None:
        """Build the index now, in a thread of its own, when the catalog is large: its first
        build reads every file's row (about a second at a million files), which the first
        visitor of the project list should not wait for. A small index is built on first use."""
        if self.catalog.holds_everything():
            return

        def build() -> None:
            try:
                self.index()
            except Exception as exc:  # noqa: BLE001 (the database may be away: the first search builds it)
                log.info("search index not prepared: %s", exc)
            finally:
                self.catalog.close_connection()

        threading.Thread(target=build, name="wharf-search", daemon=True).start()

    def search(self, query: str) -> Results:
        return Results(self.catalog, self.index().search(query))

    def recent(self) -> list[Entry]:
        """The projects with the newest uploads, newest first (for the home page)."""
        return [make_entry(p) for p in self.catalog.recent(RECENT)]
