"""Which files of one release would stand in for each other when a client picks one.

An installer picks one file per release: the sdist, or the wheel whose tags best fit its
platform (and, between wheels with the same tags, the one with the highest build tag). So
a second sdist of a release (in another format, or with the name or version spelled
another way: ``1.0.0`` is ``1.0``), or a wheel sharing a tag with an existing wheel, would
change what an existing release installs. Uploads of such files are refused unless the
index was told to allow overwrites.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..dists import DistName, InvalidDistribution, parse_filename


def _slots(filename: str, dist: DistName) -> frozenset[str]:
    """What a file stands for within its release: its tags (wheels) or its kind."""
    if dist.packagetype == "bdist_wheel":
        try:
            _, _, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return frozenset()
        return frozenset(f"wheel:{tag}" for tag in tags)
    if dist.packagetype == "sdist":
        return frozenset({"sdist"})
    # Eggs and Windows installers: the part after name-version says the Python and platform.
    stem = filename.lower().rsplit(".", 1)
    tail = stem[0].split("-", 2)[2:] if dist.packagetype == "bdist_egg" else [stem[-1]]
    return frozenset({f"{dist.packagetype}:{'-'.join(tail)}"})


def shadowed_file(filename: str, existing: Iterable[str]) -> str | None:
    """The first of ``existing`` (file names of the same project) that ``filename`` would
    duplicate or shadow: same release (equal versions) and a slot in common. A file of
    exactly the same name is not reported: replacing it is a matter of its bytes."""
    try:
        new = parse_filename(filename)
    except InvalidDistribution:
        return None
    slots = _slots(filename, new)
    for other in existing:
        if other == filename:
            continue
        try:
            old = parse_filename(other)
        except InvalidDistribution:
            continue
        if old.project == new.project and old.version == new.version and slots & _slots(other, old):
            return other
    return None
