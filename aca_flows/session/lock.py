"""One writer per session: ``meta/session.lock``, held by the process that runs the session.

The lock is an exclusive ``flock`` on the lock file and on its folder (``meta/``, which a hand
cannot delete from under a live run as it can the file), and the file names its holder (pid,
host, since when) in JSON. The kernel drops a ``flock`` when its process dies, however it dies, so
the lock of a crashed or SIGKILLed process is free at once: the next ``acquire`` takes it
over and reports the previous holder in ``SessionLock.previous_holder``. A live holder makes
``acquire`` raise ``SessionLockedError`` (an ``AcaError``: exit 2) naming its pid.

A caller may rely on: at most one ``SessionLock`` per session is held at a time across all
processes of the machine; ``release`` (or leaving the ``with`` block) removes the file.

``held_for_run`` takes a session's lock for a run this process is about to start (the ``aca``
command, before Prefect makes a flow run): the run's own locks of that session borrow it, so
no other process can take the session between the command's check and the run.
Locks on network filesystems are as good as their ``flock``; keep ``.aca`` on a local disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from aca_flows.errors import InputError
from aca_flows.session.errors import SessionLockedError

__all__ = ["LockHolder", "SessionLock", "held_for_run", "read_lock_holder"]

LOCK_SCHEMA_VERSION = 1


class LockHolder(BaseModel):
    """Who holds (or last held) a session lock; the content of the lock file."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = LOCK_SCHEMA_VERSION
    pid: int
    host: str
    started_at: datetime

    def is_alive(self) -> bool:
        """Whether the holder process still runs (only answerable on the same host)."""
        if self.host != socket.gethostname():
            return True  # cannot tell from here: assume it does
        return _pid_alive(self.pid)


class SessionLock:
    """The writer lock of one session. Use as a context manager or ``acquire``/``release``."""

    def __init__(self, lock_file: Path, session_id: str | None = None, remote: str | None = None):
        """``remote``: the URL a ``--repo`` session pushes to, which its refusal's resume
        command names (the session's folder, hence its workdir, is the lock file's)."""
        self.lock_file = lock_file
        self.session_id = session_id or lock_file.parent.parent.name
        self.remote = remote
        self.previous_holder: LockHolder | None = None
        self._fd: int | None = None
        self._folder_fd: int | None = None
        self._borrowed = False  # from ``held_for_run``: its block gives the lock up

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> SessionLock:
        """Take the lock, or raise ``SessionLockedError`` naming the live holder."""
        if self._fd is not None:
            return self
        held = _held_for_run(self.lock_file)
        if held is not None:  # this process took it for this run: a second flock would fail
            self._fd, self._borrowed = held._fd, True
            self.previous_holder = held.previous_holder
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            # Never through a link (one a repository committed there: aca wrote its pid
            # wherever it pointed).
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise InputError(
                    f"{self.lock_file} is a symbolic link (to {os.readlink(self.lock_file)}), "
                    "where aca keeps the session's lock file: remove it, and aca makes the file."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_of_a_taken_lock(fd)
                os.close(fd)
                raise SessionLockedError(
                    self.session_id,
                    self.lock_file,
                    holder.pid if holder else None,
                    holder.host if holder else None,
                    self._resume(),
                ) from None
            # The releaser unlinks the file: if we locked an unlinked inode, try again on
            # the new file, or two processes would both believe they hold the lock.
            if _same_file(fd, self.lock_file):
                break
            os.close(fd)
        # And its folder: a lock file deleted by hand under a live run (its path is in the
        # refusal) let a second writer in, and the two corrupted the journal.
        folder = os.open(self.lock_file.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder)
            with contextlib.suppress(FileNotFoundError):
                if _same_file(fd, self.lock_file):
                    self.lock_file.unlink()  # ours, made just now: the holder's was deleted
            os.close(fd)
            raise SessionLockedError(
                self.session_id, self.lock_file, None, None, self._resume()
            ) from None
        self._folder_fd = folder
        self.previous_holder = _read_fd(fd)
        me = LockHolder(pid=os.getpid(), host=socket.gethostname(), started_at=_now())
        data = (json.dumps(me.model_dump(mode="json")) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _resume(self) -> str | None:
        """The session's ``aca resume``, as the reader runs it from where they are; ``None``
        for a lock file outside a session's folder (``<id>/meta/session.lock``)."""
        from aca_flows._words import resume_command
        from aca_flows.session.layout import SessionPaths

        paths = SessionPaths(self.lock_file.parent.parent)
        if paths.lock_file != self.lock_file or len(paths.root.parents) < 3:
            return None
        return resume_command(self.session_id, paths.workdir, self.remote)

    def release(self) -> None:
        """Give the lock up and remove the file. Safe to call twice."""
        if self._fd is None:
            return
        if self._borrowed:
            self._fd, self._borrowed = None, False
            return
        fd, self._fd = self._fd, None
        # Unlink while still locked: nobody can lock this inode and find it still named. Only
        # our own file: a session folder replaced from a remote has another's by now.
        with contextlib.suppress(FileNotFoundError):
            if _same_file(fd, self.lock_file):
                self.lock_file.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if self._folder_fd is not None:
            folder, self._folder_fd = self._folder_fd, None
            fcntl.flock(folder, fcntl.LOCK_UN)
            os.close(folder)

    def __enter__(self) -> SessionLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# The locks ``held_for_run`` holds now.
_HELD_FOR_RUN: list[SessionLock] = []


@contextlib.contextmanager
def held_for_run(
    lock_file: Path, session_id: str, remote: str | None = None
) -> Iterator[SessionLock]:
    """Hold the session's lock for the block, for a run this process starts in it: the run's
    own ``acquire`` of the same lock file borrows it. Raises ``SessionLockedError`` (naming the
    live holder, and the resume to run after, with ``remote``) at once if another process
    holds it."""
    lock = SessionLock(lock_file, session_id, remote).acquire()
    _HELD_FOR_RUN.append(lock)
    try:
        yield lock
    finally:
        _HELD_FOR_RUN.remove(lock)
        lock.release()


def _held_for_run(lock_file: Path) -> SessionLock | None:
    for lock in _HELD_FOR_RUN:
        if lock._fd is not None and _same_file(lock._fd, lock_file):
            return lock
    return None


def read_lock_holder(lock_file: Path) -> LockHolder | None:
    """The live holder named by ``lock_file``, or ``None`` if the session is not running.

    For displays (``aca sessions list``): it reads the file and checks the pid, and never
    takes the lock, so it cannot get in the way of a starting run.
    """
    try:
        text = lock_file.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    holder = _parse(text)
    if holder is None or not holder.is_alive():
        return None
    return holder


def _holder_of_a_taken_lock(fd: int) -> LockHolder | None:
    """Who holds the lock we could not take. Its taker writes itself in just after the flock:
    until then the file still names the one before (a crashed run, dead), so a dead or
    missing holder is read again for a moment before it is named."""
    deadline = time.monotonic() + _WRITE_IN_SECONDS
    holder = _read_fd(fd)
    while (holder is None or not holder.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_fd(fd)
    return holder


# How long a lock's new holder may take to write itself in after its flock.
_WRITE_IN_SECONDS = 1.0


def _read_fd(fd: int) -> LockHolder | None:
    size = os.fstat(fd).st_size
    return _parse(os.pread(fd, size, 0).decode("utf-8", errors="replace")) if size else None


def _parse(text: str) -> LockHolder | None:
    try:
        return LockHolder.model_validate_json(text)
    except ValidationError:
        return None  # empty while the holder writes it, or damaged: the flock still decides


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
