"""State shared by a fleet of processes through Redis (optional extra:
``pip install 'multi-llm-orchestrator[redis]'``).

    router = Router(state=RedisState("redis://cache.internal:6379/0", prefix="myapp:mlo:"))

Every process of a fleet that builds its Router with the same Redis and prefix shares:

- circuit breakers: failures are counted fleet-wide, the open-until time lives in Redis,
  and the half-open probe is a lease (``SET NX PX``) so exactly one process probes;
- bearer tokens (GigaChat OAuth, YandexGPT ``token_provider``): one fetch for the whole
  fleet under a short lock; the others wait for it (within their deadline) or use the
  still-valid token. Stored encrypted (see ``TokenStore``), with a TTL equal to the
  token's life;
- rate limits (rpm, tpm, max_concurrency) and budgets of admission control, each
  decision one Lua script (``redis_limits.py``);
- the round-robin position, the hedge budget and health results;
- the response cache (``Router(cache=...)``), with single-flight across processes.

Each decision is one atomic round trip (a Lua script or a single command); the clock
is Redis's ``TIME``, so hosts need not agree on the time.

When Redis is down, slow or flapping, every piece falls back to its in-memory
counterpart: calls go on (one WARNING per outage), each operation is bounded by a short
socket ``timeout`` (and skipped, for local state, when the call's deadline is closer than
that), Redis is tried again after ``retry_interval`` seconds, and the shared state is
used again as soon as it answers. Metrics stay per process.

Keys all start with ``prefix``; they hold provider names and hashes, never a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisState needs redis-py: pip install 'multi-llm-orchestrator[redis]'"
    ) from exc

from . import forking
from .auth import Fetch
from .cache import MemoryResponseStore, ResponseStore
from .breaker import HALF_OPEN, NORMAL, OPEN, PROBE, BreakerPolicy, CircuitBreaker
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from .health import HealthResult
from .hedging import HedgeBudget
from .state import HealthStore, LocalSequence, State, time_to_deadline
from .validation import check_number

__all__ = ["RedisState", "TokenStore"]

logger = logging.getLogger("multi_llm_orchestrator.redis")

T = TypeVar("T")
SHARED_PROBE = "shared-probe:"  # + the lease's token: the probe reserved in Redis
POLL_S = 0.005  # how often a waiter looks for a token or a cached answer
KEY_TTL_MS = 24 * 3600 * 1000  # breaker and counter keys of a provider gone quiet expire
NO_EXPIRY_TOKEN_MS = 12 * 3600 * 1000  # a token valid "until a 401" is kept at most this long
PROBING_RECHECK_MS = 50  # while another process probes, this one asks Redis again after this long

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: breaker hash, probe lease. ARGV: force, lease ms, lease token.
# -> {reservation or '', state, failures, ms until a probe may go}
BREAKER_RESERVE = _NOW + """
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'failures')
local failures = tonumber(h[3]) or 0
if h[1] ~= 'open' then return {'normal', 'closed', failures, 0} end
local open_until = tonumber(h[2]) or 0
if now >= open_until then
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return {'probe', 'half-open', failures, 0} end
  return {'', 'half-open', failures, 0}
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  return {'probe', 'open', failures, open_until - now}
end
return {'', 'open', failures, open_until - now}
"""

# KEYS: breaker hash, probe lease. ARGV: probe?, lease token, fixed cooldown ms (-1: none),
# threshold, cooldown ms, multiplier, max cooldown ms, key ttl ms. -> {state, failures, ms open}
BREAKER_FAILURE = _NOW + """
if ARGV[1] == '1' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'trips')
local state = h[1] or 'closed'
local open_until = tonumber(h[2]) or 0
local trips = tonumber(h[3]) or 0
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local fixed = tonumber(ARGV[3])
local trip
if state == 'closed' then trip = fixed >= 0 or failures >= tonumber(ARGV[4]) else trip = ARGV[1] == '1' end
if trip then
  local backoff = math.floor(math.min(tonumber(ARGV[5]) * tonumber(ARGV[6]) ^ math.min(trips, 64), tonumber(ARGV[7])))
  if fixed >= 0 then backoff = fixed end
  open_until = now + backoff
  state = 'open'
  redis.call('HSET', KEYS[1], 'state', 'open', 'trips', trips + 1, 'open_until', open_until)
elseif fixed >= 0 then
  open_until = math.max(open_until, now + fixed)
  redis.call('HSET', KEYS[1], 'open_until', open_until)
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if state ~= 'open' then return {state, failures, 0} end
if now >= open_until then return {'half-open', failures, 0} end
return {'open', failures, open_until - now}
"""

# KEYS: breaker hash, probe lease. ARGV: probe?, lease token.
BREAKER_SUCCESS = """
if ARGV[1] == '1' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: breaker hash. -> {state, failures, ms open}
BREAKER_PEEK = _NOW + """
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'failures')
local failures = tonumber(h[3]) or 0
if h[1] ~= 'open' then return {'closed', failures, 0} end
local open_until = tonumber(h[2]) or 0
if now >= open_until then return {'half-open', failures, 0} end
return {'open', failures, open_until - now}
"""

# KEYS: key. ARGV: token. Deletes the key only if it still holds our token.
COMPARE_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: key. -> {value or false, ms to live}
GET_WITH_TTL = """
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

# KEYS: bucket key prefix. ARGV: 'call' or 'hedge', window s, share, reserve. -> 1 if allowed
HEDGE_BUDGET = """
local t = redis.call('TIME')
local second = tonumber(t[1])
local window = tonumber(ARGV[2])
local bucket = KEYS[1] .. second
if ARGV[1] == 'call' then
  redis.call('HINCRBY', bucket, 'calls', 1)
  redis.call('EXPIRE', bucket, window + 2)
  return 1
end
local calls, hedges = 0, 0
for s = second - window + 1, second do
  local h = redis.call('HMGET', KEYS[1] .. s, 'calls', 'hedges')
  calls = calls + (tonumber(h[1]) or 0)
  hedges = hedges + (tonumber(h[2]) or 0)
end
if hedges + 1 > tonumber(ARGV[3]) * calls + tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBY', bucket, 'hedges', 1)
redis.call('EXPIRE', bucket, window + 2)
return 1
"""


# KEYS: entry, index. ARGV: value, ttl ms, max entries. The index (a sorted set by
# insertion time) bounds the number of entries: the oldest beyond the bound are deleted.
CACHE_PUT = _NOW + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisUnavailable(Exception):
    """Redis did not answer (or is in a known outage): use the local state instead."""


class _Link:
    """One Redis client and the outage bookkeeping: while Redis fails, ``run`` raises
    ``RedisUnavailable`` at once (without a network round trip) for ``retry_interval``
    seconds, then tries again. One WARNING when an outage starts, one INFO when it ends."""

    def __init__(self, client: "redis.Redis", retry_interval: float, where: str, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.where = where
        self._lock = threading.Lock()
        self._outage = False
        self._retry_at = 0.0

    def script(self, source: str) -> Any:
        return self.client.register_script(source)

    def run(self, operation: Callable[[], T]) -> T:
        if self._outage and time.monotonic() < self._retry_at:
            raise RedisUnavailable()
        left = time_to_deadline()
        if left is not None and left < self.timeout:
            # A round trip that may take the whole socket timeout could outlive the call:
            # this decision is made on local state instead (not an outage).
            raise RedisUnavailable()
        try:
            result = operation()
        except Exception as exc:  # RedisError, OSError, and redis-py's own slips mid-outage
            # (a ValueError from a socket closed under it): never the caller's LLM call's failure.
            self._failed(exc)
            raise RedisUnavailable() from None
        if self._outage:
            self._recovered()
        return result

    @property
    def down(self) -> bool:
        return self._outage

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first = not self._outage
            self._outage = True
            self._retry_at = time.monotonic() + self.retry_interval
        if first:
            # Idle connections to a restarted server are all dead: start afresh next time
            # (those in use by other threads fail on their own).
            try:
                self.client.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # pragma: no cover - best effort
                pass
            logger.warning(
                "Redis at %s is unavailable (%s); using this process's local state until it answers again",
                self.where, type(exc).__name__, extra={"redis": self.where, "error_type": type(exc).__name__},
            )

    def _recovered(self) -> None:
        with self._lock:
            if not self._outage:
                return
            self._outage = False
        logger.info("Redis at %s answers again; shared state resumes", self.where, extra={"redis": self.where})


class RedisState(State):
    """Breakers, tokens, round-robin, hedge budget, health results and the response cache
    shared through one Redis (see the module docstring).

    - ``url``: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    - ``prefix``: the start of every key (default ``"mlo:"``); fleets sharing one Redis
      for different purposes use different prefixes.
    - ``timeout``: seconds any one Redis operation may take (default 0.1); longer, and
      the call goes on with local state.
    - ``retry_interval``: seconds to stay on local state after Redis failed (default 1).
    - ``probe_lease``: seconds a half-open probe reservation is held at most, should the
      process holding it die (default 30).
    - ``token_secret``: the secret to encrypt stored tokens with when the provider has no
      credential of its own (a YandexGPT ``token_provider``); without it such tokens are
      only obfuscated.
    - ``client``: a ready ``redis.Redis`` to use instead of ``url`` (tests, Sentinel).

    >>> router = Router(state=RedisState("redis://127.0.0.1:6379/0"))      # doctest: +SKIP
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        prefix: str = "mlo:",
        timeout: float = 0.1,
        retry_interval: float = 1.0,
        probe_lease: float = 30.0,
        token_secret: Optional[str] = None,
        client: Optional["redis.Redis"] = None,
    ) -> None:
        check_number("timeout", timeout, 0, low_open=True, kind="a number of seconds")
        check_number("retry_interval", retry_interval, 0, kind="a number of seconds")
        check_number("probe_lease", probe_lease, 0, low_open=True, kind="a number of seconds")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a string; got {type(prefix).__name__}")
        if client is None:
            if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ConfigurationError(
                    "RedisState needs a URL like 'redis://host:6379/0' (rediss:// for TLS, unix:// for a socket)"
                )
            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One immediate retry: it reconnects a pooled connection that a Redis
                # restart left dead; more would only lengthen an outage's first call.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        self.prefix = prefix
        self.timeout = timeout
        self.probe_lease = probe_lease
        self._where = _public_address(url) if url else repr(client)
        self._link = _Link(client, retry_interval, self._where, timeout)
        self._token_secret = token_secret
        self._scripts: Dict[str, Any] = {}
        forking.register(self)

    def _after_fork(self) -> None:
        """In a forked child (forking.py): connections and locks of its own."""
        self._link.client.connection_pool.reset()
        forking.fresh_locks(self._link)

    def script(self, source: str) -> Any:
        """A registered Lua script (EVALSHA, reloaded after a Redis restart)."""
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self._link.script(source)
        return found

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def link(self) -> _Link:
        return self._link

    # The pieces -------------------------------------------------------------------

    def breaker(self, provider: str, policy: BreakerPolicy) -> CircuitBreaker:
        return SharedBreaker(policy, self, provider)

    def sequence(self, name: str) -> Any:
        return SharedSequence(self, self.key("seq", name))

    def hedge_budget(self, share: float, window: float, reserve: int) -> HedgeBudget:
        return SharedHedgeBudget(self, share, window, reserve)

    def health_store(self) -> Optional[HealthStore]:
        return RedisHealthStore(self)

    def limiter(self, provider: str, limits: Any) -> Any:
        from .redis_limits import RedisLimiter

        return RedisLimiter(self, provider, limits)

    def ledger(self, scope: str, budget: Any) -> Any:
        from .redis_limits import RedisBudgetLedger

        return RedisBudgetLedger(self, scope, budget)

    def attach(self, provider: Any) -> None:
        sharing = provider.token_sharing()
        if sharing is None:
            return
        tokens, identity, secret = sharing
        tokens.share(TokenStore(self, identity, secret if secret else self._token_secret, owner=provider.name))

    def response_store(self, ttl: float, max_entries: int) -> ResponseStore:
        return RedisResponseStore(self, ttl, max_entries)

    def close(self) -> None:
        try:
            self._link.client.close()
        except Exception:  # pragma: no cover - best effort
            pass

    def __repr__(self) -> str:
        return f"RedisState({self._where!r}, prefix={self.prefix!r})"


def _public_address(url: str) -> str:
    """The URL without its password (for logs and reprs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _ms(seconds: float) -> int:
    return max(1, int(min(seconds, 10 ** 9) * 1000))


class SharedBreaker(CircuitBreaker):
    """A ``CircuitBreaker`` whose state lives in Redis; while Redis is unavailable it
    works as the in-memory breaker it extends.

    ``is_available`` and ``remaining`` read a mirror of the state as Redis last reported
    it (no round trip while planning); ``reserve`` asks Redis, and a success costs no
    round trip while the breaker is closed without failures.
    """

    def __init__(self, policy: BreakerPolicy, state: RedisState, provider: str) -> None:
        super().__init__(policy)
        self._shared = state
        self._keys = [state.key("breaker", provider), state.key("breaker", provider, "probe")]
        self._mirror: Tuple[str, int, float] = ("closed", 0, 0.0)  # state, failures, open until (monotonic)

    def _remember(self, state: str, failures: int, open_ms: int) -> None:
        self._mirror = (state, int(failures), time.monotonic() + int(open_ms) / 1000)

    def _shared_state(self) -> Optional[Tuple[str, int, float]]:
        return None if self._shared.link.down else self._mirror

    def is_available(self) -> bool:
        mirror = self._shared_state()
        if mirror is None or not self.policy.enabled:
            return super().is_available()
        return mirror[0] != OPEN or time.monotonic() >= mirror[2]

    def remaining(self) -> float:
        mirror = self._shared_state()
        if mirror is None:
            return super().remaining()
        return max(0.0, mirror[2] - time.monotonic()) if mirror[0] == OPEN else 0.0

    def reserve(self, force: bool = False) -> Optional[str]:
        if not self.policy.enabled:
            return NORMAL
        token = uuid.uuid4().hex
        script = self._shared.script(BREAKER_RESERVE)
        try:
            reply = self._shared.link.run(
                lambda: script(keys=self._keys, args=["1" if force else "0", _ms(self._shared.probe_lease), token])
            )
        except RedisUnavailable:
            return super().reserve(force)
        reservation, state, failures, open_ms = (_text(reply[0]), _text(reply[1]), reply[2], reply[3])
        if not reservation and state == HALF_OPEN:
            # Another process holds the probe: plan around this provider for a moment
            # rather than asking Redis (and recording a skip) on every call meanwhile.
            state, open_ms = OPEN, PROBING_RECHECK_MS
        self._remember(state, failures, open_ms)
        if reservation == "probe":
            return SHARED_PROBE + token
        return NORMAL if reservation == "normal" else None

    def release(self, reservation: Optional[str] = PROBE) -> None:
        if reservation and reservation.startswith(SHARED_PROBE):
            self._end_lease(reservation)
        else:
            super().release(reservation)

    def _end_lease(self, reservation: str) -> None:
        script = self._shared.script(COMPARE_DELETE)
        try:
            self._shared.link.run(lambda: script(keys=[self._keys[1]], args=[reservation[len(SHARED_PROBE):]]))
        except RedisUnavailable:
            pass  # the lease expires on its own

    def record_success(self, reservation: Optional[str] = PROBE) -> None:
        probe = bool(reservation and reservation.startswith(SHARED_PROBE))
        if not probe and self._mirror[:2] == ("closed", 0) and not self._shared.link.down:
            return  # nothing to reset: the common case costs no round trip
        script = self._shared.script(BREAKER_SUCCESS)
        token = reservation[len(SHARED_PROBE):] if probe else ""
        try:
            self._shared.link.run(lambda: script(keys=self._keys, args=["1" if probe else "0", token]))
        except RedisUnavailable:
            super().record_success(None if probe else reservation)
            return
        self._mirror = ("closed", 0, 0.0)

    def record_failure(self, error: BaseException, reservation: Optional[str] = PROBE) -> None:
        policy = self.policy
        probe = bool(reservation and reservation.startswith(SHARED_PROBE))
        if not policy.enabled or isinstance(error, InvalidRequestError):
            if probe:
                self._end_lease(reservation)  # type: ignore[arg-type]
            else:
                super().record_failure(error, reservation)
            return
        if isinstance(error, (AuthenticationError, QuotaExceededError)):
            fixed = _ms(policy.auth_cooldown)
        elif isinstance(error, RateLimitError) and error.retry_after:
            fixed = _ms(error.retry_after)
        else:
            fixed = -1
        script = self._shared.script(BREAKER_FAILURE)
        args = [
            "1" if probe else "0", reservation[len(SHARED_PROBE):] if probe else "", fixed,
            policy.failure_threshold, _ms(policy.cooldown), repr(float(policy.cooldown_multiplier)),
            _ms(policy.max_cooldown), KEY_TTL_MS,
        ]
        try:
            reply = self._shared.link.run(lambda: script(keys=self._keys, args=args))
        except RedisUnavailable:
            super().record_failure(error, None if probe else reservation)
            return
        self._remember(_text(reply[0]), reply[1], reply[2])

    @property
    def state(self) -> str:
        return str(self.snapshot()["state"])

    def snapshot(self) -> Dict[str, object]:
        script = self._shared.script(BREAKER_PEEK)
        try:
            reply = self._shared.link.run(lambda: script(keys=self._keys[:1]))
        except RedisUnavailable:
            return {**super().snapshot(), "shared": False}
        state, failures, open_ms = _text(reply[0]), int(reply[1]), int(reply[2])
        self._remember(state, failures, open_ms)
        return {"state": state, "consecutive_failures": failures, "open_for_s": round(open_ms / 1000, 3), "shared": True}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class SharedSequence:
    """The round-robin position as one Redis counter (``INCR``); a local counter while
    Redis is unavailable."""

    def __init__(self, state: RedisState, key: str) -> None:
        self._state = state
        self._key = key
        self._local = LocalSequence()

    def next(self) -> int:
        try:
            return int(self._state.link.run(lambda: self._state.link.client.incr(self._key))) - 1
        except RedisUnavailable:
            return self._local.next()


class SharedHedgeBudget(HedgeBudget):
    """The hedge budget counted fleet-wide in one-second buckets in Redis; the local
    budget it extends while Redis is unavailable."""

    def __init__(self, state: RedisState, share: float, window: float, reserve: int) -> None:
        super().__init__(share, window, reserve)
        self._state = state
        self._prefix = state.key("hedge", "")
        self._window = max(1, int(window))

    def _run(self, kind: str) -> Optional[bool]:
        script = self._state.script(HEDGE_BUDGET)
        args = [kind, self._window, repr(float(self.share)), self.reserve]
        try:
            return bool(self._state.link.run(lambda: script(keys=[self._prefix], args=args)))
        except RedisUnavailable:
            return None

    def record_call(self) -> None:
        if self._run("call") is None:
            super().record_call()

    def try_spend(self) -> bool:
        allowed = self._run("hedge")
        return super().try_spend() if allowed is None else allowed


class RedisHealthStore(HealthStore):
    """Health results under ``<prefix>health:<provider>``, expiring after the TTL."""

    def __init__(self, state: RedisState) -> None:
        self._state = state

    def get(self, name: str) -> Optional[Tuple[HealthResult, float]]:
        script = self._state.script(GET_WITH_TTL)
        try:
            raw, pttl = self._state.link.run(lambda: script(keys=[self._state.key("health", name)]))
        except RedisUnavailable:
            return None
        if not raw or pttl is None or int(pttl) <= 0:
            return None
        try:
            data = json.loads(raw)
            result = HealthResult(name, bool(data["healthy"]), float(data["latency_s"]), data.get("error"))
            age = max(0.0, float(data["ttl"]) - int(pttl) / 1000)
        except (ValueError, KeyError, TypeError):
            return None
        return result, age

    def claim(self, name: str, seconds: float) -> bool:
        key = self._state.key("health", name, "checking")
        try:
            return bool(self._state.link.run(lambda: self._state.link.client.set(key, "1", nx=True, px=_ms(seconds))))
        except RedisUnavailable:
            return True

    def put(self, result: HealthResult, ttl: float) -> None:
        value = json.dumps({"healthy": result.healthy, "latency_s": result.latency_s, "error": result.error, "ttl": ttl})
        try:
            self._state.link.run(
                lambda: self._state.link.client.set(self._state.key("health", result.provider), value, px=_ms(ttl))
            )
        except RedisUnavailable:
            pass


class TokenStore:
    """A bearer token shared by a fleet (``TokenCache.share``).

    Stored under ``<prefix>token:<sha256 of the credential's description>`` with a TTL
    equal to the token's remaining life, encrypted with a key derived from the
    provider's credential (GigaChat's authorization key) or ``token_secret``: a Redis
    dump or ``MONITOR`` alone does not give out usable tokens. (Without either secret, the
    key is derived from the key name: obfuscation only; set ``token_secret``.) The cipher
    is SHA-256 in counter mode with an HMAC-SHA256 tag, from the standard library.

    A process that needs a token reads Redis; when there is no valid token (or it is the
    one just rejected with a 401), it takes a lock (``SET NX PX``) and fetches one for
    everybody; the others poll for it until their deadline.
    """

    def __init__(self, state: RedisState, identity: str, secret: Optional[str], *, owner: Optional[str] = None) -> None:
        self._state = state
        self._owner = owner
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]
        self._key = state.key("token", digest)
        self._lock_key = state.key("token", digest, "lock")
        material = (secret or self._key).encode("utf-8")
        self._cipher_key = hmac.new(material, b"multi-llm-orchestrator token cache", hashlib.sha256).digest()

    def fetch(self, fetch: Fetch, deadline: float, rejected: Optional[str]) -> Tuple[str, Optional[float]]:
        link = self._state.link
        get = self._state.script(GET_WITH_TTL)
        release = self._state.script(COMPARE_DELETE)
        try:
            while True:
                raw, pttl = link.run(lambda: get(keys=[self._key]))
                value = self.decrypt(raw) if raw else None
                if value is not None and value != rejected and int(pttl) > 0:
                    return value, int(pttl) / 1000
                if value is not None and value == rejected:
                    link.run(lambda: release(keys=[self._key], args=[raw]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProviderTimeoutError("timed out waiting for the fleet's access token", provider=self._owner)
                owner = uuid.uuid4().hex
                if link.run(lambda: self._state.link.client.set(self._lock_key, owner, nx=True, px=_ms(min(left, 30.0)))):
                    # The lock may have been freed by a process that stored a new token
                    # after our read: that token is the fleet's, not a reason to fetch again.
                    raw, pttl = link.run(lambda: get(keys=[self._key]))
                    value = self.decrypt(raw) if raw else None
                    if value is not None and value != rejected and int(pttl) > 0:
                        link.run(lambda: release(keys=[self._lock_key], args=[owner]))
                        return value, int(pttl) / 1000
                    break
                time.sleep(min(POLL_S * 2, left))
        except RedisUnavailable:
            return fetch(deadline)
        try:
            started = time.monotonic()
            value, lifetime = fetch(deadline)
            left_ms = NO_EXPIRY_TOKEN_MS if lifetime is None else int((lifetime - (time.monotonic() - started)) * 1000)
            if left_ms > 0:
                sealed = self.encrypt(value)
                link.run(lambda: link.client.set(self._key, sealed, px=left_ms))
        except RedisUnavailable:
            pass
        finally:
            try:
                link.run(lambda: release(keys=[self._lock_key], args=[owner]))
            except RedisUnavailable:
                pass  # the lock expires on its own
        return value, lifetime

    def _stream(self, nonce: bytes, length: int) -> bytes:
        blocks = []
        for counter in range((length + 31) // 32):
            blocks.append(hashlib.sha256(self._cipher_key + nonce + counter.to_bytes(4, "big")).digest())
        return b"".join(blocks)[:length]

    def encrypt(self, value: str) -> str:
        plain = value.encode("utf-8")
        nonce = os.urandom(16)
        sealed = bytes(a ^ b for a, b in zip(plain, self._stream(nonce, len(plain))))
        tag = hmac.new(self._cipher_key, nonce + sealed, hashlib.sha256).digest()[:16]
        return base64.b64encode(nonce + sealed + tag).decode("ascii")

    def decrypt(self, stored: Any) -> Optional[str]:
        """The token, or None when ``stored`` is not one of ours (another secret, tampered)."""
        try:
            data = base64.b64decode(stored, validate=True)
        except (ValueError, TypeError):
            return None
        if len(data) < 32:
            return None
        nonce, sealed, tag = data[:16], data[16:-16], data[-16:]
        if not hmac.compare_digest(tag, hmac.new(self._cipher_key, nonce + sealed, hashlib.sha256).digest()[:16]):
            return None
        plain = bytes(a ^ b for a, b in zip(sealed, self._stream(nonce, len(sealed))))
        return plain.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"TokenStore({self._key!r})"


class RedisResponseStore(ResponseStore):
    """Cached answers under ``<prefix>cache:<sha256 of the request>`` for ``ttl`` s, at most
    ``max_entries`` of them; the producer's claim is ``<key>:flight`` (``SET NX PX``).
    While Redis is unavailable: an in-memory store, and every claim is granted."""

    def __init__(self, state: RedisState, ttl: float, max_entries: int) -> None:
        self._state = state
        self._ttl_ms = _ms(ttl)
        self._max_entries = max_entries
        self._index = state.key("cache", "index")
        self._local = MemoryResponseStore(ttl, max_entries)

    def _key(self, key: str) -> str:
        return self._state.key("cache", key)

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            raw = self._state.link.run(lambda: self._state.link.client.get(self._key(key)))
        except RedisUnavailable:
            return self._local.get(key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: Dict[str, Any]) -> None:
        script = self._state.script(CACHE_PUT)
        value = json.dumps(entry, ensure_ascii=False)
        try:
            self._state.link.run(lambda: script(keys=[self._key(key), self._index], args=[value, self._ttl_ms, self._max_entries]))
        except RedisUnavailable:
            self._local.put(key, entry)

    def claim(self, key: str, seconds: float) -> Optional[str]:
        token = uuid.uuid4().hex
        try:
            taken = self._state.link.run(
                lambda: self._state.link.client.set(self._key(key) + ":flight", token, nx=True, px=_ms(seconds))
            )
        except RedisUnavailable:
            return token
        return token if taken else None

    def unclaim(self, key: str, token: str) -> None:
        script = self._state.script(COMPARE_DELETE)
        try:
            self._state.link.run(lambda: script(keys=[self._key(key) + ":flight"], args=[token]))
        except RedisUnavailable:
            pass

    def claimed(self, key: str) -> bool:
        try:
            return bool(self._state.link.run(lambda: self._state.link.client.exists(self._key(key) + ":flight")))
        except RedisUnavailable:
            return False
