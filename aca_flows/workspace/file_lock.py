"""An exclusive lock on a file, shared by threads and processes alike.

``fcntl.flock`` locks belong to an open file description, so two threads of one process that
each open the lock file exclude each other just as two processes do. That matters because
Prefect may run tasks in threads, in processes, or on several workers sharing one disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from aca_flows.errors import InputError

__all__ = ["FileLock"]


class FileLock:
    """``with FileLock(path): ...`` holds an exclusive lock on ``path`` (created if missing);
    ``FileLock(path, shared=True)`` a shared one: any number of holders at once, never while
    an exclusive one is held.

    Blocking; not re-entrant (a second ``with`` on the same path in the same thread deadlocks).
    An exclusive holder may remove the file (``merge.remove_idle_merge_folder``): whoever
    waited for it then locks the path's new file, so the lock still excludes.
    """

    def __init__(self, path: Path, *, shared: bool = False):
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Never through a link: one a repository commits in .aca made aca create a
                # file wherever it pointed.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except FileNotFoundError:  # its folder was removed meanwhile: make it again
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise InputError(
                    f"{self.path} is a symbolic link (to {os.readlink(self.path)}), where aca "
                    "keeps a lock file: remove it (if the repository commits it, remove it "
                    "from the repository), and aca makes the file."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
                if _still_at(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            # Its holder removed the file while this one waited: a lock on a file no one
            # else can open would exclude no one. Lock the file now at the path instead.
            os.close(fd)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _still_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
