"""Every error aca raises on purpose.

    AcaError                      root: anything the user can act on; the CLI prints it, exit 2
    ├── InputError                a file or option the user gave is unusable
    │   ├── TaskFileError         a task file or plan file cannot be read or parsed
    │   ├── PlanValidationError   a plan parsed but is inconsistent (carries every problem)
    │   └── TaskFileProblems      both: a task file's problems of every stage, listed together
    ├── ConfigError               a configuration file or ACA_* variable is wrong
    └── ProviderError             an LLM provider call failed; nothing else leaks from providers
        ├── TransientProviderError   worth retrying: 429, 5xx, 529, timeouts, dropped connections
        │   └── EmptyAnswerError     a paid answer holding nothing: retried a few times only
        └── PermanentProviderError   retrying cannot help: auth, bad request, unknown model
            └── ProviderCannotServe  no call of that provider can succeed until the user
                │                    acts: a run starts no more of its tasks
                ├── KeyRejected      it refused its key or login (401/403)
                ├── ModelRefused     the account may not use the model (403 naming it)
                └── CreditExhausted  the account's credit or spend limit is spent (402, ...)

A message names what was wrong and how to fix it, in one paragraph, without a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AcaError",
    "ConfigError",
    "CreditExhausted",
    "EmptyAnswerError",
    "InputError",
    "KeyRejected",
    "ModelRefused",
    "PermanentProviderError",
    "PlanValidationError",
    "ProviderCannotServe",
    "ProviderError",
    "TaskFileError",
    "TaskFileProblems",
    "TransientProviderError",
]


class AcaError(Exception):
    """Root of aca's errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class InputError(AcaError):
    """A file or option given by the user is unusable."""


class TaskFileError(InputError):
    """A task file or plan file cannot be read or parsed."""


class PlanValidationError(InputError):
    """A plan is inconsistent. ``problems`` lists every problem found, not just the first;
    ``fix_in`` names what the user edits to fix them."""

    def __init__(self, source: str, problems: list[str], fix_in: str = "the task file"):
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source}: the plan has {len(problems)} problem(s):\n{listed}\n"
            f"Fix these in {fix_in} and run again."
        )


class TaskFileProblems(TaskFileError, PlanValidationError):
    """A task file with several problems found at different stages (an unknown key, a missing
    referenced file, a dependency cycle), reported together as a compiler does, so one run
    shows them all. Caught as either of its parents."""


class ConfigError(AcaError):
    """A configuration file or ACA_* environment variable is wrong."""


class ProviderError(AcaError):
    """An LLM provider call failed; ``status_code`` and ``body`` are kept from a response.

    ``billed``: the ``ProviderResponse`` of a call that failed after it was paid for (a Claude
    Code run stopped at its budget or by an error mid-run); its usage and cost still go on
    the session's bill.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        body: str | None = None,
        billed: Any = None,
    ):
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.body = body
        self.billed = billed


class TransientProviderError(ProviderError):
    """Worth retrying later. ``retry_after`` is the server's requested wait in seconds, if any.
    ``retry_request``: what a retry sends in place of the failed call's request (a Claude Code
    run that may have done work goes on as its own session resumed); ``None``: the same."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.retry_request: Any = None


class EmptyAnswerError(TransientProviderError):
    """The model answered (HTTP 200, a paid call) with nothing: no text, no tool call. Worth
    a retry or two on the call, not more: each one is paid, and a new attempt of the task would
    send its first request again (``providers.retry``)."""


class PermanentProviderError(ProviderError):
    """Retrying cannot help: bad credentials, a bad request, an unknown model, a spend limit."""


class ProviderCannotServe(PermanentProviderError):
    """The provider cannot serve the run until the user acts: every call of it fails the same
    way, so a run starts no more of its tasks. ``what``: what happened, as a clause after the
    provider's name; ``fix``: what the user does, as a clause ("set a valid
    ANTHROPIC_API_KEY"); ``detail``: what the server said, if anything."""

    what = "cannot serve the run"

    def __init__(self, message: str, *, fix: str, detail: str = "", **kwargs):
        super().__init__(message, **kwargs)
        self.fix = fix
        self.detail = detail


class KeyRejected(ProviderCannotServe):
    """The provider refused its credentials (a 401/403, an expired login)."""

    what = "refused its credentials"


class ModelRefused(ProviderCannotServe):
    """The key works, but the account may not use the model ("Your organization does not have
    access to this model")."""

    what = "refused the model to this account"


class CreditExhausted(ProviderCannotServe):
    """The account's credit or spend limit is spent (a 402, OpenAI's ``insufficient_quota``,
    Anthropic's "credit balance is too low")."""

    what = "says the account's credit or spend limit is spent"
