"""A loopback server streaming prebuilt chat answers, for benchmarks/streaming.py (not a
benchmark). It runs in its own process (``spawn()``) so that its threads do not compete
with the client for the GIL; every answer is chunked (one HTTP chunk per event, as the
providers send them) and written at once, so the client's reading dominates.

By path: ``/v1/chat/completions`` OpenAI SSE, ``/giga/chat/completions`` GigaChat SSE,
``/foundationModels/v1/completion`` YandexGPT JSON lines (cumulative text),
``/api/chat`` Ollama NDJSON. A request body containing ``"large"`` gets the
few-large-events variant, else the many-small-events one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

MANY = 240  # events of a "many" stream
LARGE = 8  # events of a "large" stream ...
LARGE_SIZE = 32 * 1024  # ... of this many characters each
WORD = "token "


def pieces(kind: str) -> List[str]:
    if kind == "large":
        return [("x" * 63 + " ") * (LARGE_SIZE // 64) for _ in range(LARGE)]
    return [f"{WORD}{index} " for index in range(MANY)]


def sse(events: List[dict]) -> List[bytes]:
    return [b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def bodies(kind: str) -> Dict[str, Tuple[str, List[bytes]]]:
    texts = pieces(kind)
    openai = sse(
        [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]} for text in texts]
        + [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(texts), "total_tokens": 3 + len(texts)}}]
    )
    giga = sse(
        [{"choices": [{"delta": {"content": text, "role": "assistant"}, "index": 0}], "created": 1,
          "model": "GigaChat", "object": "chat.completion"} for text in texts]
        + [{"choices": [{"delta": {"content": ""}, "finish_reason": "stop", "index": 0}], "created": 1,
            "model": "GigaChat", "object": "chat.completion",
            "usage": {"prompt_tokens": 3, "completion_tokens": len(texts), "total_tokens": 3 + len(texts)}}]
    )
    yandex, so_far = [], ""
    for index, text in enumerate(texts):
        so_far += text
        final = index == len(texts) - 1
        yandex.append(json.dumps({"result": {
            "alternatives": [{"message": {"role": "assistant", "text": so_far},
                              "status": "ALTERNATIVE_STATUS_FINAL" if final else "ALTERNATIVE_STATUS_PARTIAL"}],
            "usage": {"inputTextTokens": "3", "completionTokens": str(index + 1), "totalTokens": str(index + 4)},
            "modelVersion": "1"}}, ensure_ascii=False).encode() + b"\n")
    ollama = [json.dumps({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                          "message": {"role": "assistant", "content": text}, "done": False}).encode() + b"\n"
              for text in texts]
    ollama.append(json.dumps({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                              "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                              "prompt_eval_count": 3, "eval_count": len(texts)}).encode() + b"\n")
    return {
        "/v1/chat/completions": ("text/event-stream", openai),
        "/giga/chat/completions": ("text/event-stream", giga),
        "/foundationModels/v1/completion": ("application/json", yandex),
        "/api/chat": ("application/x-ndjson", ollama),
    }


def chunked(content_type: str, events: List[bytes]) -> bytes:
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events) + b"0\r\n\r\n"


PREBUILT = {kind: {path: chunked(*value) for path, value in bodies(kind).items()} for kind in ("many", "large")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = "large" if b"large" in body else "many"
        answer = PREBUILT[kind].get(self.path.split("?")[0])
        if answer is None:
            self.send_error(404)
            return
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Spawned:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Spawned":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(10)


def spawn() -> Spawned:
    return Spawned()


if __name__ == "__main__":
    import threading

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes stdin
    server.shutdown()
