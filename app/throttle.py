"""Failed logins per client address, and the memory of recently checked credentials.

A wrong password costs a bcrypt check (~0.4 s here), so a guessing client could keep every
worker busy. Two bounds keep that cost small: an address that failed ``FAILURES_ALLOWED``
times within ``FAILURE_WINDOW`` seconds is refused at once (429, Retry-After) until its
oldest failure leaves the window, and a (user, password) pair already found wrong is
refused without another check. Both live in memory only, per worker process: a restart
forgets them, and nothing derived from a credential is ever written anywhere.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

# Failed logins an address may make per window before it is refused without a check. Each
# worker process counts its own, so an address gets at most workers x this many checks.
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
# Addresses followed at once; beyond that the least recently failing one is forgotten.
ADDRESSES_MAX = 65536


class FailureThrottle:
    """Counts failed logins by client address (the address the app sees through trusted proxies)."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW,
                 addresses: int = ADDRESSES_MAX):
        self.allowed = allowed
        self.window = window
        self.addresses = addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is not None:
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[address]
                return None
        return times

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 if it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(address, now)
            if times is None or len(times) < self.allowed:
                return 0.0
            return max(times[0] + self.window - now, 0.001)

    def fail(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(address, now)
            if times is None:
                times = self._failures[address] = deque(maxlen=self.allowed)
            self._failures.move_to_end(address)
            times.append(now)
            while len(self._failures) > self.addresses:
                self._failures.popitem(last=False)


class Memory:
    """Keys (keyed hashes of credentials, never the credentials) remembered for a while."""

    def __init__(self, ttl: float, size: int):
        self.ttl = ttl
        self.size = size
        self._until: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, key: bytes) -> bool:
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if until <= time.monotonic():
                del self._until[key]
                return False
            return True

    def add(self, key: bytes) -> None:
        with self._lock:
            self._until[key] = time.monotonic() + self.ttl
            self._until.move_to_end(key)
            while len(self._until) > self.size:
                self._until.popitem(last=False)  # the oldest entry goes first

    def clear(self) -> None:
        with self._lock:
            self._until.clear()
