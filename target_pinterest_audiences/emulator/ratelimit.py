"""Per-category request rate limiting (sliding-window log), per access token.

Pinterest limits by ``x-ratelimit-category`` (``ads_read``, ``ads_write``, ...)
per minute per user per app. The emulator keeps, per limited category and
access token (a token stands for one user of one app), the monotonic times of
the requests it let through in the last 60 seconds: a request is allowed while
fewer than ``limit`` are in the window. Unlike a token bucket this never lets
a burst exceed the limit within any 60-second span, which makes tests that
count 429s deterministic. Rejected requests do not enter the window.

Headers sent with every response of a limited category:

* ``X-RateLimit-Limit``: the per-minute limit;
* ``X-RateLimit-Remaining``: requests still allowed in the current window;
* ``X-RateLimit-Reset``: whole seconds until the oldest request in the window
  leaves it (0 when the window is empty);
* with a 429 also ``Retry-After``: whole seconds (at least 1) until one more
  request will be allowed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    """Outcome of asking the limiter about one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The rate-limit headers for the response."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


class SlidingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds; thread-safe."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()

    def acquire(self) -> Decision:
        """Count the request if allowed; tell the caller either way."""
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            allowed = len(self._times) < self.limit
            if allowed:
                self._times.append(now)
            reset = math.ceil(self._times[0] + self.window - now) if self._times else 0
            return Decision(allowed, self.limit, self.limit - len(self._times), reset)

    def reset(self) -> None:
        """Empty the window."""
        with self._lock:
            self._times.clear()


class RateLimits:
    """The limiters of every (category, token) pair, created on first use; thread-safe."""

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(limits)
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], SlidingWindowLimiter] = {}

    def acquire(self, category: str | None, token: str | None) -> Decision | None:
        """Count a request of ``category`` made with ``token``; None if not limited."""
        limit = self._limits.get(category or "")
        if limit is None:
            return None
        key = (category or "", token or "")
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = SlidingWindowLimiter(limit, window=self._window, clock=self._clock)
                self._limiters[key] = limiter
        return limiter.acquire()

    def reset(self) -> None:
        """Empty every window."""
        with self._lock:
            self._limiters.clear()
