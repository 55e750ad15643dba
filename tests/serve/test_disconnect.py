"""A non-streamed request whose client disconnects stops its generation and frees its slot, as a stream's does."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import pytest


class SlowBackend:
    """The tiny backend, slowed to ``delay`` s per generated token and counting them, through every path a
    generation takes (``generate_ids`` with or without a streamer, a decode session's steps)."""

    supports_streamer = True

    def __init__(self, inner: Any, delay: float = 0.03) -> None:
        self.inner, self.delay = inner, delay
        self.tokens = 0
        self.generating = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _tick(self) -> None:
        self.tokens += 1
        self.generating.set()
        time.sleep(self.delay)

    def generate(self, texts: Any, params: Any, seed: int) -> Any:
        return self.generate_ids([self.inner.encode(t) for t in texts], params, seed)

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> Any:
        outer, seen = kw.pop("streamer", None), [False]

        class Counting:
            def put(_, value: Any) -> None:  # the backend's self is the one that counts
                if seen[0]:
                    self._tick()
                seen[0] = True
                if outer is not None:
                    outer.put(value)

            def end(_) -> None:
                if outer is not None:
                    outer.end()

        return self.inner.generate_ids(prompt_ids, params, seed, streamer=Counting(), **kw)

    def open_session(self, *args: Any, **kw: Any) -> Any:
        session = self.inner.open_session(*args, **kw)
        step = session.step

        def slow_step() -> list[int]:
            self._tick()
            return step()

        session.step = slow_step
        return session


def _post(srv: Any, body: dict[str, Any]) -> http.client.HTTPConnection:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    return conn


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("defended", [True, False], ids=["safethink", "undefended"])
def test_disconnect_stops_a_whole_reply(kit, tiny_backend, defended):
    """A plain generate, or SafeThink (monitored steps, then the unmonitored rest): 400 tokens at 30 ms each
    would take 12 s; the client leaves after the first and the generation stops within a few."""
    options = {} if defended else {"defense": None, "defense_options": {}}
    backend = SlowBackend(tiny_backend)
    srv = kit.make(backend, server_kw={"max_concurrency": 1}, max_new_tokens=400, ignore_eos=True, **options)
    with kit.running(srv):
        conn = _post(srv, {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 400,
                           "seed": 1})
        assert backend.generating.wait(30) and srv.admission.count == 1
        conn.close()  # the client goes away before its reply
        assert _wait(lambda: srv.admission.count == 0, 30), "the slot was never freed"
        stopped_at = backend.tokens
        assert stopped_at < 200, stopped_at  # stopped, not run to its 400 tokens
        time.sleep(0.3)
        assert backend.tokens == stopped_at  # and nothing generates on behind the freed slot
        resp = kit.ask(kit.client(srv), max_tokens=3, seed=1)  # the model serves the next request
        assert resp.usage.completion_tokens == 3


def test_disconnect_while_queued_never_generates_a_whole_reply(kit, tiny_backend):
    backend = kit.GatedBackend(tiny_backend)
    srv = kit.make(backend, defense=None, defense_options={}, server_kw={"max_concurrency": 2})
    with kit.running(srv):
        first = threading.Thread(target=lambda: kit.ask(kit.client(srv), max_tokens=2, seed=1))
        first.start()
        assert backend.started.acquire(timeout=20)
        conn = _post(srv, {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert _wait(lambda: srv.admission.count == 2, 10)
        conn.close()  # gone before its turn
        time.sleep(0.5)
        backend.gate.set()
        first.join(30)
        assert _wait(lambda: srv.admission.count == 0, 10)
    assert backend.max_active == 1 and not backend.started.acquire(timeout=0)  # the second never generated
