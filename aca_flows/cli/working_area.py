"""The working area of ``--repo URL``: where it is, cloned or fetched, and removed again when
the command that cloned it is refused before it makes a session there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["checkout_remote", "clone_removed_if_refused", "working_area_of"]


def working_area_of(url: str, workdir: Path) -> Path:
    """Where a run of ``--repo URL`` works, cloned or not: a dry run reaches no network and
    leaves no clone behind (an earlier clone there gives its aca.toml). A URL git cannot use
    is refused as a run refuses it."""
    from aca_flows.workspace.remote import working_area

    return working_area(url, None if str(workdir) == "." else workdir)


def checkout_remote(url: str, workdir: Path, session_id: str | None = None) -> Path:
    """The working area of ``--repo URL``, cloned or fetched (with the session's branch and
    record when the remote has them); ``workdir`` ``.`` means the default area."""
    from aca_flows.flows.remote_sync import open_remote

    return open_remote(url, str(workdir), session_id).workdir


@contextmanager
def clone_removed_if_refused(url: str | None, workdir: Path) -> Iterator[None]:
    """A working area of ``--repo URL`` this command clones is removed again if the command
    is refused before it makes a session there (bad input, a provider that cannot work, a
    session the remote does not hold), unless another run has checked it out meanwhile: a
    refused run leaves nothing behind."""
    try:
        yield
    except BaseException:
        if url:
            from aca_flows.workspace.remote import RemoteRepository

            RemoteRepository(url, working_area_of(url, workdir)).remove_unclaimed()
        raise
