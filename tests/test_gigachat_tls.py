"""Real TLS on loopback with a private CA (trustme), standing in for the Russian Trusted Root CA."""

from __future__ import annotations

import gc
import http.server
import json
import logging
import ssl
import threading
import time
import warnings

import pytest
import trustme

from multi_llm_orchestrator import ProviderConfig
from multi_llm_orchestrator.errors import ProviderUnavailableError
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider

AUTH_KEY = "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="


class TlsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, body):
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/oauth":
            self.answer({"access_token": "tls-token", "expires_at": int((time.time() + 1800) * 1000)})
        else:
            self.answer({
                "choices": [{"message": {"role": "assistant", "content": "Защищено."}, "finish_reason": "stop"}],
                "model": "GigaChat:tls", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })

    def do_GET(self):
        self.answer({"object": "list", "data": [{"id": "GigaChat"}]})


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TlsHandler)
    server.daemon_threads = True
    server.block_on_close = False
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    # A client that rejects the certificate makes accept() fail; the server just goes on.
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def provider(url: str, **fields) -> GigaChatProvider:
    fields.setdefault("name", "giga-tls")
    return GigaChatProvider(
        ProviderConfig(api_key=AUTH_KEY, base_url=url + "/api/v1", auth_url=url + "/oauth", max_retries=2, **fields)
    )


def test_default_verification_rejects_the_private_ca_with_a_helpful_message(tls_server):
    giga = provider(tls_server)
    with pytest.raises(ProviderUnavailableError) as info:
        giga.complete("Привет", timeout=5)
    message = str(info.value)
    assert "TLS verification failed" in message
    assert "ca_bundle" in message and "Russian Trusted Root CA" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert info.value.retryable is False
    assert AUTH_KEY not in message
    assert giga.health_check(timeout=5) is False


def test_ca_bundle_with_the_private_ca_succeeds(tls_server, ca, tmp_path):
    bundle = tmp_path / "russian_trusted_root_ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    giga = provider(tls_server, ca_bundle=str(bundle))
    completion = giga.complete("Привет", timeout=5)
    assert completion.text == "Защищено." and completion.usage.total_tokens == 5
    assert giga.health_check(timeout=5) is True


def test_verify_ssl_false_works_and_warns_once(tls_server, caplog):
    caplog.set_level(logging.WARNING, logger="multi_llm_orchestrator")
    name = f"giga-insecure-{time.monotonic_ns()}"
    giga = provider(tls_server, name=name, verify_ssl=False)
    assert giga.complete("Привет", timeout=5).text == "Защищено."
    assert giga.complete("Ещё раз", timeout=5).text == "Защищено."
    provider(tls_server, name=name, verify_ssl=False).list_models(timeout=5)
    warnings = [r for r in caplog.records if "TLS verification is OFF" in r.getMessage()]
    assert len(warnings) == 1
    assert name in warnings[0].getMessage()


def test_a_tls_connection_keeps_no_second_socket_once_connected(tls_server, ca, tmp_path):
    # The library keeps a duplicate of each new socket through its TLS handshake (so a
    # cut can end a handshake that stalls) and closes it once the connection is ready.
    bundle = tmp_path / "russian_trusted_root_ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        giga = provider(tls_server, name="giga-tls-sockets", ca_bundle=str(bundle))
        assert giga.complete("Привет", timeout=5).text == "Защищено."
        pooled = [connection for pool in giga.session.get_adapter(tls_server).poolmanager.pools._container.values()
                  for connection in list(pool.pool.queue) if connection is not None and connection.sock is not None]
        assert pooled and all(getattr(connection, "_mlo_socket", None) is None for connection in pooled)
        giga.close()
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
