"""Jupyter runs cells inside a running asyncio event loop: the blocking API must work there
unchanged (no "asyncio.run() cannot be called from a running event loop")."""

from __future__ import annotations

import asyncio

from multi_llm_orchestrator import AllProvidersFailedError, MockProvider, ProviderConfig, Router


def make_router(**settings):
    router = Router(**settings)
    for name, model in (("a", "mock-unavailable"), ("b", "mock-normal"), ("c", "mock-normal")):
        router.add_provider(MockProvider(ProviderConfig(name=name, model=model, extra={"delay": 0})))
    return router


def test_route_inside_a_running_event_loop():
    async def cell():
        assert asyncio.get_running_loop().is_running()
        with make_router() as router:
            return router.route("What is Python?"), router.complete("x").provider

    text, provider = asyncio.run(cell())
    assert text == "Mock response to: What is Python?"
    assert provider in ("b", "c")


def test_every_blocking_api_works_inside_the_loop():
    async def cell():
        with make_router(strategy="first-available") as router:
            streamed = "".join(router.route_stream("stream inside"))
            batch = router.batch(["one", "two", "three"], max_workers=3)
            health = router.health_check()
            stats = router.stats()
        # Hedging and a total timeout run attempts on the Router's thread pool.
        with make_router(hedge_after=0.01, timeout=5) as hedged:
            hedged_text = hedged.route("hedged")
        return streamed, batch, health, stats, hedged_text

    streamed, batch, health, stats, hedged_text = asyncio.run(cell())
    assert streamed == "Mock response to: stream inside"
    assert [completion.text for completion in batch] == [f"Mock response to: {w}" for w in ("one", "two", "three")]
    assert health == {"a": False, "b": True, "c": True}
    assert stats["succeeded"] == 4
    assert hedged_text == "Mock response to: hedged"


def test_errors_surface_normally_inside_the_loop():
    async def cell():
        router = Router()
        router.add_provider(MockProvider(ProviderConfig(name="down", model="mock-unavailable", extra={"delay": 0})))
        try:
            router.route("x")
        except AllProvidersFailedError as exc:
            return exc
        finally:
            router.close()

    error = asyncio.run(cell())
    assert isinstance(error, AllProvidersFailedError) and error.errors[0].provider == "down"


def test_run_in_executor_keeps_the_loop_free_and_calls_concurrent():
    async def cell():
        loop = asyncio.get_running_loop()
        router = Router()
        router.add_provider(MockProvider(ProviderConfig(name="slow", extra={"delay": 0.1})))
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        try:
            answers = await asyncio.gather(*(loop.run_in_executor(None, router.route, f"q{i}") for i in range(4)))
        finally:
            tick_task.cancel()
            router.close()
        return answers, ticks, router

    answers, ticks, router = asyncio.run(cell())
    assert answers == [f"Mock response to: q{i}" for i in range(4)]
    assert ticks >= 3  # the loop kept running while the Router worked on other threads
    assert router.stats()["providers"]["slow"]["successes"] == 4
