"""Where the time of one ``route(timeout=...)`` call goes, thread by thread.

Timestamps (``time.perf_counter``) taken inside the deadline path, on the caller thread
and on the Router's worker, median over many calls, beside the same marks for a bare
``executor.submit(provider.complete, prompt).result()``:

- route start -> submit: the caller's work before the hop (prompt, plan, reservation);
- submit call: ``ThreadPoolExecutor.submit`` itself (it wakes the worker);
- submitted -> wait: the caller's bookkeeping after the hop started, before it waits;
- submit -> worker start: until the worker runs the attempt (wake-up, the GIL);
- worker run: the attempt on the worker (the provider and its accounting);
- worker end -> caller woken: the hop back;
- woken -> route end: the caller's work after the answer (metrics, the Completion).

The marks wrap a few functions, which adds a little to each segment; compare segments,
not totals with ``overhead.py``.

    python benchmarks/deadline_timeline.py
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import LoadWatch

import multi_llm_orchestrator.calls as calls
from multi_llm_orchestrator import MockProvider, ProviderConfig, Router

CALLS = 6000
WARM_UP = 1000
PROMPT = "What is Python?"
SEGMENTS = ("route start -> submit", "submit call", "submitted -> wait", "submit -> worker start", "worker run",
            "worker end -> caller woken", "woken -> route end", "total")


def main() -> None:
    watch = LoadWatch()
    clock = time.perf_counter
    marks = {}
    real_run, real_wait, real_submit = calls.AttemptRun.run, Future.exception, ThreadPoolExecutor.submit

    def run(self, invoke):
        marks["worker start"] = clock()
        try:
            return real_run(self, invoke)
        finally:
            marks["worker end"] = clock()

    def wait(future, timeout=None):  # AttemptRun.hop waits on the attempt's Future with exception()
        marks["wait"] = clock()
        outcome = real_wait(future, timeout)
        marks["woken"] = clock()
        return outcome

    def submit(self, fn, *args, **kwargs):
        marks["submit"] = clock()
        future = real_submit(self, fn, *args, **kwargs)
        marks["submitted"] = clock()
        return future

    calls.AttemptRun.run, Future.exception, ThreadPoolExecutor.submit = run, wait, submit
    provider = MockProvider(ProviderConfig(name="mock", extra={"delay": 0}))
    deadline = Router(timeout=10)
    deadline.add_provider(MockProvider(ProviderConfig(name="deadline", extra={"delay": 0})))
    executor = ThreadPoolExecutor(1)

    def direct(prompt: str) -> str:
        marks["worker start"] = clock()
        text = provider.complete(prompt).text
        marks["worker end"] = clock()
        return text

    def bare(prompt: str) -> str:
        return executor.submit(direct, prompt).result()

    try:
        for label, function in (("router.route, timeout=10", deadline.route),
                                ("executor.submit(provider.complete).result()", bare)):
            rows = {segment: [] for segment in SEGMENTS}
            for index in range(CALLS):
                marks.clear()
                started = clock()
                function(PROMPT)
                ended = clock()
                if index < WARM_UP:
                    continue
                wait, woken = marks.get("wait", marks["submitted"]), marks.get("woken", ended)
                for segment, value in zip(SEGMENTS, (
                    marks["submit"] - started, marks["submitted"] - marks["submit"], wait - marks["submitted"],
                    marks["worker start"] - marks["submitted"], marks["worker end"] - marks["worker start"],
                    woken - marks["worker end"], ended - woken, ended - started,
                )):
                    rows[segment].append(value)
            print(f"{label}: median of {CALLS - WARM_UP} calls")
            for segment, values in rows.items():
                print(f"  {segment:28s} {statistics.median(values) * 1e6:7.2f} us")
    finally:
        calls.AttemptRun.run, Future.exception, ThreadPoolExecutor.submit = real_run, real_wait, real_submit
        deadline.close()
        executor.shutdown()
    print(watch.summary())


if __name__ == "__main__":
    main()
