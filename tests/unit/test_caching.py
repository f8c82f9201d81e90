"""HTTP caching headers decided by the app: Cache-Control, validators, conditional requests."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import bottle
import pytest

from app.caching import cache_control, etag_of, http_date, if_range_holds, index_cache_headers, not_modified

ETAG = etag_of(b"page")
MODIFIED = 1_700_000_000.0


@pytest.fixture
def request_with():
    """Bind bottle's thread-local request to an environ with the given headers."""
    def bind(**headers: str) -> None:
        bottle.request.bind({"REQUEST_METHOD": "GET", "PATH_INFO": "/",
                             **{"HTTP_" + name.upper(): value for name, value in headers.items()}})
    yield bind
    bottle.request.bind({})


@pytest.mark.parametrize(("max_age", "private", "immutable", "expected"), [
    (1, False, False, "public, max-age=1, must-revalidate"),
    (59, True, False, "private, max-age=59, must-revalidate"),
    (60, False, False, "public, max-age=60"),
    (31536000, False, True, "public, max-age=31536000, immutable"),
    (0, True, False, "private, max-age=0, must-revalidate"),
])
def test_cache_control(max_age, private, immutable, expected):
    assert cache_control(max_age, private=private, immutable=immutable) == expected


def test_index_pages_tell_nginx_their_last_second():
    before = int(time.time())
    headers = index_cache_headers(5, private=False)
    after = int(time.time())
    assert headers["Cache-Control"] == "public, max-age=5, must-revalidate"
    last = int(headers["X-Accel-Expires"].removeprefix("@"))
    assert headers["X-Accel-Expires"].startswith("@") and before + 4 <= last <= after + 4


def test_index_pages_that_must_not_be_kept_send_no_nginx_lifetime():
    assert index_cache_headers(0, private=True) == {"Cache-Control": "private, max-age=0, must-revalidate"}


def test_etags_are_quoted_and_follow_the_bytes():
    assert ETAG == etag_of(b"page") and ETAG != etag_of(b"page2")
    assert ETAG.startswith('"') and ETAG.endswith('"') and len(ETAG) == 34


def test_http_date_is_rfc_9110_gmt():
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert parsedate_to_datetime(http_date(MODIFIED)).timestamp() == MODIFIED


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, False),
    ({"if_none_match": ETAG}, True),
    ({"if_none_match": f'"other", W/{ETAG}'}, True),  # weak comparison, any of a list
    ({"if_none_match": "*"}, True),
    ({"if_none_match": '"other"'}, False),
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    ({"if_none_match": '"other"', "if_modified_since": http_date(MODIFIED + 10)}, False),
    ({"if_modified_since": http_date(MODIFIED)}, True),
    ({"if_modified_since": http_date(MODIFIED + 10)}, True),
    ({"if_modified_since": http_date(MODIFIED - 10)}, False),
    ({"if_modified_since": "not a date"}, False),
])
def test_not_modified(request_with, headers, expected):
    request_with(**headers)
    assert not_modified(ETAG, MODIFIED) is expected


def test_if_modified_since_needs_a_modification_time(request_with):
    request_with(if_modified_since=http_date(MODIFIED))
    assert not_modified(ETAG) is False


@pytest.mark.parametrize(("if_range", "expected"), [
    (None, True),
    (ETAG, True),
    (f"W/{ETAG}", False),  # If-Range takes strong validators only
    ('"other"', False),
    (http_date(MODIFIED), True),
    (http_date(MODIFIED - 1), False),
    ("garbage", False),
])
def test_if_range(request_with, if_range, expected):
    request_with(**({} if if_range is None else {"if_range": if_range}))
    assert if_range_holds(ETAG, MODIFIED) is expected
