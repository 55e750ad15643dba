"""`safereason serve` policy: an output left unsafe is refused (content_filter) or returned, the steering
prefix is always reasoning, finish_reason is the model's, and a scorer unfit for live traffic is refused at
start. Each reply policy holds for streamed replies too."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from safereason.errors import SafereasonError
from safereason.models.base import Completion
from safereason.reasoning import get_format
from safereason.serve import REFUSAL, final_verdict, make_server, split_guarded

UNSAFE = {"scorer": "serve-unsafe", "max_step_tokens": 4, "attempts": 2}


def test_refuse_policy_answers_content_filter(kit):
    with kit.running(kit.make(defense_options=UNSAFE)) as srv:
        resp = kit.ask(kit.client(srv), seed=2, max_tokens=20)
        streamed = kit.collect(kit.ask(kit.client(srv), seed=2, max_tokens=20, stream=True))
    choice = resp.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == REFUSAL and choice.message.model_extra.get("reasoning") is None
    extra = resp.model_extra["safereason"]
    assert extra["verdict"] == "unsafe" and extra["withheld"] is True and extra["on_unsafe"] == "refuse"
    first = extra["control"]["interventions"][0]
    assert first["attempts"] == 2 and first["accepted"] is False  # what the verdict is read from
    assert resp.usage.completion_tokens > 0  # what was generated is still accounted for
    # streamed: step 1 stayed unsafe, so not one character of the trace left the server
    assert (streamed.finish_reason, streamed.content, streamed.reasoning) == ("content_filter", REFUSAL, None)
    assert streamed.safereason["verdict"] == "unsafe" and streamed.safereason["withheld"] is True


def test_return_policy_returns_the_last_attempt(kit):
    with kit.running(kit.make(defense_options=UNSAFE, server_kw={"on_unsafe": "return"})) as srv:
        resp = kit.ask(kit.client(srv), seed=2, max_tokens=20)
        streamed = kit.collect(kit.ask(kit.client(srv), seed=2, max_tokens=20, stream=True))
    choice = resp.choices[0]
    assert choice.finish_reason == "length" and choice.message.reasoning.startswith(kit.PREFIX)
    extra = resp.model_extra["safereason"]
    assert extra["verdict"] == "unsafe" and extra["withheld"] is False and extra["on_unsafe"] == "return"
    assert (streamed.reasoning, streamed.content, streamed.finish_reason) == \
        (choice.message.reasoning, choice.message.content, "length")


def test_safe_output_is_returned_under_refuse(kit, server):
    resp = kit.ask(kit.client(server), seed=4, max_tokens=20)  # steered once, accepted
    assert resp.choices[0].finish_reason != "content_filter"
    assert resp.model_extra["safereason"]["verdict"] == "safe"


@pytest.mark.parametrize("prefill", [None, "<think>\n\n</think>\n\n"], ids=["no-thought-opened", "thought-closed"])
def test_prefix_never_in_content(kit, prefill):
    """The defense steers where the format sees answer text (no thought opened, or the prompt closed it): the
    prefix and what precedes it come back as reasoning, streamed or not."""
    with kit.running(kit.make(think_prefill=prefill, server_kw={"on_unsafe": "return"})) as srv:
        for seed in (1, 2, 3):
            resp = kit.ask(kit.client(srv), seed=seed, max_tokens=20)
            msg = resp.choices[0].message
            assert resp.model_extra["safereason"]["control"]["interventions"][0]["attempts"] >= 1  # it steered
            assert kit.PREFIX in (msg.reasoning or "") and kit.PREFIX not in (msg.content or "")
            streamed = kit.collect(kit.ask(kit.client(srv), seed=seed, max_tokens=20, stream=True))
            assert (streamed.reasoning, streamed.content) == (msg.reasoning, msg.content)


def test_split_guarded_cases(kit):
    r1 = get_format("r1")
    prefix = kit.PREFIX
    plain, opened, closed = "<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n", \
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    text = f"{prefix} Sure, here it is."
    assert prefix in r1.split(text, plain).answer  # what the plain split would have answered
    s = split_guarded(r1, text, plain, prefix)
    assert (s.thinking, s.answer, s.status) == (prefix, "Sure, here it is.", "no_thinking")
    s = split_guarded(r1, f"{prefix}<think>\nhmm", plain, prefix)  # the model opened its thought after it
    assert (s.thinking, s.answer, s.status) == (f"{prefix}\n\nhmm", None, "unclosed")
    s = split_guarded(r1, f"Okay.\n\n{prefix} No.", closed, prefix)
    assert (s.thinking, s.answer, s.status) == (f"Okay.\n\n{prefix}", "No.", "closed")
    inside = f"{prefix} fine</think>\n\nAnswer."
    assert split_guarded(r1, inside, opened, prefix) == r1.split(inside, opened)  # already reasoning
    assert split_guarded(r1, text, plain, None) == r1.split(text, plain)  # not steered: the model's own words
    assert final_verdict({"interventions": [{"accepted": True}, {"accepted": False}]}) == "unsafe"
    assert final_verdict({"interventions": [{"accepted": True}]}) == "safe"
    assert final_verdict({}) is None


def test_finish_reason_is_stop_when_the_model_stopped(kit, tiny_backend):
    class StoppingBackend(kit.Proxy):
        """Ends every generation with EOS after a few tokens, inside the (never closed) thought."""

        def generate_ids(self, prompt_ids: Any, params: Any, seed: int, **kw: Any) -> list[Completion]:
            outs = self.inner.generate_ids(prompt_ids, replace(params, max_new_tokens=3), seed, **kw)
            return [Completion(c.text, c.n_tokens, "stop", c.token_ids, "eos") for c in outs]

    with kit.running(kit.make(StoppingBackend(tiny_backend), defense=None, defense_options={})) as srv:
        resp = kit.ask(kit.client(srv), seed=1, max_tokens=20)
        streamed = kit.collect(kit.ask(kit.client(srv), seed=1, max_tokens=20, stream=True))
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content is None  # stopped, thought still open
    assert resp.model_extra["safereason"]["split_status"] == "unclosed"
    assert (streamed.finish_reason, streamed.content, streamed.reasoning) == ("stop", None, choice.message.reasoning)


# -- startup checks ----------------------------------------------------------------------------------

def test_binary_scorer_refused_unless_forced(kit, tiny_backend, caplog):
    cfg = kit.base_config(defense_options={"scorer": "rs-match"})
    unset = kit.KEY_ENV + "_UNSET"
    with pytest.raises(SafereasonError, match=r"no continuous score.*llama-guard-3-1b, llama-guard-3-8b, "
                                              r"llama-guard-4-12b, wildguard, harmbench-cls"):
        make_server(cfg, port=0, api_key_env=unset, backend=tiny_backend)
    with caplog.at_level(logging.WARNING, "safereason.serve"):
        make_server(cfg, port=0, api_key_env=unset, backend=tiny_backend, allow_binary_scorer=True).close()
        assert "no continuous score" in caplog.text
        caplog.clear()
        make_server(kit.base_config(), port=0, api_key_env=unset, backend=tiny_backend).close()
        assert "'serve-prefix' is not known to give a continuous P(unsafe)" in caplog.text
        caplog.clear()
        guard = kit.base_config(defense_options={"scorer": "llama-guard-3-1b"})
        make_server(guard, port=0, api_key_env=unset, backend=tiny_backend).close()  # loads no model
        assert "continuous" not in caplog.text
    with pytest.raises(SafereasonError, match="on_unsafe must be one of refuse, return"):
        make_server(cfg, port=0, api_key_env=unset, backend=tiny_backend, on_unsafe="drop")


def test_cli_refuses_binary_scorer(cli_env):
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "serve", "--model", "smollm2-135m", "--port", "0"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and "rs-match" in err and "--allow-binary-scorer" in err, err
