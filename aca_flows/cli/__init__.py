"""The command line: ``main`` runs the typer app and turns errors into exit codes.

Exit codes: 0 all done; 1 some task failed; 2 bad input or usage; 3 stopped by a budget or
usage limit, or the plan rejected at approval (resumable); 4 every task done, but the push to
``--repo`` or the pull request failed (a resume delivers it); 130 interrupted (resumable). An
``AcaError`` is printed as one paragraph, never as a traceback; usage errors are typer's own
(exit 2). With ``--json``, an error is also a JSON object on stdout, ``{"error": ...,
"exit_code": ...}``: a script reading stdout gets an answer, not nothing.
"""

from __future__ import annotations

import contextlib
import sys

__all__ = ["interrupt_inside", "main", "print_json_error"]


def main(argv: list[str] | None = None) -> int:
    """Run ``aca`` with ``argv`` (default: the process's arguments) and return its exit code.

    Called without arguments (the console script), it exits the process with that code.
    """
    from aca_flows.errors import AcaError

    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    if argv is None:
        from aca_flows._startup import ended_runs_hold_their_signals, interrupts_from_the_start

        interrupts_from_the_start()
        _closed_streams_to_nowhere()
        _streams_that_take_any_text()
        ended_runs_hold_their_signals()
    try:
        code = None if argv is not None else _run_warm(sys.argv[1:])
        if code is None:
            from aca_flows.cli.app import app

            if as_json:
                code = _run_for_json(app, argv)
            else:
                app(args=argv, prog_name="aca", standalone_mode=True)
                code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130 and interrupt_inside(exc.__context__):
            print("interrupted", file=sys.stderr)  # typer ends a Ctrl-C with 130, silently
    except AcaError as exc:
        from aca_flows._words import shown
        from aca_flows.session.redact import redact_text

        message = redact_text(str(exc))
        # A task file's text in it (an id, a title) prints as escapes, never acts on the
        # terminal, as in the tree; --json has it exact.
        print(f"error: {shown(message)}", file=sys.stderr)
        code = exc.exit_code
        if as_json:
            print_json_error(message, code)
    except (KeyboardInterrupt, Exception) as exc:
        if not interrupt_inside(exc):
            raise
        print("interrupted", file=sys.stderr)
        code = 130
        if as_json:
            print_json_error("interrupted", code)
    if argv is None:
        from aca_flows._exit import exit_process

        exit_process(code)  # without the interpreter's teardown: the prompt comes back sooner
    return code


def _streams_that_take_any_text() -> None:
    """A character the terminal's encoding lacks (an em dash in a title, on an ASCII or
    latin-1 locale) is written as its escape: the summary of a completed run raised, and the
    run exited 1 with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def _closed_streams_to_nowhere() -> None:
    """A standard stream the command was started without (``>&-``, ``2>&-``) reads or writes
    ``/dev/null``, as the user chose: Python gave it as ``None``, and the first write ended
    the run in a traceback (stdout) or without a word (stderr); the next file opened would
    have taken its number."""
    import os

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        opened = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
        if getattr(sys, name) is None:
            mode = "r" if fd == 0 else "w"
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _run_for_json(app, argv: list[str] | None) -> int:
    """The app run so that a usage error (a missing argument, a bad option value) reaches us:
    typer's standalone mode prints it and exits, leaving stdout empty."""
    import typer  # its own click: click's exception classes are not the ones raised

    try:
        result = app(args=argv, prog_name="aca", standalone_mode=False)
    except typer.TyperException as exc:  # click's ClickException, usage errors included
        exc.show()  # stderr, as without --json
        print_json_error(exc.format_message(), exc.exit_code)
        return exc.exit_code
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    # Not standalone, typer returns an Exit's code, or the command's own return value (None).
    return result if isinstance(result, int) else 0


def print_json_error(message: str, code: int) -> None:
    """An error as ``--json`` says it, on stdout: ``{"error": ..., "exit_code": ...}``."""
    import json

    print(json.dumps({"error": message, "exit_code": code}), flush=True)


def interrupt_inside(exc: BaseException | None) -> bool:
    """A Ctrl-C: a ``KeyboardInterrupt``, or one that landed in a library's callback while
    Prefect started (before the flow takes over the signals) and was re-raised as that
    library's error: pydantic-core keeps only ``KeyboardInterrupt`` in its message."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _run_warm(argv: list[str]) -> int | None:
    """The command run by the warm runner of ``aca server start``, when there is one to use."""
    if sys.platform != "linux":  # fork, /proc/self/fd and SO_PEERCRED
        return None
    from aca_flows.cli.warm_client import run_warm

    return run_warm(argv)
