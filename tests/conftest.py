"""Fixtures shared by several test modules."""

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
