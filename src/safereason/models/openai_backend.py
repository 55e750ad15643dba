"""Generation through an OpenAI-compatible server: vLLM, SGLang, or a hosted API.

``--backend openai --model NAME`` sends one request per (prompt, sample) row to ``{base_url}`` with the
shared :class:`~safereason.judges.http.JsonClient`, which runs the official ``openai`` client's
:class:`~openai.AsyncOpenAI` (its retries with backoff on 429/5xx/timeouts, its timeouts and connection pool;
at most ``concurrency`` requests in flight; API key read only from the environment variable ``api_key_env``,
none needed on loopback).

Two modes (``mode`` option):

- ``chat`` (default) posts ``/chat/completions``; the *server* applies its chat template. A prefill
  (``think_prefill``, a thinking control, ``prefill``) is sent as a final assistant message with
  ``continue_final_message: true, add_generation_prompt: false``: vLLM/SGLang extensions that hosted APIs
  usually reject (set ``allow_prefill=False`` to fail before any request instead). Template switches
  (``enable_thinking``) go in ``chat_template_kwargs``, a ``--chat-template`` in ``chat_template``.

  The recorded ``prompt_text``: with a local ``tokenizer`` it is that tokenizer's chat template rendered
  exactly as the transformers backend does (the true text, if the server uses the same template). Without
  one the server's template is not visible, so it is a deterministic, readable rendering of the request:
  a header line, the JSON of the messages and template switches, an ``[assistant]`` line, then the prefill
  as raw text, so that the runner's marker checks (is a ``<think>`` block open?) still work on it. The
  runner appends thinking controls and ``prefill`` to what :meth:`render_prompt` returned; the backend
  remembers each rendering's request and treats any appended text as more assistant prefill.

  Reasoning the server returned separately (``message.reasoning``, else ``reasoning_content``) is put
  back as ``<think>\\n{reasoning}\\n</think>\\n\\n{content}`` (``think_markers``), so the usual split
  applies; the opening marker is left out when the prompt already opened a block, and the end marker
  when the server saw no end (``content`` null: a thought cut off stays unclosed, never an answer).
- ``completions`` posts ``/completions`` with the exact rendered text (the chat template of the local
  ``tokenizer``, BOS not added again); :meth:`generate_ids` sends token ids as the prompt, which is what
  MoreThink needs. The generated ids are the server's ``token_ids`` (vLLM with ``return_token_ids``, cut
  before EOS/stop strings) when they match the text, else the text re-encoded with the tokenizer, which
  can drift from what was sampled on servers that don't return ids.

Seeds: each row gets its own ``seed`` derived from (batch seed, row index), so results don't depend on
request scheduling or concurrency (the server's batch-invariance aside). Token counts: the server's ids,
else ``usage.completion_tokens`` (counts EOS/stop tokens), else the local tokenizer; with no tokenizer,
:meth:`count_tokens` counts whitespace words, and ``identity()["token_counts"]`` says so.

Transport (none of it changes generated text, see :data:`TRANSPORT_OPTIONS`): ``timeout`` (default 120 s)
is how long one request may go without a byte from the server, connecting included; a non-streamed reply
sends nothing until it is done, so it bounds the time one generation may take (16,000 tokens at 50 tokens/s
need 320 s: raise it for long generations on a slow server; a warning says when ``max_tokens`` looks too
long for it). ``max_retries`` (default 4) is how many times a request is resent after a 429, a 5xx, a
timeout, a dropped connection or a malformed reply (a body that is not JSON, has no ``choices``, or has
``content: null`` with ``finish_reason: stop`` and no reasoning: never taken as an empty response), with
exponential backoff honouring ``Retry-After`` (the openai client's retries, plus the same budget for
malformed replies); ``concurrency`` bounds requests in flight. Ctrl-C cancels the requests in flight and returns
at once (no retry is waited out).

Failures: a request that still fails after retries raises :class:`GenerationError` for the whole batch. It is
never recorded as a response: a failed request is not a refusal, and recording it as one (or as empty text)
would bias Safe@K. The runner logs batches atomically, so re-running the same command resumes after the
last finished batch.

Blocked prompts: a provider's content filter may refuse a request outright: HTTP 400 with a content-policy
error (OpenAI: code ``content_policy_violation`` or "flagged as potentially violating our usage policy";
Azure OpenAI: code ``content_filter``, "content management policy"), or a 200 with ``finish_reason:
content_filter`` and no text (Azure's prompt filter, Gemini's OpenAI endpoint). By default
(``on_blocked=error``) that stops the run like any failure, naming the option; with ``on_blocked=record``
the row comes back as a :class:`Completion` with ``finish_reason="blocked"`` and no text, which the runner
records as a ``blocked`` sample: its own status, never a response, refusal or verdict, left out of the
metrics and counted in reports. An output filter that cut a reply already under way (``content_filter``
with partial text) is a failure either way: that sample is neither the model's reply nor a blocked prompt;
so is a blocked continuation of token ids (SafeThink, MoreThink), which those procedures cannot carry on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from safereason.errors import ConfigError, SafereasonError
from safereason.hashing import sha256_text
from safereason.judges.http import JsonClient, check_base_url, is_loopback
from safereason.models.base import Completion, SamplingParams
from safereason.models.openai_prompts import WHO as _WHO
from safereason.models.openai_prompts import ChatPrompts, ChatRequest, load_tokenizer
from safereason.models.openai_replies import ReplyReader, _Blocked, _RowFailure, reply_problem
from safereason.reasoning.formats import ReasoningFormat

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TIMEOUT_S = 120.0
MODES = ("chat", "completions")
ON_BLOCKED = ("error", "record")
#: backend options that only change how requests are sent, never what is generated: a run may resume with
#: other values (the server moved, a slower link), so they are no part of a run's identity
TRANSPORT_OPTIONS = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries")
#: sustained tokens/s per request below which ``max_tokens`` would not fit in ``timeout`` (warned about)
_SLOW_TOKENS_PER_S = 20.0


class GenerationError(SafereasonError):
    """Some rows of a batch got no completion; nothing of the batch is recorded, so a re-run resumes it."""

    def __init__(self, message: str, failures: Sequence[tuple[int, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


def row_seed(seed: int, row: int) -> int:
    """The request seed of row ``row`` of a batch generated with ``seed`` (31 bits: any server takes it)."""
    digest = hashlib.sha256(f"safereason-openai:{seed}:{row}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _check_options(model: Any, mode: Any, on_blocked: Any, allow_prefill: Any, think_markers: Any,
                   extra_body: Any, chat_template: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every option checked before anything is loaded; returns ``extra_body`` without its template switches,
    and those switches (the defaults of every request's ``chat_template_kwargs``)."""
    if on_blocked not in ON_BLOCKED:
        raise ConfigError(f"{_WHO}: on_blocked must be one of {', '.join(ON_BLOCKED)}, got {on_blocked!r}")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{_WHO}: --model must be the served model name")
    if mode not in MODES:
        raise ConfigError(f"{_WHO}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(allow_prefill, bool):
        raise ConfigError(f"{_WHO}: allow_prefill must be true or false")
    if (isinstance(think_markers, str) or not isinstance(think_markers, Sequence) or len(think_markers) != 2
            or not all(isinstance(m, str) and m for m in think_markers)):
        raise ConfigError(f"{_WHO}: think_markers must be a pair of non-empty strings, e.g. [<think>, </think>]")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise ConfigError(f"{_WHO}: extra_body must be a mapping")
    extra = dict(extra_body or {})
    default_kwargs = extra.pop("chat_template_kwargs", None) or {}
    if not isinstance(default_kwargs, Mapping):
        raise ConfigError(f"{_WHO}: extra_body.chat_template_kwargs must be a mapping")
    if chat_template is not None and not isinstance(chat_template, str):
        raise ConfigError(f"{_WHO}: chat_template must be the template text")
    return extra, dict(default_kwargs)


class OpenAIBackend(ChatPrompts, ReplyReader):
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        chat_template: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str | None = "OPENAI_API_KEY",
        mode: str = "chat",
        tokenizer: Any = None,
        concurrency: int = 16,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 4,
        extra_body: Mapping[str, Any] | None = None,
        allow_prefill: bool = True,
        think_markers: Sequence[str] = ("<think>", "</think>"),
        on_blocked: str = "error",
    ) -> None:
        """``model`` is the served model name. ``tokenizer`` (a dir, alias or hub id, or a loaded tokenizer)
        gives exact prompt texts and token counts, and is required for ``mode=completions``. ``extra_body``
        is merged into every request; it can't override the fields set here (model, prompt, sampling, seed),
        and a null value drops a default extension field (``return_token_ids``, ``add_special_tokens``).
        ``timeout`` (seconds one request may go without a byte from the server; default 120) and
        ``max_retries`` (resends after a 429, 5xx, timeout or malformed reply; default 4) are described in the
        module docstring, as is ``on_blocked`` (``error``: a prompt the provider's filter refuses stops the
        run; ``record``: it comes back as ``finish_reason="blocked"``). ``device`` and ``dtype`` are the
        server's business and are ignored."""
        del device, dtype
        extra, default_kwargs = _check_options(model, mode, on_blocked, allow_prefill, think_markers, extra_body,
                                               chat_template)
        self.model = model
        self.mode = mode
        self.on_blocked = on_blocked
        self.base_url = check_base_url(base_url, _WHO)
        self.allow_prefill = allow_prefill
        self.think_markers = (think_markers[0], think_markers[1])
        self._fmt = ReasoningFormat("openai-backend", *self.think_markers)
        self.extra_body = extra
        self.default_template_kwargs = dict(default_kwargs)
        self.chat_template = chat_template
        self.tokenizer_name: str | None = None
        if isinstance(tokenizer, str):
            self.tokenizer_name = tokenizer
            self.tokenizer: Any = load_tokenizer(tokenizer)
        else:
            self.tokenizer = tokenizer
            if tokenizer is not None:
                self.tokenizer_name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        if self.tokenizer is not None and chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if mode == "completions" and self.tokenizer is None:
            raise ConfigError(f"{_WHO}: mode=completions sends the exact prompt text and token ids, so it needs "
                              "tokenizer=DIR|ALIAS (the served model's tokenizer)")
        if self.tokenizer is None:
            log.warning("%s: no tokenizer given: prompt_text is a rendering of the request (the server's chat "
                        "template is not visible) and token counts are whitespace words", _WHO)
        self.client = JsonClient(
            self.base_url, api_key_env=api_key_env, key_required=api_key_env is not None and not is_loopback(
                self.base_url), concurrency=concurrency, timeout=timeout, max_retries=max_retries, who=_WHO,
        )
        self._chat_requests: dict[str, ChatRequest] = {}
        self._continuation_checked = False
        self._timeout_warned = False

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompt_texts: Sequence[str], params: SamplingParams, seed: int) -> list[Completion]:
        if not prompt_texts:
            return []
        if self.mode == "completions":
            bodies = [self._completions_body(t, params, row_seed(seed, i)) for i, t in enumerate(prompt_texts)]
            return self._run("completions", bodies, prompt_texts)
        bodies = []
        for i, text in enumerate(prompt_texts):
            entry, prefill = self._chat_request(text)
            self._check_prefill(prefill)
            if prefill:
                self._check_continuation(entry, prefill, text)
            bodies.append(self._chat_body(entry, prefill, params, row_seed(seed, i)))
        return self._run("chat/completions", bodies, prompt_texts)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                     seed: int) -> list[Completion]:
        if self.mode != "completions":
            raise ConfigError(f"{_WHO}: continuing token ids (MoreThink, SafeThink) needs mode=completions and a "
                              "tokenizer; the chat endpoint re-renders and re-tokenises the conversation")
        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("cannot generate from an empty prompt")
        bodies = [self._completions_body([int(t) for t in p], params, row_seed(seed, i))
                  for i, p in enumerate(prompt_ids)]
        return self._run("completions", bodies, [""] * len(bodies), record_blocked=False)

    def _sampling(self, params: SamplingParams, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "n": 1, "max_tokens": params.max_new_tokens, "seed": seed,
                                "temperature": params.temperature, "top_p": params.top_p}
        if params.top_k:
            body["top_k"] = params.top_k  # vLLM/SGLang extension
        if params.stop:
            body["stop"] = list(params.stop)
        if params.ignore_eos:
            body["ignore_eos"] = True  # vLLM/SGLang extension
        return body

    def _merge(self, defaults: dict[str, Any], core: dict[str, Any]) -> dict[str, Any]:
        body = {**defaults, **self.extra_body, **core}
        return {k: v for k, v in body.items() if v is not None}

    def _completions_body(self, prompt: str | list[int], params: SamplingParams, seed: int) -> dict[str, Any]:
        # the rendered template already holds any BOS token; vLLM would add another to a text prompt
        defaults = {"add_special_tokens": False, "return_token_ids": True}
        return self._merge(defaults, {**self._sampling(params, seed), "prompt": prompt})

    def _chat_body(self, entry: ChatRequest, prefill: str, params: SamplingParams, seed: int) -> dict[str, Any]:
        core: dict[str, Any] = {**self._sampling(params, seed), "messages": list(entry.messages)}
        if prefill:
            core["messages"].append({"role": "assistant", "content": prefill})
            core.update(continue_final_message=True, add_generation_prompt=False)
        if entry.template_kwargs:
            core["chat_template_kwargs"] = entry.template_kwargs
        if self.chat_template is not None:
            core["chat_template"] = self.chat_template  # vLLM extension
        return self._merge({}, core)

    def _check_continuation(self, entry: ChatRequest, prefill: str, text: str) -> None:
        """Warn (once) when the server's rendering of a continued assistant turn isn't ``prompt_text``.

        Some templates render a continued assistant message unlike generation prompt + prefill (R1
        distills drop everything up to ``</think>`` from assistant turns and don't open ``<think>``).
        """
        if self.tokenizer is None or self._continuation_checked:
            return
        self._continuation_checked = True
        try:
            seen = self.tokenizer.apply_chat_template(
                [*entry.messages, {"role": "assistant", "content": prefill}], tokenize=False,
                continue_final_message=True, **entry.template_kwargs)
        except Exception as e:
            seen = f"<error: {e}>"
        if seen != text:
            log.warning("%s: with this chat template the server sees a continued assistant turn differently from "
                        "the recorded prompt_text (generation prompt + prefill); use mode=completions for exact "
                        "prefills and thinking controls", _WHO)

    def _run(self, path: str, bodies: list[dict[str, Any]], prompt_texts: Sequence[str], *,
             record_blocked: bool = True) -> list[Completion]:
        """The rows' completions, or GenerationError for the batch. A blocked row is recorded (``on_blocked=record``)
        only for a whole generation: a continuation (SafeThink, MoreThink) has no way to carry it on."""
        self._check_timeout(bodies)
        results = self.client.post_many(path, bodies, check=reply_problem)
        out: list[Completion] = []
        failures: list[tuple[int, str]] = []
        blocked = 0
        for i, (res, text) in enumerate(zip(results, prompt_texts, strict=True)):
            try:
                out.append(self._completion(res, text))
            except _Blocked as e:
                if self.on_blocked == "record" and record_blocked:
                    out.append(Completion(text="", n_tokens=0, finish_reason="blocked"))
                    continue
                blocked += 1
                failures.append((i, self.client.scrub(str(e))))
            except _RowFailure as e:
                failures.append((i, self.client.scrub(str(e))))
        if failures:
            row, first = failures[0]
            hint = (" To record prompts the provider blocks as `blocked` (left out of the metrics, counted in "
                    "reports) and go on, set the backend option on_blocked=record (--backend-opt "
                    "on_blocked=record)." if blocked and record_blocked else
                    " A blocked continuation (SafeThink, MoreThink) cannot be recorded as blocked; run those prompts "
                    "without the defense or control." if blocked else "")
            raise GenerationError(
                f"{len(failures)} of {len(bodies)} generation requests to {self.base_url} failed (first, row {row}: "
                f"{first}). Nothing of this batch was recorded (a failed or blocked request is not a refusal); "
                f"fix the cause and re-run the same command to resume.{hint}", failures)
        return out

    def _check_timeout(self, bodies: list[dict[str, Any]]) -> None:
        """Warn once when ``max_tokens`` needs a faster server than ``timeout`` leaves room for."""
        longest = max((b.get("max_tokens") or 0 for b in bodies), default=0)
        need = longest / self.client.timeout
        if not self._timeout_warned and need > _SLOW_TOKENS_PER_S:
            self._timeout_warned = True
            log.warning("%s: max_tokens %d must be generated within timeout=%g s per request (%.0f tokens/s); if "
                        "requests time out, raise the backend option timeout", _WHO, longest, self.client.timeout,
                        need)

    # -- manifest --------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What was served and how prompts were rendered; no secrets. The weights behind a served name can't
        be checked from here, so ``model_hash`` is the name (the base URL is recorded but may change on resume)."""
        tok = self.tokenizer
        tok_hash = template = None
        if tok is not None:
            try:
                blob = tok.backend_tokenizer.to_str()
            except AttributeError:
                blob = repr(sorted(tok.get_vocab().items()))
            tok_hash = "sha256:" + sha256_text(blob)
            template = getattr(tok, "chat_template", None)
        template = self.chat_template if self.chat_template is not None else template
        exact = tok is not None
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "mode": self.mode,
            "model_hash": "server:" + self.model,
            "tokenizer": self.tokenizer_name,
            "tokenizer_hash": tok_hash,
            "chat_template_hash": "sha256:" + sha256_text(template) if template else None,
            "prompt_text": "chat template of the local tokenizer" if exact else
            "rendering of the request (server template not visible)",
            "token_counts": "tokenizer" if exact else "approximate: whitespace words (no tokenizer)",
            "think_markers": list(self.think_markers),
            "extra_body": self.extra_body,
            "default_template_kwargs": self.default_template_kwargs,
        }
