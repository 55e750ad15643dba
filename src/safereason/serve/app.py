"""The routes of ``safereason serve`` (FastAPI): auth, body limits, admission and the two ways of answering a
chat request, whole (``chat.completion``) or streamed as OpenAI's server-sent events.

Generation runs in a worker thread (the model is not async); a stream's chunks cross to the event loop
through a queue. A client that disconnects, streamed or not, before or after the first byte, sets the request's
cancel event: the generation stops at its next token (or monitored step) and frees the model and its admission
slot (a request still queued never generates).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safereason.serve.schema import ApiError, ChatRequest, parse_request
from safereason.serve.streaming import Cancelled

if TYPE_CHECKING:
    from safereason.serve.server import GuardedServer

log = logging.getLogger("safereason.serve")

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT_S = 30.0
_CLOSE = {"Connection": "close"}


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class _EventStream(StreamingResponse):
    """Server-sent events without Starlette's own disconnect listener: the route watches for a disconnect
    itself, from before the first byte on, and cancels the generation."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


class _AccessLog:
    """One log line per request (client, method, path, status, seconds), errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [500]

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            client = (scope.get("client") or ("-",))[0]
            log.info("%s %s %s %d %.2fs", client, scope["method"], scope["path"], status[0],
                     time.monotonic() - started)


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body within ``timeout`` seconds in all (a client trickling a byte at a time cannot hold a slot) and
    at most ``limit`` bytes (413: the rest is read and dropped, up to 64 x the limit, so that the client sees
    the answer rather than a reset)."""
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > 64 * limit:
                break
            if size <= limit:
                chunks.append(chunk)
        if too_big or size > limit:
            raise ApiError(413, f"request body of {declared or size} bytes is over the limit of {limit}",
                           code="request_too_large", headers=_CLOSE)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s", code="request_timeout",
                       headers=_CLOSE) from None
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before the body ended", headers=_CLOSE) from None


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


async def _stream(server: GuardedServer, request: Request, req: ChatRequest) -> Response:
    """Start the generation in a worker thread; answer with its first chunk as an event stream, or with its
    error (the request was refused before any chunk, e.g. its scorer failed on the first step)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, item: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (a forced shutdown): nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

    def work() -> None:
        try:
            server.engine.stream(req, lambda c: put("chunk", c), cancel)
            put("done")
        except Cancelled:
            put("cancelled")
        except ApiError as e:
            put("error", e)
        except Exception:
            log.exception("streamed request failed")
            put("error", ApiError(500, "internal server error (see the server log)", "server_error",
                                  "internal_error"))
        finally:
            server.admission.leave()  # the generation has stopped: its slot is free

    def disconnected() -> None:
        cancel.set()
        queue.put_nowait(("cancelled", None))

    watcher = asyncio.create_task(_watch_disconnect(request.receive, disconnected))
    threading.Thread(target=work, name="safereason-stream", daemon=True).start()
    try:
        kind, item = await queue.get()
    except asyncio.CancelledError:  # the server gave up on the drain: stop the generation too
        cancel.set()
        watcher.cancel()
        raise
    if kind != "chunk":
        cancel.set()
        watcher.cancel()
        return _error(item) if kind == "error" else Response(status_code=499)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield _sse(item)
            while True:
                kind, obj = await queue.get()
                if kind == "chunk":
                    yield _sse(obj)
                elif kind == "done":
                    yield b"data: [DONE]\n\n"
                    return
                else:  # an error after the first chunk: OpenAI's error event; or the client left
                    if kind == "error":
                        yield _sse(obj.body())
                    return
        finally:
            cancel.set()
            watcher.cancel()

    return _EventStream(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _complete(server: GuardedServer, request: Request, req: ChatRequest) -> Response:
    """Generate the whole reply in a worker thread while watching the connection: a client that leaves stops
    the generation at its next token (or monitored step), as a stream's does, freeing the model and the slot."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, Any]] = loop.create_future()
    cancel = threading.Event()

    def settle(result: tuple[bool, Any]) -> None:
        if not done.done():  # not given up on (a forced shutdown)
            done.set_result(result)

    def work() -> None:
        try:
            result: tuple[bool, Any] = (True, server.engine.complete(req, cancel))
        except Exception as e:
            result = (False, e)
        finally:
            server.admission.leave()  # the generation has stopped: its slot is free
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(settle, result)

    watcher = asyncio.create_task(_watch_disconnect(request.receive, cancel.set))
    threading.Thread(target=work, name="safereason-complete", daemon=True).start()
    try:
        ok, value = await done
    except asyncio.CancelledError:  # the server gave up on the drain: stop the generation too
        cancel.set()
        raise
    finally:
        watcher.cancel()
    if ok:
        return JSONResponse(value)
    if isinstance(value, Cancelled):
        return Response(status_code=499)  # the client left; nobody reads this
    raise value


def build_app(server: GuardedServer) -> ASGIApp:
    """The ASGI app of ``server`` (its engine is attached later, once the model is loaded)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        what = f"no route {request.method} {request.url.path}" if e.status_code == 404 else str(e.detail)
        return _error(ApiError(e.status_code, what, code=code))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=e)
        return _error(ApiError(500, "internal server error (see the server log)", "server_error", "internal_error"))

    def check_auth(request: Request) -> None:
        key = server.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def model_card() -> dict[str, Any]:
        engine = server.engine
        return {"id": engine.served_model_name, "object": "model", "created": server.started,
                "owned_by": "safereason", "safereason": engine.info()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}  # no auth, and it tells nothing

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> dict[str, Any]:
        check_auth(request)
        if model_id != server.engine.served_model_name:
            raise ApiError(404, f"no model {model_id!r} here", code="model_not_found")
        return model_card()

    @app.post(CHAT_PATH)
    async def chat(request: Request) -> Response:
        check_auth(request)
        if server.shutting_down:
            raise ApiError(503, "the server is shutting down", "server_error", "shutting_down", headers=_CLOSE)
        req = parse_request(await _read_body(request, server.max_body_bytes, server.body_timeout))
        if not server.admission.try_enter():
            wait = server.retry_after()
            raise ApiError(429, f"the server is busy ({server.admission.limit} requests running or queued); retry "
                                f"in about {wait} s", "rate_limit_error", "server_busy",
                           headers={"Retry-After": str(wait)})
        if req.stream:
            return await _stream(server, request, req)  # the worker leaves the admission
        return await _complete(server, request, req)  # so does this one's

    return _AccessLog(app)
