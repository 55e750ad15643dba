"""The HTTP layer of ``safereason serve`` (standard library ``http.server``): routing, auth, body limits,
admission (bounded queue, 429 with a ``Retry-After`` estimated from the queue) and graceful shutdown, in
front of one :class:`~safereason.serve.engine.GuardedModel`."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from safereason.serve.engine import GuardedModel
from safereason.serve.schema import ApiError, ServeError, parse_request

log = logging.getLogger("safereason.serve")

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT_S = 30.0


class _Admission:
    """At most ``limit`` requests in the server at once (running or queued), and a way to wait for none."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._cond = threading.Condition()

    def try_enter(self) -> bool:
        with self._cond:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: OpenAI clients reuse connections
    server_version = "safereason"
    sys_version = ""
    timeout = 60  # an idle connection cannot hold a thread forever (the body has its own deadline)
    server: GuardedServer

    # connection tracking, so that shutdown can end idle keep-alive connections
    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    # -- plumbing -------------------------------------------------------------------------------
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        if self.server.shutting_down:
            self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away: nothing to tell it
            self.close_connection = True

    def _body_length(self) -> int | None:
        if self.headers.get("Transfer-Encoding"):
            return None
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return n if n >= 0 else None

    def _discard_body(self) -> None:
        """Read an unwanted body so the client sees our error rather than a reset; drop the connection after."""
        self._body_pending = False
        self.close_connection = True
        n = self._body_length()
        if n is None or n > 64 * self.server.max_body_bytes:
            return
        with contextlib.suppress(OSError):
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    break
                n -= len(chunk)

    def _read_body(self) -> bytes:
        n = self._body_length()
        if n is None:
            self._body_pending = False
            self.close_connection = True
            raise ApiError(411, "send the request body with a Content-Length header (chunked bodies are not "
                                "accepted)")
        if n > self.server.max_body_bytes:
            self._discard_body()
            raise ApiError(413, f"request body of {n} bytes is over the limit of {self.server.max_body_bytes}",
                           code="request_too_large")
        data = self._read_within(n, self.server.body_timeout)
        self._body_pending = False
        if len(data) != n:
            self.close_connection = True
            raise ApiError(400, "request body ended early")
        return data

    def _read_within(self, n: int, limit: float) -> bytes:
        """``n`` bytes of body within ``limit`` seconds in all (not per read: a client trickling a byte at a time
        cannot hold the thread either); a stalled body is a 408, not a server error."""
        deadline = time.monotonic() + limit
        chunks: list[bytes] = []
        try:
            while n > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(n, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                n -= len(chunk)
        except TimeoutError:
            self._body_pending = False
            self.close_connection = True
            raise ApiError(408, f"the request body did not arrive within {limit:g} s", code="request_timeout") \
                from None
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _check_auth(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def _answer(self, status: int, handle: Callable[[], Any], *, has_body: bool) -> None:
        started = time.monotonic()
        self._body_pending, self._admitted = has_body, False
        try:
            if self.server.shutting_down:  # read after shutdown began (a kept-alive connection): not started
                raise ApiError(503, "the server is shutting down", "server_error", "shutting_down")
            self._send_json(status, handle())
        except ApiError as e:
            if self._body_pending:
                self._discard_body()
            status = e.status
            self._send_json(e.status, e.body(), e.headers)
        except Exception:
            log.exception("request %s %s failed", self.command, self.path)
            status = 500
            if self._body_pending:
                self._discard_body()
            self._send_json(500, ApiError(500, "internal server error (see the server log)", "server_error",
                                          "internal_error").body())
        finally:
            if self._admitted:
                self.server.admission.leave()
        log.info("%s %s %s %d %.2fs", self.client_address[0], self.command, urlsplit(self.path).path, status,
                 time.monotonic() - started)

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/health":
            self._answer(200, lambda: {"status": "ok"}, has_body=False)
            return

        def handle() -> Any:
            self._check_auth()
            engine = self.server.engine
            model = {"id": engine.served_model_name, "object": "model", "created": self.server.started,
                     "owned_by": "safereason", "safereason": engine.info()}
            if path == "/v1/models":
                return {"object": "list", "data": [model]}
            if path == f"/v1/models/{engine.served_model_name}":
                return model
            raise ApiError(404, f"no route GET {path}", code="not_found")

        self._answer(200, handle, has_body=False)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")

        def handle() -> Any:
            self._check_auth()
            if path != CHAT_PATH:
                raise ApiError(404, f"no route POST {path}; use {CHAT_PATH}", code="not_found")
            req = parse_request(self._read_body())
            if not self.server.admission.try_enter():
                wait = self.server.retry_after()
                raise ApiError(429, f"the server is busy ({self.server.admission.limit} requests running or "
                                    f"queued); retry in about {wait} s", "rate_limit_error", "server_busy",
                               headers={"Retry-After": str(wait)})
            self._admitted = True  # left once the answer is written, so a draining shutdown waits for it
            return self.server.engine.complete(req)

        self._answer(200, handle, has_body=True)

    def _not_allowed(self) -> None:
        def handle() -> Any:
            raise ApiError(405, f"method {self.command} is not allowed", code="method_not_allowed")

        self._answer(200, handle, has_body=True)

    do_PUT = do_DELETE = do_PATCH = _not_allowed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardedServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, all of them sharing one :class:`GuardedModel`."""

    daemon_threads = True  # a second Ctrl-C must not wait for a generation to end

    def __init__(self, host: str, port: int, *, api_key: str | None, max_concurrency: int,
                 max_body_bytes: int, body_timeout: float = DEFAULT_BODY_TIMEOUT_S) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api_key, self.max_body_bytes, self.body_timeout = api_key, max_body_bytes, body_timeout
        self.admission = _Admission(max_concurrency)
        self.shutting_down = False
        self.started = int(time.time())
        self.engine: GuardedModel
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow or hanging without DNS)."""
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the requests admitted (running and queued) times the mean time a
        recent request held the model (1 s per request before any finished); at least 1."""
        mean = self.engine.mean_service_s() if hasattr(self, "engine") else None
        return max(1, math.ceil(self.admission.count * (mean if mean is not None else 1.0)))

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._conns_lock:
            (self._conns.add if open_ else self._conns.discard)(conn)

    def close(self, timeout: float | None = 60.0) -> bool:
        """Stop serving (after :meth:`shutdown`, or once ``serve_forever`` returned): end idle connections,
        refuse queued requests, wait up to ``timeout`` s for running ones; True when all ended."""
        self.shutting_down = True
        self.engine_closing()
        self.server_close()  # new connections are refused at once
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive readers see EOF; a request being answered can still be written
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RD)
        drained = self.admission.wait_idle(timeout)
        if drained and hasattr(self, "engine"):
            self.engine.close()
        return drained

    def engine_closing(self) -> None:
        if hasattr(self, "engine"):
            self.engine.closing = True
