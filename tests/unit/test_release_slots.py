"""Files that would change what an existing release installs (issue 14, point 4)."""

from __future__ import annotations

import pytest

from app.publishing.release_slots import shadowed_file

EXISTING = ["mylib-1.0-py3-none-any.whl", "mylib-1.0.tar.gz",
            "mylib-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]


@pytest.mark.parametrize(("upload", "shadows"), [
    # a build tag makes pip and uv prefer the new wheel over the published one
    ("mylib-1.0-1-py3-none-any.whl", "mylib-1.0-py3-none-any.whl"),
    # the same file under another spelling of the name or the version
    ("MyLib-1.0-py3-none-any.whl", "mylib-1.0-py3-none-any.whl"),
    ("mylib-1.0.0-py3-none-any.whl", "mylib-1.0-py3-none-any.whl"),
    ("mylib-1.0-py2.py3-none-any.whl", "mylib-1.0-py3-none-any.whl"),  # shares the py3 tag
    # a second sdist: another format, another spelling
    ("mylib-1.0.zip", "mylib-1.0.tar.gz"),
    ("MyLib-1.0.tar.gz", "mylib-1.0.tar.gz"),
    ("mylib-1.0.0.tar.gz", "mylib-1.0.tar.gz"),
    ("mylib-1.0.tar.bz2", "mylib-1.0.tar.gz"),
    ("mylib-v1.0.tar.gz", "mylib-1.0.tar.gz"),
    ("mylib-2.0-cp311-cp311-manylinux2014_x86_64.whl",
     "mylib-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
    # files that add to a release without changing what any platform installs
    ("mylib-1.0-cp311-cp311-win_amd64.whl", None),
    ("mylib-1.0-py2-none-any.whl", None),
    ("mylib-2.0.tar.gz", None),
    ("mylib-2.0-cp312-cp312-manylinux_2_17_x86_64.whl", None),
    ("mylib-1.0.post1.tar.gz", None),
    ("mylib-1.0+local-py3-none-any.whl", None),
    ("otherlib-1.0.tar.gz", None),
    # the very same name is a matter of its bytes, decided elsewhere
    ("mylib-1.0.tar.gz", None),
])
def test_files_that_would_shadow_a_published_one(upload, shadows):
    assert shadowed_file(upload, EXISTING) == shadows


def test_unparsable_names_are_left_to_the_filename_check():
    assert shadowed_file("not-a-dist.txt", EXISTING) is None
    assert shadowed_file("mylib-1.0.tar.gz", ["garbage.whl"]) is None
