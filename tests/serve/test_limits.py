"""`safereason serve` guarantees at the HTTP layer: auth, body limits (413, 408), the bounded queue (429 with a
Retry-After from the queue), one generation at a time, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from safereason.errors import SafereasonError
from safereason.models.base import Completion
from safereason.serve import make_server


def test_api_key_required_when_configured(kit, tiny_backend, monkeypatch):
    monkeypatch.setenv(kit.KEY_ENV, "s3cret-key")
    srv = make_server(kit.base_config(defense=None, defense_options={}), port=0, api_key_env=kit.KEY_ENV,
                      backend=tiny_backend, served_model_name="tiny")
    with kit.running(srv):
        with pytest.raises(kit.openai.AuthenticationError) as e:
            kit.ask(kit.client(srv, "wrong"), max_tokens=2)
        assert e.value.status_code == 401
        with pytest.raises(kit.openai.AuthenticationError):
            kit.ask(kit.client(srv, "s3cret-ke"), max_tokens=2, stream=True)
        status, body = kit.raw(srv, "POST", "/v1/chat/completions", json.dumps({"messages": []}).encode())
        assert status == 401 and body["error"]["type"] == "authentication_error"
        assert kit.raw(srv, "GET", "/v1/models")[0] == 401
        assert kit.raw(srv, "GET", "/v1/models/tiny")[0] == 401
        assert kit.raw(srv, "GET", "/health")[0] == 200  # liveness needs no key and tells nothing
        assert kit.client(srv, "s3cret-key").models.list().data[0].id == "tiny"
        resp = kit.ask(kit.client(srv, "s3cret-key"), max_tokens=3)
        assert resp.model_extra["safereason"]["defense"] is None and resp.model_extra["safereason"]["control"] == {}


def test_public_address_needs_a_key(kit, tiny_backend, monkeypatch):
    monkeypatch.delenv(kit.KEY_ENV, raising=False)
    with pytest.raises(SafereasonError, match=f"non-loopback address needs an API key; set the environment "
                                              f"variable {kit.KEY_ENV}"):
        make_server(kit.base_config(), host="0.0.0.0", port=0, api_key_env=kit.KEY_ENV, backend=tiny_backend)
    monkeypatch.setenv(kit.KEY_ENV, "k")
    srv = make_server(kit.base_config(), host="0.0.0.0", port=0, api_key_env=kit.KEY_ENV, backend=tiny_backend)
    assert srv.api_key == "k"
    srv.close()


def test_port_in_use_is_one_clear_error(kit, tiny_backend):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SafereasonError, match=f"cannot listen on 127.0.0.1:{port}"):
            make_server(kit.base_config(), port=port, api_key_env=kit.KEY_ENV + "_UNSET", backend=tiny_backend)


def test_cli_refuses_public_address_without_key(kit, cli_env):
    cli_env.pop(kit.KEY_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "serve", "--model", "smollm2-135m", "--host",
                           "0.0.0.0", "--api-key-env", kit.KEY_ENV], capture_output=True, text=True, env=cli_env,
                          timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "needs an API key" in err, err


def test_stalled_body_gets_408_without_traceback(kit, caplog):
    srv = kit.make(defense=None, defense_options={}, server_kw={"body_timeout": 0.5})
    host, port = srv.server_address[:2]
    with caplog.at_level(logging.DEBUG, "safereason.serve"), kit.running(srv):
        with socket.create_connection((str(host), int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"messages\": [")  # ... and nothing more
            t0 = time.monotonic()
            reply = sock.makefile("rb").read()  # the server answers, then closes
        assert time.monotonic() - t0 < 5
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert kit.ask(kit.client(srv), max_tokens=2).usage.completion_tokens <= 2  # the server goes on
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    assert any(" 408 " in r.getMessage() for r in caplog.records)


def test_chunked_body_over_the_limit_is_413(kit, server):
    host, port = server.server_address[:2]
    body = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    with socket.create_connection((str(host), int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 1 << 16):
            part = body[i:i + (1 << 16)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 413")


# -- concurrency ------------------------------------------------------------------------------------

def test_bounded_queue_and_serialized_model(kit, tiny_backend):
    backend = kit.GatedBackend(tiny_backend)
    srv = kit.make(backend, defense=None, defense_options={}, server_kw={"max_concurrency": 2})
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            results[name] = kit.ask(kit.client(srv), name, max_tokens=4, seed=1)
        except Exception as e:
            results[name] = e

    with kit.running(srv):
        first = threading.Thread(target=call, args=("first",))
        first.start()
        assert backend.started.acquire(timeout=20)  # "first" is generating
        second = threading.Thread(target=call, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while srv.admission.count < 2 and time.monotonic() < deadline:  # "second" is queued
            time.sleep(0.01)
        assert srv.admission.count == 2
        with pytest.raises(kit.openai.RateLimitError, match="server is busy") as e:
            kit.ask(kit.client(srv), max_tokens=4)
        # no request has finished yet: 1 s per admitted request
        assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "2"
        with pytest.raises(kit.openai.RateLimitError):  # a stream is admitted like any request
            kit.ask(kit.client(srv), max_tokens=4, stream=True)
        backend.gate.set()
        first.join(30)
        second.join(30)
    assert all(r.usage.completion_tokens <= 4 for r in results.values()), results  # both were answered
    assert backend.max_active == 1  # one generation at a time on the model


class TimedGate:
    """Wraps a gated backend: its generations take ``delay`` seconds (a known service time)."""

    delay = 0.0

    def __init__(self, gated: Any) -> None:
        self.gated = gated

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gated, name)

    def generate(self, texts: Any, params: Any, seed: int) -> list[Completion]:
        time.sleep(self.delay)
        return self.gated.generate(texts, params, seed)


def test_retry_after_grows_with_the_queue(kit, tiny_backend):
    gated = kit.GatedBackend(tiny_backend)
    backend = TimedGate(gated)
    srv = kit.make(backend, defense=None, defense_options={}, server_kw={"max_concurrency": 1})
    threads: list[threading.Thread] = []

    def admit(n: int) -> None:  # n more requests, held at the gate or queued behind it
        for _ in range(n):
            t = threading.Thread(target=lambda: kit.ask(kit.client(srv), max_tokens=2, seed=1))
            t.start()
            threads.append(t)
        deadline = time.monotonic() + 10
        while srv.admission.count < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.admission.count == len(threads)

    def retry_after() -> int:
        with pytest.raises(kit.openai.RateLimitError) as e:
            kit.ask(kit.client(srv), max_tokens=2)
        return int(e.value.response.headers["retry-after"])

    with kit.running(srv):
        backend.delay = 1.0
        gated.gate.set()
        kit.ask(kit.client(srv), max_tokens=2, seed=1)  # one request of a little over 1 s: the mean service time
        mean = srv.engine.mean_service_s()
        gated.gate.clear()
        admit(1)
        one = retry_after()
        srv.admission.limit = 3
        admit(2)
        three = retry_after()
        backend.delay = 0.0
        gated.gate.set()
        for t in threads:
            t.join(30)
    assert 1.0 < mean < 5.0
    assert (one, three) == (math.ceil(mean), math.ceil(3 * mean))  # ceil(admitted x mean service time)


# -- shutdown ---------------------------------------------------------------------------------------

def test_shutdown_does_not_wait_for_idle_keepalive_connections(kit):
    srv = kit.make(defense=None, defense_options={})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    c = kit.client(srv)
    assert c.models.list().data  # leaves a kept-alive connection open
    t0 = time.monotonic()
    srv.shutdown()
    assert srv.close(timeout=10) is True
    assert time.monotonic() - t0 < 3
    with pytest.raises((kit.openai.APIConnectionError, kit.openai.InternalServerError)):  # closed, or 503
        c.models.list()
    thread.join(5)


def test_shutdown_drains_running_and_refuses_queued(kit, tiny_backend):
    """What SIGTERM does in-process: the running stream finishes, the queued request gets 503, new
    connections are refused, and close() reports the drain."""
    backend = kit.GatedBackend(tiny_backend)
    srv = kit.make(backend, defense=None, defense_options={})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    results: dict[str, Any] = {}

    def running_stream() -> None:
        chunks = list(kit.ask(kit.client(srv), max_tokens=6, seed=1, stream=True))
        results["stream"] = chunks

    def queued() -> None:
        try:
            kit.ask(kit.client(srv), max_tokens=2)
        except Exception as e:
            results["queued"] = e

    first = threading.Thread(target=running_stream)
    first.start()
    assert backend.started.acquire(timeout=20)  # generating, held at the gate
    second = threading.Thread(target=queued)
    second.start()
    deadline = time.monotonic() + 10
    while srv.admission.count < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.shutdown()
    time.sleep(0.5)  # the listener closes
    with pytest.raises(kit.openai.APIConnectionError):
        kit.client(srv).models.list()
    backend.gate.set()
    assert srv.close(timeout=20) is True
    first.join(10)
    second.join(10)
    thread.join(10)
    chunks = results["stream"]
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")  # the running stream ran to its end
    assert isinstance(results["queued"], kit.openai.InternalServerError)
    assert results["queued"].status_code == 503 and results["queued"].body["code"] == "shutting_down"


def test_sigterm_drains_a_running_stream(kit, tiny_model_dir, cli_env):
    """The real thing: `safereason serve` on the tiny model, SIGTERM while a stream is being generated; the
    stream ends normally, later connections are refused, the process exits 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "safereason.cli", "serve", "--model", str(tiny_model_dir),
                             "--defense", "none", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.2)
        c = kit.openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        model = c.models.list().data[0].id
        stream = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=40, seed=1, stream=True)
        chunks, after = [], 0
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                proc.send_signal(signal.SIGTERM)
            elif len(chunks) > 2:
                after += 1
        assert chunks[-1].choices[0].finish_reason == "length" and after > 1
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
