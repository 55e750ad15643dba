"""JSON over an OpenAI-compatible API, shared by the API judges and the ``openai`` backend, on the official
``openai`` client.

Why a layer at all: a judge must never fail open, and an API that rate-limits, times out or answers garbage
must not abort a batch of thousands of items either. The transport is the ``openai`` package's
:class:`~openai.AsyncOpenAI` (connection pooling, timeouts, retries of 429/408/409/5xx, timeouts and dropped
connections, honouring ``Retry-After`` / ``retry-after-ms``), configured here rather than re-implemented:
its ``max_retries`` and ``timeout``, and its retry delay through :meth:`_Client._calculate_retry_timeout`.
What it does not do is decide that a 200 reply is unusable: a body that is not JSON, or that the caller's
``check`` finds malformed (a chat completion without choices), is retried here like a 5xx, from the same
attempt budget: one garbled reply from a busy proxy must not cost an item. Every final failure comes back as
an error string for that one request (which the judge turns into ``Verdict.failed``), never as an exception
and never as a decision.

Endpoints are posted with the client's generic ``post`` and the body decoded as plain JSON, so that server
extensions (vLLM's ``top_k``, ``return_token_ids``, ``chat_template_kwargs``; ``reasoning_content`` and
``token_ids`` in replies) go out and come back exactly as sent, and a non-conforming reply is seen as it is.

Requests run as asyncio tasks on one event-loop thread, at most ``concurrency`` in flight per client, while
the calling thread waits; Ctrl-C (``KeyboardInterrupt`` there) cancels the call's tasks, which closes the
connections in flight, retries nothing, and lets the interrupt propagate at once.

The API key is read only from an environment variable named by the caller, at first use, and is scrubbed
from every error string and reply text this client hands back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import math
import os
import random
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import openai

from safereason.errors import ConfigError

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: statuses the openai client retries (see ``openai._base_client._should_retry``); a final one reads
#: "HTTP 503 after N attempts"
_RETRIED_STATUS = frozenset({408, 409, 429})
#: what ``post`` returns: the raw reply (status, bytes) with the client's retries done, decoded by us
_RAW_REPLY = openai.AsyncAPIResponse[object]
T = TypeVar("T")


def is_loopback(url: str) -> bool:
    """True for a server on this machine (a local vLLM/SGLang), which usually needs no API key."""
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK or host.startswith("127.")


def check_base_url(base_url: str, who: str) -> str:
    """The base URL without a trailing slash; credentials in it are refused (they'd land in identity())."""
    if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
        raise ConfigError(f"{who}: base_url must be an http:// or https:// URL")
    parts = urlsplit(base_url)
    if parts.username or parts.password:
        raise ConfigError(f"{who}: base_url must not carry credentials; name an environment variable in api_key_env")
    return base_url.rstrip("/")


@dataclass(frozen=True)
class PostResult:
    """The decoded JSON body of a successful POST, or why there is none (with the final HTTP status and the
    API's error code, when the server sent them: a content-policy refusal is told apart by them)."""

    data: Any = None
    error: str | None = None
    attempts: int = 1
    status: int | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


#: a reply check: an error message when the decoded body is malformed (it is then retried like a 5xx)
Check = Callable[[Any], str | None]

#: requests sent so far by the current task's ``post`` (set by :meth:`_Client._build_request`, one per attempt)
_SENT: contextvars.ContextVar[list[int]] = contextvars.ContextVar("safereason_http_sent")


class _Client(openai.AsyncOpenAI):
    """:class:`openai.AsyncOpenAI` with the owner's backoff, and a count of the attempts each call made."""

    def __init__(self, owner: JsonClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner

    def _build_request(self, options: Any, *, retries_taken: int = 0) -> Any:
        sent = _SENT.get(None)
        if sent is not None:
            sent[0] = retries_taken + 1
        return super()._build_request(options, retries_taken=retries_taken)

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        attempt = options.get_max_retries(self.max_retries) - remaining_retries + 1
        after = self._parse_retry_after_header(response_headers)
        return self._owner._delay(attempt, after if after is not None and math.isfinite(after) and after >= 0
                                  else None)


class _Loop:
    """One daemon thread running an asyncio loop for every client of this process (re-made after a fork)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = -1

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid() or not cls._loop.is_running():
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                loop.call_soon(ready.set)
                threading.Thread(target=loop.run_forever, name="safereason-http", daemon=True).start()
                ready.wait()
                cls._loop, cls._pid = loop, os.getpid()
            return cls._loop


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` on the shared loop and wait for it; any exception in the waiting thread (Ctrl-C) cancels it."""
    fut = asyncio.run_coroutine_threadsafe(cast(Any, coro), _Loop.get())
    try:
        while True:
            done, _ = concurrent.futures.wait([fut], timeout=0.2)
            if done:
                return fut.result()
    except BaseException:
        fut.cancel()
        raise


class JsonClient:
    """POST JSON bodies to ``{base_url}/{path}`` with bounded concurrency, retries and per-request timeouts.

    ``max_retries`` counts retries after the first attempt (so at most ``max_retries + 1`` requests), whatever
    their cause. Backoff before retry k (1-based) is ``min(backoff_max, backoff_base * 2**(k-1))`` scaled by a
    random factor in [0.5, 1) so that parallel workers don't retry in lockstep; a ``Retry-After`` (or
    ``retry-after-ms``) header replaces it, capped at ``retry_after_max`` seconds (the openai client gives up
    at once on a server that asks for more than two minutes). ``timeout`` is the client's timeout: for
    connecting and for each read (a non-streamed reply sends nothing until it is complete, so it bounds the time
    a server may take to answer one request).

    ``api_key_env`` names the environment variable holding the key (never the key itself). With
    ``key_required`` a missing key raises :class:`ConfigError` at first use; without it a missing key
    means no ``Authorization`` header (for local servers).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None,
        key_required: bool = True,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        who: str = "http judge",
    ) -> None:
        self.who = who
        self.base_url = check_base_url(base_url, who)
        if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)):
            # Don't echo the value: someone may have pasted the key itself here.
            raise ConfigError(f"{who}: api_key_env must be the NAME of an environment variable (letters, digits, _)")
        _check_int(concurrency, "concurrency", 1, who)
        _check_int(max_retries, "max_retries", 0, who)
        for value, what in ((timeout, "timeout"), (backoff_base, "backoff_base"), (backoff_max, "backoff_max"),
                            (retry_after_max, "retry_after_max")):
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{who}: {what} must be a non-negative number, got {value!r}")
        if timeout <= 0:
            raise ConfigError(f"{who}: timeout must be > 0")
        self.api_key_env = api_key_env
        self.key_required = key_required
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retry_after_max = float(retry_after_max)
        self._key: str | None = None
        self._key_resolved = False
        self._client: _Client | None = None
        self._slots: asyncio.Semaphore | None = None  # made on the loop thread, where it is used
        self._bound: asyncio.AbstractEventLoop | None = None  # the loop the client and slots belong to

    # -- the key -------------------------------------------------------------------------------------
    def _api_key(self) -> str | None:
        if not self._key_resolved:
            key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
            if not key and self.api_key_env and self.key_required:
                raise ConfigError(
                    f"{self.who}: no API key: the environment variable {self.api_key_env} is not set "
                    f"(export {self.api_key_env}=...; keys are read only from the environment)"
                )
            self._key = key or None
            self._key_resolved = True
        return self._key

    def scrub(self, text: str) -> str:
        """``text`` with the API key blanked out (servers sometimes echo it in error messages)."""
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    def _openai(self) -> _Client:
        """The openai client, made at first use (after the key is known). Only this key is ever sent: no key
        means no ``Authorization`` header, never a key from ``OPENAI_API_KEY`` the caller did not name."""
        if self._client is None:
            key = self._api_key()
            # a proxy from the environment can't reach our loopback
            http = openai.DefaultAsyncHttpxClient(trust_env=False) if is_loopback(self.base_url) else None
            self._client = _Client(self, api_key=key or "unused", base_url=self.base_url, timeout=self.timeout,
                                   max_retries=self.max_retries, default_headers={"User-Agent": "safereason"},
                                   http_client=http)
        return self._client

    def _request_headers(self) -> dict[str, Any]:
        """Per-request headers: without a key the ``Authorization`` header is left out (the placeholder key the
        openai client insists on is never sent)."""
        return {"Authorization": openai.Omit()} if self._api_key() is None else {}

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        client, self._client = self._client, None
        if client is not None and self._bound is not None and self._bound.is_running():
            asyncio.run_coroutine_threadsafe(client.close(), self._bound).result(timeout=10)

    # -- requests ------------------------------------------------------------------------------------
    def post_many(self, path: str, bodies: Sequence[Mapping[str, Any]], check: Check | None = None
                  ) -> list[PostResult]:
        """One result per body, in order; at most ``concurrency`` requests in flight at once. ``check`` finds a
        decoded reply malformed (returns why), which is then retried like a 5xx. A ``KeyboardInterrupt`` in the
        calling thread cancels the call: in-flight requests are cut, nothing is retried, and it propagates."""
        self._api_key()  # a missing key is a ConfigError, before any request
        if not bodies:
            return []
        return run_sync(self.post_many_async(path, bodies, check))

    def post(self, path: str, body: Mapping[str, Any], check: Check | None = None) -> PostResult:
        return self.post_many(path, [body], check)[0]

    async def post_many_async(self, path: str, bodies: Sequence[Mapping[str, Any]], check: Check | None = None
                              ) -> list[PostResult]:
        """:meth:`post_many` for a caller already on the shared loop (cancelling it cancels every request)."""
        loop = asyncio.get_running_loop()
        if self._bound is not loop:  # first use, or a new loop (after a fork): a pool and slots of its own
            self._bound, self._client, self._slots = loop, None, asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._post_safe(path, b, check) for b in bodies)))

    async def _post_safe(self, path: str, body: Mapping[str, Any], check: Check | None) -> PostResult:
        try:
            return await self._post_with_retries(path, body, check)
        except Exception as e:  # a bug or an odd library error must cost one item, not the batch
            return PostResult(error=self.scrub(f"unexpected error: {type(e).__name__}: {e}"))

    async def _post_with_retries(self, path: str, body: Mapping[str, Any], check: Check | None) -> PostResult:
        used = 0  # attempts made so far, across the client's own retries and ours of malformed replies
        while True:
            sent = [0]
            token = _SENT.set(sent)
            try:
                assert self._slots is not None
                async with self._slots:
                    reply = await self._openai().post(
                        "/" + path.lstrip("/"), cast_to=_RAW_REPLY, body=dict(body),
                        options={"max_retries": self.max_retries - used,
                                 "headers": self._request_headers()})
                    raw = await reply.read()
            except openai.APIStatusError as e:
                return self._status_failure(e, used + max(sent[0], 1))
            except openai.APITimeoutError:
                return self._failure(f"timeout after {self.timeout:g} s", used + max(sent[0], 1))
            except openai.APIConnectionError as e:
                cause = e.__cause__ or e
                return self._failure(f"connection error: {type(cause).__name__}: {cause}".rstrip(": "),
                                     used + max(sent[0], 1))
            finally:
                _SENT.reset(token)
            used += max(sent[0], 1)
            status = reply.status_code
            try:
                data = json.loads(raw)
                why = check(data) if check is not None else None
            except (ValueError, UnicodeDecodeError):  # a garbled or cut reply: retried like a 5xx
                snippet = raw[:80].decode("utf-8", "replace").replace("\n", " ")
                why = f"malformed JSON response (HTTP {status}): {snippet!r}"
            if why is None:
                return PostResult(data=data, attempts=used, status=status)
            if used > self.max_retries:
                return self._failure(why, used, status)
            await asyncio.sleep(self._delay(used, None))

    def _failure(self, message: str, attempts: int, status: int | None = None) -> PostResult:
        noun = "attempt" if attempts == 1 else "attempts"
        return PostResult(error=self.scrub(f"{message} ({attempts} {noun})"), attempts=attempts, status=status)

    def _status_failure(self, e: openai.APIStatusError, attempts: int) -> PostResult:
        status = e.status_code
        try:
            raw = e.response.content
        except Exception:
            raw = b""
        if status in _RETRIED_STATUS or status >= 500:
            noun = "attempt" if attempts == 1 else "attempts"
            return PostResult(error=f"HTTP {status} after {attempts} {noun}", attempts=attempts, status=status)
        return PostResult(error=self.scrub(f"HTTP {status}{_error_detail(raw)}"), attempts=attempts, status=status,
                          code=_error_code(raw))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): ``Retry-After`` capped, else jittered backoff."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)


def _check_int(value: Any, what: str, minimum: int, who: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{who}: {what} must be an integer >= {minimum}, got {value!r}")


def _error_code(raw: bytes) -> str | None:
    """The API's error code (``error.code``, else ``error.type``) from an error body, if it has one."""
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    code = err.get("code") if isinstance(err.get("code"), str) else err.get("type")
    return code if isinstance(code, str) and code else None


def _error_detail(raw: bytes) -> str:
    """': <the API's error message>' (short), or '' when the body says nothing useful."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            err = err.get("message", err)
        text = err if isinstance(err, str) else json.dumps(err)
    except ValueError:
        pass
    text = " ".join(text.split())
    return f": {text[:200]}"


def choices_problem(data: Any) -> str | None:
    """A :data:`Check` for OpenAI-style completions: why the body has no usable ``choices[0]`` (an error object
    sent with a 200, no choices), else None."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if err:
        detail = err.get("message", err) if isinstance(err, dict) else err
        return f"API error in reply: {str(detail)[:200]}"
    return "malformed reply (no choices)"
