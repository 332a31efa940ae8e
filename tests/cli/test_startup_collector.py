"""The collector at start-up (``aca_flows/_startup.py``): what the imports made is frozen once,
out of the way of every full collection of the run; what a run leaves behind is collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a process of its own: the freeze is the process's for good.
SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from aca_flows._startup import collect_as_usual, collect_less

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    thresholds = gc.get_threshold()
    collect_less()
    started = cycle()  # made during start-up, alive at its end
    collect_as_usual()
    print("thresholds back", gc.get_threshold() == thresholds)
    print("start-up frozen", gc.get_freeze_count() > 0)

    collect_less()  # a second run of the same process (the tests, an in-process CLI)
    run_left = cycle()
    collect_as_usual()
    gone = weakref.ref(run_left)
    del run_left
    gc.collect()
    print("a later run's garbage collected", gone() is None)
    """
)


def test_start_up_is_frozen_once_and_what_a_run_leaves_is_collected():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [
        "thresholds back True",
        "start-up frozen True",
        "a later run's garbage collected True",
    ]
