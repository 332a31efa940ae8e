"""The ``claude-code`` provider (the default): a whole Claude Code agent run per call, through
``claude-agent-sdk``.

Unlike the API providers, one ``complete`` call lets Claude Code work until it is done: it
reads, edits and runs things in ``cwd`` itself, and the response is its final answer (no tool
calls to execute). What a caller may rely on:

- the binary is ``ACA_CLAUDE_CLI``, else ``[claude_code] cli_path``, else ``claude`` on PATH,
  else the one bundled with claude-agent-sdk (``find_claude_cli``);
- ``request.options`` understood: ``cwd`` (the task's worktree), ``resume`` (a previous Claude
  session id, for context continuity), ``max_budget_usd``, ``max_turns``, ``allowed_tools``
  (also the only tools Claude Code offers, unless MCP tools may be used:
  ``claude_code_tools.offered_tools``), ``permission_mode``, ``append_system_prompt``, ``env``
  (extra variables for the CLI), ``protected_paths`` (never writable by Claude Code's sandboxed
  Bash), ``network`` (its sandboxed Bash may use the network; default ``[sandbox] network``),
  ``bin_folders`` (first on the PATH of its commands),
  ``resumable`` (``False``: a one-shot call, whose transcript Claude Code does not keep);
- unless ``[sandbox] mode = "off"``: Claude Code's own sandbox on with no unsandboxed escape,
  only the environment claude needs, aca's deny list as ``Bash(...)`` rules, no project
  settings (``claude_code_sandbox``: ``claude_sandbox_settings``, ``claude_environment``);
- Claude Code's non-essential traffic, git instructions and auto memory are off
  (``claude_code_sandbox.QUIET_ENV``: no session-title model call, no connectivity check,
  telemetry or update check; no commit instructions nor git-status snapshot; no memory folder
  shared across tasks) unless the environment sets the variable;
  MCP servers from the user's Claude Code configuration start only when ``allowed_tools``
  names an MCP tool or permissions are bypassed (``claude_code_tools.mcp_tools_allowed``):
  each is a process started with every run, before its first request;
- sandboxed, each run gets a private scratch folder (``claude_code_sandbox.Scratch``, 0700)
  as its ``TMPDIR`` and a working directory besides ``cwd`` (Claude Code refuses other paths
  outside the worktree, ``/tmp`` too), and its commands a ``/tmp`` of their own
  (``<scratch>.tmp``: ``claude_code_sandbox.private_tmp``), both removed when the run ends (by
  a later run, when it was killed outright); calls it refused for reaching outside are counted
  in one last ``system`` event and at the end of a run's error
  (``claude_code_results.OutsideRefusals``);
- claude processes start in turn, at most one per core at a time, each until its first
  message (``claude_code_starts.starting``);
- ``request.system`` is appended to Claude Code's own system prompt, never replaces it;
  ``request.tools`` are not used: Claude Code works with its own tools (``allowed_tools``);
- ``response_schema`` is passed as Claude Code's JSON schema option (``--json-schema``); the
  response's ``text`` is then the structured output as JSON;
- every stream message is handed to ``on_event`` as it arrives: ``system``, ``assistant_text``,
  ``tool_use``, ``tool_result`` and finally ``result``;
- the response carries the Claude session id (pass it back as ``resume``), and the run's own
  usage and cost as Claude Code reported them: a resumed session's result sums the whole
  session, so a run is billed what it added (``claude_code_results.SessionSpend``);
- a provider error is never work: every error result of the run is a classified error with the
  fix in its message (``claude_code_results.result_error``): not logged in, a rejected key, a
  refusal, the turn or budget limit, output cut off are permanent; an API failure is mapped by
  its status; a dropped connection or a failure during execution is transient. So is an empty
  answer from a run that used no tool, and an error result nothing recognises (its message
  quotes Claude Code and points at ``aca providers check claude-code``). A CLI crash is
  transient; a missing binary is permanent. The error carries what the run cost (``usage``,
  ``cost_usd``), a run that ended without a result (killed, interrupted) what its stream
  showed it paid for (``claude_code_results.StreamedSpend``); a transient one, the request
  its retry sends: the run's session resumed, told to go on
  (``claude_code_results.continued``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aca_flows._search_path import absolute_folders
from aca_flows.errors import PermanentProviderError, ProviderError, TransientProviderError
from aca_flows.providers.base import (
    EventCallback,
    Message,
    ProviderEvent,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from aca_flows.providers.claude_code_results import (
    OutsideRefusals,
    SessionSpend,
    StreamedSpend,
    claude_rates,
    continued,
    events_of,
    priced_as_claude,
    result_error,
    session_of,
)
from aca_flows.providers.claude_code_sandbox import (
    PRIVATE_TMP,
    Scratch,
    bwrap_with_homes_read_only,
    claude_environment,
    claude_sandbox_settings,
    dying_with_aca,
    npm_root_answered,
    private_tmp,
    private_tmp_of,
    quiet_environment,
)
from aca_flows.providers.claude_code_starts import starting
from aca_flows.providers.claude_code_tools import (
    confined_settings,
    confined_tools,
    denied_tools,
    mcp_tools_allowed,
    offered_tools,
)
from aca_flows.providers.failures import error_for_status, error_from_exception
from aca_flows.providers.pricing import cost_usd, price_for
from aca_flows.session.redact import redact_text
from aca_flows.settings import ClaudeCodeSection, ModelPrice, ProviderSection, SandboxSection

__all__ = [
    "ClaudeCodeProvider",
    "bundled_claude_cli",
    "find_claude_cli",
    "render_prompt",
]


class _FailureReportedByAca(logging.Filter):
    """The SDK logs a claude process that failed ("Fatal error in message reader ... Check
    stderr output for details") on the terminal; aca reports that failure itself, with
    claude's stderr. The SDK's other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Fatal error in message reader")


logging.getLogger("claude_agent_sdk._internal.query").addFilter(_FailureReportedByAca())

# The last lines of claude's stderr kept for the reason of a failed process.
STDERR_KEPT = 20


def bundled_claude_cli() -> Path | None:
    """The ``claude`` binary shipped inside claude-agent-sdk, found without importing it."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "_bundled" / "claude"
        if candidate.is_file():
            return candidate
    return None


def find_claude_cli(
    configured: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, str]:
    """The binary to run and where it came from (``ACA_CLAUDE_CLI``, ``config``, ``PATH``,
    ``bundled``); ``(None, reason)`` when there is none. A path set explicitly is returned
    even when it does not exist, so using it fails loudly instead of falling back. ``PATH`` is
    searched in its absolute folders only (``absolute_folders``)."""
    env = os.environ if environ is None else environ
    for value, source in ((env.get("ACA_CLAUDE_CLI"), "ACA_CLAUDE_CLI"), (configured, "config")):
        if value:
            # Made absolute here: claude starts in the task's worktree, where a relative
            # path would name the agent's file.
            return Path(value).expanduser().absolute(), source
    on_path = shutil.which("claude", path=absolute_folders(env.get("PATH", os.defpath)))
    if on_path:
        return Path(on_path), "PATH"
    bundled = bundled_claude_cli()
    if bundled is not None:
        return bundled, "bundled"
    return None, "no claude binary on PATH and none bundled with claude-agent-sdk"


def render_prompt(messages: list[Message], resuming: bool) -> str:
    """The prompt for one run. Resuming, Claude Code already has the history: send the last
    user turn. Otherwise earlier turns are written out before it."""
    user_turns = [m for m in messages if m.role == "user"]
    last = user_turns[-1].text if user_turns else ""
    if resuming or len(messages) <= 1:
        return last
    earlier = []
    for message in messages[:-1]:
        results = "".join(f"\n[tool result] {r.content}" for r in message.tool_results)
        earlier.append(f"{message.role}: {message.text}{results}")
    history = "\n\n".join(earlier)
    return f"Conversation so far:\n\n{history}\n\nNow:\n{last}"


class ClaudeCodeProvider:
    """Claude Code driven through claude-agent-sdk."""

    name = "claude-code"

    def __init__(
        self,
        *,
        cli_path: str | Path | None = None,
        model: str | None = None,
        permission_mode: str = "acceptEdits",
        allowed_tools: list[str] | None = None,
        max_turns: int = 50,
        max_budget_usd: float | None = None,
        env: Mapping[str, str] | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        sandbox: SandboxSection | None = None,
        deny_commands: list[str] | None = None,
    ):
        self.cli_path = Path(cli_path) if cli_path else None
        self.model = model
        self.permission_mode = permission_mode
        self.allowed_tools = list(
            allowed_tools or ["Read", "Write", "Edit", "Glob", "Grep", "Bash"]
        )
        self.max_turns = max_turns
        self.max_budget_usd = max_budget_usd
        self.env = dict(env or {})
        self.prices = dict(prices or {})
        self.sandbox = sandbox or SandboxSection()
        self.deny_commands = list(deny_commands or [])
        # Each Claude session's spend as its last result said: a resumed run's result reports
        # the whole session's, and is billed only what it added (``SessionSpend``).
        self._session_spend: dict[str, SessionSpend] = {}
        # What runs of a session that ended without a result were billed from their stream:
        # Claude Code may have kept it in the session's spend, or not (``_paid``).
        self._unsettled: dict[str, SessionSpend] = {}
        # What Claude Code charged per token for each model it reported (``claude_rates``).
        self._claude_rates: dict[str, float] = {}
        if self.sandbox.mode != "off":  # npm's answer, read off the first call's path (once)
            threading.Thread(target=npm_root_answered, args=(dict(os.environ),)).start()

    @classmethod
    def from_config(
        cls,
        claude: ClaudeCodeSection,
        section: ProviderSection,
        environ: Mapping[str, str] | None = None,
        sandbox: SandboxSection | None = None,
        deny_commands: list[str] | None = None,
    ) -> ClaudeCodeProvider:
        cli, _ = find_claude_cli(claude.cli_path, environ)
        # A call of Claude Code is a whole run of many requests: a timeout set for the
        # provider bounds each of them, as it bounds an API provider's call.
        env = {}
        if "timeout_seconds" in section.model_fields_set:
            env["API_TIMEOUT_MS"] = str(round(section.timeout_seconds * 1000))
        return cls(
            cli_path=cli,
            env=env,
            model=section.model,
            permission_mode=claude.permission_mode,
            allowed_tools=claude.allowed_tools,
            max_turns=claude.max_turns,
            max_budget_usd=claude.max_budget_usd_per_task,
            prices=section.prices,
            sandbox=sandbox,
            deny_commands=deny_commands,
        )

    def build_options(self, request: ProviderRequest, scratch: str | None = None) -> Any:
        """The ``ClaudeAgentOptions`` for ``request``; ``scratch``, a private folder for the
        run's temporary files, is its ``TMPDIR`` and a working directory besides ``cwd``."""
        from claude_agent_sdk import ClaudeAgentOptions  # lazy: keeps `aca --help` fast

        opts = request.options
        append = "\n\n".join(
            part for part in (request.system, opts.get("append_system_prompt")) if part
        )
        system_prompt: dict[str, Any] = {"type": "preset", "preset": "claude_code"}
        if append:
            system_prompt["append"] = append
        # Sandboxed unless [sandbox] mode = "off": Bash confined by Claude Code's own
        # bubblewrap sandbox, aca's deny list as permission rules, only the environment claude
        # needs, and no project settings (an agent's committed .claude/settings.json could
        # hold hooks, which run outside the sandbox).
        sandboxed = self.sandbox.mode != "off"
        # Claude Code keeps its default mode while it scrubs its commands' environment, as the
        # sandbox has it do, and warns at every start when told another: allowed_tools alone
        # decides there (readiness refuses bypassPermissions with the sandbox on).
        permission_mode = opts.get("permission_mode", self.permission_mode)
        if sandboxed:
            permission_mode = "default"
        allowed_tools = list(opts.get("allowed_tools", self.allowed_tools))
        tools = offered_tools(allowed_tools, permission_mode)
        # Its Bash sandbox confines commands: a call offering no Bash (a parse, a check) runs
        # none, and would only leave its empty placeholders (package.json, .env, ...) in cwd.
        bash_sandbox = sandboxed and (tools is None or "Bash" in tools)
        env = {**self.env, **opts.get("env", {})}
        protected = list(opts.get("protected_paths", ()))
        if sandboxed:
            env = {**claude_environment(os.environ, self.sandbox.env, scrub=bash_sandbox), **env}
            # claude runs these outside its sandbox: no command inside may change them.
            for shims in (npm_root_answered(env), bash_sandbox and bwrap_with_homes_read_only(env)):
                if shims:
                    env["PATH"] = os.pathsep.join(p for p in (shims, env.get("PATH")) if p)
                    protected.append(shims)
            # Programs the sandbox gives its commands first (a git that reads a copy of the
            # repository's config without credentials: sandbox/git_shadow.py).
            first = opts.get("bin_folders", ())
            env["PATH"] = os.pathsep.join(p for p in (*first, env.get("PATH")) if p)
        # A background shell of its Bash kept claude running after its answer (aca waited
        # for good), then made a turn of its own whose answer replaced the agent's.
        env = {**quiet_environment(os.environ), **env, "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS": "1"}
        if scratch:
            env["TMPDIR"] = scratch
            if bash_sandbox:  # the /tmp of its commands (``bwrap_with_homes_read_only``)
                env[PRIVATE_TMP] = private_tmp_of(scratch)
        # Its file tools too, which run in the claude process, outside its Bash sandbox: they
        # write and read the worktree only.
        approved = allowed_tools
        if sandboxed and opts.get("cwd"):
            folders = [str(Path(opts["cwd"]).resolve()), *([scratch] if scratch else [])]
            approved = confined_tools(allowed_tools, folders)
        return ClaudeAgentOptions(
            cwd=opts.get("cwd"),
            add_dirs=[scratch] if scratch else [],
            resume=opts.get("resume"),
            model=request.model or self.model,
            permission_mode=permission_mode,
            tools=tools,
            allowed_tools=approved,
            strict_mcp_config=not mcp_tools_allowed(allowed_tools, permission_mode),
            max_turns=opts.get("max_turns", self.max_turns),
            max_budget_usd=opts.get("max_budget_usd", self.max_budget_usd),
            system_prompt=system_prompt,
            cli_path=self.cli_path and dying_with_aca(self.cli_path),
            env=env,
            sandbox=(
                claude_sandbox_settings(
                    opts.get("network", self.sandbox.network),
                    opts.get("cwd"),
                    protected,
                    unreadable=opts.get("unreadable_paths", ()),
                    readable=opts.get("readable_paths", ()),
                )
                if bash_sandbox
                else None
            ),
            disallowed_tools=denied_tools(allowed_tools, permission_mode, self.deny_commands),
            setting_sources=["user"] if sandboxed else None,
            settings=confined_settings() if sandboxed else None,
            # A call nobody resumes (a parse, a check) keeps no transcript in ~/.claude/projects:
            # it would hold the task file and context there, unredacted.
            extra_args={} if opts.get("resumable", True) else {"no-session-persistence": None},
            output_format=(
                {"type": "json_schema", "schema": request.response_schema}
                if request.response_schema is not None
                else None
            ),
        )

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        # Sandboxed, Claude Code refuses paths outside its working directories, the host's
        # /tmp too: the run gets a private folder for its temporary files (``TMPDIR``).
        scratch = Scratch() if self.sandbox.mode != "off" else None
        if scratch is not None:
            # Its commands' /tmp: the host's is shared with every process (other runs too).
            private_tmp(scratch.path)
        refusals = OutsideRefusals(on_event)
        try:
            return await self._run(request, refusals.heard, scratch and scratch.path)
        except ProviderError as error:
            if said := refusals.said():
                error.args = (f"{error} {said}",)
            raise
        finally:
            refusals.report()
            if scratch is not None:
                scratch.remove()

    async def _run(
        self, request: ProviderRequest, on_event: EventCallback, scratch: str | None
    ) -> ProviderResponse:
        if self.cli_path is not None and not self.cli_path.is_file():
            raise PermanentProviderError(
                f"claude-code: the claude binary {self.cli_path} does not exist. Set "
                "ACA_CLAUDE_CLI to a claude binary, install Claude Code, or unset it to use "
                "the one bundled with claude-agent-sdk.",
                provider=self.name,
            )
        result = None
        texts: list[str] = []
        stderr: list[str] = []
        tools_used = 0
        streamed = StreamedSpend()
        resumed = request.options.get("resume")
        session = None  # as this run's stream names it: the run started, its prompt was read
        try:
            from claude_agent_sdk import query

            options = self.build_options(request, scratch)
            options.stderr = functools.partial(_heard, stderr, on_event)
            # The API's stream events too: the final output count of each turn, for the bill of
            # a run that ends without a result (``StreamedSpend``).
            options.include_partial_messages = True
            prompt = render_prompt(request.messages, resuming=bool(options.resume))
            async with starting() as started:
                async for message in query(prompt=prompt, options=options):
                    started()
                    if streamed.heard(message):
                        on_event(self._spent_so_far(request, streamed))
                    session = session_of(message) or session
                    for event in events_of(message):
                        if event.kind == "assistant_text":
                            texts.append(event.data["text"])
                        tools_used += event.kind == "tool_use"
                        on_event(event)
                    if type(message).__name__ == "ResultMessage":
                        result = message
        except (PermanentProviderError, TransientProviderError):
            raise
        except asyncio.CancelledError as cancel:
            # The run's stop cancelled the call (its grace period over, a second Ctrl-C): the
            # turns the run was answered were paid for; the cancel carries them to the bill
            # (``SpendGuard``).
            cancel.billed = self._streamed_bill(request, streamed)
            raise
        except Exception as exc:
            if result is not None and type(exc).__name__ in ("ResultError", "ProcessError"):
                # The CLI exits non-zero after an error result, which says why; after a
                # success (killed as it shut down), the result is the run's answer all the
                # same: taken as a failure, the run was paid again.
                if type(exc).__name__ == "ProcessError":
                    said = redact_text(str(exc))
                    _heard(stderr, on_event, f"claude exited after its result: {said}")
                return self._response(request, result, texts, tools_used, resumed)
            error = self._error(exc, stderr)
            raise self._unfinished(error, request, streamed, session) from None
        if result is None:
            error = TransientProviderError(
                "claude-code: the run ended without a result. Retry later.", provider=self.name
            )
            raise self._unfinished(error, request, streamed, session)
        return self._response(request, result, texts, tools_used, resumed)

    def _unfinished(
        self,
        error: Exception,
        request: ProviderRequest,
        streamed: StreamedSpend,
        session: str | None,
    ):
        """``error`` of a run that ended without a result (its process killed, a Ctrl-C),
        carrying the turns its stream showed: they were paid for (``StreamedSpend``)."""
        if isinstance(error, (PermanentProviderError, TransientProviderError)):
            error.billed = self._streamed_bill(request, streamed)
        return continued(error, request, session)

    def _spent_so_far(self, request: ProviderRequest, streamed: StreamedSpend) -> ProviderEvent:
        """The turns answered so far: journalled as they end, so a run killed outright
        (SIGKILL, out of memory) leaves them on the bill."""
        model = request.model or self.model or ""
        spent = streamed.spend(model, self.prices, self._claude_rates)
        data = {"model": model or next(iter(spent.by_model), ""), "cost_usd": spent.cost_usd}
        return ProviderEvent(kind="spend", data={**data, "usage": spent.usage.model_dump()})

    def _streamed_bill(
        self, request: ProviderRequest, streamed: StreamedSpend
    ) -> ProviderResponse | None:
        """The bill of a run that ended without a result: the turns its stream showed."""
        if not streamed.turns:
            return None
        model = request.model or self.model or ""
        spent = streamed.spend(model, self.prices, self._claude_rates)
        resumed = request.options.get("resume")
        if resumed:
            self._unsettled[resumed] = self._unsettled.get(resumed, SessionSpend()).plus(spent)
        return ProviderResponse(
            text="",
            stop_reason="error",
            usage=spent.usage,
            cost_usd=spent.cost_usd,
            model=model or next(iter(spent.by_model), ""),
            provider=self.name,
            session_id=resumed,
        )

    def _error(self, exc: Exception, stderr: list[str]):
        kind = type(exc).__name__
        if kind == "CLINotFoundError":
            return PermanentProviderError(
                f"claude-code: the claude binary was not found ({exc}). Install Claude Code or "
                "set ACA_CLAUDE_CLI to its path.",
                provider=self.name,
            )
        status = getattr(exc, "api_error_status", None)
        if isinstance(status, int):
            detail = getattr(exc, "result", None) or str(exc)
            return error_for_status(self.name, status, detail, key_hint="ANTHROPIC_API_KEY")
        if kind in ("ProcessError", "CLIConnectionError", "ResultError"):
            # The SDK's message points at stderr, which aca reads instead of the terminal.
            # Redacted before they are cut short, when a key cut in two is no longer found.
            said = redact_text(str(exc).replace("Check stderr output for details", "").strip())
            heard = redact_text(" | ".join(line.strip() for line in stderr[-5:] if line.strip()))
            return TransientProviderError(
                f"claude-code: the claude process failed ({kind}: {said[:300]}"
                f"{f'; it said: {heard[-500:]}' if heard else ''}). "
                "Retry later; if it persists run `aca providers check claude-code`.",
                provider=self.name,
            )
        return error_from_exception(self.name, exc)

    def _response(
        self,
        request: ProviderRequest,
        result: Any,
        texts: list[str],
        tools_used: int,
        resumed: str | None,
    ) -> ProviderResponse:
        response = self._paid(request, result, texts, resumed)
        error = result_error(result, response.text, tools_used)
        if error is not None:
            # A run that fails may have paid for turns first: the error carries them.
            error.billed = response
            raise continued(error, request, result.session_id)
        return response

    def _paid(
        self, request: ProviderRequest, result: Any, texts: list[str], resumed: str | None
    ) -> ProviderResponse:
        """The response of a finished run: its answer, its own usage and cost."""
        spent = SessionSpend.of(result)
        self._claude_rates.update(claude_rates(result))
        before = self._session_spend.get(resumed) if resumed else SessionSpend()
        if result.session_id:
            self._session_spend[result.session_id] = spent
        own = spent.since(before) if before is not None else None
        billed = self._unsettled.pop(resumed, None) if resumed else None
        if own is not None and billed is not None:
            # Runs of this session since ``before`` ended without a result and were billed from
            # their stream. A claude that had time to save the session's spend (SIGTERM, not
            # SIGKILL) counts them in it: then ``own`` holds more than this run's own ``usage``,
            # and what was billed already comes off (what is left of those runs, output their
            # stream did not show, is billed now).
            run_input = (result.usage or {}).get("input_tokens") or 0
            if own.usage.input_tokens - run_input >= billed.usage.input_tokens:
                own = own.since(billed)
        if own is not None and own.by_model:
            # The run's own: Claude Code's session figures minus the session's before the run
            # (a resumed session's result sums every run of it). Per model, so an error result
            # whose ``usage`` holds part of the run (a budget stop) is whole, too.
            usage = own.usage
            cost = own.cost_usd if result.total_cost_usd is not None else None
        else:
            # No per-model figures, or a session resumed that this provider never saw end:
            # ``usage`` is the run's own, its ``total_cost_usd`` may be the whole session's.
            raw = result.usage or {}
            usage = Usage(
                input_tokens=raw.get("input_tokens") or 0,
                output_tokens=raw.get("output_tokens") or 0,
                cache_read_tokens=raw.get("cache_read_input_tokens") or 0,
                cache_write_tokens=raw.get("cache_creation_input_tokens") or 0,
            )
            cost = None if resumed else result.total_cost_usd
        model = request.model or self.model or next(iter(result.model_usage or {}), "")
        # A configured price wins (the contract: cost from the price table, overridable);
        # otherwise trust the cost Claude Code computed for itself.
        if price_for(model, self.prices, include_defaults=False) is not None:
            cost = cost_usd(model, usage, self.prices)
        elif cost is None:
            # Claude Code's cost is the whole session's: the run's own tokens at its prices,
            # else (no figure to price them by) that whole cost, the most the run can have
            # cost: a budget never counts paid turns $0.
            cost = priced_as_claude(model, usage, self.prices, self._claude_rates)
            if cost is None:
                cost = result.total_cost_usd or 0.0
        text = result.result if result.result is not None else (texts[-1] if texts else "")
        structured = getattr(result, "structured_output", None)
        if request.response_schema is not None and structured is not None:
            text = json.dumps(structured)
        return ProviderResponse(
            text=text,
            stop_reason="end_turn",
            usage=usage,
            cost_usd=cost,
            model=model,
            provider=self.name,
            session_id=result.session_id,
        )


def _heard(lines: list[str], on_event: EventCallback | None, line: str) -> None:
    """A line claude wrote to stderr: kept for a failure's reason and logged as a step of the
    task, not left on the terminal of the run (or of a worker)."""
    lines.append(line)
    del lines[:-STDERR_KEPT]
    if on_event is not None and line.strip():
        on_event(ProviderEvent(kind="stderr", data={"text": line.rstrip()}))
