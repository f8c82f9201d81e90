"""Finding projects: the project list in name order, searched by name and summary.

The search structure is built once per catalog ``View``; projects that did not change
keep their entries, so a new upload costs one entry, not ten thousand.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..catalog import Catalog, Project, View

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


class SearchIndex:
    """Every project of one catalog View, in name order, with a text to search in.

    The searched text is one string ("name<TAB>summary<NL>" per project), so finding a
    term is one C-speed scan rather than a Python loop over ten thousand projects.
    """

    def __init__(self, view: View, previous: SearchIndex | None = None):
        reuse = previous.by_name if previous is not None else {}
        entries = []
        for name in view.names:
            project = view.projects[name]
            old = reuse.get(name)
            entries.append(old if old is not None and old.project is project else make_entry(project))
        self.serial = view.serial
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.by_name = {e.name: e for e in entries}
        self.file_count = view.file_count
        lines = [f"{e.name}\t{e.display_name.lower()} {e.summary.lower()}\n" for e in entries]
        self.offsets: list[int] = []
        position = 0
        for line in lines:
            self.offsets.append(position)
            position += len(line)
        self.text = "".join(lines)
        self.ends = self.offsets[1:] + [len(self.text)]
        # Where each line's names (normalized and as displayed) end and its summary begins.
        self.name_ends = [offset + len(e.name) + 1 + len(e.display_name)
                          for offset, e in zip(self.offsets, entries)]
        self.names = view.names
        self.recent = tuple(sorted(entries, key=lambda e: e.updated, reverse=True)[:RECENT])

    def _containing(self, term: str) -> tuple[set[int], set[int]]:
        """Projects holding ``term`` anywhere, and those holding it in their name."""
        found: set[int] = set()
        in_name: set[int] = set()
        ends, name_ends = self.ends, self.name_ends
        for variant in {term, _SEPARATORS.sub("-", term)}:
            if not variant.strip("-"):
                continue
            position = self.text.find(variant)
            while position >= 0:
                line = bisect.bisect_right(self.offsets, position) - 1
                found.add(line)
                # The first hit in a line is the leftmost, and names come first in it.
                if position < name_ends[line]:
                    in_name.add(line)
                # One hit per project is enough: go on from the next project's line.
                position = self.text.find(variant, ends[line])
        return found, in_name

    def search(self, query: str) -> Sequence[Entry]:
        """Projects whose name or summary holds every word of ``query``, best first.

        Best first: the exact name, then names starting with the query, then names holding
        every word, then the rest (summary matches); alphabetical within each group.
        """
        terms = _query_terms(query)
        if not terms:
            return self.entries
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
        entries = self.entries
        return [entries[i] for i in (*prefixed, *named, *others)]


class CurrentSearch:
    """The SearchIndex of the catalog's current View, rebuilt (once, by one thread) when it changes."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._index: SearchIndex | None = None
        self._lock = threading.Lock()

    def index(self) -> SearchIndex:
        view = self.catalog.view
        current = self._index
        if current is not None and current.serial == view.serial:
            return current
        with self._lock:
            current = self._index
            if current is None or current.serial != view.serial:
                current = self._index = SearchIndex(view, current)
            return current
