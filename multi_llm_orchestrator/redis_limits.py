"""Fleet-wide rate limits and budgets in Redis: the ``Limiter`` and ``BudgetLedger`` of
``limits.py``/``budgets.py`` with every decision one Lua script (one round trip).

The semantics are the in-memory ones, made fleet-wide:

- A request holds its ``rpm`` slot (and its tokens their ``tpm`` share) from ``acquire``
  until ``window`` seconds after ``release`` (a sorted set of finished requests by
  release time, on Redis's clock), so no ``window``-long interval of the server's clock
  sees more than ``rpm`` starts from the whole fleet.
- A budget holds the expected cost of each running call, spends the real cost at the
  end, and refuses a call that could overspend: the fleet stays within one call's cost.
- Requests in flight and budget holds carry a lease (``LEASE_S``): a process that dies
  holding one frees it after that long instead of forever.

While Redis is unavailable, each object works as the in-memory one it extends.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

from .budgets import Budget, MemoryBudgetLedger, _period_end, _period_key
from .limits import (
    DEFAULT_429_PAUSE,
    MAX_SERVER_PAUSE,
    Limits,
    MemoryLimiter,
    Refusal,
    Reservation,
    _remaining_and_reset,
)

if TYPE_CHECKING:
    from .redis_state import RedisState

__all__ = ["RedisLimiter", "RedisBudgetLedger"]

LEASE_S = 600.0  # a request in flight or a budget hold left by a dead process expires

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: state hash, flight zset (id -> lease end), done zset (id -> release time), tokens hash.
_LIMITER_TIDY = _NOW + """
local window = tonumber(ARGV[1])
local function drop(zset, upto, field)
  local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', upto)
  for _, id in ipairs(ids) do
    local n = tonumber(redis.call('HGET', KEYS[4], id)) or 0
    redis.call('HINCRBY', KEYS[1], field, -n)
    redis.call('HDEL', KEYS[4], id)
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', zset, '-inf', upto) end
end
drop(KEYS[3], now - window, 'done_tokens')
drop(KEYS[2], now, 'flight_tokens')
"""

# ARGV: window ms, id, tokens, rpm, tpm, max concurrency (-1: none), lease ms.
# -> {1} granted, or {0, reason, a, b}: see RedisLimiter._refusal.
LIMITER_ACQUIRE = _LIMITER_TIDY + """
local tokens = tonumber(ARGV[3])
local rpm, tpm, conc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'blocked_until', 'flight_tokens', 'done_tokens',
                     'req_left', 'req_reset', 'tok_left', 'tok_reset')
local blocked = tonumber(s[1]) or 0
local flight_tokens, done_tokens = tonumber(s[2]) or 0, tonumber(s[3]) or 0
local flight, done = redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])
if blocked > now then return {0, 'blocked', blocked - now, 0} end
if conc >= 0 and flight >= conc then return {0, 'concurrency', flight, 0} end
if rpm >= 0 and flight + done >= rpm then
  local excess = flight + done - rpm + 1
  if excess > done then return {0, 'rpm', -1, 0} end
  local entry = redis.call('ZRANGE', KEYS[3], excess - 1, excess - 1, 'WITHSCORES')
  return {0, 'rpm', math.max(0, tonumber(entry[2]) + window - now), 0}
end
if tpm >= 0 then
  if tokens > tpm then return {0, 'tpm_never', tokens, 0} end
  local used = flight_tokens + done_tokens
  if used + tokens > tpm then
    local excess, freed, wait = used + tokens - tpm, 0, -1
    local entries = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[4], entries[i])) or 0)
      if freed >= excess then wait = math.max(0, tonumber(entries[i + 1]) + window - now) break end
    end
    return {0, 'tpm', wait, used}
  end
end
local req_left, req_reset = tonumber(s[4]), tonumber(s[5]) or 0
local tok_left, tok_reset = tonumber(s[6]), tonumber(s[7]) or 0
if req_left and req_reset > now and req_left < 1 then return {0, 'server_requests', req_reset - now, math.max(req_left, 0)} end
if tok_left and tok_reset > now and tok_left < math.max(tokens, 1) then
  return {0, 'server_tokens', tok_reset - now, math.max(tok_left, 0)}
end
if req_left then redis.call('HINCRBY', KEYS[1], 'req_left', -1) end
if tok_left then redis.call('HINCRBY', KEYS[1], 'tok_left', -tokens) end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], tokens)
redis.call('HINCRBY', KEYS[1], 'flight_tokens', tokens)
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], math.max(window, tonumber(ARGV[7])) + 60000) end
return {1}
"""

# ARGV: window ms, id, sent (1/0).
LIMITER_RELEASE = _LIMITER_TIDY + """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then return 0 end
local n = tonumber(redis.call('HGET', KEYS[4], ARGV[2])) or 0
redis.call('HINCRBY', KEYS[1], 'flight_tokens', -n)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'done_tokens', n)
else
  redis.call('HDEL', KEYS[4], ARGV[2])
end
return 1
"""

# ARGV: window ms, id, tokens.
LIMITER_RECONCILE = _LIMITER_TIDY + """
local old = tonumber(redis.call('HGET', KEYS[4], ARGV[2]))
if not old then return 0 end
local delta = tonumber(ARGV[3]) - old
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'flight_tokens', delta)
else
  redis.call('HINCRBY', KEYS[1], 'done_tokens', delta)
end
return 1
"""

# ARGV: window ms, pause ms (penalize) | or: 'signal', what, remaining, reset ms.
LIMITER_SIGNAL = _NOW + """
if ARGV[1] == 'pause' then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until')) or 0
  redis.call('HSET', KEYS[1], 'blocked_until', math.max(blocked, now + tonumber(ARGV[2])))
else
  redis.call('HSET', KEYS[1], ARGV[2] .. '_left', ARGV[3], ARGV[2] .. '_reset', now + tonumber(ARGV[4]))
end
redis.call('PEXPIRE', KEYS[1], 3600000 * 2)
return 1
"""

# ARGV: window ms. -> {in flight, done, tokens in window, blocked ms}
LIMITER_PEEK = _LIMITER_TIDY + """
local s = redis.call('HMGET', KEYS[1], 'blocked_until', 'flight_tokens', 'done_tokens')
return {redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        (tonumber(s[2]) or 0) + (tonumber(s[3]) or 0), math.max(0, (tonumber(s[1]) or 0) - now)}
"""


def _ms(seconds: float) -> int:
    return max(0, int(min(seconds, 10 ** 9) * 1000))


def _optional(value: Optional[int]) -> int:
    return -1 if value is None else int(value)


class RedisLimiter(MemoryLimiter):
    """A ``Limiter`` shared by every process on one Redis (see the module docstring)."""

    def __init__(self, state: "RedisState", provider: str, limits: Limits) -> None:
        super().__init__(limits)
        self._shared = state
        self._keys = [state.key("limits", provider, part) for part in ("state", "flight", "done", "tokens")]
        self._window_ms = _ms(limits.window)

    def _run(self, source: str, args: list) -> Any:
        from .redis_state import RedisUnavailable

        script = self._shared.script(source)
        try:
            return self._shared.link.run(lambda: script(keys=self._keys, args=args))
        except RedisUnavailable:
            return None

    def acquire(self, tokens: int = 0) -> Union[Reservation, Refusal]:
        tokens = max(0, int(tokens))
        limits, ident = self.limits, uuid.uuid4().hex
        reply = self._run(LIMITER_ACQUIRE, [
            self._window_ms, ident, tokens, _optional(limits.rpm), _optional(limits.tpm),
            _optional(limits.max_concurrency), _ms(LEASE_S),
        ])
        if reply is None:
            return super().acquire(tokens)
        if int(reply[0]) == 1:
            return Reservation(tokens, time.monotonic(), {"shared": ident})
        return self._refusal(_text(reply[1]), int(reply[2]), int(reply[3]), tokens)

    def _refusal(self, reason: str, wait_ms: int, detail: int, tokens: int) -> Refusal:
        limits = self.limits
        wait = None if wait_ms < 0 else wait_ms / 1000
        if reason == "blocked":
            return Refusal("the server asked to slow down (429)", wait)
        if reason == "concurrency":
            return Refusal(f"max_concurrency {limits.max_concurrency} reached ({wait_ms} in flight, fleet-wide)")
        if reason == "rpm":
            return Refusal(f"rpm {limits.rpm} reached (fleet-wide)", wait)
        if reason == "tpm_never":
            return Refusal(f"this call's {tokens} estimated tokens exceed tpm {limits.tpm}", math.inf)
        if reason == "tpm":
            return Refusal(f"tpm {limits.tpm} reached ({detail} used, {tokens} needed, fleet-wide)", wait)
        what = "requests" if reason == "server_requests" else "tokens"
        return Refusal(f"the server reports {detail} {what} remaining", wait)

    def reconcile(self, reservation: Reservation, tokens: int) -> None:
        ident = reservation.data.get("shared")
        if ident is None:
            return super().reconcile(reservation, tokens)
        reservation.tokens = max(0, int(tokens))
        self._run(LIMITER_RECONCILE, [self._window_ms, ident, reservation.tokens])

    def release(self, reservation: Reservation, *, sent: bool = True) -> None:
        ident = reservation.data.get("shared")
        if ident is None:
            return super().release(reservation, sent=sent)
        if reservation.released:
            return
        reservation.released = True
        self._run(LIMITER_RELEASE, [self._window_ms, ident, "1" if sent else "0"])  # lost: the lease frees it

    def penalize(self, retry_after: Optional[float]) -> None:
        pause = DEFAULT_429_PAUSE if retry_after is None else min(max(0.0, retry_after), MAX_SERVER_PAUSE)
        if self._run(LIMITER_SIGNAL, ["pause", _ms(pause)]) is None:
            super().penalize(retry_after)

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        for what, key in (("requests", "req"), ("tokens", "tok")):
            signal = _remaining_and_reset(headers, what)
            if signal is not None and self._run(LIMITER_SIGNAL, ["signal", key, signal[0], _ms(signal[1])]) is None:
                super().update_from_headers(headers)
                return

    def snapshot(self) -> Dict[str, Any]:
        reply = self._run(LIMITER_PEEK, [self._window_ms])
        if reply is None:
            return {**super().snapshot(), "shared": False}
        flight, done, tokens, blocked_ms = (int(value) for value in reply)
        return {
            "in_flight": flight, "requests_in_window": flight + done, "tokens_in_window": tokens,
            "blocked_for_s": round(blocked_ms / 1000, 3), "shared": True,
            **{k: v for k, v in self.limits.to_dict().items() if k in ("rpm", "tpm", "max_concurrency")},
        }

    def __repr__(self) -> str:
        return f"RedisLimiter({self.limits!r})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS: spend hash (spent, held), holds zset (id -> lease end), costs hash (id -> cost),
# entries zset (rolling budgets: id -> spend time). ARGV[1]: rolling period ms (0: calendar).
_LEDGER_TIDY = _NOW + """
local period = tonumber(ARGV[1])
local function drop(zset, upto, field)
  local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', upto)
  for _, id in ipairs(ids) do
    local c = tonumber(redis.call('HGET', KEYS[3], id)) or 0
    redis.call('HINCRBYFLOAT', KEYS[1], field, -c)
    redis.call('HDEL', KEYS[3], id)
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', zset, '-inf', upto) end
end
drop(KEYS[2], now, 'held')
if period > 0 then
  drop(KEYS[4], now - period, 'spent')
  if redis.call('ZCARD', KEYS[4]) == 0 then redis.call('HSET', KEYS[1], 'spent', 0) end
end
"""

# ARGV: period ms, id, cost, limit, lease ms, key ttl ms. -> {1} or {0, spent, held, wait ms or -1}
LEDGER_ACQUIRE = _LEDGER_TIDY + """
local s = redis.call('HMGET', KEYS[1], 'spent', 'held')
local spent, held = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local cost, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
if spent + held + cost > limit + 1e-12 then
  local wait = -1
  if period > 0 then
    local excess, freed = spent + held + cost - limit, 0
    local entries = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[3], entries[i])) or 0)
      if freed >= excess - 1e-12 then wait = math.max(0, tonumber(entries[i + 1]) + period - now) break end
    end
  end
  return {0, tostring(spent), tostring(held), wait}
end
redis.call('HINCRBYFLOAT', KEYS[1], 'held', cost)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[6]) end
return {1}
"""

# ARGV: period ms, id, cost spent (-1: release without spending), spend id, key ttl ms.
LEDGER_SETTLE = _LEDGER_TIDY + """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  local c = tonumber(redis.call('HGET', KEYS[3], ARGV[2])) or 0
  redis.call('HINCRBYFLOAT', KEYS[1], 'held', -c)
  redis.call('HDEL', KEYS[3], ARGV[2])
end
local cost = tonumber(ARGV[3])
if cost >= 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'spent', cost)
  if period > 0 then
    redis.call('ZADD', KEYS[4], now, ARGV[4])
    redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
  end
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return 1
"""

# ARGV: period ms. -> spent
LEDGER_SPENT = _LEDGER_TIDY + """
return tostring(tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0)
"""


class RedisBudgetLedger(MemoryBudgetLedger):
    """A ``BudgetLedger`` shared by every process on one Redis. A calendar budget keeps
    one set of keys per period (named by it, expiring after it); a rolling one keeps its
    spends in a sorted set by time (Redis's clock)."""

    def __init__(self, state: "RedisState", scope: str, budget: Budget) -> None:
        super().__init__(budget)
        self._shared = state
        self._scope = scope

    def _keys(self) -> "tuple[list, int, int]":
        """Keys of the current period, the rolling period in ms (0: calendar), key TTL ms."""
        budget = self.budget
        if budget.rolling:
            name = f"rolling{_ms(budget.period)}"  # type: ignore[arg-type]
            period_ms, ttl_ms = _ms(budget.period), _ms(budget.period) + _ms(LEASE_S) + 60_000  # type: ignore[arg-type]
        else:
            now = time.time()
            name = "-".join(str(part) for part in _period_key(now, budget)) + f"@{budget.utc_offset:g}"
            period_ms, ttl_ms = 0, _ms(_period_end(now, budget) - now) + 3_600_000
        base = ("budget", self._scope, name)
        keys = [self._shared.key(*base, part) for part in ("spend", "holds", "costs", "entries")]
        return keys, period_ms, ttl_ms

    def _run(self, source: str, args_after_period: list) -> Any:
        from .redis_state import RedisUnavailable

        keys, period_ms, ttl_ms = self._keys()
        script = self._shared.script(source)
        args = [period_ms, *[ttl_ms if arg is _TTL else arg for arg in args_after_period]]
        try:
            return self._shared.link.run(lambda: script(keys=keys, args=args))
        except RedisUnavailable:
            return None

    def acquire(self, cost: float) -> Union[Reservation, Refusal]:
        cost = max(0.0, float(cost)) if math.isfinite(cost) else math.inf
        if math.isinf(cost):  # never fits: say why without a round trip's arithmetic on inf
            spent = self.spent()
            return Refusal(f"{self.budget.describe()} reached ({spent:.4f} spent)", self._wait_calendar())
        ident = uuid.uuid4().hex
        reply = self._run(LEDGER_ACQUIRE, [ident, repr(cost), repr(float(self.budget.limit)), _ms(LEASE_S), _TTL])
        if reply is None:
            return super().acquire(cost)
        if int(reply[0]) == 1:
            return Reservation(0, time.time(), {"cost": cost, "shared": ident})
        spent, held, wait_ms = float(reply[1]), float(reply[2]), int(reply[3])
        wait = (None if wait_ms < 0 else wait_ms / 1000) if self.budget.rolling else self._wait_calendar()
        return Refusal(
            f"{self.budget.describe()} reached ({spent:.4f} spent, {held:.4f} held, this call may cost {cost:.4f}; fleet-wide)",
            wait,
        )

    def _wait_calendar(self) -> Optional[float]:
        if self.budget.rolling:
            return None
        now = time.time()
        return _period_end(now, self.budget) - now

    def reconcile(self, hold: Reservation, cost: float) -> None:
        ident = hold.data.get("shared")
        if ident is None:
            return super().reconcile(hold, cost)
        if hold.released:
            return
        hold.released = True
        cost = max(0.0, float(cost)) if math.isfinite(cost) else 0.0
        if self._run(LEDGER_SETTLE, [ident, repr(cost), uuid.uuid4().hex, _TTL]) is None:
            super().reconcile(Reservation(0, 0.0, {"cost": 0.0}), cost)  # spent locally at least

    def release(self, hold: Reservation) -> None:
        ident = hold.data.get("shared")
        if ident is None:
            return super().release(hold)
        if hold.released:
            return
        hold.released = True
        self._run(LEDGER_SETTLE, [ident, "-1", "", _TTL])

    def spent(self) -> float:
        reply = self._run(LEDGER_SPENT, [])
        return super().spent() if reply is None else float(reply)

    def __repr__(self) -> str:
        return f"RedisBudgetLedger({self.budget!r})"


_TTL = object()  # placeholder in script arguments for the period keys' TTL
