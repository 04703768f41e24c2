"""Embeddings through the Router: one embedding space, batches, parallel, failover per batch.

``Router.embed`` composes this module with the Router's own machinery: the plan
(strategy order, breakers, skips) for each batch, ``calls.try_in_turn`` for the
fallback of one batch, the ``Call`` for the deadline, the attempt list, metrics and
listeners, and the Router's executor for parallel batches.

The rules:

- **Embedding spaces.** Vectors of different models live in different spaces and must
  never be mixed. Providers are grouped by ``provider.embedding_space``
  (``ProviderConfig.embedding_space``, default ``"<type>:<embedding model>"``). One call
  uses one space: the only one, or the one named by ``space=``. Fallback stays inside
  it; no batch ever goes to a provider of another space.
- **Batches.** The texts are cut, in order, into batches within the strictest limits
  (texts per request, characters per request) of the space's providers, so any of them
  can take any batch.
- **Parallel, under the deadline.** Up to ``max_parallel`` batches run at once on the
  Router's executor; each attempt gets the time left of the Router's timeout, and the
  caller waits no longer than that timeout even for a provider that ignores it (a
  single batch without a timeout runs on the caller's thread).
- **Partial failover.** A batch that fails on one provider is retried on the next
  provider of the space; batches that succeeded are never sent again. When a batch
  fails on every provider, the call fails (``AllProvidersFailedError``) and batches not
  started yet are not sent.

- **Admission.** Each batch is admitted like a chat attempt (``admission.EmbeddingDemand``:
  its texts' estimated tokens, no answer, the embedding model's price): limits,
  budgets, skip or wait.

Embeddings never hedge: a batch is retried after a failure, not raced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from .admission import EmbeddingDemand, NoCapacityYet
from .calls import DEADLINE_SLACK_S, AttemptRun, Call, try_in_turn
from .errors import ConfigurationError, NoProvidersError, OrchestratorError, ProviderTimeoutError, ResponseFormatError
from .providers.base import BaseProvider, EmbeddingLimits
from .strategies import ProviderState
from .types import Embeddings, Usage
from .validation import check_int

__all__ = ["EmbeddingJob", "embedding_spaces", "split_batches"]

logger = logging.getLogger("multi_llm_orchestrator.embeddings")

# (the space's providers, a batch's demand) -> (the order to try them in, the one forced)
Plan = Callable[[Sequence[ProviderState], EmbeddingDemand], Tuple[List[ProviderState], Optional[ProviderState]]]
Batch = Tuple[int, List[str]]  # (position of its first text in the input, its texts)


def spaces_of(states: Sequence[ProviderState]) -> Dict[str, List[ProviderState]]:
    """The providers that can embed, by embedding space, in the order they were added."""
    spaces: Dict[str, List[ProviderState]] = {}
    for state in states:
        space = state.provider.embedding_space
        if space is not None:
            spaces.setdefault(space, []).append(state)
    return spaces


def embedding_spaces(states: Sequence[ProviderState]) -> Dict[str, List[str]]:
    """{space: [provider names]} (what ``Router.embedding_spaces()`` returns)."""
    return {space: [state.name for state in members] for space, members in spaces_of(states).items()}


def split_batches(texts: Sequence[str], limits: EmbeddingLimits) -> List[Batch]:
    """``texts`` cut in order into batches of at most ``limits.max_texts`` texts and
    ``limits.max_chars`` characters (a single longer text goes alone: the provider
    decides whether to truncate it or refuse).

    >>> split_batches(["a", "bb", "c"], EmbeddingLimits(max_texts=2, max_chars=100))
    [(0, ['a', 'bb']), (2, ['c'])]
    """
    lengths = list(map(len, texts))
    batches: List[Batch] = []
    start, count = 0, len(texts)
    while start < count:
        end = min(start + limits.max_texts, count)
        if sum(lengths[start:end]) > limits.max_chars:  # fewer texts: fill up to the size limit
            end, chars = start + 1, lengths[start]
            while end < count and end - start < limits.max_texts and chars + lengths[end] <= limits.max_chars:
                chars += lengths[end]
                end += 1
        batches.append((start, list(texts[start:end])))
        start = end
    return batches


class EmbeddingJob:
    """One ``Router.embed`` call: its space, its batches, and how to run them."""

    def __init__(self, space: str, states: List[ProviderState], batches: List[Batch], purpose: Optional[str],
                 max_parallel: int) -> None:
        self.space = space
        self.states = states
        self.batches = batches
        self.purpose = purpose
        self.max_parallel = max_parallel
        self._lock = threading.Lock()
        self._next = 0
        self._running_on: Dict[int, str] = {}  # batch -> provider it is on now
        self._wait_limit: Optional[float] = None  # admission="wait" without a deadline: when to give up

    @classmethod
    def prepare(
        cls,
        texts: Sequence[str],
        states: Sequence[ProviderState],
        *,
        space: Optional[str],
        purpose: Optional[str],
        max_parallel: int,
    ) -> "EmbeddingJob":
        """Check the input, choose the space and cut the batches (no request yet)."""
        texts = BaseProvider._embedding_input(texts, purpose)
        check_int("max_parallel", max_parallel, 1)
        spaces = spaces_of(states)
        if not spaces:
            raise NoProvidersError(
                "No provider of this Router can embed: add one with an embeddings API (GigaChat, YandexGPT, "
                "Ollama, OpenAI-compatible or Mock)"
            )
        listing = "; ".join(f"{name!r}: {', '.join(s.name for s in members)}" for name, members in spaces.items())
        if space is None:
            if len(spaces) > 1:
                raise ConfigurationError(
                    f"This Router has {len(spaces)} embedding spaces ({listing}); vectors of different spaces "
                    "cannot be compared, so pass space=<one of them> to router.embed"
                )
            space = next(iter(spaces))
        elif space not in spaces:
            raise ConfigurationError(f"No embedding space {space!r}; this Router has {listing}")
        members = spaces[space]
        limits = [state.provider.batch_limits() for state in members]
        strictest = EmbeddingLimits(min(l.max_texts for l in limits), min(l.max_chars for l in limits))
        return cls(space, members, split_batches(texts, strictest), purpose, max_parallel)

    def run(
        self, call: Call, *, plan: Plan, pool: Callable[[], ThreadPoolExecutor], closing: Optional[Future] = None
    ) -> Embeddings:
        """Run every batch (in parallel when there are several) and join the vectors.
        ``closing`` completes when the Router closes (see ``hedging.race``)."""
        try:
            admission = call.admission
            if admission is not None:
                admission.check_budget()  # the Router's budget spent: nothing is sent
                if admission.mode == "wait":  # a batch without capacity waits for it
                    call.waiting, self._wait_limit = True, admission.wait_limit(call)
            results = self._run_all(call, plan, pool, closing)
            return self._joined(call, results)
        except BaseException as exc:
            call.abort(exc)  # no-op when call.failed already reported it
            raise

    # Running ------------------------------------------------------------------------------

    def _run_all(
        self, call: Call, plan: Plan, pool: Callable[[], ThreadPoolExecutor], closing: Optional[Future] = None
    ) -> List[Tuple[Embeddings, AttemptRun]]:
        results: List[Optional[Tuple[Embeddings, AttemptRun]]] = [None] * len(self.batches)
        if len(self.batches) == 1 and call.deadline is None:  # nothing to wait for: no pool hop
            results[0] = self._run_batch(call, plan, 0)
            return results  # type: ignore[return-value]
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set() and not call.over:
                index = self._take()
                if index is None:
                    return
                results[index] = self._run_batch(call, plan, index)

        executor = pool()
        futures: List[Future] = []
        try:
            for _ in range(min(self.max_parallel, len(self.batches))):
                futures.append(executor.submit(worker))
        except RuntimeError:  # close() shut the pool meanwhile
            stop.set()
            raise OrchestratorError("This Router is closed: create a new one") from None
        remaining = call.remaining()
        # The grace lets an attempt given the last of the budget report its own timeout.
        timeout = None if remaining is None else max(0.0, remaining) + 5 * DEADLINE_SLACK_S
        done, pending = self._wait(futures, timeout, closing)
        stop.set()
        if closing is not None and closing.done():
            wait([future for future in futures if not future.cancelled()], timeout=timeout)  # cut by close()
            raise OrchestratorError("This Router was closed during the call: create a new one")
        for future in futures:
            if future in done and future.cancelled():
                raise OrchestratorError("This Router was closed during the call: create a new one")
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        if pending:
            with self._lock:
                running = dict(self._running_on)
            errors = [
                ProviderTimeoutError(
                    f"batch {index + 1} of {len(self.batches)} ({len(self.batches[index][1])} texts) was still "
                    f"running when the Router timeout ran out", provider=name)
                for index, name in sorted(running.items())
            ]
            raise call.failed(errors, deadline_hit=True)
        return results  # type: ignore[return-value]

    @staticmethod
    def _wait(
        futures: List[Future], timeout: Optional[float], closing: Optional[Future]
    ) -> Tuple[Set[Future], Set[Future]]:
        """``wait(futures, timeout, FIRST_EXCEPTION)`` that also returns once ``closing``
        completes: shutdown(cancel_futures=True) cancels queued workers without waking
        ``wait()``."""
        if closing is None:
            return wait(futures, timeout=timeout, return_when=FIRST_EXCEPTION)
        until = None if timeout is None else time.monotonic() + timeout
        pending = set(futures)
        while pending and not closing.done():
            left = None if until is None else max(0.0, until - time.monotonic())
            finished, _ = wait(pending | {closing}, timeout=left, return_when=FIRST_COMPLETED)
            finished.discard(closing)
            if not finished and not closing.done():
                break  # timed out
            pending -= finished
            if any(not future.cancelled() and future.exception() is not None for future in finished):
                break
        return set(futures) - pending, pending

    def _take(self) -> Optional[int]:
        with self._lock:
            if self._next >= len(self.batches):
                return None
            self._next += 1
            return self._next - 1

    def _run_batch(self, call: Call, plan: Plan, index: int) -> Tuple[Embeddings, AttemptRun]:
        texts = self.batches[index][1]

        def invoke(provider: BaseProvider, remaining: Optional[float]) -> Embeddings:
            with self._lock:
                self._running_on[index] = provider.name
            return _checked(provider.embed(texts, purpose=self.purpose, timeout=remaining), len(texts), provider.name)

        result, attempt = self._attempt(call, plan, invoke, EmbeddingDemand(texts))
        with self._lock:
            self._running_on.pop(index, None)
        attempt.finish(None, result.usage, result)
        return result, attempt

    def _attempt(self, call: Call, plan: Plan, invoke: Callable[[BaseProvider, Optional[float]], Embeddings],
                 demand: EmbeddingDemand) -> Tuple[Embeddings, AttemptRun]:
        """One batch tried over the space's providers in turn; with ``admission="wait"``,
        tried again when capacity may be back (as a call would be, though batches do not
        queue behind calls)."""
        admission = call.admission
        while True:
            order, forced = plan(self.states, demand)  # "cheapest" ranks by the batch's cost
            generation = admission.generation() if call.waiting else 0  # type: ignore[union-attr]
            try:
                return try_in_turn(call, order, forced, invoke, demand=demand)
            except NoCapacityYet:  # only a waiting call's pass ends so
                admission.pause(call, self._wait_limit, generation)  # type: ignore[union-attr]

    # Joining ------------------------------------------------------------------------------

    def _joined(self, call: Call, results: List[Tuple[Embeddings, AttemptRun]]) -> Embeddings:
        sizes = {result.dimensions: result.provider for result, _ in results}
        if len(sizes) > 1:
            shown = ", ".join(f"{provider}: {size}" for size, provider in sizes.items())
            raise ConfigurationError(
                f"The providers of embedding space {self.space!r} returned vectors of different sizes ({shown}): "
                "they are not one space; give them different ProviderConfig.embedding_space names"
            )
        vectors: List[List[float]] = []
        made: Counter = Counter()
        prompt = total = 0
        for result, _ in results:
            vectors.extend(result.vectors)
            made[result.provider] += len(result.vectors)
            prompt += result.usage.prompt_tokens
            total += result.usage.total_tokens
        # Counter.most_common keeps first-seen order among ties: the earliest batch wins.
        provider = made.most_common(1)[0][0]
        result, attempt = next((r, a) for r, a in reversed(results) if r.provider == provider)
        usage = Usage(prompt, 0, total)
        call.finish(attempt, None, usage)
        return Embeddings(vectors, provider, result.model, usage, self.space, call.elapsed(), call.attempt_list())


def _checked(result: object, count: int, provider: str) -> Embeddings:
    """A provider's answer, checked: an Embeddings with one vector per text."""
    if not isinstance(result, Embeddings):
        raise ResponseFormatError(f"embed returned a {type(result).__name__}, not Embeddings", provider=provider)
    if len(result.vectors) != count:
        raise ResponseFormatError(f"embed returned {len(result.vectors)} vector(s) for {count} text(s)", provider=provider)
    return result
