"""Parsing of single moderation results (the HTTP path is covered in test_http_judges.py)."""

from typing import Any

import pytest

from safereason.judges import JudgeItem, build_judge

KEY_ENV = "SAFEREASON_TEST_MODERATION_KEY"


class _Reply:
    ok = True
    error = None

    def __init__(self, data: Any) -> None:
        self.data = data


def _judge(results: list[Any], **opts: Any):
    j = build_judge("openai-moderation", {"api_key_env": KEY_ENV, **opts})
    j.client.post_many = lambda path, bodies, check=None: [_Reply({"results": results}) for _ in bodies]
    return j.judge([JudgeItem(prompt="p", text=f"t{i}") for i in range(len(results))])


def _result(flagged: bool, scores: dict[str, Any]) -> dict[str, Any]:
    cats = {k: isinstance(v, float) and v >= 0.5 for k, v in scores.items()}
    return {"flagged": flagged, "categories": cats, "category_scores": scores}


def test_null_category_score_is_skipped_with_a_flag():
    (v,) = _judge([_result(True, {"violence": 0.8, "self-harm/instructions": None, "hate": 0.1})])
    assert v.error is None and v.unsafe is True and v.score == pytest.approx(0.8)
    assert v.flags == ["null_category_score:self-harm/instructions"] and v.label == "violence"
    (v,) = _judge([_result(False, {"violence": None, "illicit": 0.3, "hate": None})], use_flagged=False,
                  threshold=0.25)
    assert v.unsafe is True and v.score == pytest.approx(0.3)
    assert v.flags == ["null_category_score:violence", "null_category_score:hate"]


def test_no_flag_without_nulls_and_bad_scores_still_fail():
    ok, all_null, text = _judge([_result(False, {"violence": 0.2}), _result(False, {"violence": None}),
                                 _result(False, {"violence": "high"})])
    assert ok.flags == [] and ok.unsafe is False
    assert all_null.unsafe is None and "every category score is null" in (all_null.error or "")
    assert text.unsafe is None and "non-numeric category score" in (text.error or "")
