"""Words as a reader sees them: counts ("1 task", "3 tasks", never "1 tasks"), costs
("$0.0123"), a message on one line, others' text safe to print, and the ``--workdir`` (or
``--repo``) a command printed for the reader needs."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

__all__ = [
    "counted",
    "format_cost",
    "one_line",
    "quoted_clause",
    "resume_command",
    "shown",
    "unpriced",
    "workdir_option",
]


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun`` (singular), with an "s" unless the count is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def listed(items: list[str], most: int, separator: str = ", ") -> str:
    """The first ``most`` of ``items``, and how many more: "a, b, c and 2 more"."""
    more = len(items) - most
    return separator.join(items[:most]) + (f" and {more} more" if more > 0 else "")


def exact_usd(usd: float) -> str:
    """USD to the micro-dollar, for a bound the reader types back (``--budget-usd N`` above
    it): four decimals showed $0.000315 as $0.0003, and N = 0.00031 was then refused."""
    return f"{round(usd, 6):.6f}".rstrip("0").rstrip(".")


def format_cost(usd: float, unpriced_calls: int = 0) -> str:
    """USD as aca shows a spend to a reader: four decimals under a dollar, cents above; and
    the calls it leaves out (``unpriced``)."""
    return (f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}") + unpriced(unpriced_calls)


def unpriced(calls: int) -> str:
    """What to write after a spend that leaves out ``calls`` aca had no price for
    (`` + 2 unpriced calls``): a bare figure would say they cost nothing."""
    return f" + {counted(calls, 'unpriced call')}" if calls else ""


def workdir_option(workdir: str | Path, here: str | None = None) -> str:
    """`` --workdir DIR`` for a command printed for the reader to run, unless ``workdir`` is
    the folder the reader is in (``here``: by default the current folder; ``""`` for a reader
    who may be anywhere, the UI's): a run started by a worker (a deployment) works in a folder
    of its own, and `aca approve ID` run anywhere else would not find the session."""
    here = os.getcwd() if here is None else here
    if here and Path(workdir).resolve() == Path(here).resolve():
        return ""
    return f" --workdir {shlex.quote(str(Path(workdir).resolve()))}"


def resume_command(session_id: str, workdir: str | Path, remote: str | None = None) -> str:
    """``aca resume ID`` as the reader runs it, wherever they are. A session of a remote
    (``--repo``) lives in the remote's working area, not in the reader's folder: its resume
    takes ``--repo URL`` (without credentials), which finds that area (or fetches the session
    into a new one) and pushes what it lands; ``--workdir`` only for an area given by hand.
    Any other session takes the ``--workdir`` the current folder needs."""
    if remote is None:
        return f"aca resume {session_id}{workdir_option(workdir)}"
    from aca_flows.workspace.remote import public_url, working_area

    command = f"aca resume {session_id} --repo {shlex.quote(public_url(remote))}"
    if working_area(remote).resolve() != Path(workdir).resolve():
        command += f" --workdir {shlex.quote(str(Path(workdir).resolve()))}"
    return command


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined, each run of whitespace one space (a message
    that quotes a server's answer may hold newlines)."""
    return " ".join(text.split())


# What a terminal acts on rather than prints: C0 and C1 controls (ESC starts a sequence that
# can clear the screen and write over it) and the bidirectional overrides and isolates, which
# reorder what follows them ("Trojan Source").
_ACTED_ON = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """Text of a task file's, an agent's or a server's, safe to print: what a reviewer reads
    on the terminal is what runs. Each character a terminal would act on is written as its
    escape (``\\x1b``, ``\\u202e``), and a carriage return as a line break, so no line is
    written over. ``one_line(shown(text))`` for a table cell or a tree's line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ACTED_ON.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def quoted_clause(text: str, limit: int = 300) -> str:
    """Someone else's words quoted inside aca's sentence, which then goes on with its own
    period: on one line, at most ``limit`` characters, without a final ``.``, ``!`` or ``?``
    (a server's "check your billing details." made "details.. Add credit")."""
    return one_line(text)[:limit].rstrip(" .!?")
