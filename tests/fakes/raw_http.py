"""A loopback HTTP/1.1 server that writes scripted raw bytes, for tests of the body
readers (chunk framing, connection reuse, cuts mid-chunk).

``RawServer(answers)`` answers the n-th request with ``answers[n]``: a ``Reply`` whose
``pieces`` are written in order (``pause`` seconds apart, so each usually arrives in its
own read; the readers' correctness never depends on it), then the connection is closed
(``close``), reset (``reset``: RST, an abrupt cut) or kept for the next request.
``connections`` counts the TCP connections accepted, ``requests`` the requests read.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import List, Sequence

__all__ = ["Reply", "RawServer", "chunked"]


@dataclass
class Reply:
    pieces: Sequence[bytes]
    pause: float = 0.0
    close: bool = False
    reset: bool = False


def chunked(*chunks: bytes, head: bytes = b"", trailer: bytes = b"0\r\n\r\n") -> bytes:
    """A chunked 200 response with these chunks (``head``: extra header lines)."""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + head + b"\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + trailer)


class RawServer:
    def __init__(self, answers: Sequence[Reply]) -> None:
        self.answers: List[Reply] = list(answers)
        self.connections = 0
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.2)
        buffer = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        if self._stop.is_set():
                            return
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                reply = self.answers[min(self.requests, len(self.answers) - 1)]
                self.requests += 1
                for index, piece in enumerate(reply.pieces):
                    if index and reply.pause:
                        time.sleep(reply.pause)
                    conn.sendall(piece)
                if reply.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if reply.close:
                    return
        finally:
            conn.close()
