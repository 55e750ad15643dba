"""`safereason serve`: a guarded OpenAI-compatible endpoint, driven by the real `openai` client against the
tiny random Llama (real SmolLM2 tokenizer and chat template) and SafeThink with scripted scorers."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from safereason.errors import SafereasonError
from safereason.judges import JUDGES
from safereason.models.base import Completion
from safereason.reasoning import get_format
from safereason.records import Verdict
from safereason.serve import REFUSAL, GuardedServer, final_verdict, make_server, split_guarded

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


@pytest.fixture(scope="module", autouse=True)
def scorers() -> Iterator[None]:
    names = {"serve-prefix": PrefixScorer, "serve-down": DownScorer, "serve-raising": RaisingScorer,
             "serve-unsafe": UnsafeScorer}
    for name, cls in names.items():
        JUDGES.add(name, cls)
    yield
    for name in names:
        JUDGES._items.pop(name)


def base_config(model_dir: Any, **kw: Any) -> dict[str, Any]:
    return {"model": str(model_dir), "think_prefill": "<think>\n", "max_new_tokens": 24, "temperature": 1.0,
            "defense": "safethink", "defense_options": {"scorer": "serve-prefix", "max_step_tokens": 4,
                                                        "attempts": 2}, **kw}


@contextmanager
def running(server: GuardedServer) -> Iterator[GuardedServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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


@pytest.fixture(scope="module")
def server(tiny_model_dir: Any, tiny_backend: Any) -> Iterator[GuardedServer]:
    srv = make_server(base_config(tiny_model_dir), port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend,
                      served_model_name="tiny")
    with running(srv):
        yield srv


class Proxy:
    """Wraps the tiny backend (same name, tokenizer, chat template) so a test can change its generation; no
    decode session, so that every generation goes through ``generate_ids``."""

    supports_session = False

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


# -- completions -------------------------------------------------------------------------------------

def test_guarded_completion(server):
    resp = ask(client(server), seed=11, max_tokens=20)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-") and resp.model == "tiny"
    choice = resp.choices[0]
    msg = choice.message
    assert msg.role == "assistant"
    # the random model never closes its thought: the trace is reasoning, there is no answer, and it says so
    assert msg.reasoning.startswith(PREFIX) and msg.content is None and choice.finish_reason == "length"
    extra = resp.model_extra["safereason"]
    assert extra["defense"] == "safethink" and extra["seed"] == 11 and extra["split_status"] == "unclosed"
    (first, *_) = extra["control"]["interventions"]
    assert first["step"] == 1 and first["accepted"] and first["safety"] == [0.0, 1.0]
    assert [s["step"] for s in extra["control"]["steps"]] == [1, 2, 3]
    usage = resp.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # a seed reproduces; no seed draws a fresh one and reports it
    again = ask(client(server), seed=11, max_tokens=20)
    assert again.choices[0].message.reasoning == msg.reasoning
    assert isinstance(ask(client(server), max_tokens=4).model_extra["safereason"]["seed"], int)


def test_same_machinery_as_eval(server, tiny_model_dir, tiny_backend, tmp_path):
    from safereason.data import load_benchmark
    from safereason.runner import evaluate

    prompt = load_benchmark("smoke", limit=1).prompts[0].prompt
    resp = ask(client(server), prompt, seed=5)
    run = evaluate({**base_config(tiny_model_dir), "benchmark": "smoke", "limit": 1, "k": 1, "seed": 5,
                    "n_bootstrap": 10, "out": str(tmp_path / "run")}, backend=tiny_backend, progress=False)
    (sample,) = run.samples
    assert resp.choices[0].message.reasoning == sample.thinking
    assert resp.model_extra["safereason"]["control"] == sample.control
    assert resp.usage.prompt_tokens == sample.n_prompt_tokens
    assert resp.usage.completion_tokens == sample.n_response_tokens


def test_reasoning_and_answer_split(tiny_model_dir, tiny_backend):
    cfg = base_config(tiny_model_dir)
    cfg["defense_options"]["mode"] = "stepwise"  # ClosingBackend tells the monitored steps by their stop string
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET",
                      backend=ClosingBackend(tiny_backend), served_model_name="tiny")
    with running(srv):
        resp = ask(client(srv), seed=3, max_tokens=40)
    choice = resp.choices[0]
    assert choice.message.content == "I can't help with that." and choice.finish_reason == "stop"
    reasoning = choice.message.reasoning
    assert reasoning.startswith(PREFIX) and "</think>" not in reasoning and "<think>" not in reasoning
    assert resp.model_extra["safereason"]["split_status"] == "closed"


def test_multi_turn_and_system_messages(server):
    engine = server.engine
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First question?"},
                {"role": "assistant", "content": "First answer."}, {"role": "user", "content": "Second question?"}]
    from safereason.serve import ChatRequest

    turns = engine._turns(ChatRequest.model_validate({"messages": messages}).messages)
    text = engine.prompt_text(turns)
    order = [text.index(s) for s in ("Be brief.", "First question?", "First answer.", "Second question?")]
    assert order == sorted(order) and text.endswith("<|im_start|>assistant\n<think>\n")
    resp = client(server).chat.completions.create(model="tiny", messages=messages, max_tokens=4, seed=1)
    assert resp.usage.prompt_tokens > ask(client(server), "Second question?", max_tokens=4).usage.prompt_tokens
    with pytest.raises(openai.BadRequestError, match="system messages must come before"):
        client(server).chat.completions.create(model="tiny", messages=[*messages, messages[0]], max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="last message must be a user message"):
        client(server).chat.completions.create(model="tiny", messages=messages[:3], max_tokens=4)


def test_models_and_health(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].model_extra["safereason"]["defense"] == "safethink"
    assert client(server).models.retrieve("tiny").id == "tiny"
    assert raw(server, "GET", "/health") == (200, {"status": "ok"})
    status, body = raw(server, "GET", "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"


# -- bad requests ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"stream": True}, "stream=true is not supported"),
    ({"n": 2}, "only n=1 is supported"),
    ({"messages": []}, "at least one user message"),
    ({"messages": [{"role": "user", "content": "  "}]}, "empty content"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
    ({"max_tokens": 10**6}, "over this server's limit"),
    ({"temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, "context is 4096 tokens"),
])
def test_bad_requests(server, kwargs, pattern):
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError, match=pattern) as e:
        client(server).chat.completions.create(**kwargs)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_wrong_model_huge_body_and_bad_json(server):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        ask(client(server), model="gpt-4o")
    with pytest.raises(openai.APIStatusError, match="over the limit") as e:
        ask(client(server), "x" * (2 << 20))
    assert e.value.status_code == 413
    status, body = raw(server, "POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = raw(server, "POST", "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and set(body["error"]) == {"message", "type", "code", "param"}
    assert raw(server, "GET", "/health")[0] == 200  # the server survived all of it


# -- the defense never fails open ---------------------------------------------------------------------

@pytest.mark.parametrize(("scorer", "why"), [("serve-down", "scorer down"), ("serve-raising", "judge unreachable")])
def test_failing_scorer_is_an_error_not_an_answer(tiny_model_dir, tiny_backend, scorer, why):
    cfg = base_config(tiny_model_dir, defense_options={"scorer": scorer})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny")
    with running(srv):
        with pytest.raises(openai.APIStatusError, match=why) as e:
            ask(client(srv), max_tokens=8)
        assert e.value.status_code == 503 and e.value.body["code"] == "defense_failed"
        assert "no unmonitored answer" in e.value.body["message"]
        assert raw(srv, "GET", "/health")[0] == 200


def test_morethink_serves_safechain_budgets(tiny_model_dir, tiny_backend):
    """Under SafeChain's MoreThink the answer gets max_tokens - think_budget: a request leaving it nothing is a
    clear 400; one leaving room is answered with the per-sample budgets in its control record."""
    cfg = base_config(tiny_model_dir, defense=None, defense_options={}, thinking="more", think_budget=6,
                      think_rounds=1, max_new_tokens=12)
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny")
    with running(srv):
        with pytest.raises(openai.BadRequestError) as e:
            ask(client(srv), max_tokens=4)
        assert "max_new_tokens 4 <= think_budget 6" in e.value.body["message"]
        control = ask(client(srv), max_tokens=12).model_extra["safereason"]["control"]
        assert control["budget_mode"] == "safechain" and control["think_budget"] == 6
        assert control["answer_budget"] == 6


# -- auth --------------------------------------------------------------------------------------------

def test_api_key_required_when_configured(tiny_model_dir, tiny_backend, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s3cret-key")
    srv = make_server(base_config(tiny_model_dir, defense=None, defense_options={}), port=0, api_key_env=KEY_ENV,
                      backend=tiny_backend, served_model_name="tiny")
    with running(srv):
        with pytest.raises(openai.AuthenticationError) as e:
            ask(client(srv, "wrong"), max_tokens=2)
        assert e.value.status_code == 401
        status, body = raw(srv, "POST", "/v1/chat/completions", json.dumps({"messages": []}).encode())
        assert status == 401 and body["error"]["type"] == "authentication_error"
        assert raw(srv, "GET", "/v1/models")[0] == 401
        assert raw(srv, "GET", "/health")[0] == 200  # liveness needs no key and tells nothing
        assert client(srv, "s3cret-key").models.list().data[0].id == "tiny"
        resp = ask(client(srv, "s3cret-key"), max_tokens=3)
        assert resp.model_extra["safereason"]["defense"] is None and resp.model_extra["safereason"]["control"] == {}


def test_public_address_needs_a_key(tiny_model_dir, tiny_backend, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(SafereasonError, match=f"non-loopback address needs an API key; set the environment "
                                              f"variable {KEY_ENV}"):
        make_server(base_config(tiny_model_dir), host="0.0.0.0", port=0, api_key_env=KEY_ENV, backend=tiny_backend)
    monkeypatch.setenv(KEY_ENV, "k")
    srv = make_server(base_config(tiny_model_dir), host="0.0.0.0", port=0, api_key_env=KEY_ENV, backend=tiny_backend)
    assert srv.api_key == "k"
    srv.close()


def test_cli_refuses_public_address_without_key(cli_env):
    cli_env.pop(KEY_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "serve", "--model", "smollm2-135m", "--host",
                           "0.0.0.0", "--api-key-env", KEY_ENV], capture_output=True, text=True, env=cli_env,
                          timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "needs an API key" in err, err


# -- concurrency and shutdown ------------------------------------------------------------------------

def test_bounded_queue_and_serialized_model(tiny_model_dir, tiny_backend):
    backend = GatedBackend(tiny_backend)
    cfg = base_config(tiny_model_dir, defense=None, defense_options={})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=backend, served_model_name="tiny",
                      max_concurrency=2)
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            results[name] = ask(client(srv), name, max_tokens=4, seed=1)
        except Exception as e:
            results[name] = e

    with running(srv):
        first = threading.Thread(target=call, args=("first",))
        first.start()
        assert backend.started.acquire(timeout=20)  # "first" is generating
        second = threading.Thread(target=call, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while srv.admission.count < 2 and time.monotonic() < deadline:  # "second" is queued
            time.sleep(0.01)
        assert srv.admission.count == 2
        with pytest.raises(openai.RateLimitError, match="server is busy") as e:
            ask(client(srv), max_tokens=4)
        # no request has finished yet: 1 s per admitted request
        assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "2"
        backend.gate.set()
        first.join(30)
        second.join(30)
    assert all(r.usage.completion_tokens <= 4 for r in results.values()), results  # both were answered
    assert backend.max_active == 1  # one generation at a time on the model


def test_shutdown_does_not_wait_for_idle_keepalive_connections(tiny_model_dir, tiny_backend):
    srv = make_server(base_config(tiny_model_dir, defense=None, defense_options={}), port=0,
                      api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    c = client(srv)
    assert c.models.list().data  # leaves a kept-alive connection open
    t0 = time.monotonic()
    srv.shutdown()
    assert srv.close(timeout=10) is True
    assert time.monotonic() - t0 < 3
    with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):  # closed, or 503 if it raced in
        c.models.list()


# -- the on-unsafe policy, the prefix and finish_reason ------------------------------------------------

def test_refuse_policy_answers_content_filter(tiny_model_dir, tiny_backend):
    cfg = base_config(tiny_model_dir, defense_options={"scorer": "serve-unsafe", "max_step_tokens": 4, "attempts": 2})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny")
    with running(srv):
        resp = ask(client(srv), seed=2, max_tokens=20)
    choice = resp.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == REFUSAL and choice.message.model_extra.get("reasoning") is None
    extra = resp.model_extra["safereason"]
    assert extra["verdict"] == "unsafe" and extra["withheld"] is True and extra["on_unsafe"] == "refuse"
    first = extra["control"]["interventions"][0]
    assert first["attempts"] == 2 and first["accepted"] is False  # what the verdict is read from
    assert resp.usage.completion_tokens > 0  # what was generated is still accounted for


def test_return_policy_returns_the_last_attempt(tiny_model_dir, tiny_backend):
    cfg = base_config(tiny_model_dir, defense_options={"scorer": "serve-unsafe", "max_step_tokens": 4, "attempts": 2})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny",
                      on_unsafe="return")
    with running(srv):
        resp = ask(client(srv), seed=2, max_tokens=20)
    choice = resp.choices[0]
    assert choice.finish_reason == "length" and choice.message.reasoning.startswith(PREFIX)
    extra = resp.model_extra["safereason"]
    assert extra["verdict"] == "unsafe" and extra["withheld"] is False and extra["on_unsafe"] == "return"


def test_safe_output_is_returned_under_refuse(server):
    resp = ask(client(server), seed=4, max_tokens=20)  # steered once, accepted
    assert resp.choices[0].finish_reason != "content_filter"
    assert resp.model_extra["safereason"]["verdict"] == "safe"


@pytest.mark.parametrize("prefill", [None, "<think>\n\n</think>\n\n"], ids=["no-thought-opened", "thought-closed"])
def test_prefix_never_in_content(tiny_model_dir, tiny_backend, prefill):
    """The defense steers where the format sees answer text (no thought opened, or the prompt closed it): the
    prefix and what precedes it come back as reasoning."""
    cfg = base_config(tiny_model_dir, think_prefill=prefill)
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny",
                      on_unsafe="return")
    with running(srv):
        for seed in (1, 2, 3):
            resp = ask(client(srv), seed=seed, max_tokens=20)
            msg = resp.choices[0].message
            assert resp.model_extra["safereason"]["control"]["interventions"][0]["attempts"] >= 1  # it steered
            assert PREFIX in (msg.reasoning or "") and PREFIX not in (msg.content or "")


def test_split_guarded_cases():
    r1 = get_format("r1")
    plain, opened, closed = "<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n", \
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    text = f"{PREFIX} Sure, here it is."
    assert PREFIX in r1.split(text, plain).answer  # what the plain split would have answered
    s = split_guarded(r1, text, plain, PREFIX)
    assert (s.thinking, s.answer, s.status) == (PREFIX, "Sure, here it is.", "no_thinking")
    s = split_guarded(r1, f"{PREFIX}<think>\nhmm", plain, PREFIX)  # the model opened its thought after it
    assert (s.thinking, s.answer, s.status) == (f"{PREFIX}\n\nhmm", None, "unclosed")
    s = split_guarded(r1, f"Okay.\n\n{PREFIX} No.", closed, PREFIX)
    assert (s.thinking, s.answer, s.status) == (f"Okay.\n\n{PREFIX}", "No.", "closed")
    inside = f"{PREFIX} fine</think>\n\nAnswer."
    assert split_guarded(r1, inside, opened, PREFIX) == r1.split(inside, opened)  # already reasoning
    assert split_guarded(r1, text, plain, None) == r1.split(text, plain)  # not steered: the model's own words
    assert final_verdict({"interventions": [{"accepted": True}, {"accepted": False}]}) == "unsafe"
    assert final_verdict({"interventions": [{"accepted": True}]}) == "safe"
    assert final_verdict({}) is None


class StoppingBackend(Proxy):
    """Ends every generation with EOS after a few tokens, inside the (never closed) thought."""

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
        outs = self.inner.generate_ids(prompt_ids, replace(params, max_new_tokens=3), seed, **kw)
        return [Completion(c.text, c.n_tokens, "stop", c.token_ids, "eos") for c in outs]


def test_finish_reason_is_stop_when_the_model_stopped(tiny_model_dir, tiny_backend):
    cfg = base_config(tiny_model_dir, defense=None, defense_options={})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=StoppingBackend(tiny_backend),
                      served_model_name="tiny")
    with running(srv):
        resp = ask(client(srv), seed=1, max_tokens=20)
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content is None  # stopped, thought still open
    assert resp.model_extra["safereason"]["split_status"] == "unclosed"


# -- startup checks ----------------------------------------------------------------------------------

def test_binary_scorer_refused_unless_forced(tiny_model_dir, tiny_backend, caplog):
    cfg = base_config(tiny_model_dir, defense_options={"scorer": "rs-match"})
    with pytest.raises(SafereasonError, match=r"no continuous score.*llama-guard-3-1b, llama-guard-3-8b, "
                                              r"llama-guard-4-12b, wildguard, harmbench-cls"):
        make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend)
    with caplog.at_level(logging.WARNING, "safereason.serve"):
        make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend,
                    allow_binary_scorer=True).close()
        assert "no continuous score" in caplog.text
        caplog.clear()
        make_server(base_config(tiny_model_dir), port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend).close()
        assert "'serve-prefix' is not known to give a continuous P(unsafe)" in caplog.text
        caplog.clear()
        guard = base_config(tiny_model_dir, defense_options={"scorer": "llama-guard-3-1b"})
        make_server(guard, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend).close()  # loads no model
        assert "continuous" not in caplog.text
    with pytest.raises(SafereasonError, match="on_unsafe must be one of refuse, return"):
        make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, on_unsafe="drop")


def test_cli_refuses_binary_scorer(cli_env):
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "serve", "--model", "smollm2-135m", "--port", "0"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and "rs-match" in err and "--allow-binary-scorer" in err, err


# -- slow clients and a full queue ---------------------------------------------------------------------

def test_stalled_body_gets_408_without_traceback(tiny_model_dir, tiny_backend, caplog):
    srv = make_server(base_config(tiny_model_dir, defense=None, defense_options={}), port=0,
                      api_key_env=KEY_ENV + "_UNSET", backend=tiny_backend, served_model_name="tiny", body_timeout=0.5)
    host, port = srv.server_address[:2]
    with caplog.at_level(logging.DEBUG, "safereason.serve"), running(srv):
        with socket.create_connection((str(host), int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"messages\": [")  # ... and nothing more
            t0 = time.monotonic()
            reply = sock.makefile("rb").read()  # the server answers, then closes
        assert time.monotonic() - t0 < 5
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert ask(client(srv), max_tokens=2).usage.completion_tokens <= 2  # the server goes on
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    assert any(" 408 " in r.getMessage() for r in caplog.records)


class TimedGate(GatedBackend):
    """A gated backend whose generations take ``delay`` seconds (a known service time)."""

    delay = 0.0

    def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
        time.sleep(self.delay)
        return super().generate_ids(prompt_ids, params, seed, **kw)


def test_retry_after_grows_with_the_queue(tiny_model_dir, tiny_backend):
    backend = TimedGate(tiny_backend)
    cfg = base_config(tiny_model_dir, defense=None, defense_options={})
    srv = make_server(cfg, port=0, api_key_env=KEY_ENV + "_UNSET", backend=backend, served_model_name="tiny",
                      max_concurrency=1)
    threads: list[threading.Thread] = []

    def admit(n: int) -> None:  # n more requests, held at the gate or queued behind it
        for _ in range(n):
            t = threading.Thread(target=lambda: ask(client(srv), max_tokens=2, seed=1))
            t.start()
            threads.append(t)
        deadline = time.monotonic() + 10
        while srv.admission.count < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.admission.count == len(threads)

    def retry_after() -> int:
        with pytest.raises(openai.RateLimitError) as e:
            ask(client(srv), max_tokens=2)
        return int(e.value.response.headers["retry-after"])

    with running(srv):
        backend.delay = 1.0
        backend.gate.set()
        ask(client(srv), max_tokens=2, seed=1)  # one request of a little over 1 s: the mean service time
        backend.gate.clear()
        admit(1)
        one = retry_after()
        srv.admission.limit = 3
        admit(2)
        three = retry_after()
        backend.delay = 0.0
        backend.gate.set()
        for t in threads:
            t.join(30)
    assert one == 2 and three == 4  # ceil(admitted x ~1.0x s)
