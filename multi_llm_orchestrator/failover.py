"""Whether the attempt running on this thread has another provider to fall back to.

The Router knows the plan; the transport (``http.DeadlineRetry``) does not. A refused or
timed-out connection retried by urllib3 with backoff costs a call 0.5 s or more before
the next provider gets its turn, while failing over costs a fraction of a millisecond.
So while an attempt with a fallback runs, connection errors are not retried by the
transport: the Router tries the next provider at once (the dead one is tried again on
later calls until its breaker opens). The last candidate, or a lone provider, keeps
its transport retries: there is nothing faster to do than retrying.
"""

from __future__ import annotations

import threading

__all__ = ["fallback_ready", "has_fallback"]

_attempt = threading.local()


class fallback_ready:
    """While the block runs on this thread, ``has_fallback()`` is ``ready``."""

    __slots__ = ("ready", "previous")

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.previous = False

    def __enter__(self) -> None:
        self.previous = getattr(_attempt, "ready", False)
        _attempt.ready = self.ready

    def __exit__(self, *exc_info: object) -> None:
        _attempt.ready = self.previous


def has_fallback() -> bool:
    """True while an attempt that has another provider after it runs on this thread."""
    return getattr(_attempt, "ready", False)
