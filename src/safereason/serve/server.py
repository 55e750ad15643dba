"""The HTTP layer of ``safereason serve``: a FastAPI app on uvicorn in front of one
:class:`~safereason.serve.engine.GuardedModel` (routes and streaming in :mod:`.app`), and :class:`GuardedServer`,
which binds the socket, admits requests (bounded queue, 429 with a ``Retry-After`` estimated from it) and
shuts down gracefully."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from safereason.serve.app import CHAT_PATH, DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES, build_app
from safereason.serve.schema import ServeError

if TYPE_CHECKING:
    from safereason.serve.engine import GuardedModel

__all__ = ["CHAT_PATH", "DEFAULT_BODY_TIMEOUT_S", "DEFAULT_DRAIN_S", "DEFAULT_MAX_BODY_BYTES", "Admission",
           "GuardedServer", "is_loopback"]

log = logging.getLogger("safereason.serve")

#: how long a shutdown waits for running requests (streams included) before abandoning them
DEFAULT_DRAIN_S = 60.0


class Admission:
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, with the shutdown this endpoint needs: the first SIGTERM or Ctrl-C stops accepting and
    refuses what is queued (503) while running requests finish; a second one abandons them. The signal is
    not re-raised once the server stopped (uvicorn's default), so the caller decides the exit status."""

    def __init__(self, config: uvicorn.Config, owner: GuardedServer) -> None:
        super().__init__(config)
        self.owner = owner

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
            return
        running = self.owner.admission.count
        if running:
            log.warning("shutting down: waiting for %d running request(s); interrupt again to abandon them",
                        running)
        self.owner.begin_shutdown()
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class GuardedServer:
    """The bound socket, the app and its uvicorn server; :meth:`serve_forever` serves until :meth:`shutdown`
    (or SIGTERM / Ctrl-C in the main thread), :meth:`close` waits for the drain."""

    def __init__(self, host: str, port: int, *, api_key: str | None, max_concurrency: int,
                 max_body_bytes: int, body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
                 drain_timeout: float = DEFAULT_DRAIN_S) -> None:
        self.api_key, self.max_body_bytes, self.body_timeout = api_key, max_body_bytes, body_timeout
        self.drain_timeout = drain_timeout
        self.admission = Admission(max_concurrency)
        self.shutting_down = False
        self.started = int(time.time())
        self.engine: GuardedModel
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)  # bound now: a port in use fails before the model loads
        except OSError as e:
            sock.close()
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.socket = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        config = uvicorn.Config(build_app(self), http="h11", ws="none", lifespan="off", log_config=None,
                                access_log=False, server_header=False, headers=[("server", "safereason")],
                                timeout_keep_alive=5, timeout_graceful_shutdown=math.ceil(drain_timeout))
        self._uvicorn = _Uvicorn(config, self)
        self._serving = threading.Event()
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    @property
    def forced(self) -> bool:
        """Whether a second signal abandoned running requests."""
        return self._uvicorn.force_exit

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the requests admitted (running and queued) times the mean time a
        recent request held the model (1 s per request before any finished); at least 1."""
        mean = self.engine.mean_service_s() if hasattr(self, "engine") else None
        return max(1, math.ceil(self.admission.count * (mean if mean is not None else 1.0)))

    def serve_forever(self, poll_interval: Any = None) -> None:
        """Serve until shut down; returns once running requests finished (or were abandoned)."""
        self._serving.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def begin_shutdown(self) -> None:
        """Refuse new and queued requests from now on (503); running ones go on."""
        self.shutting_down = True
        if hasattr(self, "engine"):
            self.engine.closing = True

    def shutdown(self) -> None:
        """What SIGTERM does: stop accepting, refuse what is queued, let running requests finish (returns at
        once; :meth:`close` waits)."""
        self._uvicorn.handle_exit(signal.SIGTERM, None)

    def close(self, timeout: float | None = DEFAULT_DRAIN_S) -> bool:
        """Shut down and wait up to ``timeout`` s for running requests; True when all ended (then the
        defense's scorer is freed)."""
        if not self._uvicorn.should_exit:
            self.begin_shutdown()
            self._uvicorn.should_exit = True
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = not self.forced and self.admission.wait_idle(timeout)
        if self._serving.is_set():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            drained = self._stopped.wait(left) and drained
        else:
            self.socket.close()
        if drained and hasattr(self, "engine"):
            self.engine.close()
        return drained
