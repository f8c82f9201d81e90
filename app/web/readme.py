"""Package descriptions (READMEs) as safe HTML, rendered the way PyPI renders them.

``readme_renderer`` handles Markdown, reST and plain text and sanitizes its output with
nh3; the pages' Content-Security-Policy forbids inline scripts besides, so nothing a
package author writes runs in a reader's browser.
"""

from __future__ import annotations

import email.message
import re

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from markupsafe import Markup

# A description larger than this is shown as plain text: rendering megabytes of reST
# would hold a worker for seconds.
MAX_RENDERED_DESCRIPTION = 512 * 1024

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
