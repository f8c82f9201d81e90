"""Print what the image installs before Wharf's code, read from pyproject.toml alone.

The Dockerfile installs these in a layer of their own, so editing the app reuses it:
the project's dependencies, its build backend (Wharf itself is then installed without
build isolation, which needs no index) and the extras named on the command line.

    python3 requirements.py pyproject.toml [EXTRA ...] > requirements.txt
"""

import sys
import tomllib


def main(pyproject: str, *extras: str) -> None:
    with open(pyproject, "rb") as f:
        data = tomllib.load(f)
    project = data["project"]
    lines = list(project.get("dependencies", []))
    lines += data.get("build-system", {}).get("requires", [])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        lines += optional[extra]
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
