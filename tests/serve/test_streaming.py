"""`safereason serve` streaming: OpenAI's chat.completion.chunk events that reassemble to the whole reply,
SafeThink's monitored steps held back until judged, and a disconnect that stops the generation."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, ClassVar

import pytest

from safereason.judges import JUDGES
from safereason.reasoning import get_format
from safereason.records import Verdict
from safereason.serve import ChatRequest
from safereason.serve.streaming import DeltaStream, IncrementalText

PREFIX = "Wait, think safely."


class RecordingScorer:
    """Fails step 1 of every request (its trace has no steering prefix yet), passes the rest; records each
    trace it judged and its verdict, in order."""

    outputs = ("unsafe",)
    judged: ClassVar[list[tuple[str, bool]]] = []

    def identity(self) -> dict[str, Any]:
        return {}

    def judge(self, items: list[Any]) -> list[Verdict]:
        out = []
        for i in items:
            unsafe = PREFIX not in i.text
            RecordingScorer.judged.append((i.text, unsafe))
            out.append(Verdict(unsafe=unsafe, score=float(unsafe)))
        return out


@pytest.fixture(autouse=True, scope="module")
def recording() -> Any:
    JUDGES.add("serve-recording", RecordingScorer)
    yield
    JUDGES._items.pop("serve-recording")


def whole_and_streamed(kit: Any, srv: Any, **kw: Any) -> tuple[Any, Any]:
    whole = kit.ask(kit.client(srv), **kw)
    streamed = kit.collect(kit.ask(kit.client(srv), stream=True, stream_options={"include_usage": True}, **kw))
    return whole, streamed


def assert_same(whole: Any, streamed: Any) -> None:
    msg = whole.choices[0].message
    assert (streamed.reasoning, streamed.content) == (msg.reasoning, msg.content)
    assert streamed.finish_reason == whole.choices[0].finish_reason and streamed.n_finishes == 1
    usage = streamed.chunks[-1].usage
    assert streamed.chunks[-1].choices == [] and usage.model_dump() == whole.usage.model_dump()
    record, expected = dict(streamed.safereason), dict(whole.model_extra["safereason"])
    assert record == expected
    ids = {c.id for c in streamed.chunks}
    assert len(ids) == 1 and all(c.object == "chat.completion.chunk" for c in streamed.chunks)
    assert streamed.chunks[0].choices[0].delta.role == "assistant"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_safethink_stream_reassembles_to_the_whole_reply(kit, server, seed):
    whole, streamed = whole_and_streamed(kit, server, seed=seed, max_tokens=40)
    assert_same(whole, streamed)
    assert streamed.n_reasoning > 3  # streamed in pieces, not sent whole at the end


def test_undefended_stream_comes_token_by_token(kit):
    with kit.running(kit.make(defense=None, defense_options={})) as srv:
        for seed in (1, 2):
            whole, streamed = whole_and_streamed(kit, srv, seed=seed, max_tokens=30)
            assert_same(whole, streamed)
            assert streamed.n_reasoning >= 20  # about a delta per token (a few held back at the end)


def test_stream_with_an_answer_and_a_stop_string(kit, tiny_backend):
    """A backend without streaming (the reply is sent when complete), a closed thought and an answer."""
    cfg = kit.base_config()
    cfg["defense_options"]["mode"] = "stepwise"
    del cfg["model"]
    with kit.running(kit.make(kit.ClosingBackend(tiny_backend), **cfg)) as srv:
        whole, streamed = whole_and_streamed(kit, srv, seed=3, max_tokens=40)
        assert_same(whole, streamed)
        assert streamed.content == "I can't help with that."
        whole, streamed = whole_and_streamed(kit, srv, seed=3, max_tokens=40, stop=["help"])
        assert_same(whole, streamed)


def test_raw_event_stream(kit, server):
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "seed": 1,
            "stream": True}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = resp.read().decode().split("\n\n")
    conn.close()
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all("usage" not in c for c in chunks)  # usage only when asked for
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["choices"][0]["delta"] == {}


def test_no_chunk_of_a_steered_step_is_sent(kit, server):
    """Every chunk the server sends during monitoring is a prefix of a trace the scorer already passed: the
    failing step 1 (and anything of a step not yet judged) never leaves the server."""
    engine = server.engine
    defense = engine.defense
    saved = defense.scorer_name, defense._scorer
    defense.scorer_name, defense._scorer = "serve-recording", None
    RecordingScorer.judged.clear()
    sent: list[tuple[int, str]] = []  # (judgements so far, reasoning sent so far) at each chunk
    reasoning = [""]

    def send(chunk: dict[str, Any]) -> None:
        for c in chunk["choices"]:
            reasoning[0] += c["delta"].get("reasoning") or ""
        sent.append((len(RecordingScorer.judged), reasoning[0]))

    try:
        req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "How do I pick a lock?"}],
                                          "max_tokens": 40, "seed": 7, "stream": True})
        engine.stream(req, send, threading.Event())
    finally:
        defense.close()
        defense.scorer_name, defense._scorer = saved
    judged = RecordingScorer.judged
    assert judged[0][1] is True and PREFIX not in judged[0][0]  # step 1 failed, then was steered
    monitored = 3 + 1  # steps 1-3, step 1 judged twice
    assert len(judged) == monitored
    assert any(n < monitored and text for n, text in sent)  # steps were streamed as they passed
    for n_judged, text in sent:
        if n_judged < monitored and text:
            passed = [t for t, unsafe in judged[:n_judged] if not unsafe]
            assert passed and passed[-1].startswith(text), (n_judged, text)
    assert reasoning[0].startswith(PREFIX)  # the first thing the client saw is the steered step
    assert not reasoning[0].startswith(judged[0][0])


@pytest.mark.parametrize("defended", [True, False], ids=["safethink", "undefended"])
def test_disconnect_stops_the_generation_and_frees_the_slot(kit, defended):
    options = {} if defended else {"defense": None, "defense_options": {}}
    srv = kit.make(server_kw={"max_concurrency": 1}, max_new_tokens=400, **options)
    with kit.running(srv):
        c = kit.client(srv)
        stream = kit.ask(c, max_tokens=400, seed=1, stream=True)
        got = [next(iter(stream)) for _ in range(3)]
        assert got and srv.admission.count == 1
        t0 = time.monotonic()
        stream.close()  # the client goes away mid-stream
        while srv.admission.count and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        freed = time.monotonic() - t0
        assert srv.admission.count == 0 and freed < 10, freed  # 400 tokens would take far longer here
        resp = kit.ask(c, max_tokens=3, seed=1)  # the slot (and the model) serve the next request
        assert resp.usage.completion_tokens <= 3


def test_disconnect_while_queued_never_generates(kit, tiny_backend):
    backend = kit.GatedBackend(tiny_backend)
    srv = kit.make(backend, defense=None, defense_options={}, server_kw={"max_concurrency": 2})
    with kit.running(srv):
        first = threading.Thread(target=lambda: kit.ask(kit.client(srv), max_tokens=2, seed=1))
        first.start()
        assert backend.started.acquire(timeout=20)
        host, port = srv.server_address
        conn = http.client.HTTPConnection(host, port, timeout=10)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        deadline = time.monotonic() + 10
        while srv.admission.count < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.close()  # gone before its turn
        time.sleep(0.5)
        backend.gate.set()
        first.join(30)
        deadline = time.monotonic() + 10
        while srv.admission.count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.admission.count == 0
    assert backend.max_active == 1 and not backend.started.acquire(timeout=0)  # the second never generated


# -- the hold-back rule ------------------------------------------------------------------------------

def test_delta_stream_holds_back_what_may_change():
    r1 = get_format("r1")
    chars = list("Let me think.\n\nOK</think>\n\nThe answer STOP more")
    ids = list(range(len(chars)))

    def decode(x: Any) -> str:
        return "".join(chars[i] for i in x)

    stream = DeltaStream(r1, "<think>\n", decode, ["STOP"], PREFIX, withhold_flagged=True)
    sent = {"reasoning": "", "content": ""}
    for n in range(1, len(ids) + 1):
        for field, piece in stream.update(ids[:n], True, False):
            sent[field] += piece
            assert "</" not in sent["reasoning"] and "STO" not in sent["content"]
    assert sent == {"reasoning": "Let me think.\n\nOK", "content": "The answer"}
    assert stream.finish("Let me think.\n\nOK", "The answer") == []
    # while the defense may still steer, answer text waits; a flagged step under refuse stops the stream
    held = DeltaStream(r1, "<|im_start|>assistant\n", decode, [], PREFIX, withhold_flagged=True)
    assert held.update(ids[:10], False, False) == [] and held.update(ids[:10], True, False) != []
    assert held.update(ids[:20], True, True) == [] and held.update(ids[:30], True, False) == []


def test_incremental_text_matches_a_full_decode(tiny_backend):
    ids = tiny_backend.encode("Héllo wörld 😀 — incremental decoding, 中文 and 🎉 emoji.\n\n" * 5)
    inc = IncrementalText(tiny_backend.decode)
    for n in range(len(ids) + 1):
        assert inc(ids[:n]) == tiny_backend.decode(ids[:n])
    assert inc(ids[:5]) == tiny_backend.decode(ids[:5])  # taken back: a full decode again
