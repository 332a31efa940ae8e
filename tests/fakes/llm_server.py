"""A faithful fake LLM server: Anthropic Messages, OpenAI Chat Completions and Ollama on loopback.

One threaded HTTP/1.1 server on ``127.0.0.1`` and a random port speaks all three wire
protocols, so the real SDKs (and the real ``claude`` binary) can be pointed at it:

    POST /v1/messages[?beta=true]     Anthropic Messages, plain JSON or SSE when "stream": true
    POST /v1/messages/count_tokens    Anthropic token counting (always answers)
    POST /v1/chat/completions         OpenAI Chat Completions (also without the /v1 prefix)
    GET  /v1/models, /models          the model list (Anthropic and OpenAI shape), with the key
                                      checked
    GET  /v1/models/{id}, /models/{id}  one model, with the key checked: the free check aca's
                                      preflight makes; 404 in the real shape for a model in
                                      ``server.unknown_models``
    POST /api/chat                    Ollama chat ("stream": false)
    GET  /api/tags, /api/version      Ollama model list (``server.ollama_models``) and version

Each protocol has its own queue of scripted replies; a request takes the next one, or a
harmless default ("ok", end of turn) when the queue is empty, so side calls of a real client
never hang. Every request is recorded in ``server.requests``.

Usage::

    def test_something(llm_server):          # the fixture also sets ANTHROPIC_BASE_URL & co.
        llm_server.anthropic.enqueue(text="hi", usage={"input_tokens": 10, "output_tokens": 2})
        llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": {...}}])
        llm_server.openai.enqueue(status=429, retry_after=7)       # an error with retry-after
        llm_server.ollama.enqueue(fault="drop")                    # close without answering
        ...
        assert llm_server.requests[0].json["model"] == "..."

The API, all of it:

    server.url                          "http://127.0.0.1:<port>"
    server.env()                        ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, OPENAI_BASE_URL
                                        (".../v1"), OPENAI_API_KEY, OLLAMA_HOST for this server
    server.requests                     every RecordedRequest, all protocols, in arrival order
    server.model_calls                  the POSTs among them (what a provider pays for)
    server.most_in_flight()             the most model calls being answered at one moment
    server.stalled                      a threading.Event: a "stall" reply has sent its part
    server.models / .ollama_models      the model ids the lists report (change them freely)
    server.unknown_models               ids the model pages answer 404 for (every other is
                                        known)
    server.anthropic / .openai / .ollama   a ReplyQueue:
        .enqueue(Reply | callable | **Reply fields)
        .requests                       the requests this protocol received
        .pending                        scripted replies not yet taken
        .default                        the answer when nothing is scripted (Reply or callable;
                                        default Reply(text="ok"))
        .scripted_for = predicate       only matching requests take scripted replies (the
                                        claude-code tests use "has tools" to skip side calls)
    RecordedRequest: method, path, query, headers (lower-case), body, json, protocol,
        received_at, answered_at (epoch seconds)
    Reply fields: text, tool_calls, usage (default 10 input / 5 output tokens), stop_reason,
        model, status, error, retry_after, headers, delay, fault

Faults: ``status`` (+ ``retry_after``, ``error``), ``delay`` seconds, ``fault`` one of
``"drop"`` (close the connection without a response), ``"malformed_json"`` (a 200 whose body is
not JSON), ``"truncate"`` (a stream, or a body, cut off part-way), ``"error_event"`` (Anthropic
streams only: a 200 whose stream stops part-way with an ``error`` event, an
``overloaded_error`` saying ``error`` or "Overloaded", as the real API sends after a 200),
``"error_in_200"`` (OpenAI and Ollama: a 200 whose JSON body is the wire's error body, with
``error`` as its message, as a gateway or a stopped Ollama model runner sends it),
``"stall"`` (Anthropic streams only: the stream sends part of the answer, then nothing more
until the server stops, as a long generation does; ``server.stalled`` is set once that part
is sent), ``"cut_tool"`` (Anthropic streams only: ``max_tokens`` reached inside the last tool
call, as the real API ends such an answer: half of its input sent, then ``stop_reason``
``max_tokens``). A reply may also be a plain callable ``(RecordedRequest) -> Reply`` for
dynamic answers.

Auth: with ``server.api_key`` set (default ``"test-key"``) Anthropic requests need
``x-api-key`` or ``Authorization: Bearer`` with that key and OpenAI requests need the Bearer
token, else they get the protocol's 401 error; the model list too (an Anthropic-shaped error
when the request has ``anthropic-version`` or ``x-api-key``, else OpenAI's). Ollama needs no
key.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

__all__ = ["FakeLLMServer", "QuietServer", "RecordedRequest", "Reply", "llm_server"]

FAULTS = ("drop", "malformed_json", "truncate", "error_event", "error_in_200", "stall", "cut_tool")
# How long a stalled stream is held open at most (the server's stop ends it sooner).
STALL_SECONDS = 120


@dataclass
class RecordedRequest:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    protocol: str
    received_at: float = field(default_factory=time.time)  # epoch seconds
    answered_at: float | None = None  # when the answer was written (or the connection dropped)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


@dataclass
class Reply:
    """One scripted answer. Tool calls are ``{"name": ..., "arguments": {...}, "id"?: ...}``.

    ``usage`` keys: input_tokens, output_tokens, cache_read_tokens, cache_write_tokens.
    """

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    model: str | None = None
    status: int = 200
    error: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    fault: str | None = None
    # The answer's message as a server that strays from the API sends it (OpenAI, Ollama: the
    # whole message; Anthropic: its "content"): calls without ids, flat calls, parts of text.
    message: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; use one of {FAULTS}")

    def tokens(self, key: str) -> int:
        defaults = {"input_tokens": 10, "output_tokens": 5}
        return int(self.usage.get(key, defaults.get(key, 0)))


ReplySource = Reply | Callable[[RecordedRequest], Reply]


class ReplyQueue:
    """The scripted replies of one protocol, plus the requests that protocol received."""

    def __init__(self, name: str):
        self.name = name
        self._queue: deque[ReplySource] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        # Requests the script is meant for; others (a client's side calls) get the default.
        self.scripted_for: Callable[[RecordedRequest], bool] = lambda request: True
        # The answer when nothing is scripted: a source like the ones ``enqueue`` takes.
        self.default: ReplySource = Reply(text="ok")

    def enqueue(self, reply: ReplySource | None = None, /, **fields: Any) -> None:
        """Queue ``reply`` (a ``Reply`` or a callable), or a ``Reply(**fields)``."""
        self._queue.append(reply if reply is not None else Reply(**fields))

    @property
    def pending(self) -> int:
        return len(self._queue)

    def take(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if not self._queue or not self.scripted_for(request):
                source = self.default
            else:
                source = self._queue.popleft()
        return source(request) if callable(source) else source


class FakeLLMServer:
    """The server. Start with ``with FakeLLMServer() as server:`` or the ``llm_server`` fixture."""

    def __init__(self, api_key: str | None = "test-key"):
        self.api_key = api_key
        self.models = ["claude-fake", "gpt-fake"]
        self.ollama_models = ["llama-fake"]
        self.unknown_models: set[str] = set()
        self.anthropic = ReplyQueue("anthropic")
        self.openai = ReplyQueue("openai")
        self.ollama = ReplyQueue("ollama")
        self.requests: list[RecordedRequest] = []
        self.stalled = threading.Event()
        self._stopped = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def model_calls(self) -> list[RecordedRequest]:
        """The requests that asked a model for an answer: what a provider pays for (the free
        readiness checks, ``GET`` of the model lists, are left out)."""
        return [r for r in self.requests if r.method == "POST"]

    def most_in_flight(self) -> int:
        """The most model calls the server was answering at one moment."""
        edges = []
        for call in self.model_calls:
            edges.append((call.received_at, 1))
            edges.append((call.answered_at or float("inf"), -1))
        most = current = 0
        for _, step in sorted(edges):  # at a tie an end sorts before a start
            current += step
            most = max(most, current)
        return most

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point every provider at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": self.api_key or "test-key",
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_KEY": self.api_key or "test-key",
            "OLLAMA_HOST": self.url,
        }

    def serve_claude_code(self, monkeypatch) -> None:
        """Point the real claude binary (and every provider) at this server; only its agent
        loop, whose requests always hold tools, takes the scripted replies (its side calls,
        titles and quota checks, get the default answer). For scripts without errors: claude
        retries a dropped connection as it would the real API's (CI once saw its first request
        reset, ECONNRESET, on a loaded machine); a test of errors sets no retries itself."""
        for name, value in self.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "2")
        self.anthropic.scripted_for = lambda request: bool((request.json or {}).get("tools"))

    def start(self) -> FakeLLMServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # ends the stalled streams
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def llm_server(monkeypatch) -> Iterator[FakeLLMServer]:
    """A started ``FakeLLMServer``; the standard provider variables point at it."""
    with FakeLLMServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


# ---------------------------------------------------------------- HTTP plumbing


class QuietServer(ThreadingHTTPServer):
    """The fakes' HTTP server: a real server's backlog, an accept loop that never blocks, and
    no trace for a client that gave up."""

    daemon_threads = True
    # A listen backlog as a real server's: socketserver's default of 5 dropped the connections
    # past it that came while the accept loop waited for the CPU (a burst of tasks' first
    # calls on a loaded machine), which the client saw fail (APIConnectionError, ECONNRESET).
    request_queue_size = socket.SOMAXCONN

    def server_activate(self) -> None:
        super().server_activate()
        # A connection its client dropped between the accept loop's select and its accept
        # left a blocking accept waiting for the next one: at the test's end, ``shutdown``
        # then waited for the loop for ever. Non-blocking, that accept returns at once.
        self.socket.setblocking(False)

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = super().get_request()
        request.setblocking(True)  # Linux does not pass the listener's mode on; macOS does
        return request, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) breaks the pipe: expected, not worth a trace.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"
    # As the real APIs' servers do: without it, a streamed reply (one small write per event)
    # on a kept-alive connection waited for the client's delayed ACK, about 40 ms a call
    # that no real server adds.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = parts.path.rstrip("/") or "/"
        request = RecordedRequest(
            method=self.command,
            path=path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            protocol=_protocol_of(path),
        )
        self.fake.requests.append(request)
        route = _ROUTES.get((self.command, path))
        if route is None and self.command == "GET" and path.startswith(_MODEL_PAGES):
            route = _route_model
        if route is None:
            self._send_json(
                404,
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": f"no route {path}"},
                },
            )
            return
        try:
            route(self, request)
        finally:
            request.answered_at = time.time()

    # -- writers

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header(
            "content-length", str(len(data) if content_length is None else content_length)
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.close()

    def _answer(
        self,
        request: RecordedRequest,
        reply: Reply,
        payload: Callable[[], Any],
        error_body: Callable[[Reply], Any],
    ) -> bool:
        """Apply delay, faults and error statuses. True when the caller still has to answer."""
        if reply.delay:
            time.sleep(reply.delay)
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["retry-after"] = _number(reply.retry_after)
        if reply.fault == "drop":
            self._drop()
            return False
        if reply.fault == "malformed_json":
            self._send_bytes(200, b'{"id": "broken", "content": [', headers)
            return False
        if reply.status >= 400:
            self._send_json(reply.status, error_body(reply), headers)
            return False
        if reply.fault == "error_in_200":
            self._send_json(200, error_body(reply), headers)
            return False
        if reply.fault == "truncate" and not (request.json or {}).get("stream"):
            data = json.dumps(payload()).encode()
            self._send_bytes(200, data[: len(data) // 2], headers, content_length=len(data))
            self._drop()
            return False
        return True

    def _stream(
        self, events: list[tuple[str, Any]], headers: dict[str, str], truncate: bool, stall: bool
    ) -> None:
        """Server-sent events with chunked transfer encoding, as the real API sends them."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if truncate or stall:
            events = events[: max(2, len(events) // 2)]
        for event, data in events:
            chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if stall:
            self.fake.stalled.set()
            self.fake._stopped.wait(STALL_SECONDS)
        if truncate or stall:
            self._drop()  # no terminating chunk: the client sees a cut-off stream
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _authorized(self, request: RecordedRequest, allow_x_api_key: bool) -> bool:
        key = self.fake.api_key
        if key is None:
            return True
        if allow_x_api_key and request.headers.get("x-api-key") == key:
            return True
        return request.headers.get("authorization") == f"Bearer {key}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _protocol_of(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if "chat/completions" in path:
        return "openai"
    return "anthropic"


# ---------------------------------------------------------------- Anthropic Messages

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_error(reply: Reply) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": reply.error or kind}}


def _anthropic_message(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                "name": call["name"],
                "input": call.get("arguments", {}),
            }
        )
    if reply.message is not None:
        content = reply.message["content"]
    stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
    return {
        "id": f"msg_{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": reply.model or (request.json or {}).get("model", "claude-fake"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.tokens("input_tokens"),
            "output_tokens": reply.tokens("output_tokens"),
            "cache_read_input_tokens": reply.tokens("cache_read_tokens"),
            "cache_creation_input_tokens": reply.tokens("cache_write_tokens"),
        },
    }


def _anthropic_events(message: dict[str, Any]) -> list[tuple[str, Any]]:
    """The real event sequence: message_start, per block start/delta/stop, message_delta, stop."""
    start = dict(
        message, content=[], stop_reason=None, usage=dict(message["usage"], output_tokens=1)
    )
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            text = block["text"]
            deltas = [
                {"type": "text_delta", "text": text[i : i + 20]} for i in range(0, len(text), 20)
            ]
        else:
            opened = dict(block, input={})
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[i : i + 20]}
                for i in range(0, len(raw), 20)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _cut_last_tool_call(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The events of an answer ``max_tokens`` ended inside its last tool call: the second half
    of that call's input never comes, and the message stops for ``max_tokens``."""
    inputs = [
        i
        for i, (name, data) in enumerate(events)
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    last = [i for i in inputs if events[i][1]["index"] == events[inputs[-1]][1]["index"]]
    dropped = set(last[max(1, len(last) // 2) :])
    kept = [event for i, event in enumerate(events) if i not in dropped]
    for name, data in kept:
        if name == "message_delta":
            data["delta"]["stop_reason"] = "max_tokens"
    return kept


def _route_anthropic(handler: _Handler, request: RecordedRequest) -> None:
    if not handler._authorized(request, allow_x_api_key=True):
        handler._send_json(401, _anthropic_error(Reply(status=401, error="invalid x-api-key")))
        return
    reply = handler.fake.anthropic.take(request)
    message = _anthropic_message(request, reply)
    if not handler._answer(request, reply, lambda: message, _anthropic_error):
        return
    if (request.json or {}).get("stream"):
        events = _anthropic_events(message)
        if reply.fault == "cut_tool":
            events = _cut_last_tool_call(events)
        if reply.fault == "error_event":
            overloaded = _anthropic_error(Reply(status=529, error=reply.error or "Overloaded"))
            events = [*events[: max(2, len(events) // 2)], ("error", overloaded)]
        handler._stream(events, reply.headers, reply.fault == "truncate", reply.fault == "stall")
    else:
        handler._send_json(200, message, reply.headers)


def _route_count_tokens(handler: _Handler, request: RecordedRequest) -> None:
    handler._send_json(200, {"input_tokens": max(1, len(request.body) // 4)})


def _route_models(handler: _Handler, request: RecordedRequest) -> None:
    anthropic_style = "anthropic-version" in request.headers or "x-api-key" in request.headers
    if not handler._authorized(request, allow_x_api_key=anthropic_style):
        if anthropic_style:
            error = _anthropic_error(Reply(status=401, error="invalid x-api-key"))
        else:
            error = _openai_error(Reply(status=401, error="Incorrect API key provided"))
        handler._send_json(401, error)
        return
    models = handler.fake.models
    handler._send_json(
        200,
        {
            "object": "list",
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
            "data": [
                {
                    "id": m,
                    "type": "model",
                    "object": "model",
                    "display_name": m,
                    "owned_by": "fake",
                    "created": 0,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for m in models
            ],
        },
    )


_MODEL_PAGES = ("/v1/models/", "/models/")


def _route_model(handler: _Handler, request: RecordedRequest) -> None:
    anthropic_style = "anthropic-version" in request.headers or "x-api-key" in request.headers
    if not handler._authorized(request, allow_x_api_key=anthropic_style):
        _route_models(handler, request)  # its 401
        return
    model = unquote(request.path.rsplit("/", 1)[1])
    if model in handler.fake.unknown_models:
        if anthropic_style:
            error = _anthropic_error(Reply(status=404, error=f"model: {model}"))
        else:
            error = _openai_error(
                Reply(status=404, error=f"The model '{model}' does not exist or you do not have "
                      "access to it.")
            )  # fmt: skip
        handler._send_json(404, error)
        return
    handler._send_json(
        200,
        {
            "id": model,
            "type": "model",
            "object": "model",
            "display_name": model,
            "owned_by": "fake",
            "created": 0,
            "created_at": "2025-01-01T00:00:00Z",
        },
    )


# ---------------------------------------------------------------- OpenAI Chat Completions

_OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def _openai_error(reply: Reply) -> dict[str, Any]:
    kind = "invalid_request_error" if reply.status < 500 else "server_error"
    return {
        "error": {
            "message": reply.error or f"error {reply.status}",
            "type": kind,
            "param": None,
            "code": _OPENAI_ERROR_CODES.get(reply.status),
        }
    }


def _route_openai(handler: _Handler, request: RecordedRequest) -> None:
    if not handler._authorized(request, allow_x_api_key=False):
        handler._send_json(401, _openai_error(Reply(status=401, error="Incorrect API key")))
        return
    reply = handler.fake.openai.take(request)
    cached = reply.tokens("cache_read_tokens")
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.get("id") or f"call_{uuid.uuid4().hex[:20]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": _json_string(c.get("arguments", {}))},
            }
            for c in reply.tool_calls
        ]
    message = reply.message if reply.message is not None else message
    finish = reply.stop_reason or ("tool_calls" if reply.tool_calls else "stop")
    prompt = reply.tokens("input_tokens") + cached  # OpenAI counts cached tokens in the prompt
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or (request.json or {}).get("model", "gpt-fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": reply.tokens("output_tokens"),
            "total_tokens": prompt + reply.tokens("output_tokens"),
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    if handler._answer(request, reply, lambda: payload, _openai_error):
        handler._send_json(200, payload, reply.headers)


def _json_string(arguments: Any) -> str:
    # A string is sent as-is, so a test can script arguments that are not valid JSON.
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


# ---------------------------------------------------------------- Ollama


def _ollama_error(reply: Reply) -> dict[str, Any]:
    return {"error": reply.error or f"error {reply.status}"}


def _route_ollama_chat(handler: _Handler, request: RecordedRequest) -> None:
    reply = handler.fake.ollama.take(request)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c["name"], "arguments": c.get("arguments", {})}}
            for c in reply.tool_calls
        ]
    message = reply.message if reply.message is not None else message
    payload = {
        "model": reply.model or (request.json or {}).get("model", "llama-fake"),
        "created_at": "2025-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": reply.stop_reason or "stop",
        "prompt_eval_count": reply.tokens("input_tokens"),
        "eval_count": reply.tokens("output_tokens"),
        "total_duration": 1_000_000,
    }
    if handler._answer(request, reply, lambda: payload, _ollama_error):
        handler._send_json(200, payload, reply.headers)


def _route_ollama_tags(handler: _Handler, request: RecordedRequest) -> None:
    models = [{"name": name, "model": name} for name in handler.fake.ollama_models]
    handler._send_json(200, {"models": models})


def _route_ollama_version(handler: _Handler, request: RecordedRequest) -> None:
    handler._send_json(200, {"version": "0.0.0-fake"})


_ROUTES: dict[tuple[str, str], Callable[[_Handler, RecordedRequest], None]] = {
    ("POST", "/v1/messages"): _route_anthropic,
    ("POST", "/v1/messages/count_tokens"): _route_count_tokens,
    ("GET", "/v1/models"): _route_models,
    ("GET", "/models"): _route_models,
    ("POST", "/v1/chat/completions"): _route_openai,
    ("POST", "/chat/completions"): _route_openai,
    ("POST", "/api/chat"): _route_ollama_chat,
    ("GET", "/api/tags"): _route_ollama_tags,
    ("GET", "/api/version"): _route_ollama_version,
    ("HEAD", "/"): lambda handler, request: handler._send_bytes(200, b""),
    ("GET", "/"): lambda handler, request: handler._send_json(200, {"status": "ok"}),
}
