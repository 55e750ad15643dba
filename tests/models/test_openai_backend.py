"""The OpenAI-compatible backend against a real loopback HTTP server that fakes vLLM's OpenAI API."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safereason.errors import ConfigError
from safereason.models import SamplingParams, build_backend
from safereason.models.openai_backend import TRANSPORT_OPTIONS, GenerationError, OpenAIBackend, row_seed
from safereason.reasoning import get_format
from safereason.rundir import RunDir

THOUGHT = "I consider request {tag} carefully."
ANSWER = "I'm sorry, but I can't help with that. [{tag}]"


class FakeVLLM:
    """Deterministic replies (a tag hashed from seed + prompt) in the shape vLLM's OpenAI server gives them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], Any]] = []
        self.reasoning_key: str | None = None  # "reasoning_content" / "reasoning": a server-side reasoning parser
        self.token_ids = False  # return token_ids (with EOS and stop-string tokens, as vLLM does)
        self.behaviour = "ok"  # ok | 500 | content_filter (no text) | output_filter (partial text) | policy_400
        self.reply: dict[str, Any] | None = None  # answer every request with this body (malformed replies)
        self.n_bad = 0  # answer this many requests with self.reply first, then normally (-1: all of them)
        self.delay = 0.0  # seconds before answering (a server that hangs)
        self.n_429 = 0  # answer this many requests with 429 first
        self.ok_budget: int | None = None  # after this many good replies, answer 500
        self.filter_word: str | None = None  # content_filter only for prompts holding this word
        self.tokenizer: Any = None
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads, self.httpd.block_on_close = True, False  # a hanging reply must not block close
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def bodies(self) -> list[dict[str, Any]]:
        return [b for _, b, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            if self.n_429 > 0:
                self.n_429 -= 1
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
            if self.reply is not None and self.n_bad != 0:
                self.n_bad -= 1
                return 200, self.reply, {}
            if self.ok_budget is not None:
                if self.ok_budget <= 0:
                    return 500, {"error": {"message": "engine dead"}}, {"Retry-After": "0"}
                self.ok_budget -= 1
        if self.behaviour == "500":
            return 500, {"error": {"message": "engine dead"}}, {"Retry-After": "0"}
        if self.behaviour == "policy_400":
            return 400, {"error": {"message": "Invalid prompt: your prompt was flagged as potentially violating "
                                              "our usage policy", "code": "content_policy_violation"}}, {}
        prompt = body.get("messages") if path.endswith("/chat/completions") else body.get("prompt")
        if isinstance(prompt, list) and self.tokenizer is not None and all(isinstance(t, int) for t in prompt):
            prompt = self.tokenizer.decode(prompt)  # ids or their text: the same reply
        tag = hashlib.sha256(json.dumps([body.get("seed"), prompt], sort_keys=True).encode()).hexdigest()[:8]
        blocked = self.behaviour == "content_filter" or (self.filter_word and self.filter_word in json.dumps(prompt))
        choice = self._chat(body, tag) if path.endswith("/chat/completions") else self._completion(body, tag)
        if blocked or self.behaviour == "output_filter":
            choice["finish_reason"] = "content_filter"
        if blocked and "message" in choice:  # the prompt filter: no text at all
            choice["message"] = {"role": "assistant", "content": None}
        elif blocked:
            choice["text"] = ""
        usage = {"prompt_tokens": 5, "completion_tokens": choice.pop("_n"), "total_tokens": 0}
        return 200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice],
                     "usage": usage}, {}

    @staticmethod
    def _cut(text: str, body: dict[str, Any]) -> tuple[str, str, str | None, str]:
        """(text, finish_reason, stop_reason, text with the stop string) after max_tokens (words) and stop."""
        words = text.split(" ")
        finish, stop_reason = "stop", None
        if len(words) > body["max_tokens"]:
            words, finish = words[:body["max_tokens"]], "length"
        text = " ".join(words)
        hits = [(text.find(s), s) for s in body.get("stop", []) if s in text]
        if hits:
            cut, stop_reason = min(hits)
            return text[:cut], "stop", stop_reason, text[:cut] + stop_reason
        return text, finish, stop_reason, text

    def _chat(self, body: dict[str, Any], tag: str) -> dict[str, Any]:
        msgs = body["messages"]
        prefill = msgs[-1]["content"] if body.get("continue_final_message") else ""
        raw = f"{THOUGHT} </think> {ANSWER}".format(tag=tag)
        if "<think>" not in prefill:
            raw = "<think> " + raw
        raw, finish, stop_reason, _ = self._cut(raw, body)
        message: dict[str, Any] = {"role": "assistant", "content": raw}
        if self.reasoning_key:  # like vLLM's deepseek_r1 parser: no end marker -> all reasoning, content null
            before, sep, after = raw.removeprefix("<think> ").partition("</think>")
            content = after.strip() if sep else None
            message = {"role": "assistant", self.reasoning_key: before.strip(), "content": content}
        return {"index": 0, "message": message, "finish_reason": finish, "stop_reason": stop_reason,
                "_n": len(raw.split()) + 1}  # + EOS

    def _completion(self, body: dict[str, Any], tag: str) -> dict[str, Any]:
        prompt = body["prompt"]
        text = self.tokenizer.decode(prompt) if isinstance(prompt, list) else prompt
        if text.rfind("</think>") > text.rfind("<think>"):
            out = f"I'm sorry, but I can't help with that. [{tag}]"
        elif text.rfind("<think>") >= 0:
            out = f"step {tag} seems fine. </think>\n\nI'm sorry, I can't help. [{tag}]"
        else:
            out = f"<think>\nhm {tag} </think>\n\nNo. [{tag}]"
        out, finish, stop_reason, with_stop = self._cut(out, body)
        choice: dict[str, Any] = {"index": 0, "text": out, "finish_reason": finish, "stop_reason": stop_reason,
                                  "_n": len(out.split())}
        if self.token_ids and body.get("return_token_ids"):
            ids = self.tokenizer(with_stop, add_special_tokens=False)["input_ids"]
            choice["token_ids"] = ids + ([self.tokenizer.eos_token_id] if finish == "stop" and not stop_reason else [])
        return choice


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake: FakeVLLM = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append((self.path, body, self.headers))  # case-insensitive names
        if fake.delay:
            time.sleep(fake.delay)
        status, payload, headers = fake.respond(self.path, body)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVLLM]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeVLLM()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def smol_tok(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=50, stop=("END",))


# -- chat mode -------------------------------------------------------------------------------------

def test_chat_request_bodies(server: FakeVLLM) -> None:
    b = OpenAIBackend("served-model", base_url=server.url)
    text = b.render_prompt("Hi", system_prompt="Be brief.", prefill="<think>\n",
                           template_kwargs={"enable_thinking": True})
    assert text.endswith("[assistant]\n<think>\n") and '"enable_thinking": true' in text
    plain = b.render_prompt("Hello")
    out = b.generate([text + "Sure", text + "Sure", plain], PARAMS, seed=5)
    assert len(out) == 3
    bodies = server.bodies()
    assert all(p == "/v1/chat/completions" for p, _, _ in server.requests)
    assert all("Authorization" not in h for _, _, h in server.requests)  # loopback, no key set
    first = next(x for x in bodies if x["seed"] == row_seed(5, 0))
    assert first["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "<think>\nSure"}]  # runner's suffix = prefill
    assert first["continue_final_message"] is True and first["add_generation_prompt"] is False
    assert first["chat_template_kwargs"] == {"enable_thinking": True}
    assert (first["model"], first["n"], first["top_k"], first["stop"], first["max_tokens"]) == (
        "served-model", 1, 20, ["END"], 50)
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9
    assert sorted(x["seed"] for x in bodies) == sorted(row_seed(5, i) for i in range(3))
    last = next(x for x in bodies if x["seed"] == row_seed(5, 2))
    assert last["messages"] == [{"role": "user", "content": "Hello"}]
    assert "continue_final_message" not in last and "chat_template_kwargs" not in last


def test_seeded_and_independent_of_scheduling(server: FakeVLLM) -> None:
    texts = [OpenAIBackend("m", base_url=server.url).render_prompt(p) for p in ("a", "b")]

    def run(seed: int, concurrency: int) -> list[str]:
        b = OpenAIBackend("m", base_url=server.url, concurrency=concurrency)
        for p in ("a", "b"):
            b.render_prompt(p)
        return [c.text for c in b.generate([texts[0], texts[0], texts[1]], PARAMS, seed)]

    a = run(1, 8)
    assert a == run(1, 1)
    assert a != run(2, 8)
    assert a[0] != a[1]  # two samples of one prompt get different seeds


def test_reasoning_field_is_reconstructed_and_split(server: FakeVLLM) -> None:
    r1 = get_format("r1")
    for key in ("reasoning_content", "reasoning"):
        server.reasoning_key = key
        b = OpenAIBackend("m", base_url=server.url)
        plain, opened = b.render_prompt("q"), b.render_prompt("q", prefill="<think>\n")
        c1, c2 = b.generate([plain, opened], SamplingParams(max_new_tokens=100), seed=0)
        assert c1.text.startswith("<think>\nI consider") and "\n</think>\n\nI'm sorry" in c1.text
        assert not c2.text.startswith("<think>")  # the prompt already opened the block
        for c, prompt in ((c1, plain), (c2, opened)):
            s = r1.split(c.text, prompt)
            assert s.status == "closed" and s.thinking.startswith("I consider") and s.answer.startswith("I'm sorry")
        assert c1.n_tokens == len(c1.text.split()) + 1  # usage.completion_tokens from the server
    # a thought cut off by max_tokens: content null -> stays unclosed, never an answer
    (cut,) = b.generate([plain], SamplingParams(max_new_tokens=3), seed=0)
    s = r1.split(cut.text, plain)
    assert cut.finish_reason == "length" and s.status == "unclosed" and s.answer is None


def test_zero_think_prefill_keeps_answer(server: FakeVLLM) -> None:
    """After a closed thought in the prompt, what a reasoning parser calls reasoning is the answer."""
    server.reasoning_key = "reasoning_content"
    b = OpenAIBackend("m", base_url=server.url)
    zero = b.render_prompt("q", prefill="<think>\n\n</think>\n\n")
    (c,) = b.generate([zero], SamplingParams(max_new_tokens=100), seed=0)
    assert not c.text.startswith("<think>")
    assert get_format("r1").split(c.text, zero).status == "closed"


def test_plain_content_left_as_is_and_stop_reason(server: FakeVLLM) -> None:
    b = OpenAIBackend("m", base_url=server.url)
    p = b.render_prompt("q")
    (full,) = b.generate([p], SamplingParams(max_new_tokens=100), seed=0)
    assert full.text.startswith("<think> I consider") and full.stopped_by == "eos" and full.finish_reason == "stop"
    (stopped,) = b.generate([p], SamplingParams(max_new_tokens=100, stop=("sorry",)), seed=0)
    assert stopped.stopped_by == "sorry" and "sorry" not in stopped.text and stopped.finish_reason == "stop"
    (short,) = b.generate([p], SamplingParams(max_new_tokens=2), seed=0)
    assert short.finish_reason == "length" and short.stopped_by is None


def test_refusal_field_is_the_text() -> None:
    from safereason.judges.http import PostResult

    b = OpenAIBackend("m")
    reply = {"choices": [{"message": {"content": None, "refusal": "I can't help."}, "finish_reason": "stop"}]}
    c = b._completion(PostResult(data=reply), "")
    assert (c.text, c.stopped_by, c.n_tokens) == ("I can't help.", "eos", 3)


def test_chat_with_tokenizer_renders_true_template(server: FakeVLLM, smollm2_dir: Path, smol_tok: Any) -> None:
    b = OpenAIBackend("m", base_url=server.url, tokenizer=str(smollm2_dir))
    text = b.render_prompt("Hi", system_prompt="Be brief.", prefill="Sure")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert text == smol_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + "Sure"
    assert b.count_tokens(["hello world"]) == [2]
    (c,) = b.generate([text], PARAMS, seed=0)
    assert server.bodies()[0]["messages"][-1] == {"role": "assistant", "content": "Sure"}
    assert c.token_ids and b.decode(c.token_ids) == c.text
    ident = b.identity()
    assert ident["tokenizer_hash"].startswith("sha256:") and ident["chat_template_hash"].startswith("sha256:")


def test_prefill_refused_when_not_allowed(server: FakeVLLM) -> None:
    b = OpenAIBackend("m", base_url=server.url, allow_prefill=False)
    with pytest.raises(ConfigError, match="allow_prefill"):
        b.render_prompt("q", prefill="<think>\n")
    text = b.render_prompt("q")
    with pytest.raises(ConfigError, match="allow_prefill"):
        b.generate([text + "<think>\n\n</think>\n\n"], PARAMS, seed=0)  # a thinking control the runner appended
    assert server.requests == []


def test_chat_mode_limits(server: FakeVLLM) -> None:
    b = OpenAIBackend("m", base_url=server.url)
    with pytest.raises(ConfigError, match="render_prompt"):
        b.generate(["some text never rendered"], PARAMS, seed=0)
    with pytest.raises(ConfigError, match="mode=completions"):
        b.generate_ids([[1, 2]], PARAMS, seed=0)
    with pytest.raises(ConfigError, match="tokenizer"):
        b.encode("x")
    assert b.count_tokens(["a b  c", ""]) == [3, 0]  # approximate without a tokenizer, and identity says so
    assert b.identity()["token_counts"].startswith("approximate")


# -- completions mode ------------------------------------------------------------------------------

def test_completions_text_and_ids(server: FakeVLLM, smol_tok: Any) -> None:
    server.tokenizer = smol_tok
    b = OpenAIBackend("m", base_url=server.url, mode="completions", tokenizer=smol_tok)
    text = b.render_prompt("Hi", prefill="<think>\n")
    assert text == smol_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                add_generation_prompt=True) + "<think>\n"
    (c,) = b.generate([text], PARAMS, seed=0)
    body = server.bodies()[0]
    assert server.requests[0][0] == "/v1/completions"
    assert body["prompt"] == text and body["add_special_tokens"] is False and body["return_token_ids"] is True
    assert c.text.startswith("step") and list(c.token_ids) == b.encode(c.text)  # re-encoded: no ids came back
    ids = b.encode(text)
    (d,) = b.generate_ids([ids], PARAMS, seed=0)
    assert server.bodies()[1]["prompt"] == ids and d.text == c.text


def test_server_token_ids_are_cut_before_eos_and_stop(server: FakeVLLM, smol_tok: Any) -> None:
    server.tokenizer, server.token_ids = smol_tok, True
    b = OpenAIBackend("m", base_url=server.url, mode="completions", tokenizer=smol_tok)
    ids = b.encode(b.render_prompt("Hi", prefill="<think>\n"))
    (eos,) = b.generate_ids([ids], SamplingParams(max_new_tokens=100), seed=0)
    assert eos.stopped_by == "eos" and b.decode(eos.token_ids) == eos.text
    assert smol_tok.eos_token_id not in eos.token_ids and eos.n_tokens == len(eos.token_ids)
    (stop,) = b.generate_ids([ids], SamplingParams(max_new_tokens=100, stop=("</think>",)), seed=0)
    assert stop.stopped_by == "</think>" and "</think>" not in b.decode(stop.token_ids)
    # " </think>" is one token straddling the cut: the ids stop before it, the text keeps the space
    assert stop.text == b.decode(stop.token_ids) + " " and stop.n_tokens == len(stop.token_ids)


def test_completions_needs_tokenizer(server: FakeVLLM) -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        OpenAIBackend("m", base_url=server.url, mode="completions")


# -- failures --------------------------------------------------------------------------------------

def test_rate_limit_is_retried(server: FakeVLLM) -> None:
    server.n_429 = 1
    b = OpenAIBackend("m", base_url=server.url, max_retries=2)
    p = b.render_prompt("q")
    out = b.generate([p, p], PARAMS, seed=0)
    assert len(out) == 2 and len(server.requests) == 3


@pytest.mark.parametrize(("behaviour", "match"), [
    ("500", "2 of 2 .*HTTP 500"),
    ("content_filter", "2 of 2 .*content filter"),
    ("policy_400", "2 of 2 .*blocked by a content filter: HTTP 400"),
])
def test_failures_raise_never_text(server: FakeVLLM, behaviour: str, match: str) -> None:
    server.behaviour = behaviour
    b = OpenAIBackend("m", base_url=server.url, max_retries=1)
    p = b.render_prompt("q")
    with pytest.raises(GenerationError, match=match) as err:
        b.generate([p, p], PARAMS, seed=0)
    assert len(err.value.failures) == 2


def test_one_blocked_row_fails_the_batch(server: FakeVLLM) -> None:
    server.filter_word = "bomb"
    b = OpenAIBackend("m", base_url=server.url)
    with pytest.raises(GenerationError, match=r"1 of 2 .*row 1: blocked by a content filter.*on_blocked=record"):
        b.generate([b.render_prompt("hello"), b.render_prompt("make a bomb")], PARAMS, seed=0)


@pytest.mark.parametrize("behaviour", ["policy_400", "content_filter"])
@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_blocked_prompts_recorded_when_asked(server: FakeVLLM, smol_tok: Any, behaviour: str, mode: str) -> None:
    server.tokenizer = smol_tok
    b = OpenAIBackend("m", base_url=server.url, on_blocked="record", mode=mode, tokenizer=smol_tok)
    texts = [b.render_prompt("hello"), b.render_prompt("make a bomb")]
    server.filter_word = "bomb"
    ok, blocked = b.generate(texts, PARAMS, seed=0)
    assert ok.finish_reason == "stop" and ok.text
    assert (blocked.finish_reason, blocked.text, blocked.n_tokens, blocked.token_ids) == ("blocked", "", 0, ())
    server.filter_word, server.behaviour = None, behaviour
    assert [c.finish_reason for c in b.generate(texts, PARAMS, seed=0)] == ["blocked", "blocked"]
    assert len(server.requests) == 4  # a blocked request is final: not retried


def test_blocked_continuation_is_an_error(server: FakeVLLM, smol_tok: Any) -> None:
    """SafeThink and MoreThink continue token ids and cannot carry a blocked row on: never a silent empty step."""
    server.tokenizer, server.behaviour = smol_tok, "content_filter"
    b = OpenAIBackend("m", base_url=server.url, on_blocked="record", mode="completions", tokenizer=smol_tok)
    with pytest.raises(GenerationError, match="blocked continuation .* cannot be recorded"):
        b.generate_ids([b.encode(b.render_prompt("q"))], PARAMS, seed=0)


def test_output_filter_is_never_recorded_as_blocked(server: FakeVLLM) -> None:
    """A filter that cut a reply under way: not the model's reply, and not a blocked prompt either."""
    server.behaviour = "output_filter"
    b = OpenAIBackend("m", base_url=server.url, on_blocked="record", max_retries=0)
    with pytest.raises(GenerationError, match="output content filter cut the reply"):
        b.generate([b.render_prompt("q")], PARAMS, seed=0)
    with pytest.raises(ConfigError, match="on_blocked must be one of error, record"):
        OpenAIBackend("m", base_url=server.url, on_blocked="skip")


def test_content_null_with_stop_is_malformed_not_empty(server: FakeVLLM) -> None:
    server.reply, server.n_bad = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                               "finish_reason": "stop"}]}, -1
    b = OpenAIBackend("m", base_url=server.url, max_retries=2)
    b.client.backoff_base = 0.001  # the real backoff, shortened
    with pytest.raises(GenerationError, match=r"reply \(content null with finish_reason stop\) \(3 attempts\)"):
        b.generate([b.render_prompt("q")], PARAMS, seed=0)
    assert len(server.requests) == 3  # retried like a 5xx
    server.n_bad = 1  # once: the retry gets the real reply
    (c,) = b.generate([b.render_prompt("q")], PARAMS, seed=0)
    assert c.text.startswith("<think>") and len(server.requests) == 5


@pytest.mark.parametrize("reply", ['{"choices": [{"index": 0, "mess', {"id": "x", "object": "chat.completion"},
                                   {"error": {"message": "overloaded"}}])
def test_one_malformed_body_is_retried(server: FakeVLLM, reply: Any) -> None:
    server.reply, server.n_bad = reply, 1
    b = OpenAIBackend("m", base_url=server.url)
    b.client.backoff_base = 0.001
    p = b.render_prompt("q")
    (c,) = b.generate([p], PARAMS, seed=0)
    assert c.text.startswith("<think> I consider") and len(server.requests) == 2
    server.n_bad = -1
    with pytest.raises(GenerationError, match=r"(malformed|API error).*\(2 attempts\)"):
        b = OpenAIBackend("m", base_url=server.url, max_retries=1)
        b.client.backoff_base = 0.001
        b.generate([b.render_prompt("q")], PARAMS, seed=0)


def test_transport_defaults_and_options() -> None:
    import inspect

    params = inspect.signature(OpenAIBackend.__init__).parameters
    assert params["timeout"].default == 120.0 and params["max_retries"].default == 4
    assert TRANSPORT_OPTIONS == ("base_url", "api_key_env", "concurrency", "timeout", "max_retries")
    assert set(TRANSPORT_OPTIONS) <= set(params)
    doc = OpenAIBackend.__init__.__doc__ or ""
    assert "timeout" in doc and "max_retries" in doc


def test_long_max_tokens_warns_about_the_timeout(server: FakeVLLM, caplog: pytest.LogCaptureFixture) -> None:
    b = OpenAIBackend("m", base_url=server.url, timeout=10)
    with caplog.at_level("WARNING"):
        b.generate([b.render_prompt("q")], SamplingParams(max_new_tokens=100), seed=0)
        assert "raise the backend option timeout" not in caplog.text
        b.generate([b.render_prompt("q")], SamplingParams(max_new_tokens=1000), seed=0)
    assert "max_tokens 1000 must be generated within timeout=10 s" in caplog.text


def test_ctrl_c_cancels_in_flight_requests(server: FakeVLLM) -> None:
    """A server that hangs: Ctrl-C ends the batch within seconds, not after every timeout and retry."""
    server.delay = 10.0
    b = OpenAIBackend("m", base_url=server.url, timeout=60, max_retries=4)
    p = b.render_prompt("q")
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    for rows in (3, 1):  # a batch (worker threads) and one row (the calling thread)
        timer = threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                b.generate([p] * rows, PARAMS, seed=0)
        finally:
            timer.cancel()
        assert time.monotonic() - t0 < 3
    server.delay = 0.0


def test_key_from_env_sent_and_never_in_identity(server: FakeVLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    b = build_backend("openai", "served-model", device="cpu", dtype="auto", chat_template=None,
                      base_url=server.url)
    b.generate([b.render_prompt("q")], PARAMS, seed=0)
    assert server.requests[0][2]["Authorization"] == "Bearer sk-test-secret-123"
    ident = b.identity()
    assert "sk-test" not in json.dumps(ident)
    assert ident["model_hash"] == "server:served-model" and ident["base_url"] == server.url
    with pytest.raises(ConfigError, match="backend_options"):
        build_backend("openai", "m", base_urll=server.url)
    remote = OpenAIBackend("m", base_url="https://api.example.invalid/v1", api_key_env="SAFEREASON_NO_SUCH_KEY")
    with pytest.raises(ConfigError, match="SAFEREASON_NO_SUCH_KEY"):
        remote.generate([remote.render_prompt("q")], PARAMS, seed=0)


# -- end to end ------------------------------------------------------------------------------------

def _cfg(server: FakeVLLM, out: Path, **kw: Any) -> dict[str, Any]:
    """A config dict: ``evaluate(backend=...)`` is the injected-backend argument, so the name goes in the config."""
    return {"model": "served-model", "backend": "openai", "backend_options": {"base_url": server.url, "max_retries": 0},
            "benchmark": "smoke", "limit": 3, "k": 2, "batch_size": 2, "max_new_tokens": 64, "n_bootstrap": 50,
            "out": str(out), **kw}


def test_evaluate_end_to_end_and_resume_after_failure(server: FakeVLLM, tmp_path: Path) -> None:
    import safereason

    server.reasoning_key = "reasoning_content"
    ref = safereason.evaluate(_cfg(server, tmp_path / "ref"), progress=False)
    assert len(ref.samples) == 6 and len(server.requests) == 6
    for name in ("manifest.json", "samples.jsonl", "metrics.json", "summary.md"):
        assert (ref.run_dir / name).is_file()
    s = ref.samples[0]
    assert s.prompt_text.startswith("[chat request") and s.split_status == "closed"
    assert s.answer.startswith("I'm sorry") and s.thinking.startswith("I consider")
    assert "rs-match" in ref.metrics and ref.metrics["rs-match"]["answer"]["n_samples"] == 6
    manifest = json.loads((ref.run_dir / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "openai"

    server.ok_budget = 2  # the second batch fails: nothing of it is recorded, the run stops
    with pytest.raises(GenerationError):
        safereason.evaluate(_cfg(server, tmp_path / "run"), progress=False)
    assert len(RunDir(tmp_path / "run").generations.read()) == 2
    server.ok_budget = None
    done = safereason.evaluate(_cfg(server, tmp_path / "run"), progress=False)
    assert [x.response for x in done.samples] == [x.response for x in ref.samples]


def test_evaluate_records_blocked_prompts_when_asked(server: FakeVLLM, tmp_path: Path) -> None:
    import safereason

    server.filter_word = "ransomware"  # the provider always blocks the second smoke prompt
    with pytest.raises(GenerationError, match="on_blocked=record"):
        safereason.evaluate(_cfg(server, tmp_path / "stops"), progress=False)
    opts = {"base_url": server.url, "max_retries": 0, "on_blocked": "record"}
    res = safereason.evaluate(_cfg(server, tmp_path / "run", backend_options=opts), progress=False)
    blocked = [s for s in res.samples if s.status == "blocked"]
    assert len(res.samples) == 6 and len(blocked) == 2  # K = 2 samples of the blocked prompt
    assert all(s.finish_reason == "blocked" and not s.response for s in blocked)
    assert all(s.status == "ok" and s.response for s in res.samples if s not in blocked)


def test_more_think_through_completions(server: FakeVLLM, tmp_path: Path, smollm2_dir: Path, smol_tok: Any) -> None:
    import safereason

    server.tokenizer, server.token_ids = smol_tok, True
    opts = {"base_url": server.url, "mode": "completions", "tokenizer": str(smollm2_dir)}
    cfg = _cfg(server, tmp_path / "more", backend_options=opts, thinking="more", think_rounds=2, think_budget=100,
               max_new_tokens=200, limit=2, k=1)
    res = safereason.evaluate(cfg, progress=False)
    assert len(res.samples) == 2
    for s in res.samples:
        assert s.control["thinking"] == "more" and s.control["rounds"] == 2
        assert "Wait" in s.thinking or "Let me think again" in s.thinking
        assert s.split_status == "closed" and s.answer.startswith("I'm sorry")
    prompts = [b["prompt"] for b in server.bodies()]
    assert all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompts)
    # later rounds (and the answer) extend the exact ids of the first round's prompts
    assert len(prompts) > 2 and all(any(p[:len(q)] == q and len(p) > len(q) for q in prompts[:2]) for p in prompts[2:])
