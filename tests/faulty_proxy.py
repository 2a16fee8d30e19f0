"""A loopback HTTP proxy that fails chosen requests before forwarding to a real server, and counts.

It stands in front of the GCS or BigQuery emulator to play a flaky network, an overloaded service or
a missing permission: requests whose path contains ``fragment`` (and whose method is one of
``methods``, when given) get ``status`` for the first ``failures`` times, then pass through. It also
counts the requests forwarded and the response bytes (the benchmarks use it with no failures), and
logs each request as ``"METHOD path"`` in ``state["log"]``.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@contextmanager
def faulty_proxy(
    upstream: str,
    fragment: str = "",
    failures: int = 0,
    status: int = 503,
    methods: tuple[str, ...] | None = None,
) -> Iterator[dict[str, object]]:
    """Run the proxy on a free loopback port; yields ``{"url", "failed", "requests", "bytes", "log"}``."""
    target = urlsplit(upstream)
    log: list[str] = []
    state: dict[str, object] = {"failed": 0, "requests": 0, "bytes": 0, "log": log}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            with lock:
                log.append(f"{self.command} {self.path}")
                chosen = fragment in self.path and (methods is None or self.command in methods)
                fail = chosen and int(state["failed"]) < failures
                if fail:
                    state["failed"] = int(state["failed"]) + 1
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fail:
                body = b'{"error": {"code": %d, "message": "refused by faulty_proxy"}}' % status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            with lock:
                state["requests"] = int(state["requests"]) + 1
                state["bytes"] = int(state["bytes"]) + len(payload)
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            connection.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
