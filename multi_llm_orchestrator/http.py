"""HTTP plumbing shared by every HTTP provider.

- ``build_session``: one ``requests.Session`` per provider, with an ``HTTPAdapter`` sized
  for threads whose ``max_retries`` is a ``DeadlineRetry`` (a ``urllib3.util.Retry``).
- ``HttpProvider``: base class that sends requests with a (connect, read) timeout and
  turns every failure (status + error body, requests/urllib3 exceptions, bad JSON) into
  the typed errors of ``errors.py``.

Every request is a ``transfers.Transfer`` (cut at its deadline, or when the Router
abandons its attempt) and its body is read by ``reading.py`` under the deadline and
``ProviderConfig.max_response_bytes``: ``timeout`` bounds the whole request, body
included, and no answer can fill memory.

Retry policy, in one place: connection errors and statuses 429/500/502/503/504 (a
provider may drop some: ``HttpProvider.retry_statuses``) are retried up to
``config.max_retries`` times, POST included; a read error (the server may have
processed the body) is never retried; backoff is exponential with jitter;
``Retry-After`` is honoured up to ``RETRY_AFTER_CAP`` seconds and never slept past the
call's own deadline: when the wait would pass it, the 429/503 is returned at once and
surfaces as ``RateLimitError(retry_after=...)`` so the Router can fall back. While the
Router has another provider planned after the current attempt, connection errors are
not retried either: it fails over at once (see ``failover.py``).
"""

from __future__ import annotations

import copy
import errno
import functools
import json
import logging
import math
import os
import random
import select
import socket
import sys
import threading
import time
import warnings
from email.utils import parsedate_to_datetime
from itertools import takewhile
from typing import Any, Callable, ClassVar, Collection, Dict, FrozenSet, Iterator, Mapping, Optional, Tuple
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError, ResponseError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from . import forking
from .config import ProviderConfig, is_secret_key, scrub_secrets
from .records import field_names
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
)
from .failover import has_fallback
from .providers.base import BaseProvider, report_health_failure
from .reading import TRANSFER_ATTR, BodyChunks, close_response, read_body, read_prefix
from .streaming import LineReader
from .transfers import Transfer, TransferCut, current_transfer, stop_reaper_if_idle
from .validation import capped_growth
from .types import TextStream

__all__ = [
    "InsecureProviderWarning",
    "DeadlineRetry",
    "DeadlineTimeout",
    "build_session",
    "HttpProvider",
    "error_from_status",
    "error_from_exception",
    "parse_retry_after",
    "provider_config",
    "error_message_from_body",
    "redirect_error",
]

logger = logging.getLogger("multi_llm_orchestrator.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 60.0
#: The longest ``retry_after`` put on an error: a server's "come back in 2100" must not
#: keep a breaker open for ever. Above RETRY_AFTER_CAP, so such waits are still not slept.
MAX_RETRY_AFTER = 3600.0
CONNECT_TIMEOUT_CAP = 10.0
MIN_SOCKET_TIMEOUT = 0.001
USER_AGENT = "multi-llm-orchestrator"
#: Shorter "keys" are placeholders such as "EMPTY" or "ollama" that local servers ignore;
#: scrubbing those would garble every message that mentions the word.
MIN_SECRET_LENGTH = 8

# The deadline of the request running on this thread, read by DeadlineRetry: urllib3
# retries run synchronously on the caller's thread, so a thread-local is exact.
_call = threading.local()


class DeadlineRetry(Retry):
    """A ``Retry`` that never waits past the current call's deadline.

    When the next wait (Retry-After or backoff) would end after the deadline, or
    Retry-After exceeds ``RETRY_AFTER_CAP``, retrying stops and the last response is
    returned to the caller unchanged (``raise_on_status=False``).
    """

    def is_retry(self, method, status_code, has_retry_after=False):
        # urllib3 also retries 413/429/503 whenever they carry Retry-After, even outside
        # status_forcelist; only the statuses chosen for the provider are retried here.
        if status_code not in (self.status_forcelist or ()):
            return False
        return super().is_retry(method, status_code, has_retry_after)

    def get_retry_after(self, response):
        # urllib3 raises InvalidHeader on a Retry-After that is neither whole seconds nor
        # a date ("0.5"), which failed the call as a bad request header; this parser also
        # reads fractions and retry-after-ms, and ignores what it cannot read.
        return parse_retry_after(response.headers)

    def get_backoff_time(self) -> float:
        # urllib3 computes backoff_factor * 2 ** (errors - 1): past ~1,025 consecutive
        # errors that is an OverflowError, whatever backoff_max says.
        errors = len(list(takewhile(lambda entry: entry.redirect_location is None, reversed(self.history))))
        if errors <= 1:
            return 0.0
        backoff = capped_growth(self.backoff_factor, 2.0, errors - 1, self.backoff_max)
        if self.backoff_jitter:
            backoff += random.random() * self.backoff_jitter
        return float(max(0.0, min(self.backoff_max, backoff)))

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if error is not None and self._is_connection_error(error) and has_fallback():
            # Another provider is waiting: failing over beats retrying with backoff.
            raise MaxRetryError(_pool, url, error)
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = new.get_retry_after(response) if response is not None else None
        if wait is not None and wait > RETRY_AFTER_CAP:
            raise MaxRetryError(_pool, url, ResponseError(f"Retry-After {wait:g} s is above the cap"))
        if wait is None:
            wait = new.get_backoff_time()
        deadline = getattr(_call, "deadline", None)
        if deadline is not None and time.monotonic() + wait >= deadline:
            reason = error or ResponseError(f"waiting {wait:g} s would pass the deadline")
            raise MaxRetryError(_pool, url, reason)
        return new


class DeadlineTimeout(Timeout):
    """A urllib3 ``Timeout`` whose connect and read timeouts never reach past ``deadline``
    (a ``time.monotonic()`` value).

    urllib3 gives every transport retry a fresh copy of the timeout (``clone``): with a
    plain (connect, read) pair a server that answers 503 just before the timeout would get
    a whole new read timeout per retry. Each attempt here gets only what is left.

    >>> DeadlineTimeout(connect=10, read=30, deadline=time.monotonic() + 600).read_timeout
    30
    """

    def __init__(self, connect: float, read: float, deadline: float) -> None:
        super().__init__(connect=connect, read=read)
        self.deadline = deadline

    def _left(self, value: Any) -> float:
        # Never 0 or below: a socket timeout of 0 means non-blocking, not "expired".
        left = max(MIN_SOCKET_TIMEOUT, self.deadline - time.monotonic())
        return left if value is None else min(value, left)

    @property
    def connect_timeout(self) -> float:  # type: ignore[override]
        return self._left(self._connect)

    @property
    def read_timeout(self) -> float:  # type: ignore[override]
        return self._left(self._read)

    def clone(self) -> "DeadlineTimeout":
        return DeadlineTimeout(self._connect, self._read, self.deadline)


# Connections that join the Transfer of the request taking them (see transfers.py) ------


class _TrackedConnectionMixin:
    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        finally:  # connected or failed: a cut reaches self.sock from now on
            transfer = getattr(self, "_mlo_transfer", None)
            if transfer is not None:
                transfer.connected(self)

    def _new_conn(self) -> socket.socket:
        # urllib3 opens the socket inside create_connection, out of a cut's reach until
        # the connect returns: an attempt abandoned while connecting to a host that drops
        # SYNs would keep its thread for the whole connect timeout. Here the transfer
        # gets each socket before its connect, so a cut shuts it down mid-connect.
        transfer = getattr(self, "_mlo_transfer", None)
        if transfer is None:
            return super()._new_conn()  # type: ignore[misc,no-any-return]
        try:
            sock = _open_socket(self, transfer)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc  # type: ignore[arg-type]
        if isinstance(self, HTTPSConnection):
            # The TLS handshake runs on a new SSLSocket that takes the descriptor over
            # (the socket returned here is detached): a duplicate, which shares the TCP
            # connection, lets a cut end a handshake the server never answers.
            duplicate = sock.dup()
            try:
                transfer.connecting(self, duplicate)
            except TransferCut:
                duplicate.close()
                sock.close()
                raise
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


def _open_socket(connection: Any, transfer: Transfer) -> socket.socket:
    """A socket connected to ``connection``'s host (each address in turn, as urllib3
    tries them) within its connect timeout; ``TransferCut`` once ``transfer`` is cut.

    The connect is started non-blocking, then the cut is checked, then its end awaited:
    a cut before the check is seen by it, and one after finds the connect under way,
    where its shutdown ends the wait at once. (Checked before a blocking connect, a cut
    landing between the check and the connect would shut down a socket not yet
    connecting, and the connect would then wait for its whole timeout.)"""
    host = connection._dns_host  # no brackets around an IPv6 address, no trailing dot
    timeout = connection.timeout  # seconds or None: urllib3 resolves its "default" token
    failure: Optional[OSError] = None
    for family, kind, protocol, _, address in socket.getaddrinfo(host, connection.port, allowed_gai_family(),
                                                                 socket.SOCK_STREAM):
        sock = socket.socket(family, kind, protocol)
        try:
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            if connection.source_address:
                sock.bind(connection.source_address)
            sock.setblocking(False)
            transfer.connecting(connection, sock)
            status = sock.connect_ex(address)
            if transfer.error is not None:
                raise TransferCut(str(transfer.error))
            if status in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                waiting = select.poll()
                waiting.register(sock, select.POLLOUT)
                if not waiting.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))):
                    raise TimeoutError("timed out")
                status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if status:
                raise OSError(status, os.strerror(status))
            sock.settimeout(timeout)
            return sock
        except OSError as exc:
            sock.close()
            if transfer.error is not None:  # cut while connecting: no next address
                raise TransferCut(str(transfer.error)) from None
            failure = exc
        except BaseException:  # TransferCut, KeyboardInterrupt...
            sock.close()
            raise
    raise failure or OSError(f"no address found for {host}")


class _TrackedHTTPConnection(_TrackedConnectionMixin, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_TrackedConnectionMixin, HTTPSConnection):
    pass


class _TrackedPoolMixin:
    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        transfer: Optional[Transfer] = current_transfer()
        if transfer is not None and transfer.error is not None:
            raise TransferCut(str(transfer.error))
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        if transfer is not None:
            try:
                transfer.attach(connection)
            except TransferCut:  # cut meanwhile: the connection goes back unused, not dropped open
                self._put_conn(connection)
                raise
        return connection

    def _put_conn(self, connection: Any) -> None:
        transfer = getattr(connection, "_mlo_transfer", None)
        if transfer is not None:
            transfer.detach(connection)
        super()._put_conn(connection)  # type: ignore[misc]


class _TrackedHTTPPool(_TrackedPoolMixin, HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(_TrackedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


_POOL_CLASSES = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class TrackingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections join the active ``Transfer`` (see module doc)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # A SOCKS manager brings its own pool classes: those stay (untracked, but each
        # read is still bounded by the socket timeout).
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def make_retry(max_retries: int, statuses: Collection[int] = RETRY_STATUSES) -> Retry:
    """The transport retry policy for ``max_retries`` attempts (0 disables retrying).

    ``statuses`` are the HTTP statuses retried; a provider whose 429 may mean "out of
    quota" (not retryable) leaves 429 out, see ``HttpProvider.retry_statuses``.
    """
    return DeadlineRetry(
        total=max_retries,
        connect=max_retries,
        read=0,  # the server may have processed the body: never resend it blind
        redirect=0,
        other=0,
        status=max_retries,
        status_forcelist=frozenset(statuses),
        allowed_methods=frozenset({"GET", "POST", "HEAD"}),
        backoff_factor=0.25,
        backoff_max=4.0,
        backoff_jitter=0.25,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def build_session(config: ProviderConfig, retry_statuses: Collection[int] = RETRY_STATUSES) -> requests.Session:
    """A Session for one provider: pooled, retrying (``retry_statuses``), TLS as configured.

    ``trust_env`` is off because requests would otherwise re-read proxy variables and
    .netrc on every call; proxies from the environment are resolved once per host by
    ``HttpProvider`` instead.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = TrackingAdapter(
        pool_connections=4,
        pool_maxsize=config.pool_size,
        max_retries=make_retry(config.max_retries, retry_statuses),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if config.ca_bundle and not os.path.exists(config.ca_bundle):
        # requests would only fail on the first call, as an OSError that reads like a network error.
        raise ConfigurationError(
            f"ca_bundle of {config.name!r} does not exist: {config.ca_bundle!r}; pass the path of a PEM file"
        )
    session.verify = config.ca_bundle if config.ca_bundle else config.verify_ssl
    session.headers["User-Agent"] = USER_AGENT
    if not config.verify_ssl and not config.ca_bundle:
        _warn_insecure_once(config.name)
    return session


_insecure_warned: set = set()
_insecure_lock = threading.Lock()


def _warn_insecure_once(name: str) -> None:
    """Warn (``warnings.warn``, seen without any logging set up, and the log) the first
    time a provider of this name turns TLS verification off. urllib3's own per-request
    InsecureRequestWarning is left alone: silencing it process-wide would also hide the
    user's unrelated ``requests.get(..., verify=False)`` calls."""
    with _insecure_lock:
        if name in _insecure_warned:
            return
        _insecure_warned.add(name)
    message = (
        f"TLS verification is OFF for provider {name!r} (verify_ssl=False): use ca_bundle with the "
        "server's CA instead outside development"
    )
    warnings.warn(message, InsecureProviderWarning, stacklevel=_caller_stacklevel())
    logger.warning("%s", message, extra={"provider": name})


class InsecureProviderWarning(UserWarning):
    """A provider was configured with ``verify_ssl=False``."""


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package
    (the user's line that built the provider), however deep the constructors nest."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def provider_config(owner: str, settings: Mapping[str, Any]) -> ProviderConfig:
    """``ProviderConfig(**settings)`` for the ``from_env`` constructors: an unknown keyword
    is a ConfigurationError naming it and the valid fields, not a bare TypeError.

    >>> provider_config("X.from_env", {"name": "x", "modle": "m"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    multi_llm_orchestrator.errors.ConfigurationError: X.from_env: unknown setting 'modle'; pass ProviderConfig fields only: name, model, ...
    """
    valid = list(field_names(ProviderConfig))
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ConfigurationError(
            f"{owner}: unknown setting {', '.join(map(repr, unknown))}; pass ProviderConfig fields only: "
            f"{', '.join(valid)}"
        )
    return ProviderConfig(**settings)


def parse_retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date;
    None when absent or not a finite number ("inf", "1e400", "nan")."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            seconds = float(value) / 1000.0
            if math.isfinite(seconds):
                return max(0.0, seconds)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_message_from_body(body: Any, text: str = "") -> str:
    """The human message inside any of the providers' error body shapes."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    if isinstance(body, list) and body:
        return error_message_from_body(body[0], text)
    text = (text or "").strip()
    return text[:300] if text else "no error message in the response"


def error_from_status(
    status: int,
    message: str,
    *,
    provider: str,
    retry_after: Optional[float] = None,
) -> ProviderError:
    """The typed error for an HTTP status (provider-specific cases are decided before)."""
    kwargs: Dict[str, Any] = {"provider": provider, "status_code": status}
    if status == 429:
        if retry_after is not None:
            retry_after = min(retry_after, MAX_RETRY_AFTER)
        return RateLimitError(message, retry_after=retry_after, **kwargs)
    if status in (401, 403):
        return AuthenticationError(message, **kwargs)
    if status == 402:
        return QuotaExceededError(message, **kwargs)
    if status == 408:
        return ProviderTimeoutError(message, **kwargs)
    if status >= 500:
        return ProviderUnavailableError(message, **kwargs)
    if 400 <= status < 500:
        return InvalidRequestError(message, **kwargs)
    return ResponseFormatError(f"unexpected HTTP status: {message}", **kwargs)


def redirect_error(response: requests.Response, url: str, provider: str) -> ProviderError:
    """The error for a 3xx answer, naming the status and where it points (host only: a
    Location may carry credentials in its query). Redirects are never followed: requests
    would resend a POST as a GET without its body, and a token to another host."""
    try:
        target = urlsplit(urljoin(url, response.headers.get("Location") or ""))
        where = f"{target.scheme}://{target.hostname}" if target.hostname else "nowhere usable"
    except ValueError:
        where = "a malformed Location"
    return ProviderUnavailableError(
        f"the server answered HTTP {response.status_code} redirecting to {where}: redirects are not followed; "
        "set base_url to the address the server redirects to",
        provider=provider, status_code=response.status_code, retryable=False,
    )


def error_from_exception(exc: BaseException, *, provider: str, timeout: float, tls_hint: str) -> ProviderError:
    """The typed error for an exception raised by requests or urllib3 while talking."""
    if isinstance(exc, ProviderError):
        return exc
    root = _root_cause(exc)
    if isinstance(exc, requests.exceptions.SSLError) or isinstance(root, urllib3.exceptions.SSLError):
        return ProviderUnavailableError(
            f"TLS verification failed ({_short(root)}): {tls_hint}", provider=provider, retryable=False
        )
    if isinstance(exc, requests.exceptions.InvalidHeader):
        # requests quotes the offending value, which may be an API key or a token.
        return InvalidRequestError(
            "a request header has whitespace or control characters (value not shown): check the key or token",
            provider=provider,
        )
    timeouts = (
        requests.exceptions.Timeout,
        urllib3.exceptions.TimeoutError,
        TimeoutError,
    )
    if isinstance(exc, timeouts) or isinstance(root, timeouts):
        return ProviderTimeoutError(f"no answer within {round(timeout, 3):g} s", provider=provider)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return ProviderUnavailableError(
            f"the connection broke while reading the response ({_short(root)})", provider=provider
        )
    if isinstance(exc, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return ResponseFormatError(f"could not decode the response body ({_short(root)})", provider=provider)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return InvalidRequestError(f"bad URL: {_short(exc)}; check base_url", provider=provider)
    if isinstance(exc, (requests.exceptions.ConnectionError, OSError, urllib3.exceptions.HTTPError)):
        return ProviderUnavailableError(f"could not connect ({_short(root)})", provider=provider)
    if isinstance(exc, requests.exceptions.RequestException):
        return ProviderUnavailableError(f"request failed ({_short(root)})", provider=provider)
    return ProviderError(f"unexpected {type(exc).__name__}: {_short(exc)}", provider=provider)


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException) and current.args and isinstance(current.args[0], BaseException):
            nested = current.args[0]
        if not isinstance(nested, BaseException):
            nested = current.__cause__ or current.__context__
        if not isinstance(nested, BaseException):
            break
        current = nested
    return current


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


#: URLs whose prepared form a provider keeps (HttpProvider._prepare_request).
PREPARED_URLS_MAX = 64


class HttpProvider(BaseProvider):
    """Base of the HTTP providers: owns the Session, sends, maps failures.

    Subclasses set ``default_base_url`` and ``tls_hint`` and may override
    ``error_for_response`` for their own error bodies.
    """

    default_base_url: ClassVar[str] = ""
    #: Statuses the transport retries. urllib3 decides before anyone can read the body,
    #: so a provider whose 429 can mean "no quota" (never worth retrying) drops 429 here.
    retry_statuses: ClassVar[FrozenSet[int]] = RETRY_STATUSES
    tls_hint: ClassVar[str] = (
        "pass ca_bundle='/path/to/ca.pem' with the CA that signed the server's certificate"
    )

    #: The public methods whose errors are scrubbed on the way out (see __init_subclass__).
    SCRUBBED_METHODS: ClassVar[Tuple[str, ...]] = (
        "complete", "stream", "list_models", "embed", "count_tokens", "balance",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One guarantee for every HTTP provider, present and future: no error leaves a
        # public method unscrubbed, however deep the body quote that built its message
        # (a 200 answer without "choices" echoing our Authorization header, say).
        super().__init_subclass__(**kwargs)
        for name in cls.SCRUBBED_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_scrubs_errors", False):
                setattr(cls, name, _scrubbing(method))

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        if not self.base_url:
            raise ConfigurationError(f"{type(self).__name__} {self.name!r} needs base_url")
        self.session = build_session(config, self.retry_statuses)
        self._proxies: Dict[str, Dict[str, str]] = {}
        self._prepared_urls: Dict[str, str] = {}  # url -> requests' prepared (checked, quoted) form
        self._secrets = _secrets_of(config)

    def close(self) -> None:
        self.session.close()
        stop_reaper_if_idle()

    def _after_fork(self) -> None:
        """In a forked child (see forking.py): a Session of its own. The inherited one's
        pooled sockets are the parent's connections too: two processes writing to one
        keep-alive socket read each other's answers. It is dropped, not closed: its pool
        locks may have been held by a parent thread at the fork, and the garbage collector
        closes the child's copies of its sockets without them (and without a shutdown
        that would cut the parent's connections)."""
        forking.fresh_locks(self)
        self.session = build_session(self.config, self.retry_statuses)

    def probe(self, call: Callable[[], Any]) -> bool:
        """True when ``call()`` returns, False when it raises: what ``health_check`` needs.

        >>> def health_check(self, timeout=None):                       # doctest: +SKIP
        ...     return self.probe(lambda: self.list_models(timeout))
        """
        try:
            call()
            return True
        except Exception as exc:  # a health check reports, it does not fail
            reason = self.scrub(str(exc))
            logger.debug("health check of %r failed: %s", self.name, reason, extra={"provider": self.name})
            report_health_failure(f"{type(exc).__name__}: {reason}")  # shown by health_report / `health`
            return False

    # Secrets ------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this provider replaced by <redacted>: the api_key,
        secret-named ``extra`` values (such as an ``X-Api-Key`` header) and every token its
        ``TokenCache`` (``self._tokens``) has held. Some servers and proxies echo the
        credentials they received in their error messages.

        >>> provider.scrub("key sk-secret-123 rejected")                 # doctest: +SKIP
        'key <redacted> rejected'
        """
        from .auth import TokenCache  # imported already by the providers that have one

        text = scrub_secrets(text, self._secrets)
        tokens = getattr(self, "_tokens", None)
        return tokens.scrub(text) if isinstance(tokens, TokenCache) else text

    def scrub_error(self, error: ProviderError) -> ProviderError:
        """``error`` with its message scrubbed (see ``scrub``), for raising."""
        message = self.scrub(error.message)
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    def _text_stream(self, events: Iterator[Any], **kwargs: Any) -> TextStream:
        """A TextStream whose errors raised while iterating are scrubbed (by the stream
        itself: a generator wrapping the events would cost a step per event)."""
        return super()._text_stream(events, on_error=self.scrub_error, **kwargs)

    # Sending ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        json_body: Any = None,
        data: Any = None,
        headers: Optional[Dict[str, str]] = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; return a 2xx response or raise the typed error.

        ``timeout`` bounds everything together: connecting, retry waits, the headers and
        the body. Without ``stream`` the body is read here (at most
        ``config.max_response_bytes``) and ``response.content`` holds it; with ``stream``
        read it with ``iter_lines``/``lines``, which keep to the same deadline.
        """
        body = data
        send_headers = dict(headers or ())
        if json_body is not None:
            # UTF-8 on the wire as the providers' SDKs send it (no \\u escapes).
            try:
                body = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as exc:
                # A caller's value (a set, NaN, ...) in GenerationParams.extra: bad input,
                # not a provider failure (NaN would otherwise go out as invalid JSON).
                raise ConfigurationError(
                    f"the request body to {self.name!r} cannot be sent as JSON ({exc}): pass only str, "
                    "finite numbers, bool, None, lists and dicts, e.g. in GenerationParams.extra"
                ) from None
            send_headers.setdefault("Content-Type", "application/json")
        started = time.monotonic()
        deadline = _call.deadline = started + timeout
        transfer = Transfer(deadline, ProviderTimeoutError(f"no answer within {round(timeout, 3):g} s", provider=self.name))
        transfer.start()
        try:
            response = self.session.send(
                self._prepare_request(method, url, send_headers, body),
                timeout=DeadlineTimeout(min(CONNECT_TIMEOUT_CAP, timeout), timeout, deadline),
                # Always streamed: requests would read a body inside send(), where only
                # each socket read is bounded. verify and cert: send() takes the session's.
                stream=True,
                proxies=self._proxies_for(url),
                allow_redirects=False,
            )
        except _Redirected as redirected:
            response = redirected.response
        except requests.exceptions.InvalidHeader as exc:
            # Not chained: its message quotes the header value (a key or token), and a
            # logged traceback would print it.
            transfer.finish()
            raise self.map_exception(exc, timeout) from None
        except Exception as exc:
            transfer.finish()
            if transfer.error is not None:  # cut: at the deadline or abandoned
                raise self.scrub_error(_fresh(transfer.error)) from None
            raise self.map_exception(exc, timeout) from exc
        finally:
            _call.deadline = None
            transfer.sent()
        setattr(response, TRANSFER_ATTR, transfer)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %s in %.1f ms",
                method, _safe_url(url), response.status_code, (time.monotonic() - started) * 1000,
                extra={"provider": self.name},
            )
        # Rate-limit headers -> the limiter of the attempt on this thread. No limiter exists
        # unless limits.py was imported, so a provider used alone does not import it.
        limits = sys.modules.get("multi_llm_orchestrator.limits")
        if limits is not None:
            limits.report_response(response.status_code, response.headers)
        if response.status_code >= 300:
            try:
                if response.status_code < 400:
                    error = redirect_error(response, url, self.name)
                else:
                    error = self.error_for_response(response)
                error = self.scrub_error(error)
            finally:
                close_response(response)
            raise error
        if not stream:
            try:
                content = read_body(self.body_chunks(response, timeout), self.config.max_response_bytes)
            except ProviderError as error:
                raise self.scrub_error(error) from None
            response._content = content
            response._content_consumed = True
        return response

    def body_chunks(self, response: requests.Response, timeout: float) -> BodyChunks:
        """A reader of ``response``'s body under its request's deadline (see reading.py)."""
        transfer = getattr(response, TRANSFER_ATTR, None)
        return BodyChunks(
            response,
            provider=self.name,
            deadline=transfer.deadline if transfer is not None else time.monotonic() + timeout,
            timeout=timeout,
            map_exception=lambda exc: self.map_exception(exc, timeout),
        )

    def lines(self, response: requests.Response, timeout: float) -> LineReader:
        """The lines of a streamed ``response`` (from ``request(..., stream=True)``), read
        under its deadline, each at most ``config.max_response_bytes``."""
        return LineReader(self.body_chunks(response, timeout), self.config.max_response_bytes)

    def _prepare_request(
        self, method: str, url: str, headers: Dict[str, str], body: Any
    ) -> requests.PreparedRequest:
        """What ``Session.request`` would send, built without its per-call merging of
        params, proxies and environment settings (each merge costs runtime-protocol
        checks in requests): session headers, then ours; session cookies only if any."""
        merged = CaseInsensitiveDict(self.session.headers)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        # PreparedRequest.prepare's steps, in its order, with the URL's (parsing, IDNA,
        # quoting: a pure function of the URL) done once per URL.
        prepared.prepare_method(method)
        prepared_url = self._prepared_urls.get(url)
        if prepared_url is None:
            prepared.prepare_url(url, None)
            if len(self._prepared_urls) >= PREPARED_URLS_MAX:  # URLs with ids in them: start over
                self._prepared_urls = {}
            self._prepared_urls[url] = prepared.url
        else:
            prepared.url = prepared_url
        prepared.prepare_headers(merged)
        prepared.prepare_cookies(self.session.cookies if len(self.session.cookies) else None)
        prepared.prepare_body(body, None, None)
        prepared.prepare_auth(self.session.auth, url)
        prepared.prepare_hooks({"response": [_stop_at_redirect]})
        return prepared

    def bearer_headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """``extra`` plus ``Authorization: Bearer <api_key>`` when a key is configured, for
        providers whose key is a plain bearer token. Build it once, at construction."""
        headers = dict(extra or {})
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def get_json(self, path: str, timeout: Optional[float], headers: Optional[Dict[str, str]] = None) -> Any:
        """``GET {base_url}{path}`` parsed as JSON, within ``self._timeout(timeout)``."""
        return self.request_json("GET", self.base_url + path, timeout=self._timeout(timeout), headers=headers)

    def request_json(self, method: str, url: str, *, timeout: float, **kwargs: Any) -> Any:
        """``request`` then parse the JSON body (ResponseFormatError if it is not JSON)."""
        return self.read_json(self.request(method, url, timeout=timeout, **kwargs), timeout)

    def read_json(self, response: requests.Response, timeout: float, *, preview: bool = True) -> Any:
        """Read, parse and close a 2xx ``response`` from ``request`` (typed errors only).

        For providers that wrap ``request`` (e.g. to add a token) but parse as ``request_json``;
        ``preview=False`` for a body that may hold a credential (see ``parse_json``).
        """
        try:
            return self.parse_json(response.content, preview=preview)
        except ProviderError as exc:
            raise self.scrub_error(exc)
        except Exception as exc:  # body read failed mid-way
            raise error_from_exception(exc, provider=self.name, timeout=timeout, tls_hint=self.tls_hint) from exc
        finally:
            response.close()

    def stream_lines(self, method: str, url: str, *, timeout: float, **kwargs: Any) -> Iterator[str]:
        """Send a streaming request and yield its lines (UTF-8) as they arrive.

        ``timeout`` bounds the whole stream, not only each read; the connection is
        released when the iterator ends, fails or is closed.
        """
        return self.lines(self.request(method, url, timeout=timeout, stream=True, **kwargs), timeout)

    def parse_json(self, content: bytes, *, preview: bool = True) -> Any:
        """``content`` parsed as JSON; ResponseFormatError quoting its start unless
        ``preview`` is False (a token answer: its start would be part of the token)."""
        try:
            return json.loads(content)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            shown = f": {content[:80].decode('utf-8', 'replace')!r}" if preview else " (body not shown)"
            raise ResponseFormatError(
                f"the response is not valid JSON ({exc.__class__.__name__}){shown}", provider=self.name
            ) from None

    def error_for_response(self, response: requests.Response) -> ProviderError:
        """The typed error for a non-2xx response. Subclasses refine provider quirks."""
        body, text = self.read_error_body(response)
        return error_from_status(
            response.status_code,
            error_message_from_body(body, text),
            provider=self.name,
            retry_after=parse_retry_after(response.headers),
        )

    @staticmethod
    def read_error_body(response: requests.Response) -> Tuple[Any, str]:
        """The error body as parsed JSON (or None) and as text, never raising. Only its
        first ``ERROR_BODY_PREFIX`` bytes are read, under the request's deadline."""
        try:
            raw = _error_prefix(response)
        except Exception:
            return None, ""
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text), text
        except (ValueError, RecursionError):
            return None, text

    def map_exception(self, exc: BaseException, timeout: float) -> ProviderError:
        """The typed, scrubbed error for an exception raised while talking."""
        return self.scrub_error(
            error_from_exception(exc, provider=self.name, timeout=timeout, tls_hint=self.tls_hint)
        )

    def _proxies_for(self, url: str) -> Dict[str, str]:
        host = urlsplit(url).netloc
        proxies = self._proxies.get(host)
        if proxies is None:
            proxies = requests.utils.get_environ_proxies(url)
            self._proxies[host] = proxies
        return proxies


def _error_prefix(response: requests.Response) -> bytes:
    content = getattr(response, "_content", False)
    if content is not False:  # already read (a body read in full, or a prefix read before)
        return content or b""
    transfer = getattr(response, TRANSFER_ATTR, None)
    chunks = BodyChunks(
        response,
        provider="",
        deadline=transfer.deadline if transfer is not None else None,
        timeout=None,
        map_exception=lambda exc: ProviderError(str(exc)),
    )
    prefix = read_prefix(chunks)
    response._content = prefix
    response._content_consumed = True
    return prefix


def _fresh(error: ProviderError) -> ProviderError:
    """A new instance of ``error`` to raise: one cut error may end several requests."""
    return copy.copy(error)


def _scrubbing(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` whose ProviderErrors leave scrubbed (``HttpProvider.scrub_error``)."""

    @functools.wraps(method)
    def call(self: "HttpProvider", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ProviderError as exc:
            raise self.scrub_error(exc)

    call._scrubs_errors = True  # type: ignore[attr-defined]
    return call


class _Redirected(Exception):
    """Carries a 3xx response out of ``Session.send`` (see ``_stop_at_redirect``)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _stop_at_redirect(response: requests.Response, **kwargs: Any) -> requests.Response:
    # Even with allow_redirects=False, Session.send prepares the next request from the
    # Location header, and a malformed one ("http://[::1") raises a bare ValueError
    # there. A response hook runs first: hand the 3xx straight to request().
    if 300 <= response.status_code < 400:
        raise _Redirected(response)
    return response


def _secrets_of(config: ProviderConfig) -> Tuple[str, ...]:
    """The secret values of ``config``, longest first: ``api_key`` and the string values
    of ``extra`` keys that config's repr hides (the same name rule: "X-Api-Key" in
    ``extra["headers"]``, ``access_token``, ...). For "Bearer <key>"-like values the bare
    key counts too."""
    found = set()

    def add(value: Any) -> None:
        if isinstance(value, str):
            for candidate in (value.strip(), value.strip().rpartition(" ")[2]):
                if len(candidate) >= MIN_SECRET_LENGTH:
                    found.add(candidate)

    def walk(extra: Mapping[Any, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict):
                walk(value)
            elif is_secret_key(key):
                add(value)

    add(config.api_key)
    walk(config.extra)
    # As a server may echo them: JSON with "/" escaped (base64 keys have "/"), URL-encoded.
    found |= {variant for secret in found for variant in (secret.replace("/", "\\/"), quote(secret, safe=""))}
    return tuple(sorted(found, key=len, reverse=True))


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
