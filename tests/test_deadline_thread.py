"""The deadline thread (transfers.Reaper, issue 17): requests in a row do not wake it
one by one (a thread switch per call), it still cuts a stalled read at its deadline,
and it ends by itself once no request is in flight. Real loopback servers."""

import threading
import time

import pytest

from multi_llm_orchestrator import ProviderConfig
from multi_llm_orchestrator.errors import ProviderTimeoutError
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.transfers import _REAPER, REAPER_LINGER_S, THREAD_NAME

from fakes.raw_http import RawServer, Reply

ANSWER = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}'
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


def deadline_threads():
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def provider(server, timeout=30.0):
    return OpenAICompatibleProvider(ProviderConfig(name="reaper", model="m", base_url=server.url + "/v1",
                                                   max_retries=0, timeout=timeout))


def test_sequential_requests_do_not_wake_the_deadline_thread_each(monkeypatch):
    with RawServer([Reply([REPLY])]) as server:
        chat = provider(server)
        assert chat.complete("warm up").text == "ok"
        woken = []
        original = _REAPER._cond.notify
        monkeypatch.setattr(_REAPER._cond, "notify", lambda n=1: (woken.append(n), original(n)))
        for _ in range(50):
            assert chat.complete("hi").text == "ok"
        assert len(woken) <= 2  # a new, earlier deadline may wake it; a finished request never does
        assert server.connections == 1


def test_a_stalled_answer_is_still_cut_at_its_deadline():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)
    with RawServer([Reply([head + ANSWER[:10], ANSWER[10:]], pause=3.0)]) as server:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError):
            provider(server, timeout=0.3).complete("hi")
        assert time.monotonic() - started < 2.5  # the server holds the rest for 3 s


def test_the_deadline_thread_ends_by_itself_when_no_request_is_in_flight():
    with RawServer([Reply([REPLY])]) as server:
        assert provider(server).complete("hi").text == "ok"
        assert deadline_threads()
        limit = time.monotonic() + 10 * REAPER_LINGER_S + 5  # generous: only catches a thread that never ends
        while deadline_threads() and time.monotonic() < limit:
            time.sleep(0.05)
        assert not deadline_threads()
