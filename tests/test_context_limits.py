"""Prompt length against the model's context (error before any token, or a recorded skip), and samples the
provider blocks: their own status, never judged, left out of the metrics and counted."""

import json
import time
from pathlib import Path

import pytest

from safereason.errors import ConfigError
from safereason.runner import evaluate
from safereason.validation import context_limit, count_within_context, max_token_chars


def _bench(tmp_path: Path, prompts: dict[str, str]) -> str:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in prompts.items()))
    return str(path)


def _cfg(tmp_path, bench, **kw):
    base = dict(model="word", benchmark=bench, id_column="id", k=2, max_new_tokens=8, batch_size=3,
                reasoning_format="none", n_bootstrap=0, out=str(tmp_path / "run"))
    base.update(kw)
    return base


def test_long_prompt_is_an_error_before_any_generation(word_backend, tmp_path):
    bench = _bench(tmp_path, {"short": "how are you", "long": "word " * 100})
    backend = word_backend(context=64)
    with pytest.raises(ConfigError, match=r"prompt 'long' has 10[0-9] tokens; with max_new_tokens 8 .* context of 64"):
        evaluate(_cfg(tmp_path, bench), backend=backend, progress=False)
    assert backend.generated == []
    run = tmp_path / "run"
    assert not (run / "config.yaml").exists() and not (run / "state" / "identity.json").exists()
    # the corrected command runs in the same dir
    res = evaluate(_cfg(tmp_path, bench, on_long_prompt="skip"), backend=backend, progress=False)
    assert {s.prompt_id for s in res.samples} == {"short", "long"}


def test_skip_policy_records_skipped_samples_left_out_of_metrics(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "how are you", "long": "word " * 100, "b": "tell me a joke"})
    backend = word_backend(context=64)
    res = evaluate(_cfg(tmp_path, bench, on_long_prompt="skip"), backend=backend, progress=False)
    skipped = [s for s in res.samples if s.prompt_id == "long"]
    assert len(skipped) == 2 and all(s.status == "skipped" and s.response == "" for s in skipped)
    assert "context of 64" in skipped[0].status_reason and skipped[0].judgments == {}
    assert not any("word word" in t for t in backend.generated)  # never sent to the model
    assert len(backend.generated) == 4
    entry = res.metrics["rs-match"]["full"]
    assert entry["n_skipped"] == 2 and entry["n_blocked"] == 0
    assert entry["n_samples"] == 4 and entry["n_prompts"] == 2  # only the generated samples count
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["n_skipped"] == 2
    assert "2 samples skipped" in (res.run_dir / "summary.md").read_text()
    # a re-run resumes with nothing to do
    backend.generated.clear()
    again = evaluate(_cfg(tmp_path, bench, on_long_prompt="skip"), backend=backend, progress=False)
    assert backend.generated == [] and [s.status for s in again.samples] == [s.status for s in res.samples]


def test_blocked_samples_have_their_own_status(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "how are you", "bad": "forbidden topic", "b": "tell me a joke"})
    res = evaluate(_cfg(tmp_path, bench), backend=word_backend(blocked=("forbidden",)), progress=False)
    blocked = [s for s in res.samples if s.prompt_id == "bad"]
    assert all(s.status == "blocked" and s.finish_reason == "blocked" and s.response == "" for s in blocked)
    assert "content policy" in blocked[0].status_reason
    assert all(s.judgments == {} for s in blocked)  # not a refusal, not a verdict
    entry = res.metrics["rs-match"]["full"]
    assert entry["n_blocked"] == 2 and entry["n_prompts"] == 2 and entry["n_judged"] == 4
    assert "2 blocked by the provider" in (res.run_dir / "summary.md").read_text()


def test_old_records_without_status_load():
    from safereason.records import Sample

    old = {"prompt_id": "p", "sample_index": 0, "prompt": "x", "prompt_text": "x", "response": "y", "thinking": None,
           "answer": "y", "thinking_closed": False, "split_status": "no_thinking", "finish_reason": "stop",
           "n_prompt_tokens": 1, "n_response_tokens": 1}
    s = Sample(**old)
    assert s.status == "ok" and s.part_text("full") == "y"


def test_huge_prompt_is_rejected_without_tokenising(tiny_backend, tmp_path, monkeypatch):
    """A 1 MB prompt: bounded by characters (longest vocabulary entry), so it is never tokenised."""
    limit = context_limit(tiny_backend)
    assert limit == 4096  # the tiny model's max_position_embeddings
    per_token = max_token_chars(tiny_backend)
    assert per_token is not None and per_token < 100
    real = tiny_backend.count_tokens
    seen: list[int] = []

    def counting(texts):
        seen.extend(len(t) for t in texts)
        return real(texts)

    monkeypatch.setattr(tiny_backend, "count_tokens", counting)
    huge = "a" * 1_000_000
    start = time.monotonic()
    counts, long = count_within_context(tiny_backend, ["huge", "small"], [huge, "hello"], max_new_tokens=16,
                                        limit=limit)
    assert time.monotonic() - start < 2
    assert seen == [5]  # only the small prompt was tokenised
    assert set(long) == {0} and not long[0].exact and counts[0] >= 1_000_000 // per_token
    assert "at least" in long[0].reason(16, limit)


def test_huge_prompt_error_on_a_real_tokenizer(tiny_model_dir, tiny_backend, tmp_path):
    bench = _bench(tmp_path, {"ok": "hello", "huge": "a " * 500_000})
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"prompt 'huge' has at least \d+ tokens.*context of 4096 tokens"):
        evaluate(_cfg(tmp_path, bench, model=str(tiny_model_dir), reasoning_format="r1"), backend=tiny_backend,
                 progress=False)
    assert time.monotonic() - start < 30


def test_context_limit_sources():
    class Cfg:
        max_position_embeddings = 2048

    class Model:
        config = Cfg()

    class HF:
        model = Model()

    class VLLM:
        class model_config:
            max_model_len = 1024

    class Remote:
        pass

    assert context_limit(HF()) == 2048
    assert context_limit(VLLM()) == 1024
    assert context_limit(Remote()) is None  # unknown: no check
    assert context_limit(Remote(), {"max_model_len": 512}) == 512  # an explicit option wins
    with pytest.raises(ConfigError, match="max_model_len must be a positive integer"):
        context_limit(Remote(), {"max_model_len": "big"})
