"""TARS's rewards as plain TRL reward functions: ``(prompts, completions, **columns) -> list[float | None]``.

TARS (Kim et al., 2025) trains on a mix of harmful and harmless prompts with two separate rewards, both
multiplied by a binary format reward: on harmful prompts a safety reward (1 − the moderation score of the
answer), on harmless and ambiguous prompts a helpfulness reward (a reward model's sigmoid score of the
answer). By default each rule is TARS's own (:mod:`safereason.train.tars_reward`: what the judges see, the
format rule, bfloat16 values and clamp); the project's earlier rules are named options. Each function
here works with any TRL trainer: ``completions`` may be strings or conversational
message lists, extra dataset columns (``label``, ``think_prefill``) arrive as keyword lists, and TRL 1.16's
``log_metric`` / ``log_extra`` callbacks are used when present. A judge or reward-model failure gives
``None`` for that completion (TRL ignores it) and is counted in ``.failures``, never a silent 0 or 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from safereason.errors import ConfigError, SafereasonError
from safereason.judges.base import JUDGES, Judge, JudgeItem, build_judge
from safereason.train.reward_model import RewardModelScorer
from safereason.train.tars_reward import (
    FORMAT_RULES,
    MODERATION_CLAMP,
    PRECISIONS,
    SPLITS,
    TARS_MODERATION_MODEL,
    THINK_START,
    answer_of,
    check_choice,
    format_score,
    reward_value,
    split_answer,
)

log = logging.getLogger(__name__)

#: The CPU stand-in for a helpfulness reward model: 1 − refused, by a refusal judge.
PROXY_NAMES = ("refusal-proxy", "proxy")
#: Registry judges that score helpfulness on a rubric: ``score`` is how useful the answer is.
RUBRIC_JUDGES = ("strongreject-rubric",)
HARMFUL_LABELS = ("harmful",)
HELPFUL_LABELS = ("benign", "ambiguous")

Reward = Callable[..., list[float | None]]
#: a batched scorer: (user requests, answers) -> one reward per answer, None where it failed
Scorer = Callable[[Sequence[str], Sequence[str]], list[float | None]]


# ---------------------------------------------------------------------------------------------- text


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or the assistant contents of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    raise SafereasonError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def user_text(prompt: Any) -> str:
    """The user request of one prompt (the last user message of a conversation), for judges."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [str(m.get("content") or "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    raise SafereasonError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


def prefill_of(prompt: Any, think_prefill: str | None = None) -> str:
    """The part of the assistant turn the model did not generate but that counts for the format.

    A ``think_prefill`` column wins; else a string prompt ending in ``<think>`` (an R1-style chat template),
    or a conversation whose last message is a partial assistant turn, contributes its open tail.
    """
    if think_prefill:
        return think_prefill
    if isinstance(prompt, str):
        return THINK_START if prompt.rstrip().endswith(THINK_START) else ""
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
        return str(prompt[-1].get("content") or "")
    return ""


def _column(kwargs: dict[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        return [default] * n
    if len(values) != n:
        raise SafereasonError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _log(kwargs: dict[str, Any], metrics: dict[str, float | None], prefix: str) -> None:
    """Hand metrics to TRL's ``log_metric`` when the trainer passes it; always to the module logger."""
    log_metric = kwargs.get("log_metric")
    for name, value in metrics.items():
        if value is not None and callable(log_metric):
            log_metric(f"{prefix}/{name}", float(value))
    log.debug("rewards: %s", metrics)


# ---------------------------------------------------------------------------------------------- format


def _format_scores(prompts: Sequence[Any], completions: Sequence[Any], prefills: Sequence[str | None],
                   rule: str) -> list[int]:
    return [format_score(completion_text(c), prefill_of(p, f), rule)
            for p, c, f in zip(prompts, completions, prefills, strict=True)]


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 iff the completion (after the prompt's prefill) is ``<think>…</think>…`` by TARS's rule; else 0.0."""
    prefills = _column(kwargs, "think_prefill", len(completions))
    out: list[float | None] = [float(f) for f in _format_scores(prompts, completions, prefills, "tars")]
    _log(kwargs, {"mean": _mean(out)}, "format")
    return out


def make_format_reward(think_prefill: str = "", rule: str = "tars") -> Reward:
    """``format_reward`` with a ``rule`` (``tars`` or ``nonempty-answer``) and, for a model whose chat template
    opens the thought itself (R1 distills add ``<think>\\n`` to the generation prompt, invisible in
    conversational data), a ``think_prefill`` for rows without a ``think_prefill`` column."""
    check_choice("format rule", rule, FORMAT_RULES)

    def format_with_prefill(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        prefills = _column(kwargs, "think_prefill", len(completions), think_prefill)
        out: list[float | None] = [float(f) for f in _format_scores(prompts, completions, prefills, rule)]
        _log(kwargs, {"mean": _mean(out)}, "format")
        return out

    return format_with_prefill


# ---------------------------------------------------------------------------------------------- scorers


class JudgeScorer:
    """Scores answers with one batched registry-judge call; ``None`` for an item the judge failed on."""

    def __init__(self, judge: Judge, to_reward: Callable[[Any], float | None]) -> None:
        self.judge = judge
        self.to_reward = to_reward

    def __call__(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        if not answers:
            return []
        items = [JudgeItem(prompt=p, text=a) for p, a in zip(prompts, answers, strict=True)]
        try:
            verdicts = self.judge.judge(items)
        except Exception as e:  # a judge that raises fails the whole batch, visibly
            log.warning("judge %s failed on %d items: %s", getattr(self.judge, "name", "?"), len(items), e)
            return [None] * len(items)
        if len(verdicts) != len(items):
            log.warning("judge returned %d verdicts for %d items", len(verdicts), len(items))
            return [None] * len(items)
        return [None if v.error is not None else self.to_reward(v) for v in verdicts]


def _safety_value(v: Any) -> float | None:
    """1 − the judge's score (for moderation: ``1 - max_score`` as TARS's get_moderation_score); its decision
    for a judge without a score. The clamp and rounding come after (``AnswerReward.post``)."""
    if v.score is not None:
        return 1.0 - float(v.score)
    if v.unsafe is not None:
        return 0.0 if v.unsafe else 1.0
    return None


def _helpful_value(rubric: bool) -> Callable[[Any], float | None]:
    def value(v: Any) -> float | None:
        if rubric:
            return None if v.score is None else float(v.score)
        return None if v.refused is None else (0.0 if v.refused else 1.0)
    return value


# ---------------------------------------------------------------------------------------------- rewards


class AnswerReward:
    """A reward on the answer of each completion, from a batched scorer; counts its failures.

    ``split`` picks the text the scorer sees (``tars``: after the exact ``"\\n</think>\\n\\n"``, else the
    whole completion; ``think-close``: after ``</think>``); ``post`` maps each score to its final value
    (TARS's bfloat16 rounding and clamp, :func:`safereason.train.tars_reward.reward_value`).
    """

    def __init__(self, name: str, scorer: Scorer, component: str, *, split: str = "tars",
                 post: Callable[[float], float] | None = None) -> None:
        self.__name__ = name
        self.scorer = scorer
        self.component = component
        self.split = check_choice("split", split, SPLITS)
        self.post = post
        self.failures = 0
        self.calls = 0

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float | None]:
        """Scores without logging: one scorer call over all the given completions."""
        self.calls += 1
        answers = [split_answer(completion_text(c), self.split) for c in completions]
        scores = list(self.scorer([user_text(p) for p in prompts], answers))
        if len(scores) != len(answers):
            raise SafereasonError(f"{self.__name__}: scorer gave {len(scores)} scores for {len(answers)} answers")
        failed = sum(s is None for s in scores)
        if failed:
            self.failures += failed
            log.warning("%s: %d of %d completions could not be scored", self.__name__, failed, len(scores))
        if self.post is not None:
            scores = [None if s is None else self.post(s) for s in scores]
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        scores = self.score(prompts, completions)
        _log(kwargs, {"mean": _mean(scores), "failures": float(sum(s is None for s in scores))}, self.__name__)
        return scores

    def close(self) -> None:
        judge = getattr(self.scorer, "judge", None)
        close = getattr(judge, "close", None)
        if callable(close):
            close()


def make_safety_reward(judge: str | Judge = "llama-guard-3-1b", *, clamp: float | str | None = "auto",
                       split: str = "tars", precision: str = "bfloat16", **options: Any) -> AnswerReward:
    """1 − P(unsafe) of the answer by a registry safety judge; for ``openai-moderation`` TARS's rule
    (1 − the largest category score, set to 1 at or above ``MODERATION_CLAMP``). ``clamp="auto"`` applies
    TARS's clamp for ``openai-moderation`` only. ``split`` / ``precision``: see
    :mod:`safereason.train.tars_reward` (TARS's rules by default).

    ``openai-moderation`` calls the judge's pinned ``omni-moderation-2024-09-26`` unless ``model=`` says
    otherwise; TARS called ``omni-moderation-latest`` (``model=TARS_MODERATION_MODEL``), whose verdicts move.
    """
    check_choice("split", split, SPLITS)
    check_choice("precision", precision, PRECISIONS)
    j = judge if not isinstance(judge, str) else build_judge(judge, options)
    name = getattr(j, "name", "judge")
    if "unsafe" not in getattr(j, "outputs", ()):
        raise ConfigError(f"safety reward needs a safety judge (one that decides 'unsafe'); {name!r} does not")
    if clamp == "auto":
        clamp = MODERATION_CLAMP if name == "openai-moderation" else None
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, int | float) or not 0 < clamp <= 1):
        raise ConfigError(f"clamp must be in (0, 1] or None, got {clamp!r}")
    return AnswerReward(f"safety_{name}", JudgeScorer(j, _safety_value), "safety", split=split,
                        post=reward_value(clamp, precision))


def make_helpfulness_reward(model: str | Scorer = "refusal-proxy", *, refusal_judge: str = "refusal-string",
                            split: str = "tars", precision: str = "bfloat16", **options: Any) -> AnswerReward:
    """Helpfulness of the answer.

    ``model`` is a local sequence-classification reward model (path or hub id; sigmoid of its score), a
    rubric judge from the registry (``strongreject-rubric`` over an OpenAI-compatible endpoint: its
    ``score`` rates how useful the answer is), a refusal judge (1 − refused), ``refusal-proxy``: 1 −
    refused by ``refusal_judge``, a weak CPU stand-in for a reward model, named ``*_proxy`` everywhere, or a
    batched scorer ``(requests, answers) -> scores`` of your own. ``split`` / ``precision``: see
    :mod:`safereason.train.tars_reward` (TARS's rules by default; no clamp on helpfulness, as in TARS).
    """
    kw: dict[str, Any] = {"split": check_choice("split", split, SPLITS),
                          "post": reward_value(None, check_choice("precision", precision, PRECISIONS))}
    if callable(model):
        return AnswerReward(f"helpfulness_{getattr(model, '__name__', 'scorer')}", model, "helpfulness", **kw)
    if model in PROXY_NAMES:
        j = build_judge(refusal_judge, options)
        if "refused" not in j.outputs:
            raise ConfigError(f"refusal-proxy needs a refusal judge; {refusal_judge!r} does not decide 'refused'")
        return AnswerReward(f"helpfulness_refusal_proxy_{refusal_judge}", JudgeScorer(j, _helpful_value(False)),
                            "helpfulness_proxy", **kw)
    if model in JUDGES:
        j = build_judge(model, options)
        rubric = model in RUBRIC_JUDGES
        if not rubric and "refused" not in j.outputs:
            raise ConfigError(f"judge {model!r} cannot score helpfulness (it decides neither a rubric score nor "
                              "'refused'); use a reward model path, a rubric judge or refusal-proxy")
        component = "helpfulness" if rubric else "helpfulness_proxy"
        suffix = "" if rubric else "_proxy"
        return AnswerReward(f"helpfulness_{model}{suffix}", JudgeScorer(j, _helpful_value(rubric)), component, **kw)
    return AnswerReward(f"helpfulness_rm_{model.rstrip('/').split('/')[-1]}", RewardModelScorer(model, **options),
                        "helpfulness", **kw)


class TarsReward:
    """TARS's total: format × (safety if the row's ``label`` is harmful else helpfulness).

    Routing reads the ``label`` column (``harmful`` → safety; ``benign`` / ``ambiguous`` → helpfulness).
    Each component is judged in one batched call over the step's completions that need it; a completion
    that fails the format gets 0 without being judged (the product is 0 whatever the judge says, as in
    TARS, which judges it and multiplies by 0). ``format_rule``: ``tars`` (default) or ``nonempty-answer``.
    """

    def __init__(self, safety: AnswerReward, helpfulness: AnswerReward, use_format: bool = True,
                 think_prefill: str | None = None, format_rule: str = "tars") -> None:
        self.safety, self.helpfulness, self.use_format = safety, helpfulness, use_format
        self.think_prefill = think_prefill  # for rows without a think_prefill column (see make_format_reward)
        self.format_rule = check_choice("format rule", format_rule, FORMAT_RULES)
        self.__name__ = "tars" if use_format else "tars_no_format"

    @property
    def failures(self) -> int:
        return self.safety.failures + self.helpfulness.failures

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        labels = kwargs.get("label")
        if labels is None:
            raise SafereasonError("the TARS reward needs a 'label' column (harmful / benign / ambiguous)")
        labels = _column(kwargs, "label", n)
        bad = sorted({str(lab) for lab in labels if lab not in HARMFUL_LABELS + HELPFUL_LABELS})
        if bad:
            raise SafereasonError(f"unknown prompt label(s) {', '.join(map(repr, bad))}; "
                                  f"expected one of {', '.join(HARMFUL_LABELS + HELPFUL_LABELS)}")
        prefills = _column(kwargs, "think_prefill", n, self.think_prefill)
        fmt = _format_scores(prompts, completions, prefills, self.format_rule)
        gate = fmt if self.use_format else [1] * n
        safety: list[float | None] = [None] * n
        helpful: list[float | None] = [None] * n
        for reward, target, wanted in ((self.safety, safety, HARMFUL_LABELS), (self.helpfulness, helpful,
                                                                               HELPFUL_LABELS)):
            rows = [i for i in range(n) if labels[i] in wanted and gate[i]]
            for i, s in zip(rows, reward.score([prompts[i] for i in rows], [completions[i] for i in rows]),
                            strict=True):
                target[i] = s
        total: list[float | None] = []
        for i in range(n):
            part = safety[i] if labels[i] in HARMFUL_LABELS else helpful[i]
            total.append(0.0 if not gate[i] else (None if part is None else float(part)))
        self._log(kwargs, labels, fmt, safety, helpful, total)
        return total

    def _log(self, kwargs: dict[str, Any], labels: list[Any], fmt: list[int], safety: list[float | None],
             helpful: list[float | None], total: list[float | None]) -> None:
        metrics: dict[str, float | None] = {
            "format": _mean([float(f) for f in fmt]),
            self.safety.component: _mean(safety),
            self.helpfulness.component: _mean(helpful),
            "failures": float(sum(t is None for t in total)),
        }
        for lab in sorted(set(labels)):
            rows = [i for i, x in enumerate(labels) if x == lab]
            metrics[f"format_failure/{lab}"] = 1.0 - sum(fmt[i] for i in rows) / len(rows)
            metrics[f"total/{lab}"] = _mean([total[i] for i in rows])
        _log(kwargs, metrics, self.__name__)
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("format", [float(f) for f in fmt])
            log_extra(self.safety.component, safety)
            log_extra(self.helpfulness.component, helpful)

    def close(self) -> None:
        self.safety.close()
        self.helpfulness.close()


def make_tars_reward(safety: str | AnswerReward = "llama-guard-3-1b",
                     helpfulness: str | AnswerReward = "refusal-proxy", format: bool = True,
                     safety_options: dict[str, Any] | None = None,
                     helpfulness_options: dict[str, Any] | None = None,
                     think_prefill: str | None = None, *, split: str = "tars", format_rule: str = "tars",
                     precision: str = "bfloat16") -> TarsReward:
    """The combined TARS reward; ``safety`` / ``helpfulness`` are names (see the factories) or built rewards.
    ``split``, ``format_rule`` and ``precision`` default to TARS's rules (:mod:`safereason.train.tars_reward`);
    ``split`` and ``precision`` apply to the components built here by name."""
    rules = {"split": split, "precision": precision}
    s = (safety if isinstance(safety, AnswerReward)
         else make_safety_reward(safety, **rules, **(safety_options or {})))
    h = (helpfulness if isinstance(helpfulness, AnswerReward)
         else make_helpfulness_reward(helpfulness, **rules, **(helpfulness_options or {})))
    return TarsReward(s, h, use_format=format, think_prefill=think_prefill, format_rule=format_rule)


__all__ = ["FORMAT_RULES", "MODERATION_CLAMP", "PRECISIONS", "SPLITS", "TARS_MODERATION_MODEL", "AnswerReward",
           "JudgeScorer", "RewardModelScorer", "Scorer", "TarsReward", "answer_of", "completion_text",
           "format_reward", "format_score", "make_format_reward", "make_helpfulness_reward", "make_safety_reward",
           "make_tars_reward", "prefill_of", "split_answer", "user_text"]
