"""Shared machinery for local classifier judges that score with the first decision token's probability.

Guard models (Llama Guard, the HarmBench classifiers, WildGuard) answer with a word ("unsafe", "Yes").
Instead of generating that answer we run ONE forward pass per item and read the next-token distribution
at the end of the prompt: ``score = P(positive) / (P(positive) + P(negative))``, where P is the softmax
over the full vocabulary and a decision word's probability is summed over its single-token surface forms.
That gives a continuous score (for ROC curves and thresholds) at the cost of one prefill, with no decoding.

Rules implemented here (subclasses supply the prompt and the decision words):

* **Decision tokens** and the judge's ``output_prefix`` follow the rules in
  :mod:`safereason.judges.decision_tokens` (derived from the tokenizer at load time, never hard-coded).
* **Truncation** to ``max_input_tokens`` (default: the model's ``max_position_embeddings``, capped at
  16384): the judged text keeps its head and its tail, ``2/3`` and ``1/3`` of its token budget, joined by
  ``"\\n...\\n"``, and the verdict gets ``flags=["truncated"]``. The prompt stays whole unless it takes
  more than what is left after reserving ``min(len(text), room // 2)`` tokens for the text; then it is
  cut the same way (flags ``truncated`` and ``prompt_truncated``).
* **Batching**: items are sorted by length, left-padded, and run through ``model(...)`` with an
  attention mask and position ids from the mask; only the last position's logits are materialised.
  A batch whose forward pass fails is retried one item at a time; whatever still fails becomes
  ``Verdict.failed``, never a decision.
* **Mass check**: when ``P(positive) + P(negative) < 0.5`` for some items, a warning (once per batch,
  with the count) says the prompt format is probably off.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from safereason.errors import ConfigError, ModelLoadError
from safereason.judges.base import JudgeItem
from safereason.judges.decision_tokens import (
    TRUNCATION_MARK,
    DecisionTokens,
    DecisionWord,
    continuation_ids,
    derive_decision_tokens,
    effective_prefix,
    encode,
    head_tail,
    sha256_text,
)
from safereason.judges.hf_loading import load_classifier, model_context, split_model_name
from safereason.models.resolve import ResolvedModel, hub_error, hub_reachable, resolve_model
from safereason.models.transformers_backend import _pick_device, _pick_dtype
from safereason.records import Verdict

# the token rules live in decision_tokens; subclasses and callers import them from here too
__all__ = ["LOW_MASS", "MAX_INPUT_CAP", "PROBE_PROMPT", "PROBE_TEXT", "TRUNCATION_MARK", "DecisionTokens",
           "DecisionWord", "HFLogitJudge", "Prepared", "continuation_ids", "derive_decision_tokens",
           "effective_prefix", "encode", "head_tail", "sha256_text"]

log = logging.getLogger(__name__)

#: default cap on the judge's input length (tokens) when the model allows more
MAX_INPUT_CAP = 16384
#: below this much probability on the two decision tokens, the prompt format is probably wrong
LOW_MASS = 0.5
#: strings rendered into a probe prompt at load time (template checks and decision-token derivation)
PROBE_PROMPT = "SAFEREASON_PROBE_PROMPT"
PROBE_TEXT = "SAFEREASON_PROBE_RESPONSE"
_SLACK = 8  # tokens kept free when cutting, for merges at the cut points


@dataclass
class Prepared:
    """One item ready for the model: the rendered text and the exact ids fed to it."""

    index: int
    item: JudgeItem
    rendered: str
    ids: list[int]
    flags: list[str] = field(default_factory=list)


def _judge_hub_error(name: str, err: Exception) -> ModelLoadError:
    msg = str(hub_error(name, err)).replace("pass --model DIR", "pass the judge option model=DIR")
    return ModelLoadError(msg)


class HFLogitJudge:
    """Base class: lazy loading, decision tokens, truncation, batched single forward passes.

    Subclasses set the decision words (``positive`` is the answer that means unsafe / harmful) and
    implement :meth:`render`; they may override :meth:`prompt_part`, :meth:`text_part` and
    :meth:`_score_chunk`. The model is loaded on the first :meth:`judge` call, so that building a
    judge (e.g. to compute :meth:`identity`) costs nothing.
    """

    name = "hf-logit"
    outputs: tuple[str, ...] = ("unsafe",)
    positive = DecisionWord("unsafe", ("unsafe",))
    negative = DecisionWord("safe", ("safe",))
    #: text the model's documented answer starts with, before the decision word
    output_prefix = ""
    #: whether to let the tokenizer add BOS etc. (False where the template already holds them)
    add_special_tokens = False
    #: tokens kept free after the prompt (WildGuard appends its field names)
    reserved_tokens = 0
    #: whether the tokenizer must carry a chat template (looked up in the processor when missing)
    needs_chat_template = False

    def __init__(self, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, threshold: float = 0.5, max_input_tokens: int | None = None,
                 model_obj: Any = None, tokenizer: Any = None) -> None:
        if model is None and model_obj is None:
            raise ConfigError(f"judge {self.name!r} needs a model: pass model=PATH (a local directory) or a hub id")
        if (model_obj is None) != (tokenizer is None):
            raise ConfigError("pass model_obj and tokenizer together (in-memory injection), or neither")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_input_tokens is not None and (not isinstance(max_input_tokens, int) or max_input_tokens < 64):
            raise ConfigError(f"max_input_tokens must be an integer >= 64 or None, got {max_input_tokens!r}")
        self.model_name = model
        self.device_option = device
        self.dtype_option = dtype
        self.batch_size = batch_size
        self.threshold = float(threshold)
        self.max_input_tokens = max_input_tokens
        self._injected: tuple[Any, Any] = (model_obj, tokenizer)
        self._injected_label = f"in-memory:{type(model_obj).__name__}" if model_obj is not None else None
        self._model: Any = None
        self._tokenizer: Any = None
        self._resolved: ResolvedModel | None = None
        self._tokens: DecisionTokens | None = None
        self._budget = 0
        self._pad_id = 0
        self._logits_to_keep = False
        self.device = "cpu"

    # -- subclass hooks ----------------------------------------------------------------------------
    def render(self, item: JudgeItem, prompt: str, text: str) -> str:
        """The model's input text for ``item`` with (possibly shortened) ``prompt`` and ``text``."""
        raise NotImplementedError

    def prompt_part(self, item: JudgeItem) -> str:
        return item.prompt

    def text_part(self, item: JudgeItem) -> tuple[str, list[str]]:
        """The judged text as the judge sees it, and flags (e.g. "clipped")."""
        return item.text, []

    def template_identity(self) -> dict[str, Any]:
        return {}

    def _after_load(self) -> None:
        """Checks that need the tokenizer, before the decision tokens are derived."""

    def probe_context(self) -> str:
        """A rendered input with marker strings: the context the decision tokens are derived in."""
        return self.render(JudgeItem(prompt=PROBE_PROMPT, text=PROBE_TEXT), PROBE_PROMPT, PROBE_TEXT)

    # -- identity ----------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        model, revision = split_model_name(self.model_name)
        if model is None:
            model = self._injected_label
        ident: dict[str, Any] = {
            "name": self.name,
            "judge_class": type(self).__name__,
            "model": model,
            "revision": revision,
            "method": "first-token-probability",
            "threshold": self.threshold,
            "max_input_tokens": self.max_input_tokens if self.max_input_tokens else f"auto(<={MAX_INPUT_CAP})",
            "dtype": self.dtype_option,
            "decision": {"positive": list(self.positive.forms), "negative": list(self.negative.forms),
                         "output_prefix": self.output_prefix},
        }
        ident.update(self.template_identity())
        return ident

    # -- loading -----------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        self.device = _pick_device(self.device_option)
        model_obj, tokenizer = self._injected
        if model_obj is not None:
            model, tok = model_obj, tokenizer
        elif self.model_name is None:
            raise ModelLoadError(f"judge {self.name!r} was closed and has no model name to load again")
        else:
            self._resolved = resolve_model(self.model_name)
            model, tok = self._load(self._resolved, _pick_dtype(self.dtype_option, self.device))
        model.to(self.device)
        model.eval()
        self._tokenizer = tok
        self._model = model
        try:
            self._after_load()
            probe = self.probe_context()
            prefix = effective_prefix(probe, self.output_prefix)
            self._tokens = derive_decision_tokens(tok, probe, prefix, self.positive, self.negative)
        except Exception:
            self._model = self._tokenizer = None
            raise
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        self._budget = self.max_input_tokens or model_context(model, tok, MAX_INPUT_CAP)
        try:
            import inspect

            self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            self._logits_to_keep = False

    def _load(self, resolved: ResolvedModel, dtype: Any) -> tuple[Any, Any]:
        """Load from a local dir; a hub id from the HF cache first, then (when the hub answers) downloading."""
        kw: dict[str, Any] = {"revision": resolved.revision} if resolved.revision else {}

        def load(**extra: Any) -> tuple[Any, Any]:
            return load_classifier(resolved.path, dtype, needs_chat_template=self.needs_chat_template, **kw, **extra)

        if resolved.is_local:
            try:
                return load()
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"could not load judge model from {resolved.path}: {e}") from e
        try:
            return load(local_files_only=True)  # already in the HF cache: no network needed
        except (OSError, ValueError) as e:
            if not hub_reachable():
                raise _judge_hub_error(resolved.name, e) from e
        try:
            return load()
        except (OSError, ValueError) as e:
            raise _judge_hub_error(resolved.name, e) from e

    def close(self) -> None:
        """Drop the model and tokenizer (also injected ones) and free accelerator memory."""
        self._model = self._tokenizer = self._tokens = None
        self._injected = (None, None)
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- preparing inputs --------------------------------------------------------------------------
    def input_ids(self, rendered: str) -> list[int]:
        assert self._tokens is not None
        return encode(self._tokenizer, rendered, self.add_special_tokens) + list(self._tokens.prefix)

    def prepare(self, index: int, item: JudgeItem) -> Prepared:
        """Render ``item``, cut it to the token budget (see the module docstring) and tokenize it."""
        self._ensure_loaded()
        prompt = self.prompt_part(item)
        text, flags = self.text_part(item)
        rendered = self.render(item, prompt, text)
        ids = self.input_ids(rendered)
        budget = self._budget - self.reserved_tokens
        if len(ids) <= budget:
            return Prepared(index, item, rendered, ids, flags)
        tok = self._tokenizer
        p_ids, t_ids = encode(tok, prompt), encode(tok, text)
        overhead = max(len(ids) - len(p_ids) - len(t_ids), 0)
        room = budget - overhead - _SLACK
        if room < 32:
            raise ValueError(f"the judge's own prompt takes about {overhead} tokens, leaving no room for the "
                             f"texts within max_input_tokens={self._budget}")
        flags = [*flags, "truncated"]
        p_budget = room - min(len(t_ids), room // 2)
        if len(p_ids) > p_budget:
            prompt = head_tail(tok, p_ids, p_budget)
            flags.append("prompt_truncated")
        t_budget = room - len(encode(tok, prompt))
        for _ in range(8):
            cut = head_tail(tok, t_ids, t_budget) if len(t_ids) > t_budget else text
            rendered = self.render(item, prompt, cut)
            ids = self.input_ids(rendered)
            if len(ids) <= budget:
                return Prepared(index, item, rendered, ids, flags)
            t_budget -= len(ids) - budget + _SLACK
            if t_budget < 4:
                break
        raise ValueError(f"could not fit the input into max_input_tokens={self._budget}")

    # -- model calls -------------------------------------------------------------------------------
    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            if row:
                ids[b, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
                mask[b, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def next_token_probs(self, rows: Sequence[Sequence[int]]) -> Any:
        """Softmax (float32, full vocabulary) of the next token after each left-padded row."""
        import torch

        ids, mask = self._pad(rows)
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                              "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "use_cache": False}
        if self._logits_to_keep:
            kw["logits_to_keep"] = 1
        with torch.inference_mode():
            logits = self._model(**kw).logits[:, -1, :]
        return torch.softmax(logits.float(), dim=-1)

    def decision_probs(self, rows: Sequence[Sequence[int]], tokens: DecisionTokens | None = None,
                       what: str = "") -> list[tuple[float, float]]:
        """(P(positive), P(negative)) per row; warns once when some rows put little mass on either."""
        tokens = tokens or self._tokens
        assert tokens is not None
        probs = self.next_token_probs(rows)
        pos = probs[:, list(tokens.positive)].sum(-1).tolist()
        neg = probs[:, list(tokens.negative)].sum(-1).tolist()
        low = sum(1 for p, n in zip(pos, neg, strict=True) if p + n < LOW_MASS)
        if low:
            log.warning("judge %s%s: %d of %d items put less than %.0f%% of the next-token probability on %r/%r; "
                        "the prompt format is probably off", self.name, f" ({what})" if what else "", low,
                        len(pos), LOW_MASS * 100, self.positive.name, self.negative.name)
        return list(zip(pos, neg, strict=True))

    def generate(self, rows: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        """Greedy continuations (decoded, special tokens dropped) of left-padded rows."""
        import torch

        ids, mask = self._pad(rows)
        with torch.inference_mode():
            out = self._model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, temperature=None, top_p=None, top_k=None,
                                       pad_token_id=self._pad_id)
        return [self._tokenizer.decode(row, skip_special_tokens=True) for row in out[:, ids.shape[1]:].tolist()]

    # -- judging -----------------------------------------------------------------------------------
    def _verdict(self, p_pos: float, p_neg: float, flags: list[str]) -> Verdict:
        raw = f"p_{self.positive.name.lower()}={p_pos:.4g} p_{self.negative.name.lower()}={p_neg:.4g}"
        total = p_pos + p_neg
        if not math.isfinite(total) or total <= 0.0:
            return Verdict.failed("no probability on either decision token", raw=raw)
        score = min(max(p_pos / total, 0.0), 1.0)
        return Verdict(unsafe=score >= self.threshold, score=score, flags=list(flags), raw=raw)

    def _score_chunk(self, chunk: list[Prepared]) -> list[Verdict]:
        probs = self.decision_probs([p.ids for p in chunk])
        return [self._verdict(pp, pn, p.flags) for p, (pp, pn) in zip(chunk, probs, strict=True)]

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        if not items:
            return []
        self._ensure_loaded()
        verdicts: list[Verdict | None] = [None] * len(items)
        ready: list[Prepared] = []
        for i, item in enumerate(items):
            try:
                ready.append(self.prepare(i, item))
            except Exception as e:  # one bad item must not sink the batch
                verdicts[i] = Verdict.failed(f"could not build the judge input: {type(e).__name__}: {e}")
        ready.sort(key=lambda p: len(p.ids))  # similar lengths together: less padding
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start:start + self.batch_size]
            for p, v in zip(chunk, self._score_safely(chunk), strict=True):
                verdicts[p.index] = v
        assert all(v is not None for v in verdicts)
        return [v for v in verdicts if v is not None]

    def _score_safely(self, chunk: list[Prepared]) -> list[Verdict]:
        try:
            return self._score_chunk(chunk)
        except Exception as e:
            if len(chunk) == 1:
                return [Verdict.failed(f"judge forward pass failed: {type(e).__name__}: {e}")]
            log.warning("judge %s: a batch of %d failed (%s: %s); retrying one at a time",
                        self.name, len(chunk), type(e).__name__, e)
            return [self._score_safely([p])[0] for p in chunk]
