"""SafeThink with a scripted model and a scripted scorer, the baselines, and runs on real models."""

import itertools
import json
import subprocess
import sys
from collections import Counter

import pytest

from safereason.defenses import build_defense
from safereason.defenses.safethink import DefenseError
from safereason.errors import ConfigError
from safereason.judges import JUDGES
from safereason.models.base import Completion, SamplingParams
from safereason.reasoning import get_format
from safereason.records import Verdict

R1 = get_format("r1")
PREFIX = "Wait, think safely."


class ScriptedModel:
    """One token per character. Monitored steps (delimiter among the stops) say BAD, except right after the
    steering prefix, where the n-th attempt at the same point says BAD for the first ``bad_after_prefix``."""

    def __init__(self, bad_after_prefix=0, steps_before_close=5):
        self.bad_after_prefix = bad_after_prefix
        self.steps_before_close = steps_before_close
        self.seen = Counter()
        self.calls = []

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def generate(self, texts, params, seed):
        return self.generate_ids([self.encode(t) for t in texts], params, seed)

    def generate_ids(self, prompt_ids, params, seed):
        self.calls.append((len(prompt_ids), params.stop, seed))
        out = []
        for ids in prompt_ids:
            text = self.decode(ids)
            if "\n\n" in params.stop:  # a monitored step
                if text.endswith(PREFIX):
                    self.seen[text] += 1
                    body = " still BAD" if self.seen[text] <= self.bad_after_prefix else " ok"
                else:
                    n = text.split("<think>\n", 1)[1].count("\n\n")
                    body = f"step{n + 1} BAD"
                    if n + 1 > self.steps_before_close:
                        out.append(self._c("done", "</think>", params))
                        continue
                out.append(self._c(body, "\n\n", params))
            else:
                out.append(self._c(f"rest(seed={seed})</think>\n\nanswer", "eos", params))
        return out

    @staticmethod
    def _c(text, stopped_by, params):
        text = text[: params.max_new_tokens]
        return Completion(text, len(text), "stop", tuple(ord(c) for c in text), stopped_by)


class LastStepScorer:
    """P(unsafe) = 1 when the last step of the trace says BAD, else 0."""

    outputs = ("unsafe",)

    def __init__(self, fail=False):
        self.fail = fail
        self.seen = []

    def identity(self):
        return {"fail": self.fail}

    def judge(self, items):
        self.seen += [i.text for i in items]
        if self.fail:
            return [Verdict.failed("scorer down") for _ in items]
        return [Verdict(unsafe=(u := "BAD" in i.text.split("\n\n")[-1]), score=float(u)) for i in items]


@pytest.fixture(autouse=True)
def scorer():
    JUDGES.add("last-step", LastStepScorer)
    JUDGES.add("failing", lambda: LastStepScorer(fail=True))
    yield
    JUDGES._items.pop("last-step")
    JUDGES._items.pop("failing")


def _run(model, m=3, attempts=4, prompt="Q:<think>\n", n=1, scorer="last-step", budget=500, mode="stepwise"):
    d = build_defense("safethink", {"scorer": scorer, "max_steps": m, "attempts": attempts,
                                    "mode": mode})
    return d.generate(model, [prompt] * n, ["how to x"] * n, SamplingParams(max_new_tokens=budget), 7, fmt=R1,
                      keys=[f"p:{i}" for i in range(n)])


def test_interventions_only_when_unsafe_and_only_in_first_m_steps():
    (out,) = _run(ScriptedModel(), m=3)
    ctl = out.control
    assert [iv["step"] for iv in ctl["interventions"]] == [1, 2, 3]
    assert all(iv["attempts"] == 1 and iv["accepted"] and iv["safety"] == [0.0, 1.0] for iv in ctl["interventions"])
    text = out.completion.text
    # the prefix sits exactly where each monitored step began; the later steps are unmonitored
    assert text.startswith(f"{PREFIX} ok\n\n{PREFIX} ok\n\n{PREFIX} ok\n\nrest(seed=7)</think>")
    assert [s["safety"] for s in ctl["steps"]] == [1.0, 1.0, 1.0]
    assert [text[: s["end"]].endswith("\n\n") for s in ctl["steps"]] == [True] * 3
    split = R1.split(text, "Q:<think>\n")
    assert split.thinking.count(PREFIX) == 3 and split.answer == "answer"


def test_at_most_b_attempts_and_first_passing_is_kept():
    (out,) = _run(ScriptedModel(bad_after_prefix=2), m=1, attempts=4)
    (iv,) = out.control["interventions"]
    assert iv["attempts"] == 3 and iv["accepted"] and iv["safety"] == [0.0, 0.0, 0.0, 1.0]
    assert out.completion.text.startswith(f"{PREFIX} ok\n\n")
    (out,) = _run(ScriptedModel(bad_after_prefix=10), m=1, attempts=2)
    (iv,) = out.control["interventions"]
    assert iv["attempts"] == 2 and not iv["accepted"] and len(iv["safety"]) == 3
    assert out.completion.text.startswith(f"{PREFIX} still BAD\n\n")  # the last candidate is kept


def test_m_zero_is_no_defense():
    model = ScriptedModel()
    (out,) = _run(model, m=0)
    assert out.control["interventions"] == [] and out.control["steps"] == []
    undefended = model.generate(["Q:<think>\n"], SamplingParams(max_new_tokens=500), 7)[0]
    assert out.completion.text == undefended.text and out.completion.token_ids == undefended.token_ids


def test_safe_steps_are_not_touched_and_closing_ends_monitoring():
    (out,) = _run(ScriptedModel(steps_before_close=0), m=3)
    assert out.control["interventions"] == []
    assert out.completion.text.startswith("done</think>rest")


def test_scorer_error_stops_instead_of_passing():
    with pytest.raises(DefenseError, match="scorer down"):
        _run(ScriptedModel(), scorer="failing")


def test_batched_rows_are_independent():
    one = _run(ScriptedModel(bad_after_prefix=1), m=2, n=1)[0]
    many = _run(ScriptedModel(bad_after_prefix=1), m=2, n=3)
    assert {o.completion.text for o in many} == {one.completion.text}


class TapeModel:
    """One token per character. Its thought is a fixed tape of steps; the next step it writes is the one after
    the steps already in the trace, and right after the steering prefix it writes " fine" (or " BAD again"
    for the first ``stubborn`` attempts at the same point). Stop strings are honoured, so the same model
    serves the step-by-step and the speculative implementation."""

    def __init__(self, tape=("s1 BAD", "s2 ok", "s3 BAD", "s4 BAD"), stubborn=0):
        self.tape, self.stubborn, self.seen, self.said = list(tape), stubborn, Counter(), {}
        self.calls = 0

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def generate(self, texts, params, seed):
        return self.generate_ids([self.encode(t) for t in texts], params, seed)

    def generate_ids(self, prompt_ids, params, seed):
        self.calls += 1
        out = []
        for ids in prompt_ids:
            text = self.decode(ids)
            trace = text.split("<think>\n", 1)[1]
            k = trace.count("\n\n")
            written = trace.rsplit("\n\n", 1)[-1]  # the current step so far: a continuation goes on from it
            head = ""
            if written.startswith(PREFIX):
                point = text[: len(text) - len(written)]
                if written == PREFIX:  # a new attempt at this point
                    self.seen[point] += 1
                    self.said[point] = " BAD again" if self.seen[point] <= self.stubborn else " fine"
                head, written = self.said[point] + "\n\n", written[len(PREFIX):]
                k += 1
            full = head + "".join(step + "\n\n" for step in self.tape[k:]) + "</think>\n\nanswer"
            assert full.startswith(written)
            full = full[len(written):]
            cut = min([i for s in params.stop if (i := full.find(s)) >= 0], default=-1)
            stopped = "eos"
            if cut >= 0:
                stopped = next(s for s in params.stop if full.find(s) == cut)
                full = full[:cut]
            if len(full) > params.max_new_tokens:
                full, stopped = full[: params.max_new_tokens], None
            out.append(Completion(full, len(full), "stop" if stopped else "length", tuple(map(ord, full)), stopped))
        return out


@pytest.mark.parametrize("stubborn", [0, 1])
@pytest.mark.parametrize("mode,chunk", [("speculative", None), ("chunked", None), ("chunked", 5), ("chunked", 1)])
def test_speculative_and_chunked_equal_stepwise(stubborn, mode, chunk):
    (ref,) = _run(TapeModel(stubborn=stubborn), m=3, mode="stepwise")
    d = build_defense("safethink", {"scorer": "last-step", "max_steps": 3, "mode": mode, "chunk_tokens": chunk})
    (o,) = d.generate(TapeModel(stubborn=stubborn), ["Q:<think>\n"], ["how to x"], SamplingParams(max_new_tokens=500),
                      7, fmt=R1, keys=["p:0"])
    assert o.completion.text == ref.completion.text
    assert [(iv["step"], iv["attempts"], iv["accepted"]) for iv in o.control["interventions"]] == [
        (iv["step"], iv["attempts"], iv["accepted"]) for iv in ref.control["interventions"]]
    text = o.completion.text
    assert text.startswith(f"{PREFIX} ")
    assert [iv["step"] for iv in o.control["interventions"]] == [1, 3]  # s1 and s3 were BAD; s4 is step 4
    assert [text[: s["end"]].endswith("\n\n") for s in o.control["steps"]] == [True] * 3 or mode == "speculative"


def test_speculative_without_trigger_is_the_undefended_call():
    model = TapeModel(tape=("a ok", "b ok", "c ok"))
    (o,) = _run(model, m=3, mode="speculative")
    undefended = model.generate(["Q:<think>\n"], SamplingParams(max_new_tokens=500), 7)[0]
    assert o.completion.text == undefended.text and o.control["interventions"] == []
    assert [s["safety"] for s in o.control["steps"]] == [1.0, 1.0, 1.0]
    model.calls = 0
    _run(model, m=3, mode="speculative")
    assert model.calls == 1  # one generation call for the whole batch


def test_speculative_batch_and_m_zero():
    many = _run(TapeModel(), m=2, n=3, mode="speculative")
    assert len({o.completion.text for o in many}) == 1
    (m0,) = _run(TapeModel(), m=0, mode="speculative")
    assert m0.control["interventions"] == [] and m0.completion.text.startswith("s1 BAD")


def test_bad_options():
    with pytest.raises(ConfigError, match="refusal judge"):
        build_defense("safethink", {"scorer": "refusal-string"})
    with pytest.raises(ConfigError, match="threshold"):
        build_defense("safethink", {"threshold": 2})
    with pytest.raises(ConfigError, match="bad options"):
        build_defense("safethink", {"tau": 0.3})


def test_prompt_baselines():
    sp = build_defense("safepath")
    assert sp.prefill(R1, "A:<think>\n") == "Let's think about safety first"
    assert sp.prefill(R1, "A:") == "<think>\nLet's think about safety first"
    ada = build_defense("adashield")
    assert ada.system_prompt(None).startswith("Before you answer") and ada.system_prompt("Be brief.").endswith(
        "\n\nBe brief.")
    assert build_defense("zerothink").thinking == "zero"


def test_defenses_in_runs(tiny_model_dir, tiny_backend, tmp_path):
    from safereason.runner import evaluate

    base = dict(model=str(tiny_model_dir), benchmark="smoke", limit=2, k=2, max_new_tokens=12, temperature=1.0,
                seed=3, think_prefill="<think>\n", n_bootstrap=20, judges=["rs-match"])
    plain = evaluate({**base, "out": str(tmp_path / "plain")}, backend=tiny_backend, progress=False)
    m0 = evaluate({**base, "out": str(tmp_path / "m0"), "defense": "safethink",
                   "defense_options": {"max_steps": 0}}, backend=tiny_backend, progress=False)
    assert [s.response for s in m0.samples] == [s.response for s in plain.samples]
    st = evaluate({**base, "out": str(tmp_path / "st"), "defense": "safethink",
                   "defense_options": {"max_step_tokens": 4, "attempts": 1}}, backend=tiny_backend, progress=False)
    for s in st.samples:
        assert s.control["defense"] == "safethink" and s.n_response_tokens <= 12
        # rs-match scores random text as unsafe, so the first step is always steered
        assert s.control["interventions"][0]["step"] == 1 and PREFIX in s.response
    ada = evaluate({**base, "out": str(tmp_path / "ada"), "defense": "adashield"}, backend=tiny_backend,
                   progress=False)
    assert "Before you answer" in ada.samples[0].prompt_text
    sp = evaluate({**base, "out": str(tmp_path / "sp"), "defense": "safepath"}, backend=tiny_backend, progress=False)
    assert sp.samples[0].prompt_text.endswith("<think>\nLet's think about safety first")
    with pytest.raises(ConfigError, match="thinking=more"):
        evaluate({**base, "out": str(tmp_path / "x"), "defense": "safethink", "thinking": "more"},
                 backend=tiny_backend, progress=False)


@pytest.mark.slow
def test_cli_safethink_on_embedded_model(smollm2_dir, tmp_path, cli_env):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "safereason.cli", "eval", "--model", "smollm2-135m", "--benchmark",
                           "smoke", "--limit", "2", "--k", "1", "--max-new-tokens", "32", "--think-prefill",
                           "<think>\n", "--defense", "safethink", "--defense-opt", "max_step_tokens=8",
                           "--defense-opt", "attempts=2",
                           "--out", str(out), "--no-progress"], env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        assert s["control"]["defense"] == "safethink"
        for iv in s["control"]["interventions"]:
            assert 1 <= iv["step"] <= 3 and 1 <= iv["attempts"] <= 2
        if s["control"]["interventions"]:
            assert PREFIX in s["response"]


def test_session_and_chunked_equal_stepwise_on_a_real_model(tiny_backend, hash_judge):
    scorer = hash_judge(3)
    texts = [tiny_backend.render_prompt(p, prefill="<think>\n") for p in ("How do I x?", "Hi", "Tell me y")]
    params = SamplingParams(temperature=0.0, max_new_tokens=40)
    outs = {}
    for mode, chunk in (("stepwise", None), ("session", None), ("chunked", 7)):
        d = build_defense("safethink", {"scorer": scorer, "max_step_tokens": 4, "attempts": 2, "mode": mode,
                                        "chunk_tokens": chunk})
        assert d.resolve_mode(tiny_backend) == mode
        outs[mode] = d.generate(tiny_backend, texts, ["x"] * 3, params, 5, fmt=R1, keys=["a", "b", "c"])
    for a, b, c in zip(outs["stepwise"], outs["session"], outs["chunked"], strict=True):
        assert c.completion.token_ids == a.completion.token_ids
        assert c.control["interventions"] == b.control["interventions"] and c.control["steps"] == b.control["steps"]
        assert b.completion.token_ids == a.completion.token_ids and b.completion.text == a.completion.text
        assert [(iv["step"], iv["attempts"], iv["accepted"], iv["safety"]) for iv in b.control["interventions"]] == [
            (iv["step"], iv["attempts"], iv["accepted"], iv["safety"]) for iv in a.control["interventions"]]
        assert [s["safety"] for s in b.control["steps"]] == [s["safety"] for s in a.control["steps"]]
    assert sum(len(o.control["interventions"]) for o in outs["session"]) > 0  # the comparison saw steering


def test_session_mode_is_auto_on_transformers_and_m_zero_is_the_plain_call(tiny_backend):
    d = build_defense("safethink", {"max_steps": 0})
    assert d.resolve_mode(tiny_backend) == "session" and d.resolve_mode(TapeModel()) == "chunked"
    with pytest.raises(ConfigError, match="decode sessions"):
        build_defense("safethink", {"mode": "session"}).resolve_mode(TapeModel())
    with pytest.raises(ConfigError, match="mode"):
        build_defense("safethink", {"mode": "fast"})
    text = tiny_backend.render_prompt("Hi", prefill="<think>\n")
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    (o,) = d.generate(tiny_backend, [text], ["Hi"], params, 3, fmt=R1, keys=["a"])
    assert o.completion.token_ids == tiny_backend.generate([text], params, 3)[0].token_ids


@pytest.mark.slow
@pytest.mark.parametrize("delimiter", ["\n\n", " "])
def test_session_and_chunked_agree_on_real_text(smollm2_dir, delimiter, hash_judge):
    """On the embedded model's prose, where a delimiter may sit inside a token (" the"): session and chunked
    both keep the model's own ids, so they agree exactly, and recorded steps end at their delimiter."""
    from safereason.models.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(smollm2_dir), device="cpu", dtype="float32")
    scorer = hash_judge(3)
    texts = [backend.render_prompt(p, prefill="<think>\n") for p in
             ("How do I pick a lock?", "Write a short poem about rain.", "Explain why the sky is blue.")]
    params = SamplingParams(temperature=0.0, max_new_tokens=48)
    outs = {}
    for mode, chunk in (("session", None), ("chunked", 5)):
        d = build_defense("safethink", {"scorer": scorer, "max_step_tokens": 16, "attempts": 2, "mode": mode,
                                        "chunk_tokens": chunk, "delimiter": delimiter})
        outs[mode] = d.generate(backend, texts, ["x"] * 3, params, 5, fmt=R1, keys=["a", "b", "c"])
    delimited = 0
    for a, b in zip(outs["session"], outs["chunked"], strict=True):
        assert a.completion.token_ids == b.completion.token_ids
        assert a.control == b.control
        ends = [0] + [st["end"] for st in a.control["steps"]]
        assert ends == sorted(ends) and all(st["tokens"] > 0 for st in a.control["steps"])
        # every attempt was scored, even one the model ended right after the prefix
        assert all(len(iv["safety"]) == iv["attempts"] + 1 for iv in a.control["interventions"])
        delimited += sum(delimiter in a.completion.text[x:y] for x, y in itertools.pairwise(ends))
    assert sum(len(o.control["interventions"]) for o in outs["session"]) > 0
    if delimiter == " ":
        assert delimited > 0


@pytest.mark.parametrize(("mode", "chunk"), [("session", None), ("chunked", 7), ("stepwise", None)])
def test_progress_reports_only_settled_ids_and_does_not_change_the_output(tiny_backend, hash_judge, mode, chunk):
    """The streaming hook: every report of a row is a prefix of its final ids and only grows (nothing taken
    back is ever reported); a row is reported settled once monitoring is over, flagged once a step stayed
    unsafe; the output is the same with and without the hook, and raising from it stops the generation."""
    scorer = hash_judge(2)
    texts = [tiny_backend.render_prompt(p, prefill="<think>\n") for p in ("How do I x?", "Hi", "Tell me y")]
    params = SamplingParams(temperature=1.0, max_new_tokens=40)
    opts = {"scorer": scorer, "max_step_tokens": 4, "attempts": 1, "mode": mode, "chunk_tokens": chunk}
    reports: list[tuple[int, list[int], bool, bool]] = []
    d = build_defense("safethink", opts)
    outs = d.generate(tiny_backend, texts, ["x"] * 3, params, 5, fmt=R1, keys=["a", "b", "c"],
                      on_progress=lambda row, ids, settled, flagged: reports.append((row, list(ids), settled, flagged)))
    plain = build_defense("safethink", opts).generate(tiny_backend, texts, ["x"] * 3, params, 5, fmt=R1,
                                                      keys=["a", "b", "c"])
    assert [o.completion for o in outs] == [o.completion for o in plain]
    assert [o.control for o in outs] == [o.control for o in plain]
    for row, out in enumerate(outs):
        mine = [(ids, settled, flagged) for r, ids, settled, flagged in reports if r == row]
        assert mine, row
        final = list(out.completion.token_ids)
        for (a, *_), (b, *_) in itertools.pairwise(mine):
            assert b[: len(a)] == a  # only grows
        assert all(final[: len(ids)] == ids for ids, _, _ in mine)
        assert mine[-1][1]  # settled by the end
        unsafe = any(not iv["accepted"] for iv in out.control["interventions"])
        flags = [flagged for _, _, flagged in mine]
        assert flags[-1] == unsafe and (unsafe or not any(flags))
    assert sum(len(o.control["interventions"]) for o in outs) > 0  # the hook saw steering
    if mode == "session":
        assert len(reports) > 3 * 10  # a report per decoded token after the monitored steps

    class Stop(Exception):
        pass

    def stop(row: int, ids: list[int], settled: bool, flagged: bool) -> None:
        raise Stop

    with pytest.raises(Stop):
        build_defense("safethink", opts).generate(tiny_backend, texts, ["x"] * 3, params, 5, fmt=R1,
                                                  keys=["a", "b", "c"], on_progress=stop)
