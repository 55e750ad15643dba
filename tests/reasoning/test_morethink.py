"""MoreThink: SafeChain's procedure (rounds, budget accounting, fixed answer budget), the shared variant, seeding,
exact-id continuation, and what a run records and reports."""

import hashlib
import json

import pytest

from safereason.config import load_config_file, make_config
from safereason.errors import ConfigError
from safereason.models.base import Completion, SamplingParams
from safereason.reasoning import get_format
from safereason.reasoning.controls import (
    DEFAULT_RETHINK,
    SAFECHAIN_MAX_TOKENS,
    SAFECHAIN_THINK_BUDGET,
    SAFECHAIN_THINK_ROUNDS,
    more_think,
    morethink_line,
    morethink_stats,
    shortfalls,
)

R1 = get_format("r1")
# sha256 of "\n".join(RETHINK_STRING), uw-nsl/safechain utils_model.py @ d9c0d79a58bb1180f42664610f01490d5062f0f7
RETHINK_SHA256 = "e7267058b5d262d57dba9eef6e6d8de88dfe507c6a035e9623decbfa6445d067"
END = len("</think>")  # what a closing marker costs the budget (one token per character here)


class CharBackend:
    """One token per character; ``generate_ids`` follows a script and records every call."""

    name = "chars"

    def __init__(self, script):
        self.script = script  # f(text_so_far, params) -> (new_text, stopped_by)
        self.calls = []

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def generate_ids(self, prompt_ids, params, seed):
        self.calls.append({"rows": len(prompt_ids), "max": params.max_new_tokens, "stop": params.stop,
                           "prompts": [self.decode(p) for p in prompt_ids]})
        out = []
        for ids in prompt_ids:
            full, stopped = self.script(self.decode(ids), params)
            text = full[: params.max_new_tokens]
            if len(full) > params.max_new_tokens:
                stopped = None  # ran out of tokens before the script's stop
            out.append(Completion(text, len(text), "stop" if stopped else "length", tuple(self.encode(text)), stopped))
        return out


def _script(thought="abc", answer="ANSWER", stop="</think>"):
    def f(text, params):
        if "</think>\n\n" in text.split("Q:", 1)[-1]:
            return answer, "eos"
        return thought, stop
    return f


def _run(be, prompts=("Q:<think>\n",), max_new=1000, **kw):
    keys = kw.pop("keys", [f"p:{i}" for i in range(len(prompts))])
    return more_think(be, list(prompts), SamplingParams(max_new_tokens=max_new), 7, fmt=R1, keys=keys, **kw)


def test_constants_are_safechains():
    assert hashlib.sha256("\n".join(DEFAULT_RETHINK).encode()).hexdigest() == RETHINK_SHA256
    assert (SAFECHAIN_THINK_BUDGET, SAFECHAIN_THINK_ROUNDS, SAFECHAIN_MAX_TOKENS) == (10000, 10, 16000)
    cfg = make_config()
    assert tuple(cfg.rethink_strings) == DEFAULT_RETHINK
    assert (cfg.think_budget, cfg.think_rounds, cfg.morethink_budget) == (10000, 10, "safechain")


def test_rethink_appended_as_is_rounds_forced_answer_budget_fixed():
    be = CharBackend(_script())
    (res,) = _run(be, rounds=3, budget=500, rethink=("Wait",))
    assert res.completion.text == "abcWaitabcWaitabcWaitabc</think>\n\nANSWER"  # no separator before "Wait"
    assert (res.rounds, res.thinking_tokens, res.injected_tokens) == (3, 12, 12)
    # each call charges what it generated plus the end marker it sampled; the rethink strings are free
    assert [c["max"] for c in be.calls] == [500, 500 - (3 + END), 500 - 2 * (3 + END), 500 - 3 * (3 + END), 500]
    assert [c["stop"] for c in be.calls] == [("</think>",)] * 5  # the answer call keeps the marker as a stop
    assert be.calls[1]["prompts"] == ["Q:<think>\nabcWait"]
    assert res.control() == {"thinking": "more", "budget_mode": "safechain", "rounds": 3, "max_rounds": 3,
                             "thinking_tokens": 12, "injected_tokens": 12, "think_budget": 500,
                             "answer_budget": 500, "ended_by": "rounds"}
    split = R1.split(res.completion.text, "Q:<think>\n")
    assert split.thinking_closed and split.answer == "ANSWER"
    assert res.completion.n_tokens == len(res.completion.text) == len(res.completion.token_ids)


def test_rounds_forced_when_eos_ends_the_thought():
    be = CharBackend(_script(thought="xy", stop="eos"))
    (res,) = _run(be, rounds=2, budget=100, rethink=("Let me think again",))
    assert res.rounds == 2
    assert res.completion.text.startswith("xyLet me think againxyLet me think againxy</think>\n\n")
    assert [c["max"] for c in be.calls[:3]] == [100, 97, 94]  # EOS costs one token


def test_budget_counts_generated_tokens_only_and_ends_thinking():
    be = CharBackend(lambda text, p: ("A" * 100, "eos") if "</think>" in text else ("x" * 10, "eos"))
    (res,) = _run(be, max_new=100, rounds=10, budget=40, rethink=("Wait",))
    # 11 per call (10 + EOS): 40 -> 29 -> 18 -> 7 -> the fourth call is cut at 7 tokens
    assert [c["max"] for c in be.calls] == [40, 29, 18, 7, 60]
    assert (res.rounds, res.thinking_tokens, res.injected_tokens, res.ended_by) == (3, 37, 12, "budget")
    answer = res.completion.text.split("</think>\n\n", 1)[1]
    assert answer == "A" * 60 and res.completion.finish_reason == "length"  # 100 - 40, whatever was used


def test_answer_budget_is_max_minus_budget_even_when_thinking_stops_early():
    be = CharBackend(_script(thought="ab"))
    (res,) = _run(be, max_new=16000, rounds=0)
    assert [c["max"] for c in be.calls] == [10000, 6000]
    assert (res.answer_budget, res.think_budget, res.thinking_tokens, res.ended_by) == (6000, 10000, 2, "rounds")


def test_safechain_needs_max_new_tokens_above_the_budget():
    be = CharBackend(_script())
    with pytest.raises(ConfigError, match="max_new_tokens 512 <= think_budget 10000"):
        _run(be, max_new=512)
    assert be.calls == []  # nothing generated
    with pytest.raises(ConfigError, match="morethink_budget=shared"):
        make_config(thinking="more", max_new_tokens=512)
    assert make_config(thinking="more", max_new_tokens=512, morethink_budget="shared").max_new_tokens == 512


def test_max_new_tokens_resolves_to_safechains_for_morethink_only_when_unset():
    assert make_config().max_new_tokens == 512
    assert make_config(thinking="more").max_new_tokens == 16000
    assert make_config(thinking="more", max_new_tokens=12000).max_new_tokens == 12000
    assert make_config(thinking="more", max_new_tokens=None).max_new_tokens == 16000
    assert make_config(thinking="zero").max_new_tokens == 512


def test_run_identity_and_old_run_dirs():
    plain = make_config(model="m")
    assert plain.generation_identity()["max_new_tokens"] == 512 and "morethink_budget" not in \
        plain.generation_identity()
    assert make_config(model="m", thinking="more").generation_identity()["morethink_budget"] == "safechain"
    shared = make_config(model="m", thinking="more", max_new_tokens=512, morethink_budget="shared")
    assert "morethink_budget" not in shared.generation_identity()  # how MoreThink runs were made before
    assert "preset" not in shared.generation_identity()  # a preset acts only through the keys it sets


def test_stored_config_without_the_key_reads_as_shared(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("model: m\nthinking: more\nmax_new_tokens: 512\nk: 4\n")
    assert load_config_file(old, stored=True).morethink_budget == "shared"
    with pytest.raises(ConfigError, match="think_budget"):
        load_config_file(old)  # a user's config file gets today's default, and its check


def test_batched_one_call_per_round_over_rows_still_thinking():
    def script(text, p):
        if "</think>" in text:
            return "ok", "eos"
        return ("a", "eos") if "Q0" in text else ("b" * 50, "</think>")
    be = CharBackend(script)
    res = _run(be, prompts=("Q0:<think>\n", "Q1:<think>\n"), max_new=200, rounds=3, budget=60, rethink=("W",))
    assert [c["rows"] for c in be.calls] == [2, 2, 1, 1, 2]
    assert res[0].rounds == 3 and res[0].ended_by == "rounds"
    # row 1: 50 tokens + its end marker (8) leave 2 of 60; the second call is cut there
    assert res[1].rounds == 1 and res[1].ended_by == "budget" and res[1].thinking_tokens == 52


def test_shared_variant_keeps_the_previous_behaviour():
    be = CharBackend(_script())
    (res,) = _run(be, rounds=3, budget=500, rethink=("Wait",), budget_mode="shared")
    assert res.completion.text == "abc\nWaitabc\nWaitabc\nWaitabc</think>\n\nANSWER"
    assert res.thinking_tokens == 12 and res.injected_tokens == 15
    assert [c["stop"] for c in be.calls] == [("</think>",)] * 4 + [()]
    be = CharBackend(lambda text, p: ("A" * 50, "eos") if "</think>" in text else ("t" * 1000, None))
    (res,) = _run(be, max_new=60, rounds=5, budget=40, budget_mode="shared")
    assert res.rounds == 0 and res.thinking_tokens == 40 and res.ended_by == "budget"
    assert res.completion.text.split("</think>\n\n", 1)[1] == "A" * (20 - len("</think>\n\n"))
    assert res.completion.n_tokens == 60
    (res2,) = _run(be, max_new=30, budget=40, budget_mode="shared")
    assert res2.thinking_tokens == 30 and res2.completion.text.endswith("</think>\n\n")  # nothing left
    assert res2.completion.finish_reason == "length" and res2.answer_budget == 0


def test_safechain_adds_no_opener_when_template_does_not_open_the_thought():
    be = CharBackend(_script())
    (res,) = _run(be, prompts=("Q:",), max_new=100, budget=50, rounds=0)
    assert be.calls[0]["prompts"] == ["Q:"]  # the rendered prompt as is, as SafeChain sends it
    assert res.completion.text == "abc</think>\n\nANSWER" and res.injected_tokens == 0
    split = R1.split(res.completion.text, "Q:")
    assert split.thinking == "abc" and split.answer == "ANSWER" and split.thinking_closed


def test_shared_variant_opens_the_thought_and_charges_it():
    be = CharBackend(_script())
    (res,) = _run(be, prompts=("Q:",), max_new=100, budget=50, rounds=0, budget_mode="shared")
    assert be.calls[0]["prompts"] == ["Q:<think>\n"] and be.calls[0]["max"] == 50 - len("<think>\n")
    assert res.completion.text == "<think>\nabc</think>\n\nANSWER"
    assert res.injected_tokens == len("<think>\n") and res.thinking_tokens == 3


class _SafeChainClient:
    """vLLM's completions endpoint over the same script: ``usage.completion_tokens`` counts a sampled stop
    string (the end marker) or EOS token, as vLLM's does."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def completions(self, prompt, max_tokens):
        self.calls.append({"prompt": prompt, "max": max_tokens})
        full, stopped = self.script(prompt, None)
        text = full[:max_tokens]
        cost = len(text) + ({"</think>": END, "eos": 1}.get(stopped, 0) if len(full) <= max_tokens else 0)
        return text, min(cost, max_tokens)


def _safechain_morethink_single(client, prompt, max_tokens, think_budget, enforce_num, ignore_str):
    """uw-nsl/safechain utils_model.py::morethink_single @ d9c0d79a58bb1180f42664610f01490d5062f0f7, line for
    line (``random.choice(RETHINK_STRING)`` fixed to ``ignore_str``; sampling arguments left out)."""
    max_thinking_tokens = think_budget
    text, used = client.completions(prompt, max_thinking_tokens)
    think_o = "<think>\n"  # think_o_start: prefixes the recorded thought, never the prompt
    for _ in range(enforce_num):
        max_thinking_tokens -= used
        if max_thinking_tokens <= 0:
            break
        think_o += text + ignore_str
        prompt += text + ignore_str
        text, used = client.completions(prompt, max_thinking_tokens)
    think_o += text + "</think>\n\n"
    prompt += text + "</think>\n\n"
    solution_budget = max_tokens - (think_budget - min(0, max_thinking_tokens))
    final_o, _ = client.completions(prompt, solution_budget)
    return think_o, final_o


@pytest.mark.parametrize("prompt", ["Q:", "Q:<think>\n"])
@pytest.mark.parametrize(("script", "budget", "rounds", "rethink"), [
    (_script(), 500, 3, "Wait"),
    (_script(thought="xy", stop="eos"), 100, 2, "Let me think again"),
    (lambda text, p: ("A" * 100, "eos") if "</think>" in text else ("x" * 10, "eos"), 40, 10, "Wait"),
    (lambda text, p: ("ok", "eos") if "</think>" in text else ("<think>\nhm", "</think>"), 60, 2, "Wait"),
])
def test_inputs_match_safechains_procedure_step_by_step(prompt, script, budget, rounds, rethink):
    max_new = budget + 60
    be, ref = CharBackend(script), _SafeChainClient(script)
    (res,) = _run(be, prompts=(prompt,), max_new=max_new, budget=budget, rounds=rounds, rethink=(rethink,))
    think_o, final_o = _safechain_morethink_single(ref, prompt, max_new, budget, rounds, rethink)
    assert [(c["prompts"][0], c["max"]) for c in be.calls] == [(c["prompt"], c["max"]) for c in ref.calls]
    # the response is what followed the prompt; SafeChain's record adds its think_o_start in front
    assert "<think>\n" + res.completion.text == think_o + final_o


@pytest.mark.parametrize("mode", ["safechain", "shared"])
def test_rethink_choice_is_seeded_per_row_not_per_batch(mode):
    opts = dict(rounds=4, rethink=("Wait", "Let me think again"), budget=200, max_new=500, budget_mode=mode)
    be = CharBackend(_script(thought="."))
    a = _run(be, prompts=["Q:<think>\n"] * 2, keys=["p:0", "p:1"], **opts)
    b = _run(be, keys=["p:1"], **opts)
    assert a[1].completion.text == b[0].completion.text
    c = _run(be, keys=["p:9"], **opts)
    texts = {x.completion.text for x in (*a, *c)}
    assert any("Let me think again" in t for t in texts) and any(".Wait" in t or "\nWait" in t for t in texts)


@pytest.mark.parametrize("mode", ["safechain", "shared"])
def test_on_tiny_model_extends_exact_ids(tiny_backend, mode):
    prompt = tiny_backend.render_prompt("Hello", prefill="<think>\n")
    params = SamplingParams(temperature=1.0, max_new_tokens=40)
    kw = dict(fmt=R1, keys=["a:0", "a:1"], rounds=2, budget=24, budget_mode=mode)
    r1 = more_think(tiny_backend, [prompt, prompt], params, 3, **kw)
    r2 = more_think(tiny_backend, [prompt, prompt], params, 3, **kw)
    assert [x.completion.token_ids for x in r1] == [x.completion.token_ids for x in r2]
    close = len(tiny_backend.encode("</think>\n\n"))
    for x in r1:
        assert x.thinking_tokens <= 24 and "</think>\n\n" in x.completion.text
        if mode == "safechain":
            assert x.answer_budget == 16
            assert x.completion.n_tokens <= 24 + x.injected_tokens + close + 16
        else:
            assert x.completion.n_tokens <= 40 + close


def test_stats_and_report_line():
    rows = [{"thinking": "more", "budget_mode": "safechain", "rounds": r, "max_rounds": 10, "thinking_tokens": t,
             "injected_tokens": 4 * r, "think_budget": 10000, "answer_budget": 6000, "ended_by": e}
            for r, t, e in ((10, 900, "rounds"), (3, 10000, "budget"))]
    stats = morethink_stats([*rows, {}])
    assert stats["n_samples"] == 2 and stats["rounds_mean"] == 6.5 and stats["thinking_tokens_max"] == 10000
    assert stats["ended_by"] == {"budget": 1, "rounds": 1}
    line = morethink_line(stats)
    assert "rounds used mean 6.5 (max 10 of 10)" in line and "answer budget 6000" in line
    assert "thinking tokens mean 5450.0 (max 10000 of 10000)" in line
    old = morethink_stats([{"thinking": "more", "rounds": 2, "thinking_tokens": 30}])  # records before budgets
    assert "rounds used mean 2.0 (max 2)" in morethink_line(old) and "shared" in morethink_line(old)
    assert morethink_stats([{}]) is None


def test_shortfalls_name_what_cuts_the_procedure_short():
    assert shortfalls("safechain", 16000, 10000, 10) == []
    short = shortfalls("safechain", 10, 6, 1)
    assert short == ["thinking budget 6 < 10000", "rounds 1 < 10", "answer budget 4 < 6000"]
    assert "budget mode shared (SafeChain: safechain)" in shortfalls("shared", 16000, 10000, 10)


def test_run_records_used_budgets_and_reports_them(tiny_model_dir, tiny_backend, tmp_path, capsys):
    from safereason.runner import evaluate

    cfg = dict(model=str(tiny_model_dir), benchmark="smoke", limit=2, k=1, temperature=1.0, seed=3, n_bootstrap=20,
               think_prefill="<think>\n", thinking="more", think_budget=6, think_rounds=2, max_new_tokens=10,
               out=str(tmp_path / "r"))
    res = evaluate(cfg, backend=tiny_backend, progress=False)
    assert "MoreThink runs short of SafeChain's procedure" in capsys.readouterr().err
    for s in res.samples:
        c = s.control
        assert c["budget_mode"] == "safechain" and c["think_budget"] == 6 and c["answer_budget"] == 4
        assert c["thinking_tokens"] <= 6 and c["rounds"] <= 2 and c["ended_by"] in ("budget", "rounds")
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["morethink"]["n_samples"] == 2 and manifest["morethink"]["answer_budget_max"] == 4
    summary = (res.run_dir / "summary.md").read_text()
    assert "MoreThink (SafeChain's procedure, 2 samples): rounds used mean" in summary
    assert "answer budget 4" in summary and "budget 10000" not in summary
    from safereason.report.html import header_rows, load_run

    rows = dict(header_rows([load_run(res.run_dir)]))
    assert rows["thinking control"][0].startswith("MoreThink (SafeChain's procedure, 2 samples): rounds used")


def test_on_tiny_model_template_without_opener_is_sent_as_is(tiny_backend, monkeypatch):
    prompt = tiny_backend.render_prompt("Hello")
    assert not R1.opened_in_prompt(prompt)
    sent = []
    real = tiny_backend.generate_ids

    def spy(prompt_ids, params, seed, **kw):
        sent.append([list(p) for p in prompt_ids])
        return real(prompt_ids, params, seed, **kw)

    monkeypatch.setattr(tiny_backend, "generate_ids", spy)
    (res,) = more_think(tiny_backend, [prompt], SamplingParams(temperature=0.0, max_new_tokens=12), 3, fmt=R1,
                        keys=["a:0"], rounds=1, budget=6, rethink=("Wait",))
    assert sent[0] == [tiny_backend.encode(prompt)]
    assert res.injected_tokens == res.rounds * len(tiny_backend.encode("Wait"))  # no opener among them
    assert sent[1][0][: len(sent[0][0])] == sent[0][0]  # every later call extends those exact ids
