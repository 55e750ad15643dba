"""`safereason serve`, whole (non-streamed) completions: the guarded reply, the eval machinery behind it, the
reasoning/answer split, conversations, validation with OpenAI-style errors, n > 1, and a failing scorer."""

from __future__ import annotations

import pytest


def test_guarded_completion(kit, server):
    resp = kit.ask(kit.client(server), seed=11, max_tokens=20)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-") and resp.model == "tiny"
    choice = resp.choices[0]
    msg = choice.message
    assert msg.role == "assistant"
    # the random model never closes its thought: the trace is reasoning, there is no answer, and it says so
    assert msg.reasoning.startswith(kit.PREFIX) and msg.content is None and choice.finish_reason == "length"
    extra = resp.model_extra["safereason"]
    assert extra["defense"] == "safethink" and extra["seed"] == 11 and extra["split_status"] == "unclosed"
    (first, *_) = extra["control"]["interventions"]
    assert first["step"] == 1 and first["accepted"] and first["safety"] == [0.0, 1.0]
    assert [s["step"] for s in extra["control"]["steps"]] == [1, 2, 3]
    usage = resp.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # a seed reproduces; no seed draws a fresh one and reports it
    again = kit.ask(kit.client(server), seed=11, max_tokens=20)
    assert again.choices[0].message.reasoning == msg.reasoning
    assert isinstance(kit.ask(kit.client(server), max_tokens=4).model_extra["safereason"]["seed"], int)


def test_same_machinery_as_eval(kit, server, tiny_backend, tmp_path):
    from safereason.data import load_benchmark
    from safereason.runner import evaluate

    prompt = load_benchmark("smoke", limit=1).prompts[0].prompt
    resp = kit.ask(kit.client(server), prompt, seed=5)
    run = evaluate({**kit.base_config(), "benchmark": "smoke", "limit": 1, "k": 1, "seed": 5,
                    "n_bootstrap": 10, "out": str(tmp_path / "run")}, backend=tiny_backend, progress=False)
    (sample,) = run.samples
    assert resp.choices[0].message.reasoning == sample.thinking
    assert resp.model_extra["safereason"]["control"] == sample.control
    assert resp.usage.prompt_tokens == sample.n_prompt_tokens
    assert resp.usage.completion_tokens == sample.n_response_tokens


def test_n_samples_are_eval_k_samples(kit, server, tiny_backend, tmp_path):
    """n = K is one prompt's K samples, each defended, exactly as `safereason eval --k K` draws them."""
    from safereason.data import load_benchmark
    from safereason.runner import evaluate

    prompt = load_benchmark("smoke", limit=1).prompts[0].prompt
    resp = kit.ask(kit.client(server), prompt, seed=5, n=3, max_tokens=12)
    run = evaluate({**kit.base_config(max_new_tokens=12), "benchmark": "smoke", "limit": 1, "k": 3, "seed": 5,
                    "n_bootstrap": 10, "out": str(tmp_path / "run")}, backend=tiny_backend, progress=False)
    samples = sorted(run.samples, key=lambda s: s.sample_index)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert [c.message.reasoning for c in resp.choices] == [s.thinking for s in samples]
    records = resp.model_extra["safereason"]["choices"]
    assert [r["control"] for r in records] == [s.control for s in samples]
    assert resp.usage.completion_tokens == sum(s.n_response_tokens for s in samples)
    assert len({c.message.reasoning for c in resp.choices}) == 3  # three draws, not one repeated


def test_reasoning_and_answer_split(kit, tiny_backend):
    cfg = kit.base_config()
    cfg["defense_options"]["mode"] = "stepwise"  # ClosingBackend tells the monitored steps by their stop string
    del cfg["model"]
    with kit.running(kit.make(kit.ClosingBackend(tiny_backend), **cfg)) as srv:
        resp = kit.ask(kit.client(srv), seed=3, max_tokens=40)
    choice = resp.choices[0]
    assert choice.message.content == "I can't help with that." and choice.finish_reason == "stop"
    reasoning = choice.message.reasoning
    assert reasoning.startswith(kit.PREFIX) and "</think>" not in reasoning and "<think>" not in reasoning
    assert resp.model_extra["safereason"]["split_status"] == "closed"


def test_multi_turn_and_system_messages(kit, server):
    from safereason.serve import ChatRequest

    engine = server.engine
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First question?"},
                {"role": "assistant", "content": "First answer."}, {"role": "user", "content": "Second question?"}]
    turns = engine._turns(ChatRequest.model_validate({"messages": messages}).messages)
    text = engine.prompt_text(turns)
    order = [text.index(s) for s in ("Be brief.", "First question?", "First answer.", "Second question?")]
    assert order == sorted(order) and text.endswith("<|im_start|>assistant\n<think>\n")
    c = kit.client(server)
    resp = c.chat.completions.create(model="tiny", messages=messages, max_tokens=4, seed=1)
    assert resp.usage.prompt_tokens > kit.ask(c, "Second question?", max_tokens=4).usage.prompt_tokens
    with pytest.raises(kit.openai.BadRequestError, match="system messages must come before"):
        c.chat.completions.create(model="tiny", messages=[*messages, messages[0]], max_tokens=4)
    with pytest.raises(kit.openai.BadRequestError, match="last message must be a user message"):
        c.chat.completions.create(model="tiny", messages=messages[:3], max_tokens=4)


def test_models_and_health(kit, server):
    models = kit.client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].model_extra["safereason"]["defense"] == "safethink"
    assert kit.client(server).models.retrieve("tiny").id == "tiny"
    assert kit.raw(server, "GET", "/health") == (200, {"status": "ok"})
    status, body = kit.raw(server, "GET", "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = kit.raw(server, "DELETE", "/v1/chat/completions")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"stream": True, "n": 2}, "n > 1 is served without streaming"),
    ({"n": 9}, "over this server's limit of 8 completions"),
    ({"n": 0}, "n"),
    ({"stream_options": {"include_usage": True}}, "only allowed with stream=true"),
    ({"messages": []}, "at least one user message"),
    ({"messages": [{"role": "user", "content": "  "}]}, "empty content"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
    ({"max_tokens": 10**6}, "over this server's limit"),
    ({"temperature": 3}, "temperature"),
    ({"logprobs": True}, "logprobs are not supported"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, "context is 4096 tokens"),
])
def test_bad_requests(kit, server, kwargs, pattern):
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kwargs}
    with pytest.raises(kit.openai.BadRequestError, match=pattern) as e:
        kit.client(server).chat.completions.create(**kwargs)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_context_overflow_is_a_400_when_streaming_too(kit, server):
    with pytest.raises(kit.openai.BadRequestError, match="context is 4096 tokens"):
        kit.ask(kit.client(server), "word " * 5000, max_tokens=4, stream=True)


def test_wrong_model_huge_body_and_bad_json(kit, server):
    with pytest.raises(kit.openai.NotFoundError, match="not served here"):
        kit.ask(kit.client(server), model="gpt-4o")
    with pytest.raises(kit.openai.APIStatusError, match="over the limit") as e:
        kit.ask(kit.client(server), "x" * (2 << 20))
    assert e.value.status_code == 413
    status, body = kit.raw(server, "POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = kit.raw(server, "POST", "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and set(body["error"]) == {"message", "type", "code", "param"}
    assert kit.raw(server, "GET", "/health")[0] == 200  # the server survived all of it


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("scorer", "why"), [("serve-down", "scorer down"), ("serve-raising", "judge unreachable")])
def test_failing_scorer_is_an_error_not_an_answer(kit, scorer, why, stream):
    with kit.running(kit.make(defense_options={"scorer": scorer})) as srv:
        with pytest.raises(kit.openai.APIStatusError, match=why) as e:
            kit.ask(kit.client(srv), max_tokens=8, stream=stream)
        assert e.value.status_code == 503 and e.value.body["code"] == "defense_failed"
        assert "no unmonitored answer" in e.value.body["message"]
        assert kit.raw(srv, "GET", "/health")[0] == 200


def test_morethink_serves_safechain_budgets(kit):
    """Under SafeChain's MoreThink the answer gets max_tokens - think_budget: a request leaving it nothing is a
    clear 400; one leaving room is answered with the per-sample budgets in its control record."""
    srv = kit.make(defense=None, defense_options={}, thinking="more", think_budget=6, think_rounds=1,
                   max_new_tokens=12)
    with kit.running(srv):
        with pytest.raises(kit.openai.BadRequestError) as e:
            kit.ask(kit.client(srv), max_tokens=4)
        assert "max_new_tokens 4 <= think_budget 6" in e.value.body["message"]
        control = kit.ask(kit.client(srv), max_tokens=12).model_extra["safereason"]["control"]
        assert control["budget_mode"] == "safechain" and control["think_budget"] == 6
        assert control["answer_budget"] == 6
