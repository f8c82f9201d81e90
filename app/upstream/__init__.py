"""The upstream index Wharf can mirror from and pull through.

- ``listings``: upstream project pages (PEP 691 JSON, PEP 503 HTML) as ``Listing`` records;
- ``client``: ``UpstreamIndex``, which fetches listings and files, always hash-verified;
- ``pull_through``: the cache that serves upstream projects not hosted here.

``wharf mirror`` (app/mirror/) uses the client; the app uses the pull-through cache
(off unless ``upstream_url`` is set).
"""
