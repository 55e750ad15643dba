"""Cancellable requests for :class:`~safereason.judges.http.JsonClient`: Ctrl-C must end a batch of HTTP
requests within a moment, not after each one's timeout and retries.

urllib gives no handle on the socket of a request in flight, so the connection classes below register each
socket with the :class:`Call` of the worker thread sending it; cancelling the call shuts those sockets down,
which ends a blocked read at once, and the call's flag stops every retry and every request not yet sent.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.request
from typing import Any


class Call:
    """One ``post_many``: its cancel flag and the sockets its requests hold, so that Ctrl-C can end them."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def track(self, sock: socket.socket | None, open_: bool) -> None:
        if sock is None:
            return
        with self._lock:
            (self._socks.add if open_ else self._socks.discard)(sock)
        if open_ and self.cancelled.is_set():
            self._abort(sock)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            self._abort(sock)

    @staticmethod
    def _abort(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a blocked read in a worker returns at once
            sock.shutdown(socket.SHUT_RDWR)


_local = threading.local()  # the Call (and the socket) of the request a worker thread is sending


def _tracked(cls: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    class Tracked(cls):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            call: Call | None = getattr(_local, "call", None)
            if call is not None:
                _local.sock = self.sock
                call.track(self.sock, True)

    Tracked.__name__ = "Tracked" + cls.__name__
    return Tracked


_TrackedHTTP = _tracked(http.client.HTTPConnection)
_TrackedHTTPS = _tracked(http.client.HTTPSConnection)


class HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_TrackedHTTP, req)


class HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        kw: dict[str, Any] = {"context": self._context}  # type: ignore[attr-defined]
        if hasattr(self, "_check_hostname"):  # Python < 3.12
            kw["check_hostname"] = self._check_hostname
        return self.do_open(_TrackedHTTPS, req, **kw)


def bind(call: Call | None) -> None:
    """Register the sockets this thread opens from now on with ``call`` (None: stop)."""
    _local.call, _local.sock = call, None


def opened_socket() -> socket.socket | None:
    """The socket this thread's last request opened (to untrack it once the request is over)."""
    return getattr(_local, "sock", None)
