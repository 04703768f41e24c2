"""A response cache with single-flight: identical requests are answered once.

Opt-in: ``Router(cache=True)`` (or a ``ResponseCache`` with its settings) caches every
call that may be cached; ``complete(..., cache=True)`` opts one call in, ``cache=False``
bypasses the cache for one call. Rules:

- The key is the request's content, independent of the provider: the messages and the
  ``GenerationParams`` (tools and response format included). ``per_provider=True`` adds
  the Router's providers and models to it.
- Exact match only; entries live ``ttl`` seconds, at most ``max_entries`` of them (the
  least recently used go first). In memory by default; in Redis with ``RedisState``.
- Single-flight: concurrent identical calls make one provider call; the others wait for
  its answer within their own deadlines (across processes too, with ``RedisState``).
  A stream is cached as its full text and replayed as a stream.
- Never cached: failures; answers with tool calls (unless ``tool_calls=True``); calls
  with ``temperature`` above 0 (unless ``sampled=True``: such a call then neither reads
  nor fills the cache, each caller wants its own sample).
- A hit is a ``Completion`` with ``cached=True`` and no attempts; ``Router.stats()``
  counts ``cache_hits`` and ``cache_misses`` (and the Prometheus collector exports them).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import forking
from .errors import ConfigurationError, DeadlineExceededError
from .state import call_deadline
from .types import Completion, GenerationParams, Message, ReasoningDelta, StreamEnd, TextStream, ToolCall, Usage
from .validation import check_int, check_number

__all__ = ["ResponseCache", "ResponseStore", "MemoryResponseStore", "Responses"]

logger = logging.getLogger("multi_llm_orchestrator.cache")

KEY_VERSION = "v1"  # bump when the key's content changes, so old entries are not read
POLL_S = 0.005  # how often a waiter looks for another process's answer
MAX_CLAIM_S = 60.0  # a producer that died frees its claim after at most this long


@dataclass(frozen=True)
class ResponseCache:
    """Settings of the response cache (see the module docstring).

    - ``ttl``: seconds an answer stays cached (default 3600).
    - ``max_entries``: answers kept at most (default 10 000).
    - ``per_provider``: key on the Router's providers and models too (default False).
    - ``tool_calls``: cache answers that carry tool calls (default False).
    - ``sampled``: cache calls with ``temperature`` above 0 (default False).
    - ``enabled``: False: only calls with ``cache=True`` use it.

    >>> Router(cache=ResponseCache(ttl=600))                          # doctest: +SKIP
    """

    ttl: float = 3600.0
    max_entries: int = 10_000
    per_provider: bool = False
    tool_calls: bool = False
    sampled: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        check_number("ttl", self.ttl, 0, low_open=True, kind="a number of seconds")
        check_int("max_entries", self.max_entries, 1)
        for name in ("per_provider", "tool_calls", "sampled", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"cache setting {name} must be True or False; got {getattr(self, name)!r}")

    @classmethod
    def from_value(cls, value: "ResponseCache | Mapping[str, Any] | bool | None") -> "ResponseCache":
        """Accept settings, a dict of them, True (defaults) or False/None (only per call)."""
        if isinstance(value, cls):
            return value
        if value is None or value is False:
            return cls(enabled=False)
        if value is True:
            return cls()
        if isinstance(value, Mapping):
            try:
                return cls(**value)
            except TypeError:
                valid = ", ".join(cls.__dataclass_fields__)
                raise ConfigurationError(f"Unknown cache setting in {sorted(value)}; valid: {valid}") from None
        raise ConfigurationError(f"cache must be a ResponseCache, a dict or a bool; got {type(value).__name__}")


class ResponseStore:
    """Where cached answers live. ``claim`` makes one process the producer of a key
    (in memory there is only this process: always granted)."""

    def get(self, key: str) -> Optional[Dict[str, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, key: str, entry: Dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def claim(self, key: str, seconds: float) -> Optional[str]:
        """A token if this process should produce ``key`` now, None if another does."""
        return "local"

    def unclaim(self, key: str, token: str) -> None:
        """Give the claim back (after ``put``, so waiters find the answer)."""

    def claimed(self, key: str) -> bool:
        """Whether another process still holds the claim on ``key``."""
        return False


class MemoryResponseStore(ResponseStore):
    """Answers in this process: an LRU of at most ``max_entries``, each for ``ttl`` s."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: "OrderedDict[str, Tuple[float, Dict[str, Any]]]" = OrderedDict()
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if self._clock() >= found[0]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: str, entry: Dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, entry)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class _Flight:
    """One answer being produced in this process, awaited by identical calls."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None
        self.uncacheable = False


class _Ticket:
    """The right (and duty) to produce one key's answer: ``succeed`` or ``fail`` once."""

    def __init__(self, responses: "Responses", key: str, flight: _Flight, token: str) -> None:
        self._responses = responses
        self._key = key
        self._flight = flight
        self._token = token
        self._over = False

    def succeed(self, entry: Optional[Dict[str, Any]]) -> None:
        if entry is not None:
            self._responses.store.put(self._key, entry)
        self._flight.entry = entry
        self._flight.uncacheable = entry is None
        self._end()

    def fail(self, error: Optional[BaseException]) -> None:
        self._flight.error = error
        self._end()

    def _end(self) -> None:
        if self._over:
            return
        self._over = True
        self._responses._landed(self._key, self._flight)
        self._responses.store.unclaim(self._key, self._token)


class Responses:
    """The Router's side of the cache: decides per call, serves hits, runs single-flight."""

    def __init__(self, settings: ResponseCache, make_store: Callable[[float, int], ResponseStore],
                 count: Callable[[str], None], on_hit: Optional[Callable[..., None]] = None) -> None:
        self.settings = settings
        self._make_store = make_store
        self._store: Optional[ResponseStore] = None
        self._count = count
        #: on_hit(streaming, messages, params, answer, latency): a hit served (listeners, tracer)
        self._on_hit = on_hit
        self._flights: Dict[str, _Flight] = {}
        self._lock = threading.Lock()
        forking.register(self)

    def _after_fork(self) -> None:
        # Calls in flight in the parent's threads never finish in a forked child: their
        # waiters there would wait for nothing.
        forking.fresh_locks(self)
        self._flights = {}

    @property
    def store(self) -> ResponseStore:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._make_store(self.settings.ttl, self.settings.max_entries)
                store = self._store
        return store

    # Deciding ------------------------------------------------------------------------

    def key(
        self, messages: List[Message], params: GenerationParams, use: Optional[bool], providers: Sequence[Any] = ()
    ) -> Optional[str]:
        """The cache key of this call, or None when the call must not use the cache.
        ``providers``: the Router's ``ProviderState``s (keyed on with ``per_provider``)."""
        if use is False or (use is None and not self.settings.enabled):
            return None
        if use is not None and not isinstance(use, bool):
            raise ConfigurationError(f"cache must be True, False or None; got {use!r}")
        if params.temperature and not self.settings.sampled:
            return None
        content: Dict[str, Any] = {
            "messages": [message.to_dict() for message in messages],
            "params": {name: value for name, value in params.to_dict().items() if value not in (None, {}, [])},
        }
        if self.settings.per_provider:
            content["providers"] = [(state.name, state.provider.model) for state in providers]
        import hashlib  # here: loading OpenSSL is import time every Router would pay for the cache

        text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
        return f"{KEY_VERSION}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"

    def _storable(self, tool_calls: Any) -> bool:
        return not tool_calls or self.settings.tool_calls

    # Serving -------------------------------------------------------------------------

    def _lookup(
        self, messages: List[Message], params: GenerationParams, use: Optional[bool],
        budget: Optional[float], providers: Sequence[Any],
    ) -> Tuple[Optional[Dict[str, Any]], Optional[_Ticket], float]:
        """The cached entry, or the ticket to produce it (neither: call the providers
        without the cache), and when the lookup started. Shared by complete and stream."""
        started = time.monotonic()
        key = self.key(messages, params, use, providers)
        if key is None:
            return None, None, started
        with call_deadline(None if budget is None else started + budget):
            entry, ticket = self._acquire(key, started, budget)
        return entry, ticket, started

    def complete(
        self, messages: List[Message], params: GenerationParams, use: Optional[bool],
        budget: Optional[float], providers: Sequence[Any], produce: Callable[[], Completion],
    ) -> Completion:
        entry, ticket, started = self._lookup(messages, params, use, budget, providers)
        if entry is not None:
            completion = _completion_of(entry, time.monotonic() - started)
            if self._on_hit is not None:
                self._on_hit(False, messages, params, completion, completion.latency_s)
            return completion
        if ticket is None:
            return produce()
        try:
            completion = produce()
        except BaseException as exc:
            ticket.fail(exc)
            raise
        ticket.succeed(_entry_of(completion) if self._storable(completion.tool_calls) else None)
        return completion

    def stream(
        self, messages: List[Message], params: GenerationParams, use: Optional[bool],
        budget: Optional[float], providers: Sequence[Any], produce: Callable[[], TextStream],
    ) -> TextStream:
        entry, ticket, started = self._lookup(messages, params, use, budget, providers)
        if entry is not None:
            replayed = _replay(entry)
            if self._on_hit is not None:
                self._on_hit(True, messages, params, replayed, time.monotonic() - started)
            return replayed
        if ticket is None:
            return produce()
        try:
            stream = produce()
        except BaseException as exc:
            ticket.fail(exc)
            raise
        return self._recording(stream, ticket)

    def _recording(self, stream: TextStream, ticket: _Ticket) -> TextStream:
        """``stream`` as it is, whose full text is cached once it ends well."""

        def events() -> Iterator[Union[str, StreamEnd]]:
            ended = False
            try:
                yield from stream.events()  # text and reasoning pieces, as they arrive
                ended = True
                yield StreamEnd(stream.usage, stream.finish_reason, stream.model, stream.tool_calls or None)
            except BaseException as exc:
                ticket.fail(exc if isinstance(exc, Exception) else None)
                raise
            finally:
                if ended and self._storable(stream.tool_calls):
                    ticket.succeed(_entry_of(stream))
                elif ended:
                    ticket.succeed(None)
                else:  # closed early: nothing to cache; waiters produce their own
                    ticket.fail(None)

        def close() -> None:
            stream.close()
            ticket.fail(None)

        recorded = TextStream(events(), provider=stream.provider, model=stream.model, on_close=close)
        recorded.attempts = stream.attempts
        return recorded

    def _acquire(self, key: str, started: float, budget: Optional[float]) -> Tuple[Optional[Dict[str, Any]], Optional[_Ticket]]:
        """(cached entry, None) on a hit; (None, ticket) to produce the answer; (None,
        None) to produce it without the cache (the producer's answer was not cacheable)."""
        deadline = None if budget is None else started + budget
        store = self.store
        while True:
            entry = store.get(key)
            if entry is not None:
                return self._hit(entry)
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
            assert flight is not None
            if not leader:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not flight.done.wait(left):
                    raise DeadlineExceededError([], budget or 0.0)
                if flight.entry is not None:
                    return self._hit(flight.entry)
                if flight.uncacheable:
                    self._count("cache_misses")
                    return None, None
                error = flight.error
                if error is not None and not isinstance(error, DeadlineExceededError):
                    raise copy.copy(error)
                continue  # the producer gave up (its deadline, a closed stream): try again
            return self._claim(key, flight, deadline, budget)

    def _claim(self, key: str, flight: _Flight, deadline: Optional[float], budget: Optional[float]) -> Tuple[Optional[Dict[str, Any]], Optional[_Ticket]]:
        """Leader in this process: become the fleet's producer, or wait for the one there is."""
        store = self.store
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            token = store.claim(key, min(MAX_CLAIM_S, left) if left is not None else MAX_CLAIM_S)
            if token is not None:
                # The answer may have landed, and its claim been given back, between this
                # call's miss and its claim (a slow or preempted process): look once more
                # rather than call the provider a second time.
                entry = store.get(key)
                if entry is not None:
                    store.unclaim(key, token)
                    return self._share(key, flight, entry)
                self._count("cache_misses")
                return None, _Ticket(self, key, flight, token)
            while store.claimed(key):
                entry = store.get(key)
                if entry is not None:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    failure = DeadlineExceededError([], budget or 0.0)
                    flight.error = failure
                    self._landed(key, flight)
                    raise failure
                time.sleep(POLL_S)
            entry = store.get(key)
            if entry is not None:
                return self._share(key, flight, entry)

    def _share(self, key: str, flight: _Flight, entry: Dict[str, Any]) -> Tuple[Dict[str, Any], None]:
        """Another process's answer, found by this process's leader: a hit for it and its waiters."""
        flight.entry = entry
        self._landed(key, flight)
        return self._hit(entry)

    def _hit(self, entry: Dict[str, Any]) -> Tuple[Dict[str, Any], None]:
        for name in ("calls", "succeeded", "cache_hits"):  # a hit is a call answered
            self._count(name)
        return entry, None

    def _landed(self, key: str, flight: _Flight) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()


def _entry_of(answer: Union[Completion, TextStream]) -> Dict[str, Any]:
    """A finished answer (a Completion or an exhausted stream) as plain JSON data."""
    return {
        "text": answer.text, "provider": answer.provider, "model": answer.model,
        "usage": asdict(answer.usage) if answer.usage else None, "finish_reason": answer.finish_reason,
        "tool_calls": [asdict(call) for call in answer.tool_calls or ()], "reasoning": answer.reasoning,
    }


def _usage_of(entry: Dict[str, Any]) -> Usage:
    data = entry.get("usage")
    if not isinstance(data, dict):
        return Usage()
    try:
        return Usage(**{name: int(data[name]) for name in Usage.__dataclass_fields__ if name in data})
    except (TypeError, ValueError):
        return Usage()


def _tool_calls_of(entry: Dict[str, Any]) -> List[ToolCall]:
    try:
        return [ToolCall(**call) for call in entry.get("tool_calls") or ()]
    except (TypeError, ConfigurationError):
        return []


def _completion_of(entry: Dict[str, Any], latency: float) -> Completion:
    return Completion(
        str(entry.get("text", "")), str(entry.get("provider", "")), str(entry.get("model", "")),
        _usage_of(entry), entry.get("finish_reason"), latency, [], _tool_calls_of(entry), entry.get("reasoning"),
        cached=True,
    )


def _replay(entry: Dict[str, Any]) -> TextStream:
    """A cached answer as a stream: its reasoning and text, then what the provider had reported."""
    events: List[Union[str, StreamEnd]] = []
    if entry.get("reasoning"):
        events.append(ReasoningDelta(entry["reasoning"]))
    events.append(str(entry.get("text", "")))
    events.append(StreamEnd(_usage_of(entry), entry.get("finish_reason"), entry.get("model"), _tool_calls_of(entry) or None))
    stream = TextStream(iter(events), provider=str(entry.get("provider", "")), model=str(entry.get("model", "")))
    stream.cached = True
    return stream
