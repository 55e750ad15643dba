"""A small JSON-over-HTTP client shared by the API judges (OpenAI moderation, LLM-as-judge).

Why its own client: a judge must never fail open, and an API that rate-limits, times out or answers
garbage must not abort a batch of thousands of items either. So every request is retried on the
transient failures (429, 5xx, connection errors, timeouts) with exponential backoff and jitter,
honouring ``Retry-After``; every final failure comes back as an error string for that one request
(which the judge turns into ``Verdict.failed``), never as an exception and never as a decision. A body
that is not JSON, or that the caller's ``check`` finds malformed (a chat completion without choices), is
retried like a 5xx: one garbled reply from a busy proxy must not cost an item.

Ctrl-C (``KeyboardInterrupt`` in the calling thread) cancels the whole call at once: requests in flight
have their sockets shut down, none is retried, and the interrupt propagates within a fraction of a second
instead of after every request's timeout and retries.

The API key is read only from an environment variable named by the caller, at first use, and is
scrubbed from every error string and reply text this client hands back. Standard library only
(``urllib``): one connection per request, which costs little next to an LLM call.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from safereason.errors import ConfigError
from safereason.judges.http_cancel import Call, HTTPHandler, HTTPSHandler, bind, opened_socket

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status


class JsonClient:
    """POST JSON bodies to ``{base_url}{path}`` with bounded concurrency, retries and per-request timeouts.

    ``max_retries`` counts retries after the first attempt (so at most ``max_retries + 1`` requests).
    Backoff before retry k (1-based) is ``min(backoff_max, backoff_base * 2**(k-1))`` scaled by a
    random factor in [0.5, 1) so that parallel workers don't retry in lockstep; a ``Retry-After``
    (or OpenAI's ``retry-after-ms``) header replaces it, capped at ``retry_after_max`` seconds.
    ``timeout`` is the socket timeout: for connecting and for each read (a non-streamed reply sends nothing
    until it is complete, so it bounds the time a server may take to answer one request).

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
        self._slots = threading.BoundedSemaphore(concurrency)
        handlers: list[urllib.request.BaseHandler] = [HTTPHandler(), HTTPSHandler()]
        if is_loopback(self.base_url):
            handlers.append(urllib.request.ProxyHandler({}))  # a proxy can't reach our loopback
        self._opener = urllib.request.build_opener(*handlers)
        self._sleep: Callable[[float], None] = time.sleep

    # -- the key -------------------------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        if not self._key_resolved:
            key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
            if not key and self.api_key_env and self.key_required:
                raise ConfigError(
                    f"{self.who}: no API key: the environment variable {self.api_key_env} is not set "
                    f"(export {self.api_key_env}=...; keys are read only from the environment)"
                )
            self._key = key or None
            self._key_resolved = True
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def scrub(self, text: str) -> str:
        """``text`` with the API key blanked out (servers sometimes echo it in error messages)."""
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    # -- requests ------------------------------------------------------------------------------------
    def post_many(self, path: str, bodies: Sequence[Mapping[str, Any]], check: Check | None = None
                  ) -> list[PostResult]:
        """One result per body, in order; at most ``concurrency`` requests in flight at once. ``check`` finds a
        decoded reply malformed (returns why), which is then retried like a 5xx.

        The requests run on daemon threads while the calling thread waits, so a ``KeyboardInterrupt`` there
        cancels the call: in-flight requests are cut, nothing is retried, and the interrupt propagates."""
        headers = self._auth_headers()  # a missing key is a ConfigError, before any request
        if not bodies:
            return []
        if len(bodies) == 1:  # in the calling thread: an interrupt ends its read or backoff directly
            return [self._post_safe(path, bodies[0], headers, check, None)]
        call = Call()
        results: list[PostResult | None] = [None] * len(bodies)
        todo = iter(range(len(bodies)))
        lock = threading.Lock()
        done = threading.Event()
        left = [len(bodies)]

        def worker() -> None:
            while not call.cancelled.is_set():
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                results[i] = self._post_safe(path, bodies[i], headers, check, call)
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        threads = [threading.Thread(target=worker, name="safereason-http", daemon=True)
                   for _ in range(min(self.concurrency, len(bodies)))]
        for t in threads:
            t.start()
        try:
            while not done.wait(0.2):
                if not any(t.is_alive() for t in threads):
                    break
        except BaseException:
            call.cancel()
            raise
        return [r if r is not None else PostResult(error="internal error: request not sent") for r in results]

    def post(self, path: str, body: Mapping[str, Any], check: Check | None = None) -> PostResult:
        return self._post_safe(path, body, self._auth_headers(), check, None)

    def _post_safe(self, path: str, body: Mapping[str, Any], headers: dict[str, str], check: Check | None,
                   call: Call | None) -> PostResult:
        try:
            return self._post_with_retries(path, body, headers, check, call)
        except Exception as e:  # a bug or an odd library error must cost one item, not the batch
            return PostResult(error=self.scrub(f"unexpected error: {type(e).__name__}: {e}"))

    def _post_with_retries(self, path: str, body: Mapping[str, Any], headers: dict[str, str],
                           check: Check | None, call: Call | None) -> PostResult:
        url = self.base_url + "/" + path.lstrip("/")
        payload = json.dumps(body).encode()
        attempt = 0
        while True:
            attempt += 1
            try:
                if call is not None and call.cancelled.is_set():
                    return PostResult(error="cancelled", attempts=attempt - 1)
                with self._slots:
                    data = self._send(url, payload, headers, call)
                why = check(data) if check is not None else None
                if why is not None:
                    raise _Retryable(why, status=200)
                return PostResult(data=data, attempts=attempt, status=200)
            except _Retryable as e:
                if attempt > self.max_retries:
                    noun = "attempt" if attempt == 1 else "attempts"
                    if e.message.startswith("HTTP "):
                        msg = f"{e.message} after {attempt} {noun}"
                    else:
                        msg = f"{e.message} ({attempt} {noun})"
                    return PostResult(error=self.scrub(msg), attempts=attempt, status=e.status)
                delay = self._delay(attempt, e.retry_after)
                if call is None:
                    self._sleep(delay)
                elif call.cancelled.wait(delay):
                    return PostResult(error="cancelled", attempts=attempt)
            except _Final as e:
                return PostResult(error=self.scrub(str(e)), attempts=attempt, status=e.status, code=e.code)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)

    def _send(self, url: str, payload: bytes, headers: dict[str, str], call: Call | None = None) -> Any:
        bind(call)
        try:
            return self._send_tracked(url, payload, headers)
        finally:
            if call is not None:
                call.track(opened_socket(), False)
            bind(None)

    def _send_tracked(self, url: str, payload: bytes, headers: dict[str, str]) -> Any:
        req = urllib.request.Request(
            url, data=payload, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "User-Agent": "safereason", **headers},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                raw = e.read()
            except Exception:
                raw = b""
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}", _retry_after(e.headers), status) from None
            raise _Final(f"HTTP {status}{_error_detail(raw)}", status, _error_code(raw)) from None
        except (TimeoutError, urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError) or isinstance(e, TimeoutError):
                raise _Retryable(f"timeout after {self.timeout:g} s") from None
            if isinstance(e, ValueError):  # e.g. a bad URL: retrying won't help
                raise _Final(f"request failed: {e}") from None
            raise _Retryable(f"connection error: {reason}") from None
        except Exception as e:  # http.client.IncompleteRead, RemoteDisconnected, ...
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        if not 200 <= status < 300:
            raise _Final(f"HTTP {status}{_error_detail(raw)}", status, _error_code(raw))
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):  # a garbled or cut reply: retried like a 5xx
            snippet = raw[:80].decode("utf-8", "replace").replace("\n", " ")
            raise _Retryable(f"malformed JSON response (HTTP {status}): {snippet!r}", status=status) from None


class _Final(Exception):
    """A failure that retrying won't fix (4xx other than 429, a bad URL)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _check_int(value: Any, what: str, minimum: int, who: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{who}: {what} must be an integer >= {minimum}, got {value!r}")


def _retry_after(headers: Message | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if given."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    ra = headers.get("Retry-After")
    if ra is None:
        return None
    try:
        value = float(ra)
    except ValueError:
        try:
            when = parsedate_to_datetime(ra)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(value):
        return None
    return max(0.0, value)


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
