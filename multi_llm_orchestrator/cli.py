"""The ``multi-llm-orchestrator`` command: a thin shell over the Router.

    multi-llm-orchestrator "What is Python?"            # = ask; three mock providers: no config, no keys
    cat notes.txt | multi-llm-orchestrator "summarise"  # stdin, then the prompt
    multi-llm-orchestrator -s "Answer briefly" -m mock-2 "Hi"   # system prompt, pinned provider
    multi-llm-orchestrator --config router.json ask --no-stream "Tell me a story"
    multi-llm-orchestrator --config router.json health
    multi-llm-orchestrator --config router.json models
    multi-llm-orchestrator --config router.json batch prompts.txt --workers 8 > answers.jsonl
    multi-llm-orchestrator embed "first text" "second text" > vectors.jsonl
    multi-llm-orchestrator --config router.json embed --file docs.txt --space gigachat:Embeddings
    multi-llm-orchestrator --config router.json balance
    multi-llm-orchestrator demo

The configuration file comes from ``--config`` or the ``MULTI_LLM_ORCHESTRATOR_CONFIG``
environment variable (format: see ``multi_llm_orchestrator.configuration``).

The first argument that is not a command name is a prompt for ``ask``. ``ask`` streams
when stdout is a terminal (``--no-stream`` turns that off, ``--stream`` forces it).

Exit status: 0 success; 1 every provider failed (``batch``: some prompt failed;
``health``: no provider is healthy); 2 usage or configuration error. Errors are one
line on stderr; ``--verbose`` adds the traceback and the library's log.

Only argparse and the standard library are imported up front: the Router, its
providers and tqdm are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

__all__ = ["main", "build_parser", "DEFAULT_CONFIG", "CONFIG_ENV"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CONFIG_ENV = "MULTI_LLM_ORCHESTRATOR_CONFIG"
PROG = "multi-llm-orchestrator"

#: Used when neither --config nor $MULTI_LLM_ORCHESTRATOR_CONFIG is given.
DEFAULT_CONFIG: Dict[str, Any] = {
    "strategy": "round-robin",
    # mock-tools answers plain prompts like mock-normal, and also --json-schema.
    "providers": [{"type": "mock", "name": f"mock-{index}", "model": "mock-tools", "extra": {"delay": 0}}
                  for index in (1, 2, 3)],
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    implicit = _implicit_ask(parser, argv)
    args = parser.parse_args(["ask", *argv] if implicit else argv)
    if implicit:
        args.implicit = True
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = getattr(args, "verbose", 0) or 0
    if verbose:
        import logging

        logging.basicConfig(
            level=logging.INFO if verbose == 1 else logging.DEBUG,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `batch ... | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(exc)


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the command name; SUPPRESS keeps the
    # subcommand's parse from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"router configuration (JSON); default ${CONFIG_ENV}, else three mock providers")
    common.add_argument("--strategy", metavar="NAME", default=argparse.SUPPRESS,
                        help="override the strategy: round-robin, random, first-available, best-available, "
                             "weighted, least-busy, cheapest")
    common.add_argument("--timeout", "-t", type=float, metavar="SECONDS", default=argparse.SUPPRESS,
                        help="total seconds per call (and per health/model check)")
    common.add_argument("--verbose", "-v", action="count", default=argparse.SUPPRESS,
                        help="show tracebacks and the library log (-vv: debug)")

    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Route prompts over several LLM providers with fallback, health checks and hedging.",
        epilog="Exit status: 0 success, 1 all providers failed, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    parser.set_defaults(commands=commands.choices)

    ask = commands.add_parser(
        "ask", parents=[common], help="answer one prompt (the default command)",
        description="Text piped on stdin comes first, then the prompt argument (a blank line between).",
    )
    ask.add_argument("prompt", nargs="?", help='the prompt ("-": only stdin); may be left out when stdin has it')
    ask.add_argument("--system", "-s", metavar="TEXT", help="a system message sent before the prompt")
    ask.add_argument("--provider", "-m", metavar="NAME",
                     help="send the prompt to this provider only (still with retries, breaker and --timeout)")
    ask.add_argument("--model", metavar="ID", help="the model to ask for, this call only (needs --provider "
                                                   "unless there is one provider)")
    ask.add_argument("--temperature", type=float, metavar="T")
    ask.add_argument("--max-tokens", type=int, metavar="N")
    ask.add_argument("--json-schema", metavar="FILE",
                     help="answer JSON that fits the JSON Schema in FILE (structured output; providers "
                          "without it are skipped, an answer that does not fit falls back)")
    output = ask.add_mutually_exclusive_group()
    output.add_argument("--stream", action="store_true", default=None,
                        help="print the answer while it arrives (the default when stdout is a terminal)")
    output.add_argument("--json", action="store_true",
                        help="print the whole Completion as JSON (text, provider, usage, attempts)")
    ask.add_argument("--no-stream", dest="stream", action="store_false", default=None,
                     help="print the answer once it is complete")
    ask.set_defaults(handler=_ask)

    health = commands.add_parser("health", parents=[common], help="check every provider, in parallel")
    health.add_argument("--json", action="store_true", help="print JSON instead of a table")
    health.set_defaults(handler=_health)

    models = commands.add_parser("models", parents=[common], help="list the models each provider offers")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(handler=_models)

    batch = commands.add_parser(
        "batch", parents=[common], help="answer many prompts on a thread pool; JSONL out, in input order",
        description="One prompt per line, or JSONL with {\"prompt\": ...} or {\"messages\": [...]} (an \"id\" "
                    "is echoed). Results go to stdout as JSONL in input order; a failed prompt gives "
                    "{\"index\", \"error_type\", \"error\"} and the batch goes on. Exit status 1 if any failed.",
    )
    batch.add_argument("file", help='prompts file ("-" reads stdin)')
    batch.add_argument("--workers", "-w", type=int, default=8, metavar="N", help="parallel calls (default 8)")
    batch.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                       help="auto (default): JSONL when the first line starts with '{'")
    batch.add_argument("--temperature", type=float, metavar="T")
    batch.add_argument("--max-tokens", type=int, metavar="N")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    batch.set_defaults(handler=_batch)

    embed = commands.add_parser(
        "embed", parents=[common], help="embed texts; JSONL out (one vector per text, in input order)",
        description="Texts from the arguments, else one per line from --file or stdin (blank lines are "
                    "skipped). Each output line is {\"index\", \"line\" (files and stdin), \"text\", "
                    "\"embedding\"}; a summary goes to stderr. The three default mock providers need no keys.",
    )
    embed.add_argument("texts", nargs="*", help='texts to embed ("-" alone, or none, reads stdin)')
    embed.add_argument("--file", "-f", metavar="FILE", help="read the texts from FILE, one per line")
    embed.add_argument("--space", metavar="NAME", help="the embedding space (required when there are several)")
    embed.add_argument("--purpose", choices=("document", "query"), help="what the texts are (YandexGPT has a model each)")
    embed.add_argument("--parallel", type=int, default=8, metavar="N", help="batches at once (default 8)")
    embed.set_defaults(handler=_embed)

    balance = commands.add_parser("balance", parents=[common],
                                  help="tokens left on each account that has a balance API (GigaChat)")
    balance.add_argument("--json", action="store_true", help="print JSON")
    balance.set_defaults(handler=_balance)

    demo = commands.add_parser("demo", parents=[common], help="a tour of strategies and fallback over mocks "
                                                              "(its own providers: no --config, --strategy, --timeout)")
    demo.set_defaults(handler=_demo)
    return parser


# Commands ----------------------------------------------------------------------------


def _ask(args: argparse.Namespace) -> int:
    prompt = _prompt(args)
    if prompt is None:
        if getattr(args, "implicit", False):  # a bare `multi-llm-orchestrator` on a terminal
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        raise _UsageError('no prompt: give one as an argument, or pipe it in (echo "Hi" | multi-llm-orchestrator)')
    messages: Any = prompt
    if args.system:
        messages = [{"role": "system", "content": args.system}, {"role": "user", "content": prompt}]
    params = _params(args)
    pin = {name: value for name, value in (("provider", args.provider), ("model", args.model)) if value is not None}
    stream = args.stream if args.stream is not None else (not args.json and _is_terminal(sys.stdout))
    with _router(args) as router:
        if stream:
            chunks = router.route_stream(messages, params, **pin)
            try:
                for chunk in chunks:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            finally:
                sys.stdout.write("\n")
                sys.stdout.flush()
            return EXIT_OK
        completion = router.complete(messages, params, **pin)
        if args.json:
            print(json.dumps(completion.to_dict(), ensure_ascii=False, indent=2))
        else:
            print(completion.text)
    return EXIT_OK


def _prompt(args: argparse.Namespace) -> Optional[str]:
    """Piped stdin, then the prompt argument (simonw/llm's order); None when neither."""
    if args.prompt == "-":
        return sys.stdin.read()
    piped = _piped_stdin()
    if piped is None or not piped.strip():
        return args.prompt
    if args.prompt is None:
        return piped
    return piped.rstrip("\n") + "\n\n" + args.prompt


def _piped_stdin() -> Optional[str]:
    """What was piped or redirected to stdin; None on a terminal (never wait for typing)."""
    stdin = sys.stdin
    try:
        if stdin is None or stdin.isatty():
            return None
        return stdin.read()
    except (OSError, ValueError):  # closed, or not readable (e.g. captured by a test runner)
        return None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _implicit_ask(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """True when ``argv`` names no command: it is then ``ask``'s (a prompt, or nothing).

    Skips options and their values (of ``ask`` and the global ones) to find the first
    positional argument; ``--help`` and ``--version`` alone keep their meaning.
    """
    commands = parser.get_default("commands")
    ask = commands["ask"]
    with_value = {
        option for action in [*parser._actions, *ask._actions] if action.nargs != 0
        for option in action.option_strings
    }
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return True
        if token.startswith("-") and token != "-":
            index += 2 if token in with_value else 1
            continue
        return token not in commands
    return not any(token in ("-h", "--help", "--version") for token in argv)


def _health(args: argparse.Namespace) -> int:
    with _router(args) as router:
        report = router.health_report(getattr(args, "timeout", None))
        kinds = {provider.name: (provider.type_name or type(provider).__name__, provider.model) for provider in router.providers}
    if args.json:
        data = {
            name: {"healthy": result.healthy, "latency_s": round(result.latency_s, 6), "error": result.error}
            for name, result in report.items()
        }
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        rows = [
            (name, *kinds[name], "healthy" if result.healthy else "UNHEALTHY",
             f"{result.latency_s * 1000:.1f} ms", result.error or "")
            for name, result in report.items()
        ]
        _print_table(("PROVIDER", "TYPE", "MODEL", "STATUS", "LATENCY", "ERROR"), rows)
    return EXIT_OK if any(result.healthy for result in report.values()) else EXIT_FAILED


def _models(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    timeout = getattr(args, "timeout", None)
    with _router(args) as router:
        providers = router.providers

        def listing(provider: Any) -> Dict[str, Any]:
            try:
                return {"models": list(provider.list_models(timeout=timeout))}
            except Exception as exc:  # one provider's failure must not hide the others
                return {"error": f"{type(exc).__name__}: {_one_line(exc)}"}

        with ThreadPoolExecutor(max(1, len(providers)), thread_name_prefix="mlo-cli-models") as pool:
            results = dict(zip([p.name for p in providers], pool.map(listing, providers)))
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for name, result in results.items():
            print(f"{name}:")
            if "error" in result:
                print(f"  error: {result['error']}")
            for model in result.get("models", []):
                print(f"  {model}")
    return EXIT_OK if any("models" in result for result in results.values()) else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise _UsageError("--workers must be at least 1")
    items = _read_batch(args.file, args.format)
    runnable = [index for index, item in enumerate(items) if "prompt" in item]
    started = time.monotonic()
    with _router(args) as router:
        progress = _Progress(len(runnable), sys.stderr, enabled=not args.no_progress)
        try:
            outcomes = router.batch(
                [items[index]["prompt"] for index in runnable], _params(args),
                max_workers=args.workers, progress=progress,
            )
        finally:
            progress.close()
    for index, outcome in zip(runnable, outcomes):
        items[index]["outcome"] = outcome
    failed = 0
    for index, item in enumerate(items):
        record: Dict[str, Any] = {"index": index, "line": item["line"]}
        if "id" in item:
            record["id"] = item["id"]
        outcome = item.get("outcome", item.get("error"))
        if isinstance(outcome, BaseException):
            failed += 1
            record.update(error_type=type(outcome).__name__, error=_one_line(outcome))
        else:
            record.update(outcome.to_dict())
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    print(
        f"batch: {len(items)} prompt(s), {len(items) - failed} answered, {failed} failed "
        f"in {time.monotonic() - started:.2f} s",
        file=sys.stderr,
    )
    return EXIT_FAILED if failed else EXIT_OK


def _embed(args: argparse.Namespace) -> int:
    if args.parallel < 1:
        raise _UsageError("--parallel must be at least 1")
    if args.file and args.texts:
        raise _UsageError("give texts as arguments or --file, not both")
    numbered: List[Any] = []
    if args.texts and args.texts != ["-"]:
        numbered = [(None, text) for text in args.texts]
    else:
        numbered = _numbered_lines(args.file or "-")
    if not numbered:
        raise _UsageError("no text to embed: pass texts as arguments, --file FILE, or lines on stdin")
    started = time.monotonic()
    with _router(args) as router:
        result = router.embed([text for _, text in numbered], space=args.space, purpose=args.purpose,
                              max_parallel=args.parallel)
    for index, ((line, text), vector) in enumerate(zip(numbered, result.vectors)):
        record: Dict[str, Any] = {"index": index}
        if line is not None:
            record["line"] = line
        record.update(text=text, embedding=vector)
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    print(
        f"embed: {len(result)} text(s), {result.dimensions} dimensions, space {result.space!r}, "
        f"by {result.provider} ({result.model}), {result.usage.prompt_tokens} tokens, "
        f"in {time.monotonic() - started:.2f} s",
        file=sys.stderr,
    )
    return EXIT_OK


def _balance(args: argparse.Namespace) -> int:
    timeout = getattr(args, "timeout", None)
    results: Dict[str, Dict[str, Any]] = {}
    with _router(args) as router:
        for provider in router.providers:
            if not getattr(provider, "supports_balance", False):
                results[provider.name] = {"error": "no balance API"}
                continue
            try:
                results[provider.name] = {"balance": dict(provider.balance(timeout=timeout))}
            except Exception as exc:  # one provider's failure must not hide the others
                results[provider.name] = {"error": f"{type(exc).__name__}: {_one_line(exc)}"}
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        rows = []
        for name, result in results.items():
            if "error" in result:
                rows.append((name, "-", "-", result["error"]))
            for usage, value in result.get("balance", {}).items():
                rows.append((name, usage, f"{value:,.0f}", ""))
        _print_table(("PROVIDER", "USAGE", "TOKENS LEFT", "NOTE"), rows)
    return EXIT_OK if any("balance" in result for result in results.values()) else EXIT_FAILED


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    unused = [option for option in ("config", "strategy", "timeout") if getattr(args, option, None) is not None]
    if unused:
        raise _UsageError(
            f"demo runs on its own mock providers and does not use {', '.join('--' + o for o in unused)}: "
            "leave it out, or try `ask` or `health` with it"
        )
    return run_demo()


# Helpers -----------------------------------------------------------------------------


def _router(args: argparse.Namespace) -> Any:
    from .configuration import load_config

    given = getattr(args, "config", None)
    if given is not None and not given.strip():
        # An unset shell variable (--config "$CONFIG") must not quietly mean the mocks.
        raise _UsageError("--config is empty: pass the path of a JSON configuration file, or leave --config out")
    source = given or os.environ.get(CONFIG_ENV, "").strip() or DEFAULT_CONFIG
    config = load_config(source)
    if getattr(args, "strategy", None):
        config.strategy = args.strategy
    if getattr(args, "timeout", None) is not None:
        config.timeout = args.timeout
    return config.build()


def _params(args: argparse.Namespace) -> Any:
    schema = _json_schema(args.json_schema) if getattr(args, "json_schema", None) else None
    if args.temperature is None and args.max_tokens is None and schema is None:
        return None
    from .types import GenerationParams

    return GenerationParams(temperature=args.temperature, max_tokens=args.max_tokens, response_format=schema)


def _json_schema(path: str) -> Dict[str, Any]:
    """The JSON Schema object in the file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            schema = json.load(handle)
    except OSError as exc:
        raise _UsageError(f"--json-schema: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _UsageError(f"--json-schema: {path} is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise _UsageError(f"--json-schema: {path} must hold a JSON Schema object, e.g. {{\"type\": \"object\", ...}}")
    return schema


def _numbered_lines(path: str) -> List[Tuple[int, str]]:
    """The non-blank lines of ``path`` ("-": stdin) with their 1-based line numbers."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read {path}: {exc}") from None
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _read_batch(path: str, fmt: str) -> List[Dict[str, Any]]:
    """One dict per prompt: {"line", "prompt"} or {"line", "error"} (+ "id" when given)."""
    from .errors import ConfigurationError

    numbered = _numbered_lines(path)
    if fmt == "auto":
        fmt = "jsonl" if numbered and numbered[0][1].lstrip().startswith("{") else "text"
    items: List[Dict[str, Any]] = []
    for number, line in numbered:
        item: Dict[str, Any] = {"line": number}
        items.append(item)
        if fmt == "text":
            item["prompt"] = line
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            item["error"] = ConfigurationError(f"line {number}: invalid JSON at column {exc.colno}: {exc.msg}")
            continue
        if not isinstance(data, dict) or ("prompt" in data) == ("messages" in data):
            item["error"] = ConfigurationError(
                f'line {number}: expected an object with "prompt" (a string) or "messages" (a list)'
            )
            continue
        if "id" in data:
            item["id"] = data["id"]
        item["prompt"] = data["prompt"] if "prompt" in data else data["messages"]
    return items


class _Progress:
    """progress(done, total) for Router.batch: tqdm when installed, else a plain counter.

    Called from worker threads, possibly out of order; the lock keeps the count exact.
    """

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.done = 0
        self._lock = threading.Lock()
        self._shown_at = 0.0
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # the optional [progress] extra is not installed
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, file=stream, desc="batch", unit="prompt")

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += 1
            if self._bar is not None:
                self._bar.update(1)
                return
            now = time.monotonic()
            # A terminal gets a live counter; a log file one line a second, plus the last.
            if self.done == self.total or now - self._shown_at >= (0.1 if self._tty else 1.0):
                self._shown_at = now
                end = "" if self._tty and self.done < self.total else "\n"
                self.stream.write(f"{chr(13) if self._tty else ''}batch: {self.done}/{self.total}{end}")
                self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _one_line(exc: BaseException) -> str:
    """An error message on one line (AllProvidersFailedError lists one failure a line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    rest = [line[2:] if line.startswith("- ") else line for line in lines[1:]]
    return " ".join([lines[0], "; ".join(rest)]) if rest else lines[0]


def _exit_code(exc: BaseException) -> int:
    from .errors import ConfigurationError

    if isinstance(exc, (ConfigurationError, _UsageError)):
        return EXIT_USAGE
    return EXIT_FAILED


class _UsageError(Exception):
    """A bad command-line argument found after parsing (exit status 2)."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
