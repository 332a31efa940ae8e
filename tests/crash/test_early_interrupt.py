"""A Ctrl-C that Python swallows on its way is not lost: the run still ends interrupted.

Python raises a signal's ``KeyboardInterrupt`` wherever the main thread is; in a finalizer
(GitPython's ``Repo.__del__``, run by the garbage collector while aca starts) it is printed as
"Exception ignored" and dropped, and an early Ctrl-C of a run on a running Prefect server was
ignored: the run went on, paid its provider and exited 0. Here a finalizer runs at a known
moment of a real ``aca run`` (real Prefect server, real git, the fake Anthropic server), and
the test sends SIGINT to the process group while the process is inside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.crash.conftest import ROOT, session_dirs, wait_for
from tests.fakes.coding_agent import coding_agent

WAIT = 90
NOT_STARTED = "aca: interrupted before the run started: no session was created, no task ran."
TASKS = "# Early\n\n- [ ] write a.txt {#a}\n- [ ] write b.txt {#b}\n"

# ``python -m aca_flows``, with one function (``WHERE``: module:name) wrapped so that, the
# first time it returns, an object dies whose finalizer writes ``MARKER`` and sleeps: the
# test's SIGINT lands inside the finalizer, as a Ctrl-C lands inside GitPython's.
BOOT = """
import importlib, os, runpy, sys, time

module_name, name = os.environ["WHERE"].split(":")
module = importlib.import_module(module_name)
wrapped = getattr(module, name)
fired = []


class Finalized:
    def __del__(self):
        with open(os.environ["MARKER"], "w") as marker:
            marker.write("in the finalizer")
        time.sleep(60)  # the Ctrl-C ends this sleep, and Python drops its KeyboardInterrupt


def wrapper(*args, **kwargs):
    result = wrapped(*args, **kwargs)
    if not fired:
        fired.append(True)
        Finalized()  # dropped at once: its finalizer runs now
    return result


setattr(module, name, wrapper)
sys.argv[0] = "aca"
runpy.run_module("aca_flows", run_name="__main__", alter_sys=True)
"""


def ctrl_c_in_a_finalizer(aca, where: str, *args: str, name: str) -> subprocess.CompletedProcess:
    """``aca ARGS`` with a Ctrl-C (SIGINT to its process group) while the process runs a
    finalizer just after ``where`` returned; its exit code, stdout and stderr."""
    marker = aca.logs / f"{name}.marker"
    out, err = aca.logs / f"{name}.out", aca.logs / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, *args, "--workdir", str(aca.repo)],
            env={**aca.env, "PYTHONPATH": str(ROOT), "WHERE": where, "MARKER": str(marker)},
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            wait_for(lambda: marker.exists() or proc.poll() is not None, WAIT, "the finalizer")
            assert proc.poll() is None, err.read_text()
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


def test_a_ctrl_c_swallowed_before_the_session_exists_ends_the_run_before_it_starts(
    aca, repo, llm, tmp_path
):
    llm.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text(TASKS)
    # aca looks at the repository before Prefect starts (the preflight).
    done = ctrl_c_in_a_finalizer(
        aca, "aca_flows.workspace.repository:require_repository", "run", str(tasks), name="run"
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == NOT_STARTED
    assert "Traceback" not in done.stderr + done.stdout
    assert llm.model_calls == []  # nothing paid
    assert session_dirs(repo) == []


def test_a_ctrl_c_swallowed_in_the_flow_or_a_resume_interrupts_and_resume_finishes(
    aca, repo, llm, tmp_path
):
    llm.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text(TASKS)
    # In the flow, once the session is made and before the flow's own signal handlers are in.
    done = ctrl_c_in_a_finalizer(
        aca, "aca_flows.flows.aca_run:open_run", "run", str(tasks), name="run"
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert llm.model_calls == []  # no task started after the Ctrl-C
    (session,) = session_dirs(repo)
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    assert f"aca resume {session.name}" in done.stdout + done.stderr

    # The resume, stopped the same way just after it found the session: nothing runs.
    done = ctrl_c_in_a_finalizer(
        aca,
        "aca_flows.session.checkpoints:resolve_resume_target",
        "resume",
        session.name,
        name="stopped-resume",
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"aca: interrupted before session {session.name} finished: "
        f"`aca resume {session.name} --workdir {aca.repo}` continues."
    )
    assert llm.model_calls == []

    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
