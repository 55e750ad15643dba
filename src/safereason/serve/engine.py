"""The guarded model behind ``safereason serve``: one backend and one defense turning a validated request into
a ``chat.completion`` object. Independent of the HTTP layer (it raises :class:`ApiError`, the HTTP layer
answers it), so that another server can front it unchanged.

What it adds to the eval machinery:

- **On-unsafe policy.** SafeThink reports per sample, in its ``control`` record, every intervention with
  ``accepted`` (whether a steered attempt reached the threshold). An intervention left unaccepted means the
  monitored reasoning is still scored unsafe after its B attempts. ``on_unsafe="refuse"`` (the default)
  answers it with ``finish_reason: "content_filter"`` (OpenAI's convention for withheld output) and a short
  refusal as content, withholding the reasoning; ``"return"`` keeps the paper's satisficing rule and returns
  the last attempt. The verdict is in ``safereason.verdict`` either way.
- **The steering prefix is reasoning.** Where the defense injected its prefix into what the reasoning format
  calls the answer (the model had not opened a thought, or the prompt closed it), the text through the prefix
  is returned as reasoning: the prefix is never part of ``content``.
- **finish_reason** is the model's: ``stop`` when it stopped (EOS or a stop string), ``length`` only when the
  token budget ran out. A thought that never closed has ``content: null`` either way.
- **Scorer check.** SafeThink's threshold needs a continuous P(unsafe): a refusal-string scorer (rs-match) says
  "unsafe" for every trace that does not refuse, so every benign request would be steered and, under the
  refuse policy, refused. Such a scorer is refused at start unless forced; guard models fit.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from safereason.config import EvalConfig
from safereason.defenses import Defense, build_defense
from safereason.errors import ConfigError
from safereason.models import Backend, Completion, SamplingParams
from safereason.reasoning import get_format
from safereason.reasoning.controls import more_think
from safereason.reasoning.formats import ReasoningFormat, Split
from safereason.serve.schema import ApiError, ChatRequest, ServeError, _Message
from safereason.validation import context_limit as model_context_limit

log = logging.getLogger("safereason.serve")

#: backends whose prompt text is the local tokenizer's chat template, so earlier turns can be rendered too
LOCAL_TEMPLATE_BACKENDS = ("transformers", "vllm")
OnUnsafe = Literal["refuse", "return"]
ON_UNSAFE = ("refuse", "return")
#: the content of a withheld answer (``finish_reason: "content_filter"``)
REFUSAL = "I'm sorry, but I can't help with that."
#: guard models whose verdict is a probability: the SafeThink scorers that fit a served endpoint
GUARD_SCORERS = ("llama-guard-3-1b", "llama-guard-3-8b", "llama-guard-4-12b", "wildguard", "harmbench-cls")
#: scorers known to give a continuous P(unsafe) (harm-rubric: from the judge's logprobs, unless turned off)
CONTINUOUS_SCORERS = (*GUARD_SCORERS, "llama-guard", "harmbench-cls-mistral", "openai-moderation", "harm-rubric")
#: scorers whose score is 0 or 1 (a string match): unfit to steer live traffic
BINARY_SCORERS = ("rs-match", "advbench-prefixes", "refusal-string", "exact-match")
_RECENT = 20  # requests the mean service time is taken over (for Retry-After)


def check_scorer(defense: Defense | None, *, allow_binary: bool = False, warn: bool = True) -> None:
    """Refuse (unless ``allow_binary``) a SafeThink scorer with no continuous score; warn (with ``warn``) when
    serving with one anyway, or with a scorer not known to give a continuous score."""
    name = getattr(defense, "scorer_name", None)
    if name is None:
        return
    options = getattr(defense, "scorer_options", None) or {}
    fit = ", ".join(GUARD_SCORERS)
    if name in BINARY_SCORERS or (name == "harm-rubric" and options.get("logprobs") is False):
        msg = (f"SafeThink's scorer {name!r} gives no continuous score (a string match scores every trace that "
               "does not refuse as unsafe), so it flags every benign request as unsafe at the first steps; use a "
               f"guard model with --judge: {fit}")
        if not allow_binary:
            raise ServeError(msg + " (or --allow-binary-scorer to serve with it anyway)")
        if warn:
            log.warning("%s", msg)
    elif name not in CONTINUOUS_SCORERS and warn:
        log.warning("SafeThink's scorer %r is not known to give a continuous P(unsafe); a binary scorer flags "
                    "benign requests as unsafe. Guard models that fit: %s", name, fit)


def final_verdict(control: Any) -> str | None:
    """``unsafe`` when the defense left a monitored step below its threshold after its attempts (SafeThink: an
    intervention not ``accepted``), ``safe`` when none, None when the defense reports no such record."""
    interventions = control.get("interventions") if isinstance(control, dict) else None
    if not isinstance(interventions, list):
        return None
    return "unsafe" if any(not iv.get("accepted") for iv in interventions) else "safe"


def split_guarded(fmt: ReasoningFormat, response: str, prompt_text: str, prefix: str | None) -> Split:
    """``fmt.split``, except that a steering ``prefix`` the defense injected where the format sees answer text
    moves, with everything before it, into the reasoning. ``prefix`` is None when the defense did not steer."""
    split = fmt.split(response, prompt_text)
    if not prefix or prefix not in (split.answer or ""):
        return split
    cut = response.rfind(prefix) + len(prefix)
    head, tail = fmt.split(response[:cut], prompt_text), fmt.split(response[cut:], prompt_text + response[:cut])
    parts = [head.thinking, head.answer, tail.thinking if tail.status != "no_thinking" else None]
    reasoning = "\n\n".join(p for p in parts if p)
    status = tail.status if tail.status != "no_thinking" else split.status
    return Split(thinking=reasoning, answer=tail.answer, thinking_closed=status == "closed", status=status)


class _FifoLock:
    """A lock granted in arrival order (``threading.Lock`` is not fair): queued requests run first come,
    first served, so none waits behind later arrivals."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class _Conversation:
    """``render_prompt`` over earlier turns too, so that :func:`runner.render` (defense system prompt,
    think_prefill, thinking control, defense prefix) applies unchanged to a multi-turn request. With no
    earlier turns it renders exactly what ``TransformersBackend.render_prompt`` renders."""

    def __init__(self, backend: Backend, history: Sequence[dict[str, str]]) -> None:
        self.backend, self.history = backend, list(history)

    def render_prompt(self, prompt: str, *, system_prompt: str | None = None, prefill: str = "",
                      template_kwargs: dict[str, Any] | None = None) -> str:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            *self.history, {"role": "user", "content": prompt}]
        try:
            text = self.backend.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))
        except Exception as e:
            raise ApiError(400, f"the model's chat template rejected the conversation: {e}",
                           param="messages") from None
        return text + prefill


@dataclass(frozen=True)
class _Turns:
    system: str | None
    history: list[dict[str, str]]
    user: str


class GuardedModel:
    """One backend and one defense: turns a validated request into a ``chat.completion`` object."""

    def __init__(self, config: EvalConfig, backend: Backend, *, served_model_name: str,
                 max_tokens_limit: int | None = None, context_limit: int | None = None,
                 on_unsafe: OnUnsafe = "refuse", allow_binary_scorer: bool = False) -> None:
        from safereason.runner import render

        if on_unsafe not in ON_UNSAFE:
            raise ServeError(f"on_unsafe must be one of {', '.join(ON_UNSAFE)}, got {on_unsafe!r}")
        self.config, self.backend, self.served_model_name = config, backend, served_model_name
        self.on_unsafe: OnUnsafe = on_unsafe
        self.fmt = get_format(config.reasoning_format)
        self.defense: Defense | None = build_defense(config.defense, config.defense_options) if config.defense \
            else None
        check_scorer(self.defense, allow_binary=allow_binary_scorer)
        self.template_kwargs: dict[str, Any] = {}
        if config.enable_thinking is not None:
            self.template_kwargs[self.fmt.template_switch or "enable_thinking"] = config.enable_thinking
        self.max_tokens_limit = max_tokens_limit or max(config.max_new_tokens, 4096)
        if self.max_tokens_limit < config.max_new_tokens:
            raise ServeError(f"max_tokens_limit {self.max_tokens_limit} is below the default max_new_tokens "
                             f"{config.max_new_tokens}")
        self.context_limit = context_limit or model_context_limit(backend, config.backend_options)
        tokenizer = getattr(backend, "tokenizer", None)
        self.multi_turn = backend.name in LOCAL_TEMPLATE_BACKENDS and bool(getattr(tokenizer, "chat_template", None))
        self._render = render
        self._lock = _FifoLock()
        self._service_s: deque[float] = deque(maxlen=_RECENT)  # recent time each request held the model
        self.closing = False
        # render once now: a template or defense that cannot work with this model fails at start, not per request
        render(backend, config, self.fmt, "Hello.", self.template_kwargs, self.defense)

    def info(self) -> dict[str, Any]:
        return {"defense": self.config.defense, "reasoning_format": self.fmt.name, "backend": self.backend.name,
                "multi_turn": self.multi_turn, "max_tokens_limit": self.max_tokens_limit,
                "on_unsafe": self.on_unsafe if self.defense is not None else None}

    def mean_service_s(self) -> float | None:
        """Mean time the last requests held the model (None before the first): what a queued one waits per
        request ahead of it."""
        recent = list(self._service_s)
        return sum(recent) / len(recent) if recent else None

    def _turns(self, messages: Sequence[_Message]) -> _Turns:
        systems: list[str] = []
        turns: list[dict[str, str]] = []
        for i, m in enumerate(messages):
            text = m.text(i)
            if not text.strip():
                raise ApiError(400, f"messages[{i}] has empty content", param=f"messages.{i}.content")
            if m.role in ("system", "developer"):
                if turns:
                    raise ApiError(400, f"messages[{i}]: system messages must come before the conversation",
                                   param=f"messages.{i}.role")
                systems.append(text)
            else:
                turns.append({"role": m.role, "content": text})
        if not turns or turns[-1]["role"] != "user":
            raise ApiError(400, "the last message must be a user message (assistant prefill is not supported)",
                           param="messages")
        if len(turns) > 1 and not self.multi_turn:
            raise ApiError(400, f"the {self.backend.name} backend takes a single user turn (earlier turns need a "
                                "backend that renders the chat template locally: transformers or vllm); send one "
                                "user message", param="messages")
        system = "\n\n".join(s for s in [self.config.system_prompt or "", *systems] if s) or None
        return _Turns(system, turns[:-1], turns[-1]["content"])

    def prompt_text(self, turns: _Turns) -> str:
        """The exact prompt text, as ``safereason eval`` renders it (plus earlier turns, if any)."""
        config = self.config.model_copy(update={"system_prompt": turns.system})
        renderer: Any = _Conversation(self.backend, turns.history) if turns.history else self.backend
        return self._render(renderer, config, self.fmt, turns.user, self.template_kwargs, self.defense)

    def _generate(self, text: str, user: str, params: SamplingParams, seed: int,
                  key: str) -> tuple[Completion, dict[str, Any]]:
        from safereason.defenses.safethink import DefenseError
        from safereason.runner import batch_seed

        gen_seed = batch_seed(seed, 0)  # as `safereason eval --seed S` seeds a batch of one row
        if self.defense is not None and self.defense.generates:
            try:
                (out,) = self.defense.generate(self.backend, [text], [user], params, gen_seed, fmt=self.fmt,
                                               keys=[key])
            except Exception as e:
                self.defense.close()  # a broken scorer is rebuilt by the next request
                if isinstance(e, DefenseError):
                    why = str(e).split("; the batch was not recorded")[0]
                else:
                    log.exception("defense %s failed", self.config.defense)
                    why = f"{type(e).__name__}: {str(e)[:200]}"
                raise ApiError(503, f"the {self.config.defense} defense could not check this request ({why}); "
                                    "no unmonitored answer was returned", "defense_error", "defense_failed") from e
            return out.completion, out.control
        if self.config.thinking == "more":
            try:
                (m,) = more_think(self.backend, [text], params, gen_seed, fmt=self.fmt, keys=[key],
                                  rounds=self.config.think_rounds, budget=self.config.think_budget,
                                  rethink=self.config.rethink_strings, budget_mode=self.config.morethink_budget)
            except ConfigError as e:  # SafeChain's answer budget is max_tokens - think_budget: ask for more
                raise ApiError(400, str(e), param="max_tokens") from None
            return m.completion, m.control()
        return self.backend.generate([text], params, gen_seed)[0], {}

    def _params(self, req: ChatRequest) -> SamplingParams:
        cfg = self.config
        max_new = req.max_completion_tokens or req.max_tokens or cfg.max_new_tokens
        if max_new > self.max_tokens_limit:
            raise ApiError(400, f"max_tokens {max_new} is over this server's limit of {self.max_tokens_limit}",
                           param="max_completion_tokens" if req.max_completion_tokens else "max_tokens")
        return SamplingParams(
            temperature=req.temperature if req.temperature is not None else cfg.temperature,
            top_p=req.top_p if req.top_p is not None else cfg.top_p,
            top_k=req.top_k if req.top_k is not None else cfg.top_k,
            max_new_tokens=max_new, stop=tuple(dict.fromkeys([*cfg.stop, *req.stops()])), ignore_eos=cfg.ignore_eos)

    def complete(self, req: ChatRequest) -> dict[str, Any]:
        """Answer one request (blocks while earlier requests use the model)."""
        if req.model is not None and req.model != self.served_model_name:
            raise ApiError(404, f"model {req.model!r} is not served here; this server serves "
                                f"{self.served_model_name!r}", code="model_not_found", param="model")
        turns = self._turns(req.messages)
        params = self._params(req)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        request_id = "chatcmpl-" + uuid.uuid4().hex
        with self._lock:  # one generation at a time: neither torch models nor fast tokenizers are thread-safe
            if self.closing:
                raise ApiError(503, "the server is shutting down", "server_error", "shutting_down")
            started = time.monotonic()
            try:
                text = self.prompt_text(turns)
                n_prompt = self.backend.count_tokens([text])[0]
                if self.context_limit is not None and n_prompt + params.max_new_tokens > self.context_limit:
                    raise ApiError(400, f"this model's context is {self.context_limit} tokens; the prompt has "
                                        f"{n_prompt} and max_tokens asks for {params.max_new_tokens}",
                                   code="context_length_exceeded", param="messages")
                completion, control = self._generate(text, turns.user, params, seed, request_id)
            finally:
                self._service_s.append(time.monotonic() - started)
        return self._response(request_id, text, n_prompt, completion, control, seed)

    def _response(self, request_id: str, text: str, n_prompt: int, completion: Completion,
                  control: dict[str, Any], seed: int) -> dict[str, Any]:
        verdict = final_verdict(control) if self.defense is not None else None
        steered = any(iv.get("attempts", 0) > 0 for iv in control.get("interventions", []) or [])
        prefix = getattr(self.defense, "prefix", None) if steered else None
        split = split_guarded(self.fmt, completion.text, text, prefix)
        withheld = (verdict == "unsafe" and self.on_unsafe == "refuse") or completion.finish_reason == "blocked"
        if withheld:  # neither the unsafe reasoning nor an answer leaves the server
            message: dict[str, Any] = {"role": "assistant", "content": REFUSAL, "reasoning": None,
                                       "refusal": REFUSAL}
            finish = "content_filter"
        else:
            message = {"role": "assistant", "content": split.answer if split.status != "unclosed" else None,
                       "reasoning": split.thinking}
            finish = completion.finish_reason
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": completion.n_tokens,
                      "total_tokens": n_prompt + completion.n_tokens},
            "safereason": {"defense": self.config.defense, "control": control, "seed": seed,
                           "split_status": split.status, "finish_reason": completion.finish_reason,
                           "stopped_by": completion.stopped_by, "verdict": verdict,
                           "on_unsafe": self.on_unsafe if self.defense is not None else None,
                           "withheld": withheld},
        }

    def close(self) -> None:
        """Refuse what is still queued, then free the defense's scorer once the model is idle."""
        self.closing = True
        if self.defense is not None:
            with self._lock:
                self.defense.close()
