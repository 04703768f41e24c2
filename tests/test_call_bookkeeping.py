"""The bookkeeping of one Router call (calls.py), pinned down (issue 18): errors turned
into ProviderErrors, the attempt list, how a failed call is described and reported once,
listeners. Mostly direct, with Routers over mock providers where the path matters."""

import logging
import time
import traceback
from concurrent.futures import Future

import pytest

from multi_llm_orchestrator import (
    GenerationParams,
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ResponseFormatError,
)
from multi_llm_orchestrator.calls import (
    AttemptRun, AttemptStopped, Call, LiveAttempts, Telemetry, as_provider_error, checked_completion,
)
from multi_llm_orchestrator.errors import CapacityExhaustedError, ProviderError
from multi_llm_orchestrator.calls import OpenedStream
from multi_llm_orchestrator.types import Attempt, Completion, Message, StreamEnd, TextStream, Usage

from fakes.mocks import mock, router_with


# as_provider_error / checked_completion ---------------------------------------------------


def test_a_provider_error_keeps_its_identity_and_gets_the_provider_name_if_missing():
    anonymous = ProviderUnavailableError("down")
    assert as_provider_error(anonymous, "a") is anonymous and anonymous.provider == "a"
    named = ProviderUnavailableError("down", provider="upstream")
    assert as_provider_error(named, "a").provider == "upstream"


def test_other_exceptions_become_typed_provider_errors():
    invalid = as_provider_error(ConfigurationError("temperature must be in [0, 2]"), "a")
    assert type(invalid) is InvalidRequestError and invalid.provider == "a"
    assert invalid.message == "temperature must be in [0, 2]"
    silent = as_provider_error(TimeoutError(), "a")
    assert type(silent) is ProviderTimeoutError and silent.message == "timed out" and silent.provider == "a"
    assert as_provider_error(TimeoutError("read took too long"), "a").message == "read took too long"
    other = as_provider_error(KeyError("x"), "a")
    assert type(other) is ProviderError and other.message == "unexpected KeyError: 'x'" and other.provider == "a"


def test_only_a_completion_with_text_passes_the_check():
    completion = Completion("hi", "a", "m")
    assert checked_completion(completion, "a") is completion
    with pytest.raises(ResponseFormatError, match="the provider returned a dict, not a Completion") as caught:
        checked_completion({"text": "hi"}, "a")
    assert caught.value.provider == "a"
    with pytest.raises(ResponseFormatError, match="the answer's text is a int, not a str"):
        checked_completion(Completion(123, "a", "m"), "a")


# Telemetry ----------------------------------------------------------------------------


def test_listeners_are_checked_removed_one_by_one_and_isolated_from_each_other(caplog):
    telemetry = Telemetry()
    with pytest.raises(ConfigurationError, match="A listener must be callable; got int"):
        telemetry.add_listener(3)
    seen = []

    def broken(event):
        raise RuntimeError("listener bug")

    def first(event):
        seen.append(("first", event))

    def second(event):
        seen.append(("second", event))

    for listener in (broken, first, second):
        telemetry.add_listener(listener)
    with caplog.at_level(logging.ERROR, logger="multi_llm_orchestrator"):
        telemetry.emit("event")
    assert seen == [("first", "event"), ("second", "event")]
    assert "A Router listener raised; the call goes on" in caplog.text
    telemetry.remove_listener(first)
    assert telemetry.listeners == (broken, second)


def test_totals_are_a_copy():
    telemetry = Telemetry()
    telemetry.count("calls")
    totals = telemetry.totals()
    totals["calls"] = 99
    assert telemetry.totals()["calls"] == 1


# Call ----------------------------------------------------------------------------------


def test_a_call_without_budget_has_no_deadline():
    call = Call(None, False, Telemetry())
    assert call.deadline is None and call.remaining() is None
    timed = Call(30.0, False, Telemetry())
    assert 29 < timed.remaining() <= 30 and timed.deadline == pytest.approx(time.monotonic() + 30, abs=1)


def test_attempts_are_listed_in_start_order_and_frozen_once_the_call_is_over():
    call = Call(None, False, Telemetry())
    first, second = call.next_order(), call.next_order()
    assert (first, second) == (1, 2)
    call.record(Attempt("b", "ok"), second)  # a hedge finishing first
    call.record(Attempt("a", "lost"), first)
    assert [a.provider for a in call.attempt_list()] == ["a", "b"]
    call.failed([ProviderUnavailableError("down", provider="a")], deadline_hit=False)
    call.record(Attempt("c", "error"), call.next_order())
    assert [a.provider for a in call.attempt_list()] == ["a", "b"]


def test_a_failed_call_lists_every_error_names_the_last_as_cause_and_is_reported_once():
    telemetry = Telemetry()
    events = []
    telemetry.add_listener(events.append)
    call = Call(None, False, telemetry)
    errors = [ProviderUnavailableError("down", provider="a"), InvalidRequestError("bad", provider="b")]
    failure = call.failed(errors, deadline_hit=False)
    assert type(failure) is AllProvidersFailedError and failure.errors == errors
    assert failure.__cause__ is errors[-1] and failure.__suppress_context__
    call.failed(errors, deadline_hit=False)
    call.abort(RuntimeError("late"))
    totals = telemetry.totals()
    assert (totals["calls"], totals["succeeded"], totals["failed"]) == (1, 0, 1)
    [event] = events
    assert (event.kind, event.outcome, event.attempts, event.error_type) == ("call", "error", 2, "AllProvidersFailedError")


def test_a_call_whose_every_breaker_refused_says_so():
    failure = Call(None, False, Telemetry()).failed([], deadline_hit=False)
    assert type(failure) is AllProvidersFailedError and failure.__cause__ is None
    assert "every circuit breaker is open or already probing; retry shortly" in str(failure)


def test_a_timeout_at_the_very_end_of_the_budget_is_the_deadline_running_out():
    call = Call(0.01, False, Telemetry())  # less than the 20 ms slack left from the start
    failure = call.failed([ProviderTimeoutError("read timed out", provider="a")], deadline_hit=False)
    assert isinstance(failure, DeadlineExceededError)
    early = Call(60.0, False, Telemetry())
    failure = early.failed([ProviderTimeoutError("read timed out", provider="a")], deadline_hit=False)
    assert type(failure) is AllProvidersFailedError
    near = Call(0.01, False, Telemetry())
    failure = near.failed([ProviderUnavailableError("refused", provider="a")], deadline_hit=False)
    assert type(failure) is AllProvidersFailedError


def test_a_deadline_failure_names_the_budget():
    failure = Call(2.5, False, Telemetry()).failed([], deadline_hit=True)
    assert isinstance(failure, DeadlineExceededError) and "2.5" in str(failure)
    unbounded = Call(None, False, Telemetry()).failed([], deadline_hit=True)
    assert isinstance(unbounded, DeadlineExceededError)


def test_an_aborted_call_is_reported_once_with_its_attempt_count():
    telemetry = Telemetry()
    events = []
    telemetry.add_listener(events.append)
    call = Call(None, True, telemetry)
    call.record(Attempt("a", "skipped"), call.next_order())
    call.abort(RuntimeError("strategy bug"))
    call.abort(RuntimeError("again"))
    [event] = events
    assert (event.outcome, event.attempts, event.error_type, event.streaming) == ("error", 1, "RuntimeError", True)
    assert event.provider is None and event.error == "strategy bug"
    assert telemetry.totals()["failed"] == 1


# Attempts through a Router -------------------------------------------------------------


def test_attempt_and_call_events_describe_a_fallback(caplog):
    router = router_with(mock("bad", failure_rate=1.0), mock("good"), breaker=False)
    events = []
    router.add_listener(events.append)
    with caplog.at_level(logging.INFO, logger="multi_llm_orchestrator"):
        completion = router.complete("hi")
    assert [(a.provider, a.outcome) for a in completion.attempts] == [("bad", "error"), ("good", "ok")]
    assert completion.attempts[0].error_type == "ProviderUnavailableError" and completion.attempts[0].error
    attempt_events = [e for e in events if e.kind == "attempt"]
    assert [(e.provider, e.outcome) for e in attempt_events] == [("bad", "error"), ("good", "ok")]
    assert attempt_events[0].error_type == "ProviderUnavailableError" and attempt_events[1].error is None
    [call_event] = [e for e in events if e.kind == "call"]
    assert (call_event.provider, call_event.outcome, call_event.attempts) == ("good", "ok", 2)
    assert call_event.model == "mock-normal" and call_event.error is None and not call_event.streaming
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage().startswith("attempt on bad failed after ")
    assert warning.provider == "bad" and warning.error_type == "ProviderUnavailableError"
    info = next(r for r in caplog.records if r.getMessage().startswith("call answered by good (mock-normal)"))
    assert info.attempts == 2 and info.outcome == "ok" and info.provider == "good"
    stats = router.stats()
    assert stats["providers"]["bad"]["failures"] and stats["providers"]["good"]["successes"] == 1
    assert (stats["calls"], stats["succeeded"], stats["failed"]) == (1, 1, 0)


def test_a_failed_call_is_logged_with_its_error_type(caplog):
    router = router_with(mock("bad", failure_rate=1.0), breaker=False)
    with caplog.at_level(logging.INFO, logger="multi_llm_orchestrator"):
        with pytest.raises(AllProvidersFailedError):
            router.complete("hi")
    record = next(r for r in caplog.records if r.getMessage().startswith("call failed in "))
    assert record.getMessage().endswith("after 1 attempt(s): AllProvidersFailedError")
    assert record.outcome == "error" and record.provider is None and record.attempts == 1


def half_open_router(**provider_settings):
    """A Router over provider "a" whose breaker is half-open: the next reservation is its probe."""
    router = router_with(mock("a", **provider_settings), breaker={"failure_threshold": 1, "cooldown": 0})
    state = router._states[0]
    state.breaker.record_failure(ProviderUnavailableError("down"), state.breaker.reserve())
    return router, state


def test_an_attempt_with_no_time_left_is_an_error_without_calling_the_provider_and_frees_its_probe():
    router, state = half_open_router()
    call = router._call(1e-9, False, None, None)  # a budget gone before the attempt starts
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    assert attempt.reservation == "probe"
    with pytest.raises(ProviderTimeoutError, match="no time left in the Router timeout"):
        attempt.run(lambda p, remaining: pytest.fail("the provider must not be called"))
    [recorded] = call.attempt_list()
    assert recorded == Attempt("a", "error", 0.0, "no time left in the Router timeout", "ProviderTimeoutError", False)
    assert state.metrics.calls == 0
    assert state.breaker.is_available()  # the probe slot is free for the next call
    router.close()


def test_a_reservation_is_given_back_once_only():
    router, state = half_open_router()
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    attempt.release()
    other = state.breaker.reserve()  # another call takes the freed probe
    assert other == "probe"
    attempt.release()  # e.g. a cancel callback after the deadline path released it
    assert state.breaker.reserve() is None  # the other call's probe is still held
    router.close()


def test_an_attempt_cancelled_before_it_ran_frees_its_probe():
    router, state = half_open_router()
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    running = Future()
    attempt.release_if_cancelled(running)
    assert not state.breaker.is_available()  # not cancelled: still its probe
    running.cancel()
    attempt.release_if_cancelled(running)
    assert state.breaker.is_available()
    router.close()


def test_an_attempt_abandoned_while_queued_is_lost_at_zero_latency_and_frees_its_probe():
    router, state = half_open_router()
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, state, hedge=True, force=False)
    attempt.abandon(Future())  # still queued: cancelled before the provider was called
    assert call.attempt_list() == [Attempt("a", "lost", 0.0, hedge=True)]
    assert state.breaker.is_available()
    assert state.metrics.snapshot()["hedges_lost"] == 1
    router.close()


def test_an_abandoned_stream_that_answers_late_is_closed():
    router = router_with(mock("a"))
    call = router._call(None, True, None, None)
    state = router._states[0]
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    running = Future()
    running.set_running_or_notify_cancel()  # too late to cancel
    attempt.started = time.monotonic()
    state.metrics.started()
    attempt.abandon(running)
    stream = state.provider.stream("late answer")
    opened = OpenedStream.open(stream)
    running.set_result(opened)
    assert stream.done  # closed: its connection goes back, nobody will read it
    assert state.metrics.successes == 1 and state.metrics.in_flight == 0  # counted once, as a success
    router.close()


def test_a_stream_failing_before_its_first_chunk_is_closed_and_its_error_raised():
    closed = []

    def broken():
        raise ProviderUnavailableError("refused", provider="a")
        yield "never"

    stream = TextStream(broken(), provider="a", model="m", on_close=lambda: closed.append(True))
    with pytest.raises(ProviderUnavailableError, match="refused"):
        OpenedStream.open(stream)
    assert closed


def test_a_provider_error_is_raised_as_itself_without_a_self_cause():
    router = router_with(mock("bad", failure_rate=1.0), breaker=False)
    with pytest.raises(AllProvidersFailedError) as caught:
        router.complete("hi")
    [error] = caught.value.errors
    assert type(error) is ProviderUnavailableError and error.__cause__ is None


def test_a_failed_call_does_not_show_the_internals_it_was_raised_from():
    call = Call(None, False, Telemetry())
    try:
        try:
            raise KeyError("internal bookkeeping")
        except KeyError:
            raise call.failed([], deadline_hit=False)
    except AllProvidersFailedError as exc:
        shown = "".join(traceback.format_exception(exc))
    assert "internal bookkeeping" not in shown and "every circuit breaker is open" in shown


def test_a_provider_skipped_for_its_open_circuit_is_listed_with_why():
    router = router_with(mock("a"), mock("b"), breaker={"failure_threshold": 1, "cooldown": 60})
    first = router._states[0]
    first.breaker.record_failure(ProviderUnavailableError("down"), first.breaker.reserve())
    call = router._call(None, False, None, None)
    assert AttemptRun.reserve(call, first, hedge=False, force=False) is None
    [skipped] = call.attempt_list()
    assert skipped == Attempt("a", "skipped", 0.0, "circuit open (or its recovery probe is taken)", "CircuitOpen", False)
    router.close()


def test_an_interrupt_inside_a_provider_is_accounted_then_raised():
    router = router_with(mock("a"), breaker=False)
    call = router._call(None, False, None, None)
    state = router._states[0]
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)

    def interrupted(provider, remaining):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attempt.run(interrupted)
    assert state.metrics.in_flight == 0 and state.metrics.failures == {"ProviderError": 1}
    [recorded] = call.attempt_list()
    assert recorded.outcome == "error" and recorded.error == "interrupted"


# Admission, close() and stopped attempts (issue 18 survivors) ------------------------------

HI = [Message("user", "hi")]


def test_an_admission_refusal_gives_the_breaker_probe_back_and_lists_the_skip_at_zero_latency():
    router = router_with(mock("a", limits={"max_concurrency": 1}), breaker={"failure_threshold": 1, "cooldown": 0})
    state = router._states[0]
    holder = AttemptRun.reserve(router._call(None, False, HI, GenerationParams()), state, hedge=False, force=False)
    assert holder.reservation == "normal" and holder.grant is not None  # holds the only slot
    state.breaker.record_failure(ProviderUnavailableError("down"), state.breaker.reserve())  # now half-open
    call = router._call(None, False, HI, GenerationParams())
    assert AttemptRun.reserve(call, state, hedge=False, force=False) is None  # breaker said yes, admission no
    [skipped] = call.attempt_list()
    assert (skipped.provider, skipped.outcome, skipped.latency_s, skipped.hedge) == ("a", "skipped", 0.0, False)
    assert "max_concurrency 1 reached" in skipped.error
    assert state.breaker.reserve() == "probe"  # the refused call did not keep the recovery probe
    holder.release()
    router.close()


def test_an_attempt_that_never_ran_gives_its_rate_limit_slot_back():
    router = router_with(mock("a", limits={"rpm": 1, "max_concurrency": 1}), breaker=False)
    state = router._states[0]
    late = router._call(1e-9, False, HI, GenerationParams())  # no time left when the attempt starts
    attempt = AttemptRun.reserve(late, state, hedge=False, force=False)
    assert attempt.grant is not None
    with pytest.raises(ProviderTimeoutError):
        attempt.run(lambda provider, remaining: pytest.fail("the provider must not be called"))
    # Nothing was sent: neither the concurrency slot nor the one request a minute is used up.
    assert router.complete("hi").provider == "a"
    router.close()


def test_capacity_running_out_without_waiting_is_reported_once_with_no_attempt_sent():
    router = router_with(mock("a", limits={"max_concurrency": 1}), breaker=False, timeout=30)
    events = []
    router.add_listener(events.append)
    holder = AttemptRun.reserve(router._call(None, False, HI, GenerationParams()), router._states[0], hedge=False, force=False)
    with pytest.raises(CapacityExhaustedError) as caught:
        router.complete("hi")
    message = str(caught.value)
    assert message.startswith("No provider has capacity:") and "deadline" not in message  # skip mode: no wait
    [call_event] = [event for event in events if event.kind == "call"]
    assert call_event.outcome == "error" and call_event.attempts == 0  # nothing was sent
    assert router.stats()["failed"] == 1
    holder.release()
    router.close()


def test_an_attempt_started_while_the_router_closes_is_stopped_and_frees_its_probe():
    router, state = half_open_router()
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    assert attempt.reservation == "probe"
    router.close()
    with pytest.raises(AttemptStopped, match="closed"):
        attempt.run(lambda provider, remaining: pytest.fail("the provider must not be called"))
    [recorded] = call.attempt_list()
    assert (recorded.outcome, recorded.latency_s, recorded.error_type) == ("error", 0.0, "AttemptStopped")
    assert state.metrics.calls == 0
    assert state.breaker.reserve() == "probe"  # given back: not counted as a failure, not held


def test_an_attempt_stopped_while_running_is_abandoned_not_failed_and_frees_its_probe():
    router, state = half_open_router()
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)

    def stopped(provider, remaining):
        raise AttemptStopped("the Router was closed while this attempt ran", provider="a")

    with pytest.raises(AttemptStopped):
        attempt.run(stopped)
    snapshot = state.metrics.snapshot()
    assert snapshot["abandoned"] == 1 and snapshot["failures"] == 0 and snapshot["in_flight"] == 0
    [recorded] = call.attempt_list()  # not lost: the caller sees why its attempt ended
    assert (recorded.provider, recorded.outcome, recorded.error_type) == ("a", "error", "AttemptStopped")
    assert state.breaker.reserve() == "probe"
    router.close()


def test_an_abandoned_stream_answering_late_still_counts_the_usage_it_reported():
    router = router_with(mock("a"), breaker=False)
    call = router._call(None, True, None, None)
    state = router._states[0]
    attempt = AttemptRun.reserve(call, state, hedge=False, force=False)
    running = Future()
    running.set_running_or_notify_cancel()
    attempt.started = time.monotonic()
    state.metrics.started()
    attempt.abandon(running)

    def events():
        yield StreamEnd(Usage(3, 4, 7))  # usage reported before the first text
        yield "late"

    stream = TextStream(events(), provider="a", model="m")
    running.set_result(OpenedStream.open(stream))
    assert stream.done
    snapshot = state.metrics.snapshot()
    assert snapshot["successes"] == 1 and (snapshot["prompt_tokens"], snapshot["completion_tokens"]) == (3, 4)
    router.close()


def test_a_deadline_failure_of_a_call_without_a_budget_names_no_budget():
    call = Call(None, False, Telemetry())
    failure = call.failed([ProviderTimeoutError("slow", provider="a")], deadline_hit=True)
    assert isinstance(failure, DeadlineExceededError) and failure.timeout == 0.0


def test_close_stops_every_running_attempt_and_logs_one_it_could_not_stop(caplog):
    live = LiveAttempts()

    class Running:
        def __init__(self, fails):
            self.fails, self.stopped_with = fails, None

        def cut(self, error):
            self.stopped_with = error
            if self.fails:
                raise RuntimeError("being read on another thread")

    stuck, fine = Running(True), Running(False)
    live.add(stuck)
    live.add(fine)
    stop = AttemptStopped("closing")
    with caplog.at_level(logging.DEBUG, logger="multi_llm_orchestrator"):
        live.close(0.0, stop)
    assert stuck.stopped_with is stop and fine.stopped_with is stop
    [record] = [r for r in caplog.records if r.getMessage() == "stopping an attempt at close() failed"]
    assert record.levelno == logging.DEBUG and record.exc_info[0] is RuntimeError


def test_an_attempt_abandoned_after_its_worker_took_it_but_before_it_started_is_lost_at_zero_latency():
    router = router_with(mock("a"), breaker=False)
    call = router._call(None, False, None, None)
    attempt = AttemptRun.reserve(call, router._states[0], hedge=False, force=False)
    taken = Future()
    taken.set_running_or_notify_cancel()  # a worker has it: too late to cancel, run() not begun
    attempt.abandon(taken)
    assert call.attempt_list() == [Attempt("a", "lost", 0.0, hedge=False)]
    router.close()
