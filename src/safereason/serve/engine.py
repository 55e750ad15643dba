"""The guarded model behind ``safereason serve``: one backend and one defense turning a validated request into
a ``chat.completion`` object, or into ``chat.completion.chunk`` objects as it is generated. Independent of the
HTTP layer (it raises :class:`ApiError`, the HTTP layer answers it), so that another server can front it
unchanged. What it adds to the eval machinery (the on-unsafe policy, the prefix as reasoning, the scorer check)
is in :mod:`.policy`; how a growing response becomes deltas, in :mod:`.streaming`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from safereason.config import EvalConfig
from safereason.defenses import Defense, build_defense
from safereason.errors import ConfigError
from safereason.models import Backend, Completion, SamplingParams
from safereason.reasoning import get_format
from safereason.reasoning.controls import more_think
from safereason.rendering import render_prompt
from safereason.serve.policy import (
    BINARY_SCORERS,
    CONTINUOUS_SCORERS,
    GUARD_SCORERS,
    LOCAL_TEMPLATE_BACKENDS,
    ON_UNSAFE,
    REFUSAL,
    OnUnsafe,
    check_scorer,
    final_verdict,
    split_guarded,
)
from safereason.serve.schema import ApiError, ChatRequest, ServeError, _Message
from safereason.serve.streaming import CancelCheck, Cancelled, DeltaStream, IdStreamer
from safereason.validation import context_limit as model_context_limit

__all__ = ["BINARY_SCORERS", "CONTINUOUS_SCORERS", "GUARD_SCORERS", "LOCAL_TEMPLATE_BACKENDS", "ON_UNSAFE",
           "REFUSAL", "GuardedModel", "OnUnsafe", "check_scorer", "final_verdict", "split_guarded"]

log = logging.getLogger("safereason.serve")

_RECENT = 20  # requests the mean service time is taken over (for Retry-After)
#: ``on_ids(settled_ids, settled, flagged)``: the streaming hook of a generation (see :class:`DeltaStream`)
OnIds = Callable[[list[int], bool, bool], None]
Generated = list[tuple[Completion, dict[str, Any]]]


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
        if on_unsafe not in ON_UNSAFE:
            raise ServeError(f"on_unsafe must be one of {', '.join(ON_UNSAFE)}, got {on_unsafe!r}")
        self.config, self.backend, self.served_model_name = config, backend, served_model_name
        self.on_unsafe: OnUnsafe = on_unsafe
        self.fmt = get_format(config.reasoning_format)
        self.defense: Defense | None = build_defense(config.defense, config.defense_options) if config.defense \
            else None
        check_scorer(self.defense, allow_binary=allow_binary_scorer)
        self.max_tokens_limit = max_tokens_limit or max(config.max_new_tokens, 4096)
        if self.max_tokens_limit < config.max_new_tokens:
            raise ServeError(f"max_tokens_limit {self.max_tokens_limit} is below the default max_new_tokens "
                             f"{config.max_new_tokens}")
        self.context_limit = context_limit or model_context_limit(backend, config.backend_options)
        tokenizer = getattr(backend, "tokenizer", None)
        self.multi_turn = backend.name in LOCAL_TEMPLATE_BACKENDS and bool(getattr(tokenizer, "chat_template", None))
        self._lock = _FifoLock()
        self._service_s: deque[float] = deque(maxlen=_RECENT)  # recent time each request held the model
        self.closing = False
        # render once now: a template or defense that cannot work with this model fails at start, not per request
        render_prompt(backend, config, "Hello.", defense=self.defense)

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
        """The exact prompt text, as ``safereason eval`` renders it (plus earlier turns, if any: the chat
        template decides whether it takes them)."""
        config = self.config.model_copy(update={"system_prompt": turns.system})
        if not turns.history:  # the template already rendered "Hello." at start
            return render_prompt(self.backend, config, turns.user, defense=self.defense)
        try:
            return render_prompt(self.backend, config, turns.user, defense=self.defense, history=turns.history)
        except Exception as e:
            raise ApiError(400, f"the model's chat template rejected the conversation: {e}",
                           param="messages") from None

    def _generate(self, text: str, user: str, params: SamplingParams, seed: int, key: str, n: int = 1,
                  on_ids: OnIds | None = None, cancel: threading.Event | None = None) -> Generated:
        """``n`` samples of one prompt, as ``safereason eval --k n --seed S`` generates one prompt's batch;
        ``on_ids`` (one sample) streams the settled ids where the backend and defense can, and stops the
        generation by raising; ``cancel`` (a non-streamed request) stops it once set, at the same points."""
        from safereason.generation import batch_seed

        gen_seed = batch_seed(seed, 0)  # as `safereason eval --seed S` seeds a batch of one prompt
        texts, keys = [text] * n, [key] if n == 1 else [f"{key}:{j}" for j in range(n)]
        check = CancelCheck(cancel) if cancel is not None and on_ids is None else None
        if self.defense is not None and self.defense.generates:
            progress: Any = check
            if on_ids is not None:
                progress = lambda row, ids, settled, flagged: on_ids(ids, settled, flagged)  # noqa: E731
            return self._defended(texts, [user] * n, params, gen_seed, keys, progress)
        if self.config.thinking == "more":
            try:
                runs = more_think(self.backend, texts, params, gen_seed, fmt=self.fmt, keys=keys,
                                  rounds=self.config.think_rounds, budget=self.config.think_budget,
                                  rethink=self.config.rethink_strings, budget_mode=self.config.morethink_budget)
            except ConfigError as e:  # SafeChain's answer budget is max_tokens - think_budget: ask for more
                raise ApiError(400, str(e), param="max_tokens") from None
            return [(m.completion, m.control()) for m in runs]
        if (on_ids is not None or check is not None) and getattr(self.backend, "supports_streamer", False):
            streamer: Any = check
            if on_ids is not None:
                stop_ids = [*getattr(self.backend, "eos_ids", []), self.backend.tokenizer.pad_token_id]  # type: ignore[attr-defined]
                streamer = IdStreamer(lambda ids: on_ids(ids, True, False), stop_ids)
            ids = [self.backend.encode(text)] * n  # the ids generate(texts) tokenises, so the same samples
            outs = self.backend.generate_ids(ids, params, gen_seed, streamer=streamer)  # type: ignore[call-arg]
            return [(c, {}) for c in outs]
        return [(c, {}) for c in self.backend.generate(texts, params, gen_seed)]

    def _defended(self, texts: list[str], users: list[str], params: SamplingParams, seed: int, keys: list[str],
                  progress: Callable[..., None] | None) -> Generated:
        """The defense's generation; ``progress`` reaches it where it streams (raising from it stops it). A
        failed check is a 503 with no answer: an unmonitored one must never leave the server."""
        from safereason.defenses.safethink import DefenseError

        assert self.defense is not None
        kw = {"on_progress": progress} if progress is not None and getattr(self.defense, "streams", False) else {}
        try:
            outs = self.defense.generate(self.backend, texts, users, params, seed, fmt=self.fmt, keys=keys, **kw)
        except Cancelled:
            raise
        except Exception as e:
            self.defense.close()  # a broken scorer is rebuilt by the next request
            if isinstance(e, DefenseError):
                why = str(e).split("; the batch was not recorded")[0]
            else:
                log.exception("defense %s failed", self.config.defense)
                why = f"{type(e).__name__}: {str(e)[:200]}"
            raise ApiError(503, f"the {self.config.defense} defense could not check this request ({why}); "
                                "no unmonitored answer was returned", "defense_error", "defense_failed") from e
        return [(o.completion, o.control) for o in outs]

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

    def _prepare(self, req: ChatRequest) -> tuple[_Turns, SamplingParams, int, str]:
        if req.model is not None and req.model != self.served_model_name:
            raise ApiError(404, f"model {req.model!r} is not served here; this server serves "
                                f"{self.served_model_name!r}", code="model_not_found", param="model")
        turns = self._turns(req.messages)
        params = self._params(req)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        return turns, params, seed, "chatcmpl-" + uuid.uuid4().hex

    def _prompt(self, turns: _Turns, params: SamplingParams) -> tuple[str, int]:
        """The prompt text and its length (holding the lock: fast tokenizers are not thread-safe)."""
        if self.closing:
            raise ApiError(503, "the server is shutting down", "server_error", "shutting_down")
        text = self.prompt_text(turns)
        n_prompt = self.backend.count_tokens([text])[0]
        if self.context_limit is not None and n_prompt + params.max_new_tokens > self.context_limit:
            raise ApiError(400, f"this model's context is {self.context_limit} tokens; the prompt has "
                                f"{n_prompt} and max_tokens asks for {params.max_new_tokens}",
                           code="context_length_exceeded", param="messages")
        return text, n_prompt

    def complete(self, req: ChatRequest, cancel: threading.Event | None = None) -> dict[str, Any]:
        """Answer one request (blocks while earlier requests use the model). ``cancel``, once set (the client
        left), stops the generation as a stream's disconnect does: raises :class:`Cancelled`, without generating
        at all when it was set while the request was queued."""
        turns, params, seed, request_id = self._prepare(req)
        with self._lock:  # one generation at a time: neither torch models nor fast tokenizers are thread-safe
            started = time.monotonic()
            try:
                if cancel is not None and cancel.is_set():  # the client left while queued
                    raise Cancelled
                text, n_prompt = self._prompt(turns, params)
                outs = self._generate(text, turns.user, params, seed, request_id, req.n or 1, cancel=cancel)
            finally:
                self._service_s.append(time.monotonic() - started)
        return self._response(request_id, text, n_prompt, outs, seed)

    def stream(self, req: ChatRequest, send: Callable[[dict[str, Any]], None], cancel: threading.Event) -> None:
        """Answer one request as ``chat.completion.chunk`` objects passed to ``send`` (blocks like
        :meth:`complete`): only what the defense has settled is sent, the rest once the response is complete.
        An :class:`ApiError` raised before the first ``send`` is the request's error; ``cancel`` stops the
        generation (raises :class:`Cancelled`)."""
        turns, params, seed, rid = self._prepare(req)
        created, first = int(time.time()), [True]

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            if first:
                delta, first[:] = {"role": "assistant", **delta}, []
            return {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": self.served_model_name, **({"usage": None} if req.include_usage else {}),
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

        with self._lock:
            started = time.monotonic()
            try:
                if cancel.is_set():  # the client left while queued
                    raise Cancelled
                text, n_prompt = self._prompt(turns, params)
                steers = self.defense is not None and self.defense.generates
                deltas = DeltaStream(self.fmt, text, self.backend.decode, params.stop,
                                     getattr(self.defense, "prefix", None) if steers else None,
                                     withhold_flagged=self.defense is not None and self.on_unsafe == "refuse")

                def on_ids(ids: list[int], settled: bool, flagged: bool) -> None:
                    if cancel.is_set():
                        raise Cancelled
                    for field, piece in deltas.update(ids, settled, flagged):
                        send(chunk({field: piece}))

                outs = self._generate(text, turns.user, params, seed, rid, 1, on_ids)
            finally:
                self._service_s.append(time.monotonic() - started)
        whole = self._response(rid, text, n_prompt, outs, seed)
        choice = whole["choices"][0]
        msg = choice["message"]
        rest = [("content", REFUSAL)] if choice["finish_reason"] == "content_filter" \
            else deltas.finish(msg["reasoning"], msg["content"])
        for field, piece in rest:
            send(chunk({field: piece}))
        send(chunk({}, choice["finish_reason"], safereason=whole["safereason"]))
        if req.include_usage:
            send({**chunk({}), "choices": [], "usage": whole["usage"]})

    def _choice(self, index: int, text: str, completion: Completion,
                control: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One choice of the reply, and its record under ``safereason``."""
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
        record = {"control": control, "split_status": split.status, "finish_reason": completion.finish_reason,
                  "stopped_by": completion.stopped_by, "verdict": verdict, "withheld": withheld}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}, record

    def _response(self, request_id: str, text: str, n_prompt: int, outs: Generated, seed: int) -> dict[str, Any]:
        choices, records = zip(*(self._choice(j, text, c, ctl) for j, (c, ctl) in enumerate(outs)), strict=True)
        n_completion = sum(c.n_tokens for c, _ in outs)
        extra: dict[str, Any] = {"defense": self.config.defense, "seed": seed,
                                 "on_unsafe": self.on_unsafe if self.defense is not None else None}
        # one choice: its record inline (as eval's sample); several: one record per choice
        extra.update(records[0] if len(records) == 1 else {"choices": list(records)})
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model_name,
            "choices": list(choices),
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                      "total_tokens": n_prompt + n_completion},
            "safereason": extra,
        }

    def close(self) -> None:
        """Refuse what is still queued, then free the defense's scorer once the model is idle."""
        self.closing = True
        if self.defense is not None:
            with self._lock:
                self.defense.close()
