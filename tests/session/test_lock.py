"""One writer per session, across real processes; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.errors import SessionLockedError
from aca_flows.session.layout import AcaDir
from aca_flows.session.lock import SessionLock, held_for_run, read_lock_holder
from aca_flows.session.reading import display_status, load_session
from aca_flows.session.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]

# Holds a session's lock the way a run does (through SessionStore.open), then waits.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from aca_flows.session.store import SessionStore
    store = SessionStore.open(sys.argv[1], sys.argv[2])
    store.task_started("a")
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def session_id(tmp_path) -> str:
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="A"), Task(id="b", title="B")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        return store.session_id


@pytest.fixture
def holder(tmp_path, session_id):
    """A second process that has the session open for writing."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), session_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = process.stdout.readline()
    assert line.strip() == "locked", process.stderr.read()
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()
    process.stdout.close()
    process.stderr.close()


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path, session_id, holder):
    with pytest.raises(SessionLockedError) as caught:
        SessionStore.open(tmp_path, session_id)
    error = caught.value
    assert error.pid == holder.pid
    assert error.exit_code == 2
    assert f"pid {holder.pid}" in str(error)
    assert f"kill {holder.pid}" in str(error)


def test_a_lock_file_deleted_under_a_live_holder_still_refuses_a_second_writer(
    tmp_path, session_id, holder
):
    # The refusal names the lock file; deleted by hand, it let a second writer in, and the
    # two wrote the same journal lines (seq 4 twice): the session could no longer be read.
    AcaDir(tmp_path).session(session_id).lock_file.unlink()
    with pytest.raises(SessionLockedError):
        SessionStore.open(tmp_path, session_id)
    holder.kill()
    holder.wait()
    with SessionStore.open(tmp_path, session_id) as store:  # its lock died with it
        assert store.session_id == session_id


def test_readers_see_a_live_holder_without_taking_the_lock(tmp_path, session_id, holder):
    lock_file = AcaDir(tmp_path).session(session_id).lock_file
    assert read_lock_holder(lock_file).pid == holder.pid
    session = load_session(tmp_path, session_id)
    assert display_status(session) == "running"
    # Reading did not get in the way of the writer: it is still the only holder.
    with pytest.raises(SessionLockedError):
        SessionLock(lock_file).acquire()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, session_id, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    session = load_session(tmp_path, session_id)
    # Still "running" on disk, but nobody runs it: shown as interrupted, and resumable.
    assert session.status == "running"
    assert display_status(session) == "interrupted"
    with SessionStore.open(tmp_path, session_id) as store:
        assert store.previous_holder.pid == holder.pid
        store.resumed()
        assert store.session.plan.task("a").status.state == "pending"


def test_release_removes_the_lock_file_and_frees_the_session(tmp_path, session_id):
    lock_file = AcaDir(tmp_path).session(session_id).lock_file
    store = SessionStore.open(tmp_path, session_id)
    assert lock_file.exists()
    with pytest.raises(SessionLockedError, match=f"pid {os.getpid()}"):
        SessionStore.open(tmp_path, session_id)
    store.close()
    assert not lock_file.exists()
    assert read_lock_holder(lock_file) is None
    SessionStore.open(tmp_path, session_id).close()


def test_a_finished_holder_leaves_the_session_free(tmp_path, session_id):
    script = (
        "import sys\nfrom aca_flows.session.store import SessionStore\n"
        "with SessionStore.open(sys.argv[1], sys.argv[2]) as s:\n    s.finish('completed')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), session_id],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with SessionStore.open(tmp_path, session_id) as store:
        assert store.session.status == "completed"
        assert store.previous_holder is None


def test_a_lock_held_for_a_run_is_borrowed_by_its_store_and_refuses_other_processes(
    tmp_path, session_id
):
    lock_file = AcaDir(tmp_path).session(session_id).lock_file
    check = "from aca_flows.session.store import SessionStore; SessionStore.open(*sys.argv[1:])"
    with held_for_run(lock_file, session_id):
        other = subprocess.run(
            [sys.executable, "-c", f"import sys; {check}", str(tmp_path), session_id],
            capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert "SessionLockedError" in other.stderr and f"pid {os.getpid()}" in other.stderr
        with SessionStore.open(tmp_path, session_id) as store:  # the run in this process
            store.task_started("a")
        assert read_lock_holder(lock_file).pid == os.getpid()  # still held after the store
    assert read_lock_holder(lock_file) is None and not lock_file.exists()


def test_a_lock_taken_a_moment_ago_names_its_new_holder_not_the_dead_one_before(tmp_path):
    # The file still names a crashed run when the winner of a race has its flock but has not
    # written itself in yet: the loser used to name the dead pid.
    import fcntl
    import json
    import socket
    import threading

    lock_file = tmp_path / "lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    host = socket.gethostname()
    lock_file.write_text(json.dumps({"pid": int(dead.stdout), "host": host,
                                     "started_at": "2026-12-01T00:00:00+00:00"}))  # fmt: skip
    winner = os.open(lock_file, os.O_RDWR)
    fcntl.flock(winner, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write_in() -> None:
        me = {"pid": os.getpid(), "host": host, "started_at": "2026-12-01T00:00:01+00:00"}
        os.ftruncate(winner, 0)
        os.pwrite(winner, json.dumps(me).encode(), 0)

    later = threading.Timer(0.2, write_in)
    later.start()
    try:
        with pytest.raises(SessionLockedError) as refused:
            SessionLock(lock_file, "s1").acquire()
    finally:
        later.join()
        os.close(winner)
    assert refused.value.pid == os.getpid()


def test_the_refusal_names_the_resume_that_finds_the_session_from_another_folder(
    tmp_path, session_id, monkeypatch, capsys
):
    import re
    import shlex

    from aca_flows.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the session lives in tmp_path, not here
    with SessionStore.open(tmp_path, session_id):  # a run of the session holds it
        assert main(["resume", session_id, "--workdir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        command = re.search(r"run `([^`]*)` again", err)[1]
        assert command == f"aca resume {session_id} --workdir {tmp_path}"
        # Run where it was printed, it finds the session (still in use: refused again, not
        # "no session").
        assert main(shlex.split(command)[1:]) == 2
        assert f"session {session_id} is in use by pid {os.getpid()}" in capsys.readouterr().err
        # A --repo session's names its remote, without the credentials.
        url = "https://s3cr3t-token-value@git.example.com/team/x.git"
        with pytest.raises(SessionLockedError) as refused:
            SessionStore.open(tmp_path, session_id, remote=url)
        assert (
            f"run `aca resume {session_id} --repo https://git.example.com/team/x.git "
            f"--workdir {tmp_path}` again" in str(refused.value)
        )
        assert "s3cr3t-token-value" not in str(refused.value)


def test_a_lock_file_that_is_a_link_is_refused_naming_it_and_nothing_is_written_there(tmp_path):
    # A repository's commit can put one there: aca wrote its pid wherever it pointed, and once
    # it no longer followed it, the resume ended in a traceback.
    from aca_flows.errors import InputError

    target = tmp_path / "elsewhere"
    lock_file = tmp_path / "meta" / "session.lock"
    lock_file.parent.mkdir()
    os.symlink(target, lock_file)

    with pytest.raises(InputError, match=r"session\.lock is a symbolic link"):
        SessionLock(lock_file, "s1").acquire()

    assert not target.exists()
