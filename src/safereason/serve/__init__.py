"""``safereason serve``: an OpenAI-compatible chat endpoint that puts a defense in front of every request.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health`` (no auth, says only "ok").
A completion carries the thinking in ``message.reasoning`` and the answer in ``message.content``, split by the
reasoning format exactly as ``safereason eval`` splits a sample; a thought that never closed has
``content: null``, so an unfinished thought is never passed off as an answer (the same contract the ``openai``
backend reads); ``finish_reason`` is ``stop`` when the model stopped and ``length`` when the budget ran out.
The steering prefix is always part of the reasoning, never of ``content``. An output the defense still scores
unsafe after its attempts is, by default (``on_unsafe="refuse"``), answered with ``finish_reason:
"content_filter"`` and a short refusal; ``on_unsafe="return"`` returns it (the paper's satisficing rule). The
response's ``safereason`` field holds the defense's control record (SafeThink's steps and interventions), its
verdict, the seed used and the split status.

Generation is the eval machinery, not a copy of it: the prompt text comes from :func:`rendering.render_prompt`
(defense system prompt, ``think_prefill``, thinking control, defense prefix), a generating defense runs its own
``generate`` and a request's ``seed`` S with ``n`` = K is generated as ``safereason eval --seed S --k K``
generates one prompt. A defense that fails (its scorer is down, or anything raises) fails the request with a
503: nothing is ever returned unmonitored.

Layout: :mod:`.schema` (the request and its validation), :mod:`.policy` (on-unsafe policy, prefix, scorer
check), :mod:`.engine` (the guarded model; no HTTP in it), :mod:`.streaming` (settled ids to deltas),
:mod:`.app` (the FastAPI routes) and :mod:`.server` (uvicorn, admission, shutdown); this module wires them.

Design:

- **Streaming** (``stream: true``): OpenAI's ``chat.completion.chunk`` server-sent events, the thinking as
  ``delta.reasoning`` (vLLM's field) and the answer as ``delta.content``, then a chunk with ``finish_reason``
  (and the ``safereason`` record), a usage chunk when ``stream_options.include_usage``, and ``data: [DONE]``.
  Only what the defense has settled is sent: SafeThink's first m steps each once judged (a steered step is
  never seen), then tokens as they are decoded (session mode; other modes and backends send the reply when it
  is complete). Answer text waits until no step can be steered any more, since a steering prefix moves what
  precedes it into the reasoning. Under the refuse policy a step left unsafe stops the stream's text; it ends
  with the refusal and ``finish_reason: "content_filter"`` (reasoning already sent was judged safe). A
  streamed reply reassembles to the non-streamed one for the same seed. A client that disconnects (before the
  first byte too) stops its generation at the next token or step and frees its slot.
- **Concurrency.** Torch models are not safe for concurrent ``generate`` calls, so one request at a time
  reaches the backend (and the scorer), in arrival order. ``max_concurrency`` requests are *admitted* at
  once (the one generating plus up to ``max_concurrency - 1`` waiting their turn); a request beyond that
  gets an immediate 429 with ``Retry-After`` (the requests admitted times the mean recent request time, at
  least 1 s), which OpenAI clients honour. A bounded queue keeps memory and latency bounded; rejecting early
  beats holding sockets open for minutes. ``n`` = K (at most 8, not with streaming: a clear 400) generates
  the K samples as one batch in one slot.
- **Auth.** Loopback (127.0.0.1, ::1, localhost) is the default bind. Any other address needs a key in the
  environment variable ``api_key_env``, else the server refuses to start; a key is never read from argv
  (it would show in ``ps``). With a key set, every endpoint but ``/health`` needs ``Authorization: Bearer
  <key>``, compared in constant time.
- **Conversations.** System (and ``developer``) messages must come first and are joined after the
  server's ``system_prompt``: a client can add instructions, not remove the operator's. Earlier
  user/assistant turns are rendered with the model's own chat template (backends that render locally:
  transformers, vllm); other backends take one user turn. The SafeThink scorer judges the trace against the
  last user message. Reasoning sent back in earlier assistant turns is not re-rendered, as R1-style templates
  drop it.
- **Scorer.** SafeThink's scorer must give a continuous P(unsafe) (a guard model): a refusal-string scorer
  (rs-match) flags every benign request, so the server refuses to start with one unless
  ``allow_binary_scorer`` (and warns on a scorer it does not know).
- **Limits.** Request bodies over ``max_body_bytes`` get 413, a body not received within ``body_timeout``
  seconds 408; ``max_tokens`` over ``max_tokens_limit`` and prompts that overflow the model's context get
  400; tools, logprobs and JSON mode are refused with 400 rather than silently ignored.
- **Shutdown.** SIGTERM or Ctrl-C stops accepting, rejects queued requests with 503, lets running requests
  (streams included) finish within ``drain_timeout`` (a second signal abandons them) and frees the defense's
  scorer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from safereason.config import EvalConfig, make_config
from safereason.defenses import build_defense
from safereason.models import Backend, build_backend
from safereason.serve.engine import GuardedModel
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
from safereason.serve.schema import MAX_N, ApiError, ChatRequest, ServeError, parse_request
from safereason.serve.server import (
    CHAT_PATH,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_DRAIN_S,
    DEFAULT_MAX_BODY_BYTES,
    GuardedServer,
    is_loopback,
)

__all__ = [
    "BINARY_SCORERS", "CHAT_PATH", "CONTINUOUS_SCORERS", "DEFAULT_API_KEY_ENV", "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_DRAIN_S", "DEFAULT_MAX_BODY_BYTES", "GUARD_SCORERS", "LOCAL_TEMPLATE_BACKENDS", "MAX_N", "ON_UNSAFE",
    "REFUSAL", "ApiError",
    "ChatRequest", "GuardedModel", "GuardedServer", "OnUnsafe", "ServeError", "check_scorer", "final_verdict",
    "is_loopback", "make_server", "parse_request", "serve", "split_guarded",
]

log = logging.getLogger("safereason.serve")

DEFAULT_API_KEY_ENV = "SAFEREASON_API_KEY"


def _api_key(host: str, api_key_env: str) -> str | None:
    key = (os.environ.get(api_key_env) or "").strip() or None
    if key is None and not is_loopback(host):
        raise ServeError(f"refusing to listen on {host}: a non-loopback address needs an API key; set the "
                         f"environment variable {api_key_env} (clients then send 'Authorization: Bearer <key>')")
    return key


def make_server(config: EvalConfig | dict[str, Any], host: str = "127.0.0.1", port: int = 8000,
                api_key_env: str = DEFAULT_API_KEY_ENV, max_concurrency: int = 4, backend: Backend | None = None, *,
                served_model_name: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                max_tokens_limit: int | None = None, context_limit: int | None = None,
                on_unsafe: OnUnsafe = "refuse", allow_binary_scorer: bool = False,
                body_timeout: float = DEFAULT_BODY_TIMEOUT_S, drain_timeout: float = DEFAULT_DRAIN_S) -> GuardedServer:
    """A bound, ready server (call ``serve_forever``); ``backend`` injects a loaded model (tests, notebooks).

    ``on_unsafe``: ``refuse`` (default) answers an output the defense still scores unsafe after its attempts
    with ``finish_reason: "content_filter"`` and a short refusal; ``return`` returns it (satisficing rule).
    ``allow_binary_scorer`` serves with a SafeThink scorer that has no continuous score (refused otherwise).
    ``drain_timeout``: how long a shutdown lets running requests (streams included) finish. Checks that need
    no model run first (API key, options, scorer, port), so a misconfigured start fails in a second.
    """
    if isinstance(config, dict):
        config = make_config(**config)
    if max_concurrency < 1:
        raise ServeError("max_concurrency must be at least 1")
    if max_body_bytes < 1024:
        raise ServeError("max_body_bytes must be at least 1024")
    if not body_timeout > 0 or not drain_timeout > 0:
        raise ServeError("body_timeout and drain_timeout must be > 0 seconds")
    if on_unsafe not in ON_UNSAFE:
        raise ServeError(f"on_unsafe must be one of {', '.join(ON_UNSAFE)}, got {on_unsafe!r}")
    key = _api_key(host, api_key_env)
    if config.defense:  # before the model loads: building the defense loads no scorer
        check_scorer(build_defense(config.defense, config.defense_options), allow_binary=allow_binary_scorer,
                     warn=False)
    server = GuardedServer(host, port, api_key=key, max_concurrency=max_concurrency, max_body_bytes=max_body_bytes,
                           body_timeout=body_timeout, drain_timeout=drain_timeout)
    try:
        if backend is None:
            backend = build_backend(config.backend, config.model, device=config.device, dtype=config.dtype,
                                    chat_template=config.chat_template, **config.backend_options)
        server.engine = GuardedModel(config, backend, served_model_name=served_model_name or config.model,
                                     max_tokens_limit=max_tokens_limit, context_limit=context_limit,
                                     on_unsafe=on_unsafe, allow_binary_scorer=allow_binary_scorer)
    except BaseException:
        server.close(timeout=0)
        raise
    if key is None:
        log.warning("no API key (%s unset): any local process can use this server", api_key_env)
    if not config.defense:
        log.warning("serving WITHOUT a defense: requests reach the model unguarded")
    return server


def serve(config: EvalConfig | dict[str, Any], host: str = "127.0.0.1", port: int = 8000,
          api_key_env: str = DEFAULT_API_KEY_ENV, max_concurrency: int = 4, backend: Backend | None = None, *,
          on_ready: Callable[[GuardedServer], None] | None = None, **kw: Any) -> bool:
    """Serve on uvicorn until SIGTERM or Ctrl-C, then shut down gracefully: False when a second signal
    abandoned running requests (or they outlived the drain timeout). Other keywords go to :func:`make_server`."""
    server = make_server(config, host, port, api_key_env, max_concurrency, backend, **kw)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up chatter; our log says it all
    if on_ready is not None:
        on_ready(server)
    server.serve_forever()  # returns once the drain is over (or a second signal cut it short)
    drained = server.close(timeout=0 if server.forced else 5)
    log.info("server stopped" if drained else "server stopped; running requests were abandoned")
    return drained
