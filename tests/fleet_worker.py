"""One process of a fleet (test_fleet.py, benchmarks/redis_state.py): builds a Router
from a configuration, waits for "go" on stdin, runs calls on threads, prints a JSON report.

    python tests/fleet_worker.py '{"router": {...}, "threads": 8, "calls": 10}'

Spec keys: ``router`` (a configuration dict), ``threads``, and either ``calls`` (per
thread) or ``duration`` (seconds); ``prompt`` (default: distinct per call), ``params``
(GenerationParams fields), ``timeout``, ``cache`` (per call), ``stop_on`` (error class
names that end a thread), ``stream`` (route_stream instead of complete), ``embed``
(``router.embed([prompt])`` instead of complete).
"""

import json
import sys
import threading
import time
from collections import Counter

from multi_llm_orchestrator import GenerationParams, Router


def main() -> None:
    spec = json.loads(sys.argv[1])
    router = Router.from_config(spec["router"])
    params = GenerationParams(**spec.get("params", {}))
    report = {"providers": Counter(), "errors": Counter(), "cached": 0, "prompt_tokens": 0,
              "completion_tokens": 0, "latencies": [], "samples": []}
    lock = threading.Lock()
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    stop_at = started + spec.get("duration", 0)

    def run(index: int) -> None:
        count = 0
        while True:
            if "calls" in spec and count >= spec["calls"]:
                return
            if "duration" in spec and time.monotonic() >= stop_at:
                return
            count += 1
            prompt = spec.get("prompt") or f"question {index}-{count}"
            began = time.perf_counter()
            try:
                if spec.get("embed"):
                    result = router.embed([prompt], timeout=spec.get("timeout"))
                    provider, cached, usage = result.provider, False, result.usage
                elif spec.get("stream"):
                    stream = router.route_stream(prompt, params, timeout=spec.get("timeout"), cache=spec.get("cache"))
                    "".join(stream)
                    provider, cached, usage = stream.provider, stream.cached, stream.usage
                else:
                    completion = router.complete(prompt, params, timeout=spec.get("timeout"), cache=spec.get("cache"))
                    provider, cached, usage = completion.provider, completion.cached, completion.usage
            except Exception as exc:
                with lock:
                    report["errors"][type(exc).__name__] += 1
                    if len(report["samples"]) < 3:
                        report["samples"].append(repr(exc)[:300])
                if type(exc).__name__ in spec.get("stop_on", ()):
                    return
                continue
            elapsed = time.perf_counter() - began
            with lock:
                report["providers"][provider] += 1
                report["cached"] += bool(cached)
                report["latencies"].append(elapsed)
                if usage is not None and not cached:
                    report["prompt_tokens"] += usage.prompt_tokens
                    report["completion_tokens"] += usage.completion_tokens

    threads = [threading.Thread(target=run, args=(index,)) for index in range(spec.get("threads", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report["elapsed"] = time.monotonic() - started
    report["redis_down"] = bool(getattr(getattr(router._state, "link", None), "down", False))
    router.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
