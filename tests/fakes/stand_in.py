"""A sleeping process that stands in for aca's server or warm runner in /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["stand_in"]


def stand_in(*names: str, **popen_options) -> subprocess.Popen:
    """A Python that sleeps for ten minutes, ``names`` at the end of its command line (what aca
    reads in ``/proc/<pid>/cmdline`` to tell its server or runner from another program);
    returned once it runs that command. Until its exec, ``/proc`` shows the test's own command
    line: a check made then took the stand-in for another program."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", *names], **popen_options
    )
    wanted = [os.fsencode(name) for name in names]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[-1 - len(names) : -1]
                == wanted
            ):
                return process
        except OSError:
            pass
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"the stand-in for {' '.join(names)} did not start within 30 s")
