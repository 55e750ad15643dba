"""Shared pieces of the `safereason serve` tests: scripted SafeThink scorers, backends wrapping the tiny random
Llama (real SmolLM2 tokenizer and chat template), and helpers that run a server and call it with the real
`openai` client (the ``kit`` fixture)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from safereason.judges import JUDGES
from safereason.models.base import Completion
from safereason.records import Verdict
from safereason.serve import GuardedServer, make_server

openai = pytest.importorskip("openai")

PREFIX = "Wait, think safely."
KEY_ENV = "SAFEREASON_TEST_SERVE_KEY"


class PrefixScorer:
    """P(unsafe) = 1 until the steering prefix is in the trace: every request is steered exactly once."""

    outputs = ("unsafe",)

    def identity(self) -> dict[str, Any]:
        return {}

    def judge(self, items: list[Any]) -> list[Verdict]:
        return [Verdict(unsafe=(u := PREFIX not in i.text), score=float(u)) for i in items]


class UnsafeScorer(PrefixScorer):
    """P(unsafe) = 1 whatever the trace: every steered attempt fails, the defense ends unsafe."""

    def judge(self, items: list[Any]) -> list[Verdict]:
        return [Verdict(unsafe=True, score=1.0) for _ in items]


class DownScorer(PrefixScorer):
    def judge(self, items: list[Any]) -> list[Verdict]:
        return [Verdict.failed("scorer down") for _ in items]


class RaisingScorer(PrefixScorer):
    def judge(self, items: list[Any]) -> list[Verdict]:
        raise ConnectionError("judge unreachable")


class LateDownScorer(PrefixScorer):
    """Scores like PrefixScorer until the trace is long, then fails: a scorer that dies mid-request."""

    def judge(self, items: list[Any]) -> list[Verdict]:
        if any(i.text.count("\n\n") >= 1 or len(i.text) > 60 for i in items):
            return [Verdict.failed("scorer down") for _ in items]
        return super().judge(items)


@pytest.fixture(scope="package", autouse=True)
def scorers() -> Iterator[None]:
    names = {"serve-prefix": PrefixScorer, "serve-down": DownScorer, "serve-raising": RaisingScorer,
             "serve-unsafe": UnsafeScorer, "serve-late-down": LateDownScorer}
    for name, cls in names.items():
        JUDGES.add(name, cls)
    yield
    for name in names:
        JUDGES._items.pop(name)


class Proxy:
    """Wraps the tiny backend (same name, tokenizer, chat template) so a test can change its generation; no
    decode session and no streamer, so that every generation goes through a plain ``generate_ids``."""

    supports_session = False
    supports_streamer = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, texts: Any, params: Any, seed: int) -> list[Completion]:
        return self.generate_ids([self.inner.encode(t) for t in texts], params, seed)

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
        return self.inner.generate_ids(prompt_ids, params, seed, **kw)


class ClosingBackend(Proxy):
    """Its final (unmonitored) continuation ends the thought and answers, which a random model never does:
    to see the reasoning/answer split of a finished response."""

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
        if "\n\n" in params.stop:  # a monitored SafeThink step: leave it alone
            return self.inner.generate_ids(prompt_ids, params, seed, **kw)
        tail = self.inner.encode("</think>\n\nI can't help with that.")
        room = params.max_new_tokens - len(tail)
        assert room > 0, "give the request room for the closing tail"
        outs = self.inner.generate_ids(prompt_ids, replace(params, max_new_tokens=room), seed, **kw)
        return [Completion(self.inner.decode([*c.token_ids, *tail]), c.n_tokens + len(tail), "stop",
                           (*c.token_ids, *tail), "eos") for c in outs]


class GatedBackend(Proxy):
    """Generation waits for ``gate``; counts how many generations overlap (must never exceed one)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate, self.started = threading.Event(), threading.Semaphore(0)
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.release()
        try:
            assert self.gate.wait(20)
            return self.inner.generate_ids(prompt_ids, params, seed, **kw)
        finally:
            with self._lock:
                self.active -= 1


def base_config(model_dir: Any, **kw: Any) -> dict[str, Any]:
    return {"model": str(model_dir), "think_prefill": "<think>\n", "max_new_tokens": 24, "temperature": 1.0,
            "defense": "safethink", "defense_options": {"scorer": "serve-prefix", "max_step_tokens": 4,
                                                        "attempts": 2}, **kw}


@contextmanager
def running(server: GuardedServer) -> Iterator[GuardedServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.close(timeout=10)
        thread.join(5)


def client(server: GuardedServer, key: str = "unused") -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def ask(c: Any, content: str = "How do I pick a lock?", **kw: Any) -> Any:
    return c.chat.completions.create(model=kw.pop("model", "tiny"), messages=[{"role": "user", "content": content}],
                                     **kw)


def raw(server: GuardedServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def collect(stream: Any) -> SimpleNamespace:
    """A streamed reply reassembled: its reasoning and content (None when no delta carried one, as a
    non-streamed message has None), finish_reason, the chunks, and the ``safereason`` record of the last."""
    chunks = list(stream)
    reasoning = [c.choices[0].delta.model_extra.get("reasoning") for c in chunks if c.choices]
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    records = [c.model_extra["safereason"] for c in chunks if (c.model_extra or {}).get("safereason")]
    return SimpleNamespace(
        reasoning="".join(r for r in reasoning if r) if any(r is not None for r in reasoning) else None,
        content="".join(t for t in content if t) if any(t is not None for t in content) else None,
        finish_reason=finishes[-1] if finishes else None, chunks=chunks, safereason=records[-1] if records else None,
        n_reasoning=sum(1 for r in reasoning if r), n_finishes=len(finishes))


@pytest.fixture(scope="package")
def kit(tiny_model_dir: Any, tiny_backend: Any) -> SimpleNamespace:
    """The helpers, bound to the tiny model: ``kit.make(**config)`` builds a server on a free loopback port."""

    def make(backend: Any = None, server_kw: dict[str, Any] | None = None, **config: Any) -> GuardedServer:
        return make_server(base_config(tiny_model_dir, **config), port=0, api_key_env=KEY_ENV + "_UNSET",
                           backend=backend or tiny_backend, served_model_name="tiny", **(server_kw or {}))

    return SimpleNamespace(make=make, running=running, client=client, ask=ask, raw=raw, openai=openai, collect=collect,
                           base_config=lambda **kw: base_config(tiny_model_dir, **kw), PREFIX=PREFIX,
                           KEY_ENV=KEY_ENV, Proxy=Proxy, ClosingBackend=ClosingBackend, GatedBackend=GatedBackend)


@pytest.fixture(scope="package")
def server(kit: SimpleNamespace) -> Iterator[GuardedServer]:
    """One guarded server (SafeThink with the prefix scorer) for the tests that need no special setup."""
    with running(kit.make()) as srv:
        yield srv
