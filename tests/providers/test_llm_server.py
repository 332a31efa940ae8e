"""The fake LLM server itself: what other layers' tests rely on."""

from __future__ import annotations

import httpx

from tests.fakes.llm_server import Reply


def test_requests_are_recorded_and_an_empty_queue_answers_harmlessly(llm_server):
    reply = httpx.post(
        f"{llm_server.url}/v1/messages?beta=true",
        json={"model": "m", "max_tokens": 5, "messages": []},
        headers={"x-api-key": "test-key"},
    )

    assert reply.status_code == 200
    assert reply.json()["content"] == [{"type": "text", "text": "ok"}]
    assert llm_server.requests[0].query == {"beta": ["true"]}
    assert llm_server.anthropic.requests[0].json["model"] == "m"


def test_unknown_paths_get_a_json_404_and_wrong_keys_a_401(llm_server):
    assert httpx.get(f"{llm_server.url}/v1/telemetry").status_code == 404
    denied = httpx.post(
        f"{llm_server.url}/v1/chat/completions", json={}, headers={"authorization": "Bearer nope"}
    )
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"


def test_a_reply_can_be_computed_from_the_request(llm_server):
    llm_server.ollama.enqueue(lambda request: Reply(text=f"echo {request.json['model']}"))

    reply = httpx.post(f"{llm_server.url}/api/chat", json={"model": "qwen", "messages": []})

    assert reply.json()["message"]["content"] == "echo qwen"


def test_streams_follow_the_real_event_sequence(llm_server):
    llm_server.anthropic.enqueue(text="hi", tool_calls=[{"name": "Write", "arguments": {"a": 1}}])

    with httpx.stream(
        "POST",
        f"{llm_server.url}/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [], "stream": True},
        headers={"x-api-key": "test-key"},
    ) as reply:
        events = [line[7:] for line in reply.iter_lines() if line.startswith("event: ")]

    assert events == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_the_model_lists_check_the_key_like_the_real_apis(llm_server):
    anthropic = {"anthropic-version": "2023-06-01"}
    models = f"{llm_server.url}/v1/models"
    listed = httpx.get(models, headers={**anthropic, "x-api-key": "test-key"})
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == "claude-fake"

    denied = httpx.get(models, headers={**anthropic, "x-api-key": "wrong"})
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"

    openai = httpx.get(models, headers={"authorization": "Bearer nope"})
    assert openai.status_code == 401 and openai.json()["error"]["code"] == "invalid_api_key"

    llm_server.ollama_models = ["qwen3:8b"]
    tags = httpx.get(f"{llm_server.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["qwen3:8b"]


def test_a_burst_of_connections_waits_to_be_accepted_instead_of_being_dropped(llm_server):
    # While the accept loop is busy (a loaded machine), the kernel holds new connections in
    # the listen backlog; socketserver's default of 5 dropped the rest of a burst, which a
    # client saw as a connection that failed (the SDKs' APIConnectionError, claude's reset).
    import select
    import socket
    import threading

    httpd = llm_server._httpd
    accept = httpd.get_request
    go = threading.Event()
    httpd.get_request = lambda: (go.wait(), accept())[1]
    host, port = httpd.server_address[:2]
    clients = [socket.socket() for _ in range(32)]
    try:
        for client in clients:
            client.setblocking(False)
            client.connect_ex((host, port))
        connected: set[socket.socket] = set()
        for _ in range(100):  # until all are connected, 10 s at most
            _, writable, _ = select.select([], [c for c in clients if c not in connected], [], 0.1)
            connected.update(writable)
            if len(connected) == len(clients):
                break
        failed = [c for c in connected if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]
        assert len(connected) == len(clients) and not failed
    finally:
        go.set()
        for client in clients:
            client.close()
