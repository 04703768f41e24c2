"""One bearer token shared by all threads of a provider: fetched once, refreshed in time.

``TokenCache`` is what GigaChat (OAuth) and YandexGPT (``token_provider``) share:

- single flight: any number of threads that need a new token wait for one fetch, and the
  lock is held only around that fetch, never around an API call;
- refresh in time: a fetched token carries a lifetime, counted from when its fetch
  started; when it has run out, the next caller fetches a new one;
- one refresh after a 401: every token has a generation number, so a 401 on a token
  that another thread has already replaced just picks up the new one;
- deadlines: waiting for the lock and the fetch itself count against the caller's
  deadline (``time.monotonic()`` seconds);
- ``scrub(text)`` removes every token the cache has held from an error text.

How a token is fetched, and what its errors say, stays in the provider.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Callable, Optional, Protocol, Tuple, TypeVar

from . import forking
from .config import scrub_secrets
from .errors import AuthenticationError, ProviderError, ProviderTimeoutError
from .records import FrozenRecord, field

__all__ = ["Token", "TokenCache", "SharedTokens", "time_left"]

logger = logging.getLogger("multi_llm_orchestrator.auth")

T = TypeVar("T")
#: ``fetch(deadline) -> (token, lifetime)``: lifetime in seconds, None for "until a 401".
Fetch = Callable[[float], Tuple[str, Optional[float]]]

#: Tokens remembered for ``scrub`` besides the current one.
REMEMBERED_TOKENS = 4


class Token(FrozenRecord):  # a dataclass when asked (records.py)
    """A token value, its generation and when to replace it (``refresh_at`` on the
    cache's clock; None: only after a 401). The value never shows in the repr."""

    value: str = field(repr=False)
    generation: int
    refresh_at: Optional[float]

    def __init__(self, value: str, generation: int, refresh_at: Optional[float]) -> None:
        state = self.__dict__
        state["value"] = value
        state["generation"] = generation
        state["refresh_at"] = refresh_at


class SharedTokens(Protocol):
    """A token store shared by processes: ``fetch(fetch, deadline, rejected)`` returns
    the fleet's valid token and its lifetime left, calling ``fetch(deadline)`` itself
    (under a fleet-wide lock) when there is none or it is ``rejected``."""

    def fetch(self, fetch: Fetch, deadline: float, rejected: Optional[str]) -> Tuple[str, Optional[float]]:
        ...


class TokenCache:
    """A bearer token shared by every thread of one provider (see the module docstring).

    ``fetch(deadline)`` returns ``(token, lifetime)``; None as ``fetch`` means the
    ``token`` given is all there is (a 401 is then final). ``token`` is a token to start
    with, replaced after ``lifetime`` seconds (None: only after a 401). With
    ``share_failures``, threads that waited while a fetch failed get a copy of its error
    instead of fetching again (except a timeout: that was the other caller's budget).
    ``clock`` measures token age; tests may swap it for a fake.

    >>> tokens = TokenCache(lambda deadline: ("t1.abc", 3600.0), owner="demo")
    >>> tokens.call(lambda token, timeout: f"sent with {token}", time.monotonic() + 5)
    'sent with t1.abc'
    >>> tokens.scrub("echoed t1.abc")
    'echoed <redacted>'
    """

    def __init__(
        self,
        fetch: Optional[Fetch],
        *,
        owner: str,
        token: Optional[str] = None,
        lifetime: Optional[float] = None,
        share_failures: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.share_failures = share_failures
        self.clock = clock
        self._fetch = fetch
        self._lock = threading.Lock()  # a fetch in flight at a fork would hold it for ever:
        forking.register(self)  # a forked child gets a new one (forking.fresh_locks)
        self._generation = 0
        self._token: Optional[Token] = None
        if token:
            self._token = Token(token, 0, None if lifetime is None else clock() + lifetime)
        self._known: Tuple[str, ...] = (token,) if token else ()
        # Fetches finished so far and the error of the last one, for threads that waited.
        self._attempts = 0
        self._failure: Optional[BaseException] = None
        self._shared: Optional[SharedTokens] = None

    def share(self, store: "SharedTokens") -> None:
        """Get tokens through ``store`` (one fetch for a whole fleet; see ``RedisState``)."""
        if self._fetch is not None:  # a fixed token has nothing to share
            self._shared = store

    def __repr__(self) -> str:
        return f"TokenCache(owner={self.owner!r}, generation={self._generation})"

    @property
    def refreshable(self) -> bool:
        """True when a new token can be fetched."""
        return self._fetch is not None

    @property
    def token(self) -> Optional[Token]:
        """The cached token, without any I/O (None before the first fetch)."""
        return self._token

    def get(self, deadline: float) -> Token:
        """The cached token, or a new one when there is none or it is due for refresh."""
        token = self._token
        if self._usable(token):
            return token
        return self._replace(None, deadline)

    def refresh(self, rejected: Token, deadline: float) -> Token:
        """A token to use after ``rejected`` got a 401: fetched once for all threads."""
        return self._replace(rejected, deadline)

    def call(self, send: Callable[[str, float], T], deadline: float) -> T:
        """``send(token, seconds_left)``; after a 401, once more with a new token.

        Fetching counts against ``deadline``: ``send`` gets only what is left.
        """
        token = self.get(deadline)
        try:
            return send(token.value, time_left(deadline, self.owner))
        except AuthenticationError as exc:
            if exc.status_code != 401 or not self.refreshable:
                raise
        logger.debug("provider %r: token rejected (401); fetching a new one and retrying once", self.owner)
        token = self.refresh(token, deadline)
        return send(token.value, time_left(deadline, self.owner))

    def scrub(self, text: str) -> str:
        """``text`` with every token this cache has held replaced by <redacted>."""
        return scrub_secrets(text, self._known)

    def _usable(self, token: Optional[Token]) -> bool:
        return token is not None and (token.refresh_at is None or self.clock() < token.refresh_at)

    def _replace(self, rejected: Optional[Token], deadline: float) -> Token:
        attempts = self._attempts
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ProviderTimeoutError("timed out waiting for the access token", provider=self.owner)
        try:
            token = self._token
            if self._usable(token) and (rejected is None or token.generation != rejected.generation):
                return token  # another thread fetched it while we waited
            failure = self._failure
            if (
                self.share_failures
                and attempts != self._attempts
                and isinstance(failure, ProviderError)
                and not isinstance(failure, ProviderTimeoutError)
            ):
                raise copy.copy(failure)
            if self._fetch is None:
                raise AuthenticationError(
                    "the access token can no longer be used and there is no way to fetch a new one",
                    provider=self.owner,
                    status_code=401,
                )
            # Rejected or due: nobody should pick it up while the new one is on its way.
            self._token = None
            self._failure = None
            started = self.clock()
            try:
                if self._shared is None:
                    value, lifetime = self._fetch(deadline)
                else:  # the fleet's token, or one fetched for the whole fleet
                    value, lifetime = self._shared.fetch(self._fetch, deadline, rejected.value if rejected else None)
            except Exception as exc:
                self._failure = exc
                raise
            finally:
                self._attempts += 1
            self._generation += 1
            token = Token(value, self._generation, None if lifetime is None else started + lifetime)
            if value not in self._known:
                self._known = (self._known + (value,))[-(REMEMBERED_TOKENS + 1):]
            self._token = token
            return token
        finally:
            self._lock.release()


def time_left(deadline: float, owner: str) -> float:
    """Seconds left before ``deadline``; ProviderTimeoutError when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProviderTimeoutError(
            "the call's timeout ran out while getting the access token", provider=owner
        )
    return left
