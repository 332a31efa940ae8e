"""The deterministic Markdown loader, on the original aca's corpus and on the documented syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from aca_flows.errors import PlanValidationError, TaskFileError
from aca_flows.plan import load_task_file
from aca_flows.plan.render import render_tree
from tests.fakes.git_repo import make_repo
from tests.fixtures import COMPAT


def write(tmp_path: Path, text: str, name: str = "tasks.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def titles(plan, parent_id=None):
    return [t.title for t in plan.tasks if t.parent_id == parent_id]


def test_compat_simple_file_is_one_task():
    plan = load_task_file(COMPAT / "simple-file" / "task.md")
    assert [t.title for t in plan.tasks] == ["Simple File Task"]
    assert "notes.txt" in plan.tasks[0].description
    assert "All systems go!" in plan.tasks[0].description


def test_compat_multi_task_checklist():
    plan = load_task_file(COMPAT / "multi-task" / "tasks.md")
    assert plan.name == "Multi-Task Checklist"
    assert "several independent tasks" in plan.description
    (group,) = plan.roots()
    assert group.title == "Build Tasks"
    items = titles(plan, group.id)
    assert len(items) == 5
    assert items[0] == 'Write a Node script called `index.js` that logs "ready"'
    assert items[-1] == "Write a `CHANGELOG.md` with an Unreleased section"
    assert all(t.dependencies == [] for t in plan.tasks)


def test_compat_references_attach_file_text():
    plan = load_task_file(COMPAT / "task-references" / "tasks.md")
    assert titles(plan) == ["Payment Service Tasks", "Testing Tasks", "Documentation Tasks"]
    assert len(plan.tasks) == 3 + 5 + 3 + 2
    payments = next(t for t in plan.tasks if t.title == "Build the payment service")
    (ref,) = payments.metadata.file_refs
    assert ref.path == "payment_requirements.md"
    assert "minor units (cents)" in ref.content
    schema = next(t for t in plan.tasks if t.title == "Create the ledger tables and migrations")
    assert "CREATE TABLE accounts" in schema.metadata.file_refs[0].content


def test_compat_single_task_with_reference():
    plan = load_task_file(COMPAT / "task-references" / "single_task.md")
    (task,) = plan.tasks
    assert task.title == "Create a small payment client library in Python"
    assert "Card and bank-transfer payments" in task.metadata.file_refs[0].content


def test_compat_nested_headings_with_bullets():
    plan = load_task_file(COMPAT / "nested-complex-tasks" / "dependencies-test.md")
    (core,) = plan.roots()
    phases = [plan.task(i) for i in core.children]
    assert [p.title for p in phases] == [
        "1. Storage Layer",
        "2. Service Endpoints",
        "3. Web Dashboard",
        "4. End-to-End Checks",
        "5. Launch",
    ]
    assert all(len(p.children) == 4 for p in phases)
    assert "Requires Storage Layer (task #1)" in phases[1].description
    # Prose dependencies are for the intelligent parser; the deterministic one invents none.
    assert all(t.dependencies == [] for t in plan.tasks)
    assert any("strictly ordered project" in hint for hint in plan.context_hints)


def test_attribute_block_sets_id_dependencies_verify_and_more(tmp_path):
    path = write(
        tmp_path,
        "# Plan\n\n## Work\n"
        '- [ ] Make the db {#db verify="pytest -q tests/db" priority=high complexity=simple}\n'
        "- [ ] Add login {#login depends_on=db tags=auth,api model=claude-x max_attempts=2 "
        "network=true}\n"
        "- [x] Already done {#old}\n",
    )
    plan = load_task_file(path)
    db, login, old = (plan.task(i) for i in ("db", "login", "old"))
    assert db.verify == "pytest -q tests/db"
    assert db.metadata.priority == "high" and db.metadata.estimated_complexity == "simple"
    assert login.dependencies == ["db"]
    assert login.metadata.tags == ["auth", "api"]
    assert (login.model, login.max_attempts) == ("claude-x", 2)
    assert (login.network, db.network) == (True, None)
    assert old.status.state == "completed" and db.status.state == "pending"


def test_attribute_values_are_quoted_as_in_a_shell(tmp_path):
    path = write(
        tmp_path,
        "# Plan\n"
        """- [ ] Single {#a verify='pytest -k "x or y"'}\n"""
        """- [ ] Double {#b verify="echo \\"hi\\" \\\\ \\$HOME it's"}\n"""
        """- [ ] Escaped {#c verify=echo\\ two\\ words''}\n""",
    )
    plan = load_task_file(path)
    assert plan.task("a").verify == 'pytest -k "x or y"'
    assert plan.task("b").verify == 'echo "hi" \\ \\$HOME it\'s'
    assert plan.task("c").verify == "echo two words"
    path = write(tmp_path, '# Plan\n- [ ] Open {#d verify="pytest -q}\n')
    with pytest.raises(TaskFileError, match="No closing quotation"):
        load_task_file(path)


def test_attribute_blocks_split_into_words_as_shlex_splits_them():
    """aca reads attribute blocks with its own splitter (shlex is slow on a large plan): it
    gives shlex's words and errors for every text, quotes, escapes and odd spaces included."""
    import random
    import shlex

    from aca_flows.plan.markdown_attributes import shell_words

    def split(split_words, text):
        try:
            return split_words(text)
        except ValueError as error:
            return str(error)

    pieces = ["a", "=", "#", " ", "\t", "\n", "\r", "\x0b", "\xa0", "é", "'", '"', "\\"]
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert split(shell_words, text) == split(shlex.split, text), repr(text)


def test_a_checked_item_with_unchecked_items_under_it_is_not_done(tmp_path):
    """Its tasks are not all done, so neither is it: `plan show` and the session showed it
    completed beside its pending child, which ran all the same."""
    path = write(
        tmp_path,
        "- [x] Parent {#parent}\n  - [ ] write child.txt {#child}\n"
        "- [x] Done {#done}\n  - [x] write done.txt {#done-child}\n",
    )
    plan = load_task_file(path)
    states = {task.id: task.status.state for task in plan.tasks}
    assert states == {
        "parent": "pending",
        "child": "pending",
        "done": "completed",
        "done-child": "completed",
    }
    assert "[ ] parent" in render_tree(plan) and "[x] done " in render_tree(plan)


def test_nested_items_and_indented_text(tmp_path):
    path = write(
        tmp_path,
        "- Build the API\n"
        "  Use FastAPI and keep handlers thin.\n"
        "  - Add /health\n"
        "    1. Return 200\n"
        "- Write docs\n",
    )
    plan = load_task_file(path)
    api = plan.task("build-the-api")
    assert api.description == "Use FastAPI and keep handlers thin."
    health = plan.task(api.children[0])
    assert health.title == "Add /health"
    assert plan.task(health.children[0]).title == "Return 200"
    assert titles(plan) == ["Build the API", "Write docs"]


def test_tabs_indent_as_four_columns_for_items_and_their_text_alike(tmp_path):
    # A tab counted as one column under an item, as four for the item itself: the subtask's
    # description joined its title (and changed the id any depends_on named it by).
    spaces = write(tmp_path, "- Write a.txt\n    - Write b.txt\n        It must say hello.\n")
    tabs = tmp_path / "tabs.md"
    tabs.write_text("- Write a.txt\n\t- Write b.txt\n\t\tIt must say hello.\n")
    for path in (spaces, tabs):
        plan = load_task_file(path)
        (child_id,) = plan.task("write-a-txt").children
        child = plan.task(child_id)
        assert (child.id, child.title) == ("write-b-txt", "Write b.txt")
        assert child.description == "It must say hello."


def test_markdown_link_attaches_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "spec.md").write_text("the spec text")
    plan = load_task_file(write(tmp_path, "- Implement [the spec](docs/spec.md) now\n"))
    (task,) = plan.tasks
    assert task.title == "Implement the spec now"
    assert task.metadata.file_refs[0].content == "the spec text"


def test_a_link_in_a_code_span_of_a_title_is_text_not_a_file(tmp_path):
    # Writing about a literal link was refused ("download.md does not exist"), or lost the
    # link from the title and attached the file.
    (tmp_path / "spec.md").write_text("the spec text")
    title = "Replace `[Download](download.md)` and ``[Guide](spec.md)`` with [the spec](spec.md)"
    plan = load_task_file(write(tmp_path, f"- {title}\n"))
    (task,) = plan.tasks
    assert task.title == (
        "Replace `[Download](download.md)` and ``[Guide](spec.md)`` with the spec"
    )
    assert [ref.content for ref in task.metadata.file_refs] == ["the spec text"]


def test_code_spans_and_links_of_a_title_are_found_as_commonmark_finds_them(tmp_path):
    # Read in linear time now (a 200 KB line of "[" or backticks took minutes): the same spans.
    (tmp_path / "spec.md").write_text("the spec")
    (tmp_path / "notes.md").write_text("the notes")
    title = "A `` a ` [x](spec.md) `` b ``` [y](spec.md) and ` lone [s](notes.md) [[z]]"
    plan = load_task_file(write(tmp_path, f"- {title}\n"))
    (task,) = plan.tasks
    # An unclosed run of three backticks and a lone one are text: the links after them attach.
    assert task.title == "A `` a ` [x](spec.md) `` b ``` y and ` lone s [[z]]"
    assert [ref.content for ref in task.metadata.file_refs] == ["the spec", "the notes"]


def test_a_link_with_a_title_or_in_angle_brackets_attaches_its_file(tmp_path):
    # Both forms attached nothing, silently, even for a file that did not exist.
    (tmp_path / "spec.md").write_text("the spec")
    (tmp_path / "my notes.md").write_text("the notes")
    plan = load_task_file(
        write(tmp_path, '- Do [spec](spec.md "The spec") with [notes](<my notes.md>)\n')
    )
    (task,) = plan.tasks
    assert task.title == "Do spec with notes"
    assert [ref.content for ref in task.metadata.file_refs] == ["the spec", "the notes"]
    with pytest.raises(TaskFileError, match="referenced file 'nope.md' does not exist"):
        load_task_file(write(tmp_path, '- Do [x](nope.md "Nope")\n'))


def test_list_markers_inside_code_fences_are_not_tasks(tmp_path):
    plan = load_task_file(write(tmp_path, "- Run it\n\n  ```\n  - not a task\n  ```\n"))
    assert [t.title for t in plan.tasks] == ["Run it"]
    assert "- not a task" in plan.tasks[0].description


def test_html_comments_and_separators_are_not_tasks(tmp_path):
    # An item commented out over several lines (to switch it off) was a task, and ran.
    text = "- [ ] real\n<!--\n- [ ] switched off\n  - [ ] its child\n-->\n- [ ] after\n"
    # Nor is a separator written `* * *` or `- - -`: they were tasks titled "* *" and "- -".
    text += "\n* * *\n\n- - -\n"
    plan = load_task_file(write(tmp_path, text))
    assert titles(plan) == ["real", "after"]


def test_generated_ids_are_unique_and_avoid_explicit_ones(tmp_path):
    plan = load_task_file(write(tmp_path, "- Fix it\n- Fix it\n- Other {#fix-it-2}\n"))
    assert [t.id for t in plan.tasks] == ["fix-it", "fix-it-3", "fix-it-2"]


def test_a_long_word_is_cut_into_the_id_not_left_out(tmp_path):
    # `write <long name>.txt` items were all `write`, `write-2`: ids that told them apart by
    # their order only. A long word after a short start is cut to fit now.
    plan = load_task_file(write(tmp_path, f"- write {'a' * 60}.txt\n- write {'b' * 60}.txt\n"))
    assert [t.id for t in plan.tasks] == [f"write-{'a' * 34}", f"write-{'b' * 34}"]


def test_missing_reference_names_the_file(tmp_path):
    with pytest.raises(TaskFileError, match="'missing.md' does not exist"):
        load_task_file(write(tmp_path, "- Do it -> missing.md\n"))


def test_a_reference_written_with_windows_separators_is_told_how_to_write_it(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "readme.md").write_text("the spec\n")
    with pytest.raises(TaskFileError, match=r"write it with / as the separator: 'specs/readme.md'"):
        load_task_file(write(tmp_path, "- Do it -> specs\\readme.md\n"))


def test_a_reference_that_cannot_be_attached_is_told_truly_with_its_line(tmp_path):
    # A folder was "does not exist"; an empty file "write at least one task in it"; a binary
    # file had no line.
    (tmp_path / "docs").mkdir()
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "blob.md").write_bytes(b"a\x00b")
    path = write(tmp_path, "- A -> empty.md\n- B [d](docs/)\n- C -> blob.md\n")
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    assert refused.value.problems == [
        f"{path}:1: referenced file {tmp_path / 'empty.md'} is empty; write its text.",
        f"{path}:2: reference 'docs/' is a folder; reference the files in it.",
        f"{path}:3: referenced file {tmp_path / 'blob.md'} looks binary (it contains NUL "
        "bytes); give a text file.",
    ]


def test_generated_ids_keep_accented_letters_without_their_accents(tmp_path):
    plan = load_task_file(write(tmp_path, "- Café au lait\n- Émoji 🎉 task\n- 日本語\n"))
    assert [t.id for t in plan.tasks] == ["cafe-au-lait", "emoji-task", "task"]


def test_reference_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.md").write_text("secret")
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(TaskFileError, match="points outside"):
        load_task_file(write(sub, "- Do it -> ../secret.md\n"))


def test_files_the_agent_never_sees_are_not_sent_to_its_model_by_a_reference(tmp_path):
    # A task file could attach .git/config (a token in an extra header), a .env that git
    # ignores, or a private key: the sandbox hides each from the agent, yet the reference
    # sent each to the model as it was.
    repo = make_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text(".env\n")
    (repo / ".env").write_text("STRIPE_API_KEY=sk_live_canary\n")
    (repo / "deploy_key.txt").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    (repo / "notes.md").write_text("what to do\n")
    path = write(
        repo,
        "- A -> .git/config\n- B -> .env\n- C -> deploy_key.txt\n- D -> notes.md\n",
    )
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    problems = refused.value.problems
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3"]
    assert "'.git/config' is inside .git/: the agent never sees it" in problems[0]
    assert "'.env' is a file git ignores: the agent never sees it" in problems[1]
    assert "'deploy_key.txt' holds a private key" in problems[2]
    # Nor is it when no ignore rule names it (its key reached the model); other files are.
    (repo / ".gitignore").write_text("")
    with pytest.raises(TaskFileError, match="'.env' is a file of the kind secrets are kept in"):
        load_task_file(write(repo, "- B -> .env\n"))
    plan = load_task_file(write(repo, "- D -> notes.md\n"))
    attached = [ref.path for task in plan.tasks for ref in task.metadata.file_refs]
    assert attached == ["notes.md"]


def test_a_secrets_file_beside_a_task_file_in_no_repository_is_not_sent(tmp_path):
    # No ignore rule says so outside a repository: the jobs' .env was attached, and its key
    # and password reached the model as they were.
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / ".env").write_text("OPENAI_API_KEY=sk-proj-canary\n")
    (jobs / ".env.example").write_text("OPENAI_API_KEY=\n")
    (jobs / "notes.md").write_text("what to do\n")
    with pytest.raises(TaskFileError, match="'.env' is a file of the kind secrets are kept in"):
        load_task_file(write(jobs, "- A -> .env\n"))
    plan = load_task_file(write(jobs, "- B -> .env.example\n- D -> notes.md\n"))
    attached = [ref.path for task in plan.tasks for ref in task.metadata.file_refs]
    assert attached == [".env.example", "notes.md"]


def test_a_file_the_user_s_own_excludes_ignore_is_not_sent_either(tmp_path, monkeypatch):
    # git read no ~/.config/git/ignore: the check ran without HOME.
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".config" / "git" / "ignore").write_text(".env\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    repo = make_repo(tmp_path / "repo")
    (repo / ".env").write_text("KEY=value\n")
    with pytest.raises(TaskFileError, match="'.env' is a file git ignores"):
        load_task_file(write(repo, "- A -> .env\n"))


def test_a_reference_in_a_symlink_loop_is_refused_with_its_line(tmp_path):
    (tmp_path / "loop.md").symlink_to("loop.md")
    with pytest.raises(TaskFileError, match=r"tasks.md:1: reference 'loop.md' cannot be resolved"):
        load_task_file(write(tmp_path, "- A -> loop.md\n"))


def test_unknown_attribute_names_key_and_line(tmp_path):
    with pytest.raises(TaskFileError, match=r"tasks.md:2: unknown attribute 'dependz'"):
        load_task_file(write(tmp_path, "- A {#a}\n- B {dependz=a}\n"))


def test_setext_headings_are_headings(tmp_path):
    # `Phase A` over `-------` was text: its items landed in the group above, the title in a
    # description, and a `=====` title did not name the plan.
    text = (
        "Big plan\n========\n\nIntro.\n\nPhase A\n-------\n- [ ] a1 {#a1}\n\n"
        "Phase B\n-------\n- [ ] b1 {#b1}\n\n```\ncode\n```\n---\n"
    )
    plan = load_task_file(write(tmp_path, text))
    tasks = {t.id: t for t in plan.tasks}
    assert (plan.name, plan.description) == ("Big plan", "Intro.")
    assert tasks["a1"].parent_id == "phase-a" and tasks["b1"].parent_id == "phase-b"
    assert tasks["phase-b"].description == "```\ncode\n```\n---"


def test_front_matter_is_no_setext_heading(tmp_path):
    plan = load_task_file(write(tmp_path, "---\ntitle: x\n---\n\n# Plan\n\n- [ ] one\n"))
    assert (plan.name, plan.description) == ("Plan", "")  # nor the plan's instructions
    assert [t.title for t in plan.tasks] == ["one"]


def test_two_arrows_or_a_list_after_one_attach_every_file(tmp_path):
    # `-> a.md -> b.md` attached b.md only, a.md left in the title; `-> a.md, b.md` neither.
    (tmp_path / "a.md").write_text("A\n")
    (tmp_path / "b.md").write_text("B\n")
    text = "- Do it -> a.md -> b.md {#x}\n- Do it -> a.md, b.md {#y}\n- Rename x -> a, b {#z}\n"
    tasks = {t.id: t for t in load_task_file(write(tmp_path, text)).tasks}
    for task in (tasks["x"], tasks["y"]):
        assert task.title == "Do it"
        assert [(r.path, r.content) for r in task.metadata.file_refs] == [
            ("a.md", "A\n"),
            ("b.md", "B\n"),
        ]
    assert tasks["z"].title == "Rename x -> a, b" and not tasks["z"].metadata.file_refs


def test_a_link_to_a_file_with_a_space_is_read_as_markdown_writes_it(tmp_path):
    # A link's target is percent-encoded, as an editor writes it and GitHub follows it:
    # `my%20notes.md` was "referenced file 'my%20notes.md' does not exist".
    (tmp_path / "my notes.md").write_text("notes\n")
    plan = load_task_file(write(tmp_path, "- Do [the notes](my%20notes.md#top) {#x}\n"))
    task = plan.task("x")
    assert task.title == "Do the notes"
    assert [(r.path, r.content) for r in task.metadata.file_refs] == [("my notes.md", "notes\n")]


def test_an_arrow_to_something_not_a_path_stays_in_the_title(tmp_path):
    # `Rename getUser -> fetchUser` was refused: "referenced file 'fetchUser' does not exist".
    (tmp_path / "spec.md").write_text("the spec\n")
    plan = load_task_file(
        write(
            tmp_path,
            "- Rename getUser -> fetchUser {#r}\n- Map `a` -> `b` {#m}\n- Do it -> spec.md {#d}\n"
            # A path on both sides: a rename, its new name no file yet (was "does not exist").
            "- Rename utils.py -> helpers.py {#u}\n- Move src/old -> lib/new {#v}\n"
            "- Update notes.md -> spec.md {#w}\n",  # spec.md exists: attached
        )
    )
    tasks = {t.id: t for t in plan.tasks}
    assert tasks["u"].title == "Rename utils.py -> helpers.py" and not tasks["u"].metadata.file_refs
    assert tasks["v"].title == "Move src/old -> lib/new"
    assert tasks["w"].title == "Update notes.md" and tasks["w"].metadata.file_refs
    assert tasks["r"].title == "Rename getUser -> fetchUser" and not tasks["r"].metadata.file_refs
    assert tasks["m"].title == "Map `a` -> `b`" and not tasks["m"].metadata.file_refs
    assert tasks["d"].title == "Do it" and [r.path for r in tasks["d"].metadata.file_refs] == [
        "spec.md"
    ]


def test_a_link_to_a_url_keeps_its_url(tmp_path):
    # Documented "left as they are"; the URL was dropped, leaving only the link text.
    plan = load_task_file(write(tmp_path, "- Follow [the guide](https://example.com/g) {#g}\n"))
    assert plan.tasks[0].title == "Follow [the guide](https://example.com/g)"
    # An image (a screenshot of the bug) was read as a text file: "looks binary", no line.
    (tmp_path / "bug.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    plan = load_task_file(write(tmp_path, "- Fix it, see ![the bug](bug.png)\n"))
    assert plan.tasks[0].title == "Fix it, see ![the bug](bug.png)"


def test_an_attribute_given_twice_is_refused_not_overwritten(tmp_path):
    # depends_on=a depends_on=b used to keep only b: a dependency silently dropped.
    path = write(
        tmp_path,
        "- A {#a}\n- B {#b}\n- C {depends_on=a depends_on=b}\n- D {#d #e priority=low}\n",
    )
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    assert refused.value.problems == [
        f"{path}:3: attribute depends_on is given twice (depends_on=a and depends_on=b); "
        "list them in one, e.g. depends_on=a,b.",
        f"{path}:4: attribute #id is given twice (#d and #e); keep the one you mean.",
    ]


def test_an_unquoted_value_with_spaces_is_named_not_taken_for_title_text(tmp_path):
    # The whole block was title text: the dependency on db and the verify silently gone.
    # So was a block inside the title: `API {depends_on=db} -> spec.md`.
    (tmp_path / "spec.md").write_text("spec")
    path = write(
        tmp_path,
        "- DB {#db}\n- API {depends_on=db verify=pytest -q}\n- {x} stays, `{#css}` too\n"
        "- UI {depends_on=db} -> spec.md\n"
        # And one on the line under its item; in a code block it is an example.
        "- CLI\n  {depends_on=db}\n  ```\n  - x {#shown}\n  {#shown}\n  ```\n"
        '- Wrapped title that goes on\n  to a second line {verify="pytest -q"}\n'
        # An editor's quotes were letters: verify=“true” ran the command `“true”`.
        "- Lint {depends_on=db verify=“true”}\n",
    )
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    assert refused.value.problems == [
        f"{path}:2: '-q' in {{depends_on=db verify=pytest -q}} is no attribute; quote a value "
        'with spaces (verify="pytest -q") and list values with commas only (tags=a,b).',
        f"{path}:4: the attribute block {{depends_on=db}} is inside the title, where it is "
        "text; move it to the end of the line.",
        *(
            f"{path}:{line}: the attribute block {block} is on a line under the item, where "
            "it is description text; move it to the end of the item's (or heading's) own line."
            for line, block in ((5, "{depends_on=db}"), (11, '{verify="pytest -q"}'))
        ),
        f"{path}:13: the attribute block {{depends_on=db verify=“true”}} has typographic "
        'quotes (“ ” ‘ ’), which are text to aca; write straight quotes, e.g. verify="pytest -q".',
    ]


def test_an_item_without_a_title_is_named_not_a_traceback_nor_a_task(tmp_path):
    # `- [ ] {#x}` ended in a pydantic traceback (exit 1); `- [ ]` and `- [x]` became tasks
    # titled "[ ]" and "[x]", pending, that an agent would have been asked to do.
    # `- [-] dropped` (another editor's "cancelled") ran, titled "[-] dropped".
    # `- [ ] -> spec.md` was the task "-> spec.md", its file not attached.
    (tmp_path / "spec.md").write_text("spec")
    # `- [] x` and `- [  ] x` (boxes mistyped) ran as "[] x" and "[  ] x".
    text = "- [ ] real\n- [ ] {#x}\n- [ ]\n- [x]\n- [-] dropped\n- [ ] -> spec.md\n"
    text += "- [] typo\n- [  ] wide\n"
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    no_title = "this task has no title; write what it is to do, or delete the line."
    unknown = (
        "is not one aca knows; write [ ] for a task to run, [x] for one done, or delete the line."
    )
    assert refused.value.problems == [
        *(f"{path}:{n}: {no_title}" for n in (2, 3, 4)),
        f"{path}:5: checkbox [-] {unknown}",
        f"{path}:6: {no_title}",
        f"{path}:7: checkbox [] {unknown}",
        f"{path}:8: checkbox [  ] {unknown}",
    ]


@pytest.mark.parametrize(
    ("attribute", "named"),
    [
        ("max_attempts=50", "max_attempts"),
        ("max_attempts=abc", "max_attempts"),
        ("network=maybe", "network"),
        ("complexity=huge", "complexity"),
    ],
)
def test_a_bad_value_of_any_attribute_names_it_and_its_line(tmp_path, attribute, named):
    # Before, max_attempts and network got past the loader and ended in a traceback (exit 1).
    with pytest.raises(TaskFileError, match=rf"tasks.md:2: bad attribute value for '{named}'"):
        load_task_file(write(tmp_path, f"- A {{#a}}\n- B {{#b {attribute}}}\n"))


def test_bad_attribute_value_is_explained(tmp_path):
    with pytest.raises(TaskFileError, match=r":1: bad attribute value for 'priority'"):
        load_task_file(write(tmp_path, "- A {priority=urgent}\n"))


def test_literal_braces_in_a_title_are_kept(tmp_path):
    plan = load_task_file(write(tmp_path, "- Replace {} with dict() {#braces}\n- Use {x}\n"))
    assert plan.task("braces").title == "Replace {} with dict()"
    assert plan.tasks[1].title == "Use {x}"


def test_every_problem_reported_at_once(tmp_path):
    path = write(tmp_path, "- A {#a depends_on=b}\n- B {#b depends_on=a,ghost}\n- C {#a}\n")
    with pytest.raises(PlanValidationError) as info:
        load_task_file(path)
    text = str(info.value)
    assert "duplicate task id 'a'" in text
    assert "unknown task 'ghost'" in text
    assert "dependency cycle: a -> b -> a" in text


def test_every_bad_attribute_of_the_file_is_named_with_its_line(tmp_path):
    path = write(
        tmp_path,
        "# Plan {max_attempts=2}\n\n- A {#a colour=red priority=asap}\n"
        '- B {#b network=maybe depends_on=a,zz}\n- C {verify="unclosed}\n',
    )
    with pytest.raises(PlanValidationError) as refused:
        load_task_file(path)
    starts = [
        f"{path}:1: the plan title takes only a verify attribute",
        f"{path}:3: unknown attribute 'colour'",
        f"{path}:3: bad attribute value for 'priority'",
        f"{path}:4: bad attribute value for 'network'",
        f"{path}:5: cannot read the attribute block",
        "task 'b' depends on unknown task 'zz'",
    ]
    problems = refused.value.problems
    assert len(problems) == len(starts), problems
    for problem, start in zip(problems, starts, strict=True):
        assert problem.startswith(start), problem


def test_a_title_wrapped_onto_an_unindented_line_keeps_its_id_and_verify(tmp_path):
    """Before, the second line went to the plan's description, attribute block and all: the
    task ran with a generated id and no verify, and every task was told its title's end."""
    plan = load_task_file(
        write(
            tmp_path,
            "# Login work\n\n- [ ] Implement the login form with validation of the email and the\n"
            'password fields {#login verify="pytest -q"}\n- [ ] Add a logout button {#logout}\n',
        )
    )

    login = plan.task("login")
    assert login.title.endswith("of the email and the password fields")
    assert login.verify == "pytest -q"
    assert "password" not in plan.description
    assert [t.id for t in plan.tasks] == ["login", "logout"]


def test_items_all_switched_off_in_a_comment_are_nothing_to_run(tmp_path):
    """Before, the comment's text ran as the file's one task: the switched-off work."""
    path = write(tmp_path, "# Cleanup\n\n<!--\n- [ ] Delete the legacy module\n-->\n")

    with pytest.raises(TaskFileError, match=r"tasks.md:4: every list item is inside"):
        load_task_file(path)


@pytest.mark.parametrize(("opening", "what"), [("<!--", "comment"), ("```", "code fence")])
def test_a_comment_or_fence_never_closed_is_refused_not_left_to_hide_items(tmp_path, opening, what):
    path = write(tmp_path, f"- [ ] A {{#a}}\n\n{opening}\nnote\n\n- [ ] B {{#b}}\n- [ ] C\n")

    with pytest.raises(TaskFileError, match=rf"tasks.md:3: the {what}.* is never closed"):
        load_task_file(path)


def test_markdown_attribute_words_are_read_as_numbers_and_booleans(tmp_path):
    plan = load_task_file(write(tmp_path, "- [ ] A {#a network=yes max_attempts=3}\n"))
    assert plan.task("a").network is True and plan.task("a").max_attempts == 3
    with pytest.raises(TaskFileError, match="network"):
        load_task_file(write(tmp_path, "- [ ] A {#a network=maybe}\n"))


def test_a_generated_id_never_takes_an_explicit_one_in_another_case(tmp_path):
    plan = load_task_file(write(tmp_path, "- Log in {#Login}\n- Login\n"))
    assert [task.id for task in plan.tasks] == ["Login", "login-2"]


@pytest.mark.parametrize(
    "text",
    ["<!--\nCreate a file called hello.txt\n-->\n", "```\n- [ ] inside a fence\n```\n"],
)
def test_a_file_whose_only_text_is_switched_off_or_code_has_nothing_to_run(tmp_path, text):
    # It ran as one task titled `<!--` (or ```), the commented text its instructions.
    with pytest.raises(TaskFileError, match="nothing to run: the file's only text is in comm"):
        load_task_file(write(tmp_path, text))


def test_a_one_task_file_is_named_by_its_first_line_of_prose(tmp_path):
    text = "---\nauthor: me\n---\n<!-- not this -->\nCreate hello.txt\n```\nprint(1)\n```\n"
    (task,) = load_task_file(write(tmp_path, text)).tasks
    assert task.title == "Create hello.txt"
    assert task.description == "```\nprint(1)\n```"
    # Code above the first line of prose is the task's too.
    text = "```\nnpm run lint -- --fix\n```\nRun this and fix what remains\n"
    (task,) = load_task_file(write(tmp_path, text)).tasks
    assert task.title == "Run this and fix what remains"
    assert task.description == "```\nnpm run lint -- --fix\n```"


def test_a_later_headings_attributes_in_a_one_task_file_are_refused_not_lost(tmp_path):
    # The file ran as one task titled "P", `{depends_on=build}` a line of its description.
    text = "# P\n\n## Deploy {depends_on=build}\n\nShip it.\n"
    with pytest.raises(TaskFileError) as refused:
        load_task_file(write(tmp_path, text))
    assert "tasks.md:3: heading 'Deploy {depends_on=build}' has attributes, but a file" in str(
        refused.value
    )
    assert "(`- Deploy {depends_on=build}`)" in str(refused.value)
    # The first heading's are the task's, and braces that set nothing are text.
    text = '# P {verify="make test"}\n\n## Notes {not attributes}\n\nShip it.\n'
    (task,) = load_task_file(write(tmp_path, text)).tasks
    assert (task.title, task.verify) == ("P", "make test")
    assert "## Notes {not attributes}" in task.description


def test_what_a_comment_switches_off_is_in_no_description(tmp_path):
    # An item switched off in a group (or a note to self) stayed in the group's description,
    # which the agent reads: it could do the work the user switched off.
    plan = load_task_file(
        write(
            tmp_path,
            "# Plan\n\n<!-- a note to self -->\n\n## Second\n\nThe API.\n"
            "<!-- - [ ] drop the users table -->\n\n- [ ] one\n  Its text.\n"
            "  <!-- not this -->\n\n## Notes\n\nKeep it small.\n<!-- nor this -->\n",
        )
    )
    text = [plan.description, *(t.description or "" for t in plan.tasks), *plan.context_hints]
    assert not any("<!--" in part or "drop the users" in part for part in text), text
    assert plan.task("second").description == "The API."
    assert plan.task("one").description == "Its text."


def test_text_beside_a_comment_stays_and_code_is_kept_as_written(tmp_path):
    plan = load_task_file(
        write(
            tmp_path,
            "- [ ] one\n  <!-- reviewed by Bob --> Use the v2 API.\n"
            "  Keep it small. <!-- a note --> Add tests.\n"
            "  <!-- over\n  two lines --> And docs.\n"
            "  ```html\n  <!-- a comment in code -->\n  ```\n",
        )
    )
    assert plan.task("one").description.splitlines() == [
        "Use the v2 API.",
        "Keep it small.  Add tests.",
        "And docs.",
        "```html",
        "<!-- a comment in code -->",
        "```",
    ]


def test_lines_end_where_markdown_ends_them_not_at_unicode_separators(tmp_path):
    # U+2028 and U+0085 ended lines for aca alone: one item as an editor and GitHub show it
    # ran as two tasks (the second, "wipe", out of sight), a paragraph ran as a task.
    one_item = "# P\n\n- [ ] Update the README {#readme}\u2028- [ ] Delete the tests {#wipe}\n"
    with pytest.raises(TaskFileError, match=r"tasks.md:3: the attribute block \{#readme\}"):
        load_task_file(write(tmp_path, one_item))
    paragraph = "# P\n\n- [ ] Update the README {#readme}\n\nA line\u0085- [ ] Hidden task\n"
    assert [task.id for task in load_task_file(write(tmp_path, paragraph)).tasks] == ["readme"]


def test_an_attribute_written_with_spaces_around_its_equals_sign_is_read(tmp_path):
    # TOML's habit: it was "'depends_on', 'a' ... is no attribute" and "unknown attribute ''".
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- [ ] A {#a}\n- [ ] B {#b depends_on = a}\n- [ ] C {#c depends_on= a}\n")

    plan = load_task_file(tasks)

    assert [(t.id, t.dependencies) for t in plan.tasks] == [("a", []), ("b", ["a"]), ("c", ["a"])]
    # Braces of a title's text, no attribute among them, stay text.
    tasks.write_text("- [ ] Bump the weights {priority = 3}\n")
    assert load_task_file(tasks).tasks[0].title == "Bump the weights {priority = 3}"
