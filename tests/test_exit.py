"""``exit_process``: the process ends with the code given, after what ``sys.exit`` would have
done that anyone can see: threads finished, exit handlers run, output and logs flushed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_exit_process_keeps_what_sys_exit_delivers(tmp_path):
    script = textwrap.dedent(
        f"""
        import atexit, logging, threading, time
        from pathlib import Path
        from aca_flows._exit import exit_process

        out = Path({str(tmp_path)!r})
        def late_writer():
            time.sleep(0.3)
            (out / "thread.txt").write_text("done")
        threading.Thread(target=late_writer).start()
        atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
        logger = logging.getLogger("t")
        logger.addHandler(logging.FileHandler(out / "log.txt"))
        logger.warning("last words")
        print("buffered, no newline", end="")
        exit_process(3)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread.txt").read_text() == "done"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "last words\n"


def test_exit_process_ends_with_idle_pool_threads_waiting_for_work():
    """aca's blocking work runs in a thread pool whose idle workers wait for more: the
    process must still end (they are stopped as at the interpreter's own exit)."""
    script = textwrap.dedent(
        """
        import asyncio
        from aca_flows._exit import exit_process
        from aca_flows._threads import in_thread

        print(asyncio.run(in_thread(sum, [1, 2])), end="")
        exit_process(4)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (4, "3"), done.stderr


def test_a_command_with_stdout_closed_keeps_its_exit_code():
    """``aca ... >&-``: Python starts with ``sys.stdout`` None; the code is the command's, with
    no traceback from flushing it."""
    done = subprocess.run(
        [sys.executable, "-c", "from aca_flows._exit import exit_process; exit_process(3)"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
