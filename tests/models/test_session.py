"""Decode sessions: token-by-token decoding on one KV cache must compute what fresh ``generate`` calls do."""

import pytest

from safereason.models.base import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def rows(tiny_backend):
    texts = [tiny_backend.render_prompt(p, prefill="<think>\n") for p in ("How do I bake bread?", "Hi", "Why?")]
    return [tiny_backend.encode(t) for t in texts]


def test_unmonitored_session_equals_generate(tiny_backend, rows):
    plain = tiny_backend.generate_ids(rows, GREEDY, 0)
    sess = tiny_backend.open_session(rows, GREEDY, [0, 0, 0])
    sess.run()
    assert [c.token_ids for c in sess.completions()] == [c.token_ids for c in plain]
    assert [c.finish_reason for c in sess.completions()] == [c.finish_reason for c in plain]


def test_rewind_equals_a_fresh_call_on_the_kept_ids(tiny_backend, rows):
    force = tiny_backend.encode("Wait, think safely.")
    sess = tiny_backend.open_session(rows, GREEDY, [0, 0, 0])
    for _ in range(10):
        sess.step()
    before = [sess.ids(i) for i in range(3)]
    keep = [0, 3, 7]
    for i, k in enumerate(keep):
        sess.rewind(i, k, force)
    sess.run()
    for i, (c, k) in enumerate(zip(sess.completions(), keep, strict=True)):
        head = before[i][:k] + force
        (fresh,) = tiny_backend.generate_ids([rows[i] + head], SamplingParams(temperature=0.0,
                                                                           max_new_tokens=24 - len(head)), 0)
        assert list(c.token_ids) == head + list(fresh.token_ids)


def test_sampled_rows_do_not_depend_on_their_batch(tiny_backend, rows):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=16)
    many = tiny_backend.open_session(rows, params, [5, 6, 7])
    many.run()
    one = tiny_backend.open_session(rows[1:2], params, [6])
    one.run()
    assert many.completions()[1].token_ids == one.completions()[0].token_ids
    other = tiny_backend.open_session(rows[1:2], params, [8])
    other.run()
    assert other.completions()[0].token_ids != one.completions()[0].token_ids


def test_stop_strings_budget_and_bad_rewinds(tiny_backend, rows):
    plain = tiny_backend.generate_ids(rows, GREEDY, 0)
    stop = tiny_backend.decode(plain[0].token_ids[3:5])  # a stop string the first row is sure to hit
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop,))
    sess = tiny_backend.open_session(rows[:1], params, [0])
    sess.run()
    (c,) = sess.completions()
    assert c.stopped_by == stop and c.finish_reason == "stop" and stop not in c.text
    assert c.text == tiny_backend.generate_ids(rows[:1], params, 0)[0].text
    sess = tiny_backend.open_session(rows[:1], GREEDY, [0])
    with pytest.raises(ValueError, match="forced"):
        sess.rewind(0, 0, [])
    with pytest.raises(ValueError, match="budget"):
        sess.rewind(0, 0, [1] * 25)
    with pytest.raises(ValueError, match="empty prompt"):
        tiny_backend.open_session([[]], GREEDY, [0])


def test_a_model_with_other_logits_settings_gets_no_session(tiny_backend, rows):
    from safereason.defenses import build_defense

    cfg = tiny_backend.model.generation_config
    assert tiny_backend.supports_session
    cfg.repetition_penalty = 1.3  # generate would apply it, a session would not: refuse rather than differ
    try:
        assert not tiny_backend.supports_session
        with pytest.raises(NotImplementedError, match="repetition_penalty"):
            tiny_backend.open_session(rows, GREEDY, [0, 0, 0])
        assert build_defense("safethink").resolve_mode(tiny_backend) == "chunked"
    finally:
        cfg.repetition_penalty = 1.0
