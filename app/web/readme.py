"""Package descriptions (READMEs) as safe HTML, rendered the way PyPI renders them.

``readme_renderer`` handles Markdown, reST and plain text and sanitizes its output with
nh3; the pages' Content-Security-Policy forbids inline scripts besides, so nothing a
package author writes runs in a reader's browser.

Rendering is not always cheap: the Markdown and reST renderers are quadratic on some
inputs (a 1 KB README took 7.5 s). So a README is rendered once per content, in a child
process (``python -m app.web.readme``) with a CPU and time budget, and the result is kept
on disk in the state directory for every worker and every restart; a README over budget
is shown as plain text. Page views only ever read the kept result.
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from markupsafe import escape

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from markupsafe import Markup

# A description larger than this is shown as plain text: rendering megabytes of reST
# would hold a worker for seconds.
MAX_RENDERED_DESCRIPTION = 512 * 1024

# Seconds of CPU (and, doubled, of waiting) one README may take to render.
RENDER_BUDGET = 2.0
# Bump when rendering changes, so kept pages are rendered again.
RENDER_VERSION = "1"

log = logging.getLogger("wharf.web")

_EMPTY_ANCHOR = re.compile(r'<a (?:title="[^"<>]*" )?href="#user-content-[^"<>]*" rel="nofollow"></a>')


def render_description(text: str | None, content_type: str | None) -> Markup | None:
    """A package's long description as safe HTML, the way PyPI renders it."""
    if not text or not text.strip():
        return None
    kind, params = _parse_content_type(content_type)
    if len(text) > MAX_RENDERED_DESCRIPTION:
        kind = "text/plain"
    rendered = None
    if kind == "text/markdown":
        rendered = readme_renderer.markdown.render(text, variant=params.get("variant", "GFM"))
    elif kind == "text/x-rst":
        rendered = readme_renderer.rst.render(text)
    elif kind == "text/plain":
        rendered = "<pre>" + readme_renderer.txt.render(text) + "</pre>"
    if rendered is None:  # unknown type or markup that did not render: PyPI's fallback
        rendered = "<pre>" + readme_renderer.txt.render(text) + "</pre>"
    # readme_renderer has already sanitized it (nh3): nothing executable remains. Its
    # heading anchors are empty links, which screen readers announce as nameless: drop them.
    return Markup(_EMPTY_ANCHOR.sub("", rendered))


def _parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value or not value.strip():
        return "text/x-rst", {}  # what PyPI assumes when a package says nothing
    message = email.message.Message()
    message["content-type"] = value
    params = {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}
    return message.get_content_type(), params


def plain_description(text: str, note: str = "") -> Markup:
    """The description as preformatted text (escaped), with an optional note above it."""
    lead = Markup('<p class="note">{}</p>').format(note) if note else Markup("")
    return lead + Markup("<pre>") + escape(text) + Markup("</pre>")


class ReadmeRenderer:
    """Renders each README once, within a budget, and keeps the HTML in ``directory``."""

    def __init__(self, directory: Path, budget: float = RENDER_BUDGET):
        self.directory = Path(directory)
        self.budget = budget

    def render(self, text: str | None, content_type: str | None) -> Markup | None:
        if not text or not text.strip():
            return None
        key = hashlib.sha256(json.dumps([RENDER_VERSION, content_type or "", text]).encode()).hexdigest()
        path = self.directory / key[:2] / f"{key}.html"
        with contextlib.suppress(OSError):
            return Markup(path.read_text(encoding="utf-8"))
        html = self._render_bounded(text, content_type)
        from ..atomic import write_file

        with contextlib.suppress(OSError):  # a read-only state directory: render again next time
            write_file(path, str(html).encode("utf-8"), durable=False)
        return html

    def _render_bounded(self, text: str, content_type: str | None) -> Markup:
        package_root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-m", "app.web.readme", str(self.budget)],
                                  input=json.dumps({"text": text, "content_type": content_type}).encode(),
                                  capture_output=True, timeout=2 * self.budget + 5, env=env)
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0:
            return Markup(done.stdout.decode("utf-8"))
        reason = "took too long to render" if done is None or done.returncode in (-9, -24, 152, 137) else "could not be rendered"
        log.info("a README %s (%d characters); shown as plain text", reason, len(text))
        return plain_description(text, f"This description {reason} and is shown as plain text.")


def _child(budget: float) -> None:
    """Render one README from stdin to stdout under a CPU limit (the child process)."""
    import resource

    seconds = max(1, int(budget + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))  # then SIGXCPU, then SIGKILL
    request = json.loads(sys.stdin.buffer.read())
    rendered = render_description(request["text"], request["content_type"])
    sys.stdout.buffer.write(str(rendered or "").encode("utf-8"))


if __name__ == "__main__":
    _child(float(sys.argv[1]) if len(sys.argv) > 1 else RENDER_BUDGET)
