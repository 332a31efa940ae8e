"""``aca plan parse`` and ``--use-intelligent-parser`` on the command line (fake LLM server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aca_flows.cli import main
from aca_flows.plan.intelligent import parse_cache_dir
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer, llm_server  # noqa: F401  (fixture)
from tests.plan.test_intelligent import DEPENDENCIES, TEST6, dependencies_proposal, respond

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_parse_prints_the_tree_and_dumps_the_plan(llm_server, tmp_path, capsys):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    dumped = tmp_path / "plan.json"

    code, out, err = run(
        capsys, "plan", "parse", str(TEST6), "--provider", "anthropic", "-w", str(tmp_path),
        "--dump-plan", str(dumped),
    )  # fmt: skip

    assert code == 0, err
    header = "Release Pipeline with Dependencies  (20 tasks in 5 groups, strategy sequential)"
    assert out.startswith(header)
    assert "launch — 5. Launch  (after storage-layer, service-endpoints, web-dashboard, " in out
    assert "storage-layer-4 — Schedule nightly exports" in out
    assert "warning" not in err
    plan = json.loads(dumped.read_text())
    roots = {t["id"]: t["dependencies"] for t in plan["tasks"] if t["parent_id"] is None}
    assert roots == DEPENDENCIES
    assert list(parse_cache_dir().glob("*.json"))


def test_plan_parse_again_makes_no_call_and_prints_json(llm_server, tmp_path, capsys):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    args = ["plan", "parse", str(TEST6), "--provider", "anthropic", "-w", str(tmp_path)]
    assert run(capsys, *args)[0] == 0

    code, out, _ = run(capsys, *args, "--format", "json")

    assert code == 0
    assert json.loads(out)["name"] == "Release Pipeline with Dependencies"
    assert len(llm_server.anthropic.requests) == 1
    # The same Markdown in a file without a suffix (the original aca's `TODO`) is parsed too.
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    bare = tmp_path / "TODO"
    bare.write_text(TEST6.read_text())
    code, out, err = run(capsys, *args[:2], str(bare), *args[3:], "--format", "json")
    assert code == 0, err
    assert json.loads(out)["name"] == "Release Pipeline with Dependencies"


def test_design_usage_with_the_intelligent_parser_dry_run(llm_server, tmp_path, capsys):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    dumped = tmp_path / "plan.json"
    work = make_repo(tmp_path / "work")

    code, out, _ = run(
        capsys,
        "--task-file", str(TEST6), "--use-intelligent-parser", "--provider", "anthropic",
        "--context", "project context", "--append-system-prompt", "additional instructions",
        "--dry-run", "--dump-plan", str(dumped), "-w", str(work),
    )  # fmt: skip

    assert code == 0
    assert "Dry run: 20 tasks in 5 groups (20 pending); nothing was run." in out
    plan = json.loads(dumped.read_text())
    assert plan["context_hints"][-1] == "project context"
    assert plan["append_system_prompt"] == "additional instructions"
    sent = json.dumps(llm_server.anthropic.requests[0].json)
    assert "project context" in sent and "additional instructions" in sent
    # The reviewed plan runs like any other.
    code, out, _ = run(capsys, "--execution-plan", str(dumped), "-w", str(work), "--dry-run")
    assert code == 0 and "e2e-checks — 4. End-to-End Checks" in out


def test_a_parse_whose_provider_says_wait_is_retried_and_says_so(
    llm_server,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    # The retry's callback took one argument less than it is given: a 529 during the parse
    # of `aca run --use-intelligent-parser` ended in a TypeError traceback.
    monkeypatch.setenv("ACA_SESSION__CALL_RETRY_BACKOFF_SECONDS", "0")
    llm_server.anthropic.enqueue(status=529, error="Overloaded")
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    code, out, err = run(
        capsys, "run", str(TEST6), "--use-intelligent-parser", "--provider", "anthropic",
        "-w", str(make_repo(tmp_path / "work")), "--dry-run",
    )  # fmt: skip

    assert code == 0, err
    assert "Overloaded" in err and "(retry 1 of " in err and "Traceback" not in err
    assert "Dry run: 20 tasks in 5 groups" in out


def test_a_dry_run_that_parses_a_repo_s_task_file_keeps_the_parse_in_its_clone(
    llm_server,  # noqa: F811
    tmp_path,
    capsys,
):
    # A dry run with --repo clones nothing, but the parse is cached in the clone: a cache in
    # a folder of its own would make the run's clone refuse the folder as "not empty".
    remote = tmp_path / "app.git"
    source = make_repo(tmp_path / "src")
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    code, out, _ = run(
        capsys, "run", str(TEST6), "--use-intelligent-parser", "--provider", "anthropic",
        "--repo", str(remote), "--dry-run",
    )  # fmt: skip

    assert code == 0
    [area] = (Path.home() / ".aca" / "repos").glob("app-*")
    assert f"--repo {remote}: a run fetches it into {area}" in out
    assert (area / ".git").is_dir() and list(parse_cache_dir().glob("*.json"))


def test_a_cyclic_answer_exits_2_without_a_traceback(llm_server, tmp_path, capsys):  # noqa: F811
    cyclic = dependencies_proposal()
    cyclic["tasks"][0]["depends_on"] = ["launch"]
    for _ in range(3):
        llm_server.anthropic.enqueue(**respond(cyclic))

    code, out, err = run(
        capsys, "run", str(TEST6), "--use-intelligent-parser", "--provider", "anthropic",
        "--dry-run", "-w", str(tmp_path),
    )  # fmt: skip

    assert code == 2
    assert "dependency cycle: storage-layer -> launch -> storage-layer" in err
    assert "Traceback" not in err and out == ""
    assert not list(parse_cache_dir().glob("*.json"))


def test_a_parse_that_fails_names_what_its_calls_cost(llm_server, tmp_path, capsys):  # noqa: F811
    # No session exists to bill a failed parse to: the message is where its spend is told.
    cyclic = dependencies_proposal()
    cyclic["tasks"][0]["depends_on"] = ["launch"]
    for _ in range(3):
        llm_server.anthropic.enqueue(
            **respond(cyclic), usage={"input_tokens": 1000, "output_tokens": 100}
        )

    code, out, err = run(
        capsys, "run", str(TEST6), "--use-intelligent-parser", "--provider", "anthropic",
        "--model", "claude-sonnet-4-6", "--dry-run", "-w", str(tmp_path),
    )  # fmt: skip

    assert code == 2 and out == ""
    # $3 and $15 per million input and output tokens: 3 x (0.003 + 0.0015).
    assert "gave no usable plan after 3 attempt(s) (3 calls, $0.0135 spent)" in err
    assert "Traceback" not in err


def test_a_provider_error_after_paid_calls_names_what_they_cost(
    llm_server,  # noqa: F811
    tmp_path,
    capsys,
):
    cyclic = dependencies_proposal()
    cyclic["tasks"][0]["depends_on"] = ["launch"]
    llm_server.anthropic.enqueue(
        **respond(cyclic), usage={"input_tokens": 1000, "output_tokens": 100}
    )
    llm_server.anthropic.enqueue(status=400, error="prompt is too long")

    code, _, err = run(
        capsys, "plan", "parse", str(TEST6), "--provider", "anthropic",
        "--model", "claude-sonnet-4-6", "-w", str(tmp_path),
    )  # fmt: skip

    assert code == 2
    assert "prompt is too long" in err
    assert "(the parse had spent 1 call, $0.0045)" in err
    assert "Traceback" not in err


def test_lost_items_warn_and_strict_refuses(llm_server, tmp_path, capsys):  # noqa: F811
    lossy = dependencies_proposal()
    del lossy["tasks"][0]["subtasks"][3]  # "Schedule nightly exports"
    llm_server.anthropic.enqueue(**respond(lossy))
    args = ["plan", "parse", str(TEST6), "--provider", "anthropic", "-w", str(tmp_path)]

    code, out, err = run(capsys, *args)
    assert code == 0 and "storage-layer-3" in out
    assert "warning:" in err and "line 9 (list item): Schedule nightly exports" in err

    code, out, err = run(capsys, *args, "--strict")
    assert code == 2 and out == ""
    assert "--strict: 1 item(s) of the task file appear nowhere in the plan" in err

    code, _, err = run(
        capsys, "--task-file", str(TEST6), "--use-intelligent-parser", "--strict",
        "--provider", "anthropic", "--dry-run", "-w", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "Schedule nightly exports" in err
    assert len(llm_server.anthropic.requests) == 1


def test_plan_parse_refuses_a_structured_file(tmp_path, capsys):
    toml_file = tmp_path / "tasks.toml"
    toml_file.write_text('[[tasks]]\ntitle = "x"\n')
    code, _, err = run(capsys, "plan", "parse", str(toml_file), "-w", str(tmp_path))
    assert code == 2 and "use `aca plan show`" in err


def test_plan_parse_never_imports_prefect(tmp_path):
    code = "\n".join(
        [
            "import os, sys, json",
            "from tests.fakes.llm_server import FakeLLMServer",
            "from tests.plan.test_intelligent import TEST6, dependencies_proposal, respond",
            "from aca_flows.cli import main",
            "with FakeLLMServer() as server:",
            "    os.environ.update(server.env())",
            "    server.anthropic.enqueue(**respond(dependencies_proposal()))",
            f"    args = ['--provider', 'anthropic', '-w', {str(make_repo(tmp_path / 'w'))!r}]",
            "    assert main(['plan', 'parse', str(TEST6), *args]) == 0",
            "    assert main(['--task-file', str(TEST6), '--use-intelligent-parser',",
            "                 '--dry-run', *args]) == 0",
            "print('PREFECT', 'prefect' in sys.modules)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "PREFECT False" in result.stdout
