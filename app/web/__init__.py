"""Pages for people: home, the project list with search, project pages and their assets.

  routes.py   the URLs and what each answers (``register`` adds them to the app)
  pages.py    HTML responses: shared template context, headers, CSP
  search.py   the project list and its search, rebuilt per catalog View
  details.py  one project's page: metadata, links, releases (kept per Project)
  readme.py   package descriptions rendered as PyPI renders them
  assets.py   the stylesheet, script and icon (static/)
Templates are app/templates/web/.
"""

from .routes import register

__all__ = ["register"]
