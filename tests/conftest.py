"""Fixtures shared by several test modules."""

import io
import sys

import pytest

from fakes.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free loopback port for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server, request):
    """The session's Redis, emptied before the test (each test starts from no state)."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(autouse=True)
def _no_runner_stdin(monkeypatch):
    """The CLI reads piped stdin (``cat f | multi-llm-orchestrator "summarise"``): a test
    calling it in process must not read, or wait on, the test runner's own stdin (under
    ``pytest -s`` that may be a pipe that never closes). Tests that pipe text set their own."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
