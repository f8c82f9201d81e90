"""Benchmark datasets: N projects with several versions, each a wheel and an sdist.

A dataset of ``size`` files is ``size / FILES_PER_PROJECT`` projects named
``bench-pkg-NNNNN`` with ``VERSIONS`` versions, each a valid wheel and a valid sdist with
real core metadata (made by ``tests.support.make_wheel`` / ``make_sdist``), in one flat
directory as pypiserver users keep them. Next to them, in ``pip/``, the 21 wheels of the
pip-install test: ``bench-app`` depends on ``bench-dep-01`` .. ``bench-dep-20``.

Datasets are cached under ``bench/data/<size>/`` (gitignored) and reused when their
manifest matches, so a 100,000-file dataset is made once (about a minute on 2 cores).

The ``tree`` layout (``bench/data/<size>-tree/``, for bench/million.py) puts each
hundred projects (1,000 files) in a directory of their own, as a large mirror keeps
them: a flat directory of a million files costs a listing of all of them per change.

    python -m bench.dataset 1000 10000 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support import make_sdist, make_wheel

DATA_DIR = Path(__file__).resolve().parent / "data"
FORMAT = 2  # bump when the layout changes, so cached datasets are remade
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.1.0")
FILES_PER_PROJECT = 2 * len(VERSIONS)
PIP_APP = "bench-app"
PIP_DEPS = tuple(f"bench-dep-{i:02d}" for i in range(1, 21))


@dataclass(frozen=True)
class Dataset:
    """A generated dataset on disk and the names the benchmark asks for."""

    size: int  # distribution files in packages/ (not counting pip/)
    root: Path  # bench/data/<size>
    projects: int
    project: str  # the project whose page the benchmark requests (mid-alphabet)
    download: str  # a file of that project, as its path under /packages/

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def project_name(index: int) -> str:
    return f"bench-pkg-{index:05d}"


# Projects per directory in the tree layout.
TREE_FANOUT = 100


def bucket(index: int) -> str:
    """The directory of project ``index`` in the tree layout."""
    return f"{index // TREE_FANOUT:05d}"


def _make_projects(args: tuple[Path, int, int, bool]) -> int:
    root, first, last, tree = args
    for index in range(first, last):
        name = project_name(index)
        directory = root / bucket(index) if tree else root
        for version in VERSIONS:
            meta = {"requires_python": ">=3.8", "summary": f"Benchmark package {index} version {version}",
                    "requires": ("packaging>=20",) if index % 3 == 0 else ()}
            make_wheel(directory, name, version, **meta)
            make_sdist(directory, name, version, **meta)
    return last - first


def _make_pip_set(directory: Path) -> None:
    for dep in PIP_DEPS:
        make_wheel(directory, dep, "1.0.0", requires_python=">=3.8")
    make_wheel(directory, PIP_APP, "1.0.0", requires_python=">=3.8", requires=PIP_DEPS)


def describe(size: int, root: Path, tree: bool = False) -> Dataset:
    projects = max(size // FILES_PER_PROJECT, 1)
    project = project_name(projects // 2)
    module = project.replace("-", "_")
    download = f"{module}-{VERSIONS[-1]}-py3-none-any.whl"
    return Dataset(size, root, projects, project, f"{bucket(projects // 2)}/{download}" if tree else download)


def ensure(size: int, data_dir: Path = DATA_DIR, *, processes: int | None = None, quiet: bool = False,
           tree: bool = False) -> Dataset:
    """The dataset of ``size`` files, generated unless a complete one is cached."""
    root = data_dir / (f"{size}-tree" if tree else str(size))
    dataset = describe(size, root, tree)
    want = {"format": FORMAT, "size": size, "projects": dataset.projects, "versions": list(VERSIONS), "tree": tree}
    if dataset.manifest.exists():
        try:
            if {k: v for k, v in json.loads(dataset.manifest.read_text()).items() if k in want} == want:
                return dataset
        except ValueError:
            pass
    if root.exists():
        shutil.rmtree(root)
    packages = dataset.packages
    packages.mkdir(parents=True)
    start = time.monotonic()
    processes = processes or max(multiprocessing.cpu_count(), 1)
    step = max(dataset.projects // (processes * 8), 1)
    if tree:
        for index in range(0, dataset.projects, TREE_FANOUT):
            (packages / bucket(index)).mkdir()
    chunks = [(packages, i, min(i + step, dataset.projects), tree) for i in range(0, dataset.projects, step)]
    with multiprocessing.Pool(processes) as pool:
        done = 0
        for count in pool.imap_unordered(_make_projects, chunks):
            done += count
            if not quiet:
                print(f"\r  dataset {size}: {done}/{dataset.projects} projects", end="", file=sys.stderr)
    _make_pip_set(packages / "pip")
    elapsed = time.monotonic() - start
    if not quiet:
        print(f"\r  dataset {size}: {dataset.projects} projects, {size} files in {elapsed:.1f}s", file=sys.stderr)
    described = {k: str(v) for k, v in asdict(dataset).items()}
    dataset.manifest.write_text(json.dumps({**described, **want, "generated_seconds": round(elapsed, 1)}, indent=1))
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate (or reuse) benchmark datasets.")
    parser.add_argument("sizes", nargs="+", type=int, help="number of files, e.g. 1000 10000 100000")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="where datasets are cached")
    parser.add_argument("--tree", action="store_true", help="100 projects per directory (bench/million.py)")
    args = parser.parse_args(argv)
    for size in args.sizes:
        dataset = ensure(size, args.data, tree=args.tree)
        print(f"{size}: {dataset.packages} ({dataset.projects} projects; benchmarked: {dataset.project})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
