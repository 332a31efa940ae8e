"""A verify command whose exit status cannot depend on the work is told apart, conservatively."""

from __future__ import annotations

import pytest

from aca_flows.plan.vacuous_check import checks_nothing, edited_checks, pass_notes, proved_nothing


@pytest.mark.parametrize(
    "command",
    [
        "true",
        ":",
        "exit 0",
        "echo ok",
        "X=1 true > out.txt",
        "pytest -q | tail -5",  # sh: a pipeline's status is its last command's
        "pytest -q 2>&1 | tail -n 20",
        "pytest; echo done",  # a list's status is its last part's
        "pytest -q\ntrue",
        "pytest || true",
        "grep -c x f | wc -l",
        "# python3 -m pytest -q",  # commented out: sh runs nothing
        "  # pytest\n# ruff check",
    ],
)
def test_a_command_that_passes_whatever_the_work_holds_checks_nothing(command):
    assert checks_nothing(command)


@pytest.mark.parametrize(
    "command",
    [
        "",
        "pytest -q",
        "test -f README",
        "pytest && echo ok",
        "true && pytest",
        "false || pytest",
        "pytest | grep passed",
        "exit 1",
        "exit",  # the status of what ran before it
        "cat x",  # fails when x is missing
        "# run the tests\npytest -q",  # a comment line, then the check
        "#!/bin/sh\npytest -q",
        "(true)",  # not understood: never called vacuous
        "! false",
        "echo $(pytest)",
        "if true; then false; fi",
        "echo 'unbalanced",
    ],
)
def test_a_command_that_may_fail_is_a_check(command):
    assert not checks_nothing(command)


def test_only_a_pass_of_a_check_that_checks_nothing_proved_nothing():
    assert proved_nothing(True, "pytest -q | tail -5")
    assert not proved_nothing(False, "true")  # it failed: the report shows the failure
    assert not proved_nothing(None, "true")  # not run
    assert not proved_nothing(True, "pytest -q")


@pytest.mark.parametrize(
    ("command", "edited"),
    [
        ("sh check.sh", ["check.sh"]),
        ("./check.sh && pytest -q", ["check.sh"]),
        ("python3 -m pytest -q tests/test_api.py", ["tests/test_api.py"]),
        ("pytest tests/", ["tests/test_api.py"]),
        ("uv run pytest tests/test_api.py", ["tests/test_api.py"]),
        ("cd sub && ./check.sh", ["sub/check.sh"]),
        ("make test", ["Makefile"]),
        ("make -C sub test", ["sub/Makefile"]),
        ("python3 src/app.py --self-test", ["src/app.py"]),
        ("pytest -q", []),  # it runs the tests it finds, not a file the change names
        ("test -f src/app.py && grep -q x check.sh", []),  # looked at, not run: the subject
        # The subject of the check, not the check: syntax checks, type checks, coverage.
        ("bash -n check.sh", []),
        ("node --check src/app.py", []),
        ("python -m py_compile src/app.py", []),
        ("python -m mypy src && python -m pytest -q", []),
        ("pytest --cov src -q", []),
        ("python -m pytest -q", []),  # a python/ folder is no script it runs
        ("sh 'check.sh", []),  # unbalanced: the shell fails it
    ],
)
def test_a_check_that_runs_a_file_the_change_edits_is_named(command, edited):
    files = [
        "check.sh",
        "tests/test_api.py",
        "src/app.py",
        "Makefile",
        "sub/check.sh",
        "sub/Makefile",
        "python/x.py",
    ]
    assert edited_checks(command, files) == edited
    notes = pass_notes(True, command, files)
    assert bool(edited) == any("edits what it runs" in n for n in notes)
    assert pass_notes(False, command, files) == []  # a failed check is no pass to qualify
