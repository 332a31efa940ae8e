"""The merge lock excludes threads of one process as well as other processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest

from aca_flows.errors import InputError
from aca_flows.workspace.file_lock import FileLock


def test_threads_holding_the_lock_never_overlap(tmp_path):
    lock_path = tmp_path / "x.lock"
    spans: list[tuple[float, float]] = []

    def hold():
        with FileLock(lock_path):
            start = time.monotonic()
            time.sleep(0.05)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False))


def test_another_process_waits_for_the_lock(tmp_path):
    lock_path = tmp_path / "x.lock"
    script = (
        "import sys, time; from pathlib import Path; "
        "from aca_flows.workspace.file_lock import FileLock\n"
        "print('ready', flush=True)\n"
        "start = time.monotonic()\n"
        "with FileLock(Path(sys.argv[1])): print(time.monotonic() - start, flush=True)"
    )
    with FileLock(lock_path):
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(lock_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"  # imports done; now it waits
        time.sleep(0.3)
    waited = float(child.communicate(timeout=30)[0])
    assert waited >= 0.2


def test_shared_holders_hold_it_together_and_keep_an_exclusive_one_out(tmp_path):
    lock_path = tmp_path / "x.lock"
    second_inside = threading.Event()

    def second() -> None:
        with FileLock(lock_path, shared=True):
            second_inside.set()

    with FileLock(lock_path, shared=True):
        thread = threading.Thread(target=second)
        thread.start()
        assert second_inside.wait(30)  # it got in while the first held the lock
        fd = os.open(lock_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    thread.join()
    with FileLock(lock_path):  # and once both left, an exclusive holder gets it
        pass


def test_a_lock_whose_file_its_holder_removed_still_excludes(tmp_path):
    """A waiter that opened the file before its holder removed it (the end of a run removes
    the merge lock's folder) must not hold a lock on a file no one else can open."""
    lock_path = tmp_path / "session" / ".merge.lock"
    waiter_inside = threading.Event()
    done = threading.Event()

    def wait_for_it() -> None:
        with FileLock(lock_path):
            waiter_inside.set()
            done.wait(30)

    with FileLock(lock_path):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(0.2)  # it has opened the file and waits for the lock
        lock_path.unlink()
    assert waiter_inside.wait(30)

    newcomer = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(BlockingIOError):  # the waiter holds the file at the path
            fcntl.flock(newcomer, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(newcomer)
        done.set()
        waiter.join()


def test_a_lock_file_that_is_a_link_is_refused_and_nothing_is_made_where_it_points(tmp_path):
    # A repository can commit one in .aca: aca created an empty file wherever it pointed.
    target = tmp_path / "elsewhere" / "nologin"
    target.parent.mkdir()
    link = tmp_path / ".admin.lock"
    os.symlink(target, link)

    with pytest.raises(InputError, match=r"\.admin\.lock is a symbolic link"), FileLock(link):
        pass

    assert not target.exists()
