"""The task log and the conversations file: what a person or a resumed run finds on disk."""

from __future__ import annotations

import json
import os
import threading

from aca_flows.agent.transcript import ConversationStore, TaskLog
from aca_flows.providers.base import Message
from aca_flows.session.layout import AcaDir


def turns(*texts: str) -> list[Message]:
    roles = ("user", "assistant")
    return [Message(role=roles[i % 2], text=text) for i, text in enumerate(texts)]


def test_tasks_saving_turn_by_turn_keep_every_conversation_whole(tmp_path):
    paths = AcaDir(tmp_path).session("s1")
    first, second = ConversationStore(paths, "t1"), ConversationStore(paths, "t2")
    first.save(turns("write a"), provider="anthropic", model="m1")
    second.save(turns("write b"), provider="openai", model=None)
    first.save(turns("write a", "done with a"), provider="anthropic", model="m1")

    data = json.loads(paths.messages_json.read_text())
    assert data["schema_version"] == 1
    assert [m["text"] for m in data["tasks"]["t1"]["messages"]] == ["write a", "done with a"]
    assert data["tasks"]["t2"]["provider"] == "openai"
    assert [m.text for m in ConversationStore(paths, "t2").load()] == ["write b"]


def test_a_file_written_by_someone_else_meanwhile_is_read_not_overwritten(tmp_path):
    paths = AcaDir(tmp_path).session("s1")
    ConversationStore(paths, "t1").save(turns("write a"), provider="replay", model=None)
    # Another process (a resumed run) replaced the file since this process wrote it.
    other = json.loads(paths.messages_json.read_text())
    other["tasks"]["t0"] = {"provider": "replay", "model": None, "messages": [{"role": "user"}]}
    paths.messages_json.write_text(json.dumps(other))

    ConversationStore(paths, "t2").save(turns("write b"), provider="replay", model=None)

    assert set(json.loads(paths.messages_json.read_text())["tasks"]) == {"t0", "t1", "t2"}


def test_a_big_file_is_read_at_each_save_and_still_loses_nothing(tmp_path, monkeypatch):
    from aca_flows.agent import transcript

    monkeypatch.setattr(transcript, "_DOCUMENT_KEPT_CHARS", 10)
    paths = AcaDir(tmp_path).session("s1")
    ConversationStore(paths, "t1").save(turns("write a"), provider="replay", model=None)
    ConversationStore(paths, "t2").save(turns("write b"), provider="replay", model=None)
    assert paths.messages_json not in transcript._DOCUMENTS
    tasks = json.loads(paths.messages_json.read_text())["tasks"]
    assert [tasks[t]["messages"][0]["text"] for t in ("t1", "t2")] == ["write a", "write b"]


def test_secrets_never_reach_the_conversations_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value-123456")
    paths = AcaDir(tmp_path).session("s1")
    ConversationStore(paths, "t1").save(
        turns("use key sk-ant-secret-value-123456"), provider="anthropic", model=None
    )
    assert "secret-value" not in paths.messages_json.read_text()


def test_parallel_tasks_lose_no_turn(tmp_path):
    paths = AcaDir(tmp_path).session("s1")

    def work(task_id: str) -> None:
        store = ConversationStore(paths, task_id)
        for n in range(1, 21):
            store.save(turns(*(f"{task_id} turn {i}" for i in range(n))), provider="p", model=None)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    tasks = json.loads(paths.messages_json.read_text())["tasks"]
    assert {task_id: len(entry["messages"]) for task_id, entry in tasks.items()} == {
        f"t{i}": 20 for i in range(4)
    }


def test_the_task_log_holds_one_line_per_record_and_feeds_the_callback(tmp_path):
    paths = AcaDir(tmp_path).session("s1")
    seen = []
    log = TaskLog(paths, "t1", on_record=seen.append)
    log.write("turn", n=1)
    log.write("tool_call", name="write_file", token="ghp_" + "a" * 30)

    lines = [json.loads(line) for line in paths.task_log("t1").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["turn", "tool_call"]
    assert lines[1]["token"] == "[REDACTED]"
    assert seen == lines


def test_a_file_name_that_is_not_utf8_does_not_stop_the_task_log(tmp_path):
    # git gives such a name as its bytes (a conflict's files, the files a check undid).
    paths = AcaDir(tmp_path).session("s1")
    log = TaskLog(paths, "t1")
    log.write("merge_conflict", files=[os.fsdecode(b"na\xefve.txt")])
    log.write("turn", n=2)

    lines = [json.loads(line) for line in paths.task_log("t1").read_text().splitlines()]
    assert lines[0]["files"] == ["na\ufffdve.txt"] and lines[1]["n"] == 2
