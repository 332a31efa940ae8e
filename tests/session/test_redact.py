"""No session file or log holds a provider key or anything shaped like one."""

from __future__ import annotations

import base64
import codecs
import logging
import re
import textwrap

import pytest

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.events import TaskResult
from aca_flows.session.files import append_jsonl, write_json_atomic, write_text_atomic
from aca_flows.session.redact import (
    REDACTED,
    RedactingFilter,
    RedactingStream,
    redact,
    redact_known,
    redact_log_handlers,
    redact_text,
)
from aca_flows.session.secret_names import is_secret_name, is_secret_variable
from aca_flows.session.secret_values import register_secret
from aca_flows.session.store import SessionStore

ANTHROPIC_KEY = "sk-ant-api03-" + "A1b2C3d4" * 6
OPENAI_KEY = "sk-proj-" + "Z9y8X7w6" * 5
CUSTOM_TOKEN = "tok_live_0123456789abcdef"


def all_files_text(root) -> str:
    return "".join(p.read_text() for p in root.rglob("*") if p.is_file())


def test_session_files_never_hold_keys_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", CUSTOM_TOKEN)
    plan = ExecutionPlan(
        name="p",
        tasks=[Task(id="a", title="Use the key", description=f"call it with {CUSTOM_TOKEN}")],
    )
    options = {"cwd": "/repo", "api_key": "some-inline-secret", "max_turns": 5}
    with SessionStore.create(tmp_path, plan, provider="anthropic", options=options) as store:
        store.task_started("a")
        summary = f"set ANTHROPIC_API_KEY={ANTHROPIC_KEY} and header Authorization: Bearer x"
        store.task_completed("a", TaskResult(commit="abc", summary=summary))
    text = all_files_text(store.paths.root)
    assert ANTHROPIC_KEY not in text
    assert CUSTOM_TOKEN not in text
    assert "some-inline-secret" not in text
    assert REDACTED in text
    # What is not secret stays readable.
    session = store.session
    assert session.plan.task("a").title == "Use the key"
    config = store.paths.session_config_json.read_text()
    assert '"cwd": "/repo"' in config and '"max_turns": 5' in config
    assert "api_key" not in config


def test_a_secret_put_in_the_environment_later_is_redacted_too(monkeypatch):
    # The values to redact are kept while the environment stays as it was, not longer.
    monkeypatch.delenv("ACA_LATE_SECRET_TOKEN", raising=False)
    late = "late-value-0123456789"
    assert redact_text(f"x {late}") == f"x {late}"
    monkeypatch.setenv("ACA_LATE_SECRET_TOKEN", late)
    assert redact_text(f"x {late}") == f"x {REDACTED}"
    monkeypatch.delenv("ACA_LATE_SECRET_TOKEN")
    assert redact_text(f"x {late}") == f"x {late}"


def test_key_shaped_text_is_redacted_even_without_the_environment():
    text = (
        f"anthropic {ANTHROPIC_KEY}, openai {OPENAI_KEY}, "
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345, "
        "github ghp_0123456789abcdefghijABCDEFGHIJ, aws AKIAABCDEFGHIJKLMNOP"
    )
    redacted = redact_text(text, environ={})
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, "abcdefghijklmnopqrstuvwxyz012345", "ghp_0123"):
        assert secret not in redacted
    assert "AKIAABCDEFGHIJKLMNOP" not in redacted
    assert redacted.startswith("anthropic [REDACTED], openai [REDACTED]")
    assert "Bearer [REDACTED]" in redacted


def test_ordinary_text_and_short_values_are_left_alone():
    environ = {"KEYBOARD_LAYOUT": "us", "OPENAI_API_KEY": "", "PATH": "/usr/bin:/bin"}
    text = "task-1 uses sk-learn and the key idea; tokens: 1234; /usr/bin"
    assert redact_text(text, environ) == text
    data = {"input_tokens": 12, "title": "rotate the token", "path": "/usr/bin"}
    assert redact(data, environ) == data


def test_structures_are_redacted_in_keys_values_and_lists():
    environ = {"ANTHROPIC_AUTH_TOKEN": "auth-token-value-123"}
    data = {"headers": ["x", "auth-token-value-123"], "auth-token-value-123": 1, "n": 3.5}
    assert redact(data, environ) == {"headers": ["x", REDACTED], REDACTED: 1, "n": 3.5}


def test_the_file_writers_redact_every_write(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    write_text_atomic(tmp_path / "a.txt", f"key={OPENAI_KEY}")
    write_json_atomic(tmp_path / "b.json", {"note": OPENAI_KEY})
    append_jsonl(tmp_path / "c.jsonl", {"note": OPENAI_KEY})
    assert OPENAI_KEY not in all_files_text(tmp_path)


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    log_file = tmp_path / "session.log"
    handler = logging.FileHandler(log_file)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("aca.test.redact")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("calling the API with %s", ANTHROPIC_KEY)
        try:
            raise RuntimeError(f"auth failed for {ANTHROPIC_KEY}")
        except RuntimeError:
            logger.exception("provider error")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = log_file.read_text()
    assert ANTHROPIC_KEY not in text
    assert "calling the API with [REDACTED]" in text
    assert "RuntimeError: auth failed for [REDACTED]" in text


def test_assignments_of_literals_are_redacted_and_code_stays_readable():
    secret_lines = {
        "SECRET=abcdefgh12 pytest -q": "SECRET=[REDACTED] pytest -q",
        "MY_SERVICE_PASSWORD: s3cretvalue9": "MY_SERVICE_PASSWORD: [REDACTED]",
        'password = "correcthorse"': 'password = "[REDACTED]"',
        '{"api_key": "anything-at-all"}': '{"api_key": "[REDACTED]"}',
    }
    for text, expected in secret_lines.items():
        assert redact_text(text, environ={}) == expected
    # Expressions, references and words: what a patch of ordinary code is full of.
    code = [
        'password = request.form["password"]',
        'api_key = os.environ["ANTHROPIC_API_KEY"]',
        "token=$GITHUB_TOKEN",
        "db_password = get_password(user1)",
        "secret: settings.SECRET_NAME",
        'token: Optional[str] = os.environ.get("TOKEN")',
        'print("token=" + tok + " and secret=" + s)',
        'x = "api_key=\'" + key + "\'"',
    ]
    for line in code:
        assert redact_text(line, environ={}) == line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('SECRET_KEY = "django-insecure-8f3k2j1h9g"', 'SECRET_KEY = "[REDACTED]"'),
        ("SECRET_KEY=abcd1234efgh5678 test -f a.txt", "SECRET_KEY=[REDACTED] test -f a.txt"),
        ("SECRET_TOKEN=abcdef123456", "SECRET_TOKEN=[REDACTED]"),
        ("DB_PASSWORD_PROD=hunter2hunter2x", "DB_PASSWORD_PROD=[REDACTED]"),
        ("PRIVATE_KEY=abcd1234efgh5678", "PRIVATE_KEY=[REDACTED]"),
        ("SLACK_TOKEN=abcd1234efgh5678", "SLACK_TOKEN=[REDACTED]"),
        ("token=abcd1234efgh5678", "token=[REDACTED]"),
        ("STRIPE_KEY=live1234abcd", "STRIPE_KEY=[REDACTED]"),
        ("DB_PWD=hunter2x9", "DB_PWD=[REDACTED]"),
        ("BASIC_AUTH=user:pass1234", "BASIC_AUTH=[REDACTED]"),
        # JSON, YAML, camelCase, a command-line option, a git hook's message, a query string.
        ('{"secret_key": "django-insecure-8f3k2j1h9g"}', '{"secret_key": "[REDACTED]"}'),
        ("private_key: abcd1234efgh5678", "private_key: [REDACTED]"),
        ("const secretKey = 'abcd1234efgh';", "const secretKey = '[REDACTED]';"),
        ("aws --secret-key=abcd1234efgh", "aws --secret-key=[REDACTED]"),
        ("remote: SECRET_TOKEN=abcdef123456", "remote: SECRET_TOKEN=[REDACTED]"),
        ("/cb?key=abc&token=abcd1234efgh5678", "/cb?key=abc&token=[REDACTED]"),
    ],
)
def test_a_secret_word_anywhere_in_a_name_redacts_the_literal_it_is_given(text, expected):
    assert redact_text(text, environ={}) == expected


@pytest.mark.parametrize(
    "text",
    [
        "KEY_COUNT=12345678",  # a number
        'KEY_COUNT = "12345678"',  # KEY first: the name is a count
        "MONKEY=abcd1234efgh",  # KEY inside a word is no key
        "KEYBOARD=abcd1234efgh",
        "sort_key=name1234x",  # keys in code: of a sort, a cache, a table
        'cache_key = "user-profile"',
        "primary_key: id12345678",
        "SSH_KEY_PATH=/home/me/.ssh/id_ed25519",  # where a secret is, not the secret
        "SSH_KEY=~/.ssh/id_ed25519",
        "GOOGLE_APPLICATION_CREDENTIALS=/home/me/sa-2024.json",
        "PWD=/home/me/proj2",
        '"token_uri": "https://oauth2.googleapis.com/token"',
        'TOKEN_TYPE = "access_token"',
        "input_tokens=12345678 tokenizer=cl100k_base",
        "AUTH_METHOD=oauth2x; author: jane1234doe",
    ],
)
def test_names_that_only_look_secret_keep_their_values(text):
    assert redact_text(text, environ={}) == text


STRIPE_LIVE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A quoted value is taken whole, spaces and all.
        ("PASSWORD='correct horse battery'", "PASSWORD='[REDACTED]'"),
        ('export DB_PASSWORD="my secret pw"', 'export DB_PASSWORD="[REDACTED]"'),
        ("""curl -d '{"secret": "top secret value"}'""", """curl -d '{"secret": "[REDACTED]"}'"""),
        ('clientSecret: "s3cret with spaces"', 'clientSecret: "[REDACTED]"'),
        # A type annotation between the name and the value.
        ('token: str = "abcd1234efgh"', 'token: str = "[REDACTED]"'),
        ("api_key: Final[str] = 'sk-test-1234'", "api_key: Final[str] = '[REDACTED]'"),
        ('secret: str | None = "abcd1234efgh"', 'secret: str | None = "[REDACTED]"'),
        ('def f(password: str = "hunter2hunter2"):', 'def f(password: str = "[REDACTED]"):'),
        # Basic credentials, in either header, as Bearer tokens are.
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic [REDACTED]"),
        (
            "curl -H 'authorization: basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==' https://x.org",
            "curl -H 'authorization: basic [REDACTED]' https://x.org",
        ),
        # A name ending in key, in any case, given a quoted value that looks random.
        (f'stripe_key = "{STRIPE_LIVE}"', 'stripe_key = "[REDACTED]"'),
        (f"webhookKey: '{AWS_SECRET}'", "webhookKey: '[REDACTED]'"),
        ('{"key": "Zm9vYmFyYmF6MTIzNDU2Nzg5"}', '{"key": "[REDACTED]"}'),
        # A value starting with / that is no path.
        ('API_KEY="/abcdefsecretvalue"', 'API_KEY="[REDACTED]"'),
    ],
)
def test_quoted_annotated_basic_and_lower_case_key_secrets_are_redacted(text, expected):
    assert redact_text(text, environ={}) == expected


@pytest.mark.parametrize(
    "text",
    [
        # Already caught by a secret word in the name; still caught.
        f'aws_secret_access_key = "{AWS_SECRET}"',
        f"aws_secret_access_key = {AWS_SECRET}",
        'clientSecret: "a1b2c3d4e5f6g7"',
        "API_KEY=/abc123secretvalue",
        "SECRET_TOKEN=/abcd1234efgh5678",
    ],
)
def test_secrets_named_by_a_secret_word_stay_redacted(text):
    assert redact_text(text, environ={}).endswith((REDACTED, REDACTED + '"'))


@pytest.mark.parametrize(
    "text",
    [
        # Keys in code hold names: a lambda, a word, words and digits, a hash, an object's path.
        "sort_key = lambda item: item.name",
        'key = "name"',
        'cache_key = "user-profile-v2-2024"',
        'idempotency_key = "3f2a9c0d8e7b6a5f4e3d2c1b0a998877"',
        's3_key = "uploads/2024/01/Report2024.pdf"',
        'primary_key: str = "id12345678"',
        # "basic" as a word; Basic with what is not base64 of user:password.
        "Basic configuration: internationalization first",
        "a basic Authentication flow; Authorization: Basic $CREDENTIALS",
        # File locations, quoted or annotated, and what a name says is no secret.
        'SSH_KEY="~/.ssh/id_ed25519"',
        "KEY_FILE=/home/u/.config/k.pem",
        'token_url: str = "https://oauth2.googleapis.com/token"',
        'password = " starts with a space"',
    ],
)
def test_keys_in_code_words_and_locations_keep_their_values(text):
    assert redact_text(text, environ={}) == text


def test_fields_of_structures_follow_the_name_rule_of_text():
    fields = {
        "refresh_token": "abcd1234efgh",
        "x-api-key": "anything-at-all",
        "Proxy-Authorization": "Basic dXNlcjpwYXNz",
        "stripe_key": STRIPE_LIVE,
        "db.password": "correct horse battery",
        "sort_key": "name",
        "cache_key": "user-profile-v2-2024",
        "secret_name": "my-anthropic-key",  # the name of a Secret block, not the secret
        "token_url": "https://oauth2.googleapis.com/token",
        "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/sa-2024.json",
        "SSH_KEY": "~/.ssh/id_ed25519",
        "max_tokens": 100,
    }
    redacted = redact(fields, environ={})
    assert [k for k in fields if redacted[k] == REDACTED] == [
        "refresh_token",
        "x-api-key",
        "Proxy-Authorization",
        "stripe_key",
        "db.password",
    ]
    for name, value in fields.items():
        # One rule: a field's value is kept exactly when it is kept in name = "value" in text.
        in_text = redact_text(f'{name} = "{value}"', environ={})
        assert (f'"{value}"' in in_text) == (redacted[name] == value), name
    assert is_secret_name("refresh_token") and is_secret_name("Proxy-Authorization")
    assert not is_secret_name("secret_name") and not is_secret_name("max_tokens")


def test_an_environment_value_starting_with_a_slash_is_a_location_only_if_a_path():
    environ = {
        "API_KEY": "/abc123secretvalue",
        "SSH_KEY": "~/.ssh/id_ed25519",
        "KEY_FILE": "/home/u/.config/k.pem",
        "MY_TOKEN_STORE": "/home/u/tokens",
    }
    text = "ran with /abc123secretvalue, ~/.ssh/id_ed25519, /home/u/.config/k.pem, /home/u/tokens"
    assert redact_text(text, environ) == (
        "ran with [REDACTED], ~/.ssh/id_ed25519, /home/u/.config/k.pem, /home/u/tokens"
    )


def test_a_value_redacted_already_is_still_searched_for_assignments():
    environ = {"MY_TOKEN": "tok123456789"}
    text = "/cb?token=tok123456789&secret=abcd1234efgh and Authorization: Basic dXNlcjpwYXNz"
    assert redact_text(text, environ) == (
        f"/cb?token={REDACTED}&secret={REDACTED} and Authorization: Basic {REDACTED}"
    )


def test_a_long_chain_of_kept_assignments_is_searched_to_a_bounded_depth():
    # key=key=key=...: each kept value was searched again, one recursion a link (and the
    # text scanned once a link); past a few links the rest is redacted instead.
    text = "key=" * 25_000 + "abcd1234"
    redacted = redact_text(text, environ={})
    assert redacted.startswith("key=key=key=") and redacted.endswith("key=" + REDACTED)
    assert redact_text("/cb?key=abc&sort_key=x&token=abcd1234efgh5678", environ={}) == (
        "/cb?key=abc&sort_key=x&token=" + REDACTED
    )


def test_registered_secrets_are_redacted_whatever_their_shape():
    value = "registered-plain-value-42"
    assert redact_text(f"x {value} y", environ={}) == f"x {value} y"
    register_secret(value)
    assert redact_text(f"x {value} y", environ={}) == "x [REDACTED] y"
    assert redact({"note": [value]}, environ={}) == {"note": [REDACTED]}
    # A text redacted (and remembered) before a secret was registered is redacted again.
    later = "registered-later-value-43"
    assert redact({"note": [later]}) == {"note": [later]}
    register_secret(later)
    assert redact({"note": [later]}) == {"note": [REDACTED]}


def test_the_terminal_stream_redacts_what_is_printed(monkeypatch):
    import io

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    inner = io.StringIO()
    stream = RedactingStream(inner)
    print(f"using {OPENAI_KEY}", file=stream)
    stream.writelines(["a ", OPENAI_KEY, "\n"])
    assert inner.getvalue() == "using [REDACTED]\na [REDACTED]\n"
    assert stream.isatty() is False  # the rest is the wrapped stream's


def test_log_handlers_get_the_filter_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    handler = logging.FileHandler(tmp_path / "run.log")
    logger = logging.getLogger("aca.test.redact.handlers")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact_log_handlers()
        redact_log_handlers()
        logger.warning("key %s", ANTHROPIC_KEY)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    assert (tmp_path / "run.log").read_text() == "key [REDACTED]\n"


def test_credentials_in_urls_are_redacted_and_plain_urls_kept():
    text = (
        "cloning https://deploy:s3cretpassword@git.example.com/team/app.git and "
        "https://abcdef123456token@github.com/o/n.git, "
        "not ssh://git@host/o/n.git, git@github.com:o/n.git, https://host:8080/a@b or me@x.org"
    )
    assert redact_text(text) == (
        f"cloning https://deploy:{REDACTED}@git.example.com/team/app.git and "
        f"https://{REDACTED}@github.com/o/n.git, "
        "not ssh://git@host/o/n.git, git@github.com:o/n.git, https://host:8080/a@b or me@x.org"
    )


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        # No secret word anywhere in the text: the URL's shape alone says it.
        ("connect: postgres://admin:S3cr3tPw99@db.internal:5432/app", "db.internal", "S3cr3tPw99"),
        ("clone https://0123456789abcdef0123456789abcdef01234567@github.com/me/app.git",
         "github.com/me/app.git", "0123456789abcdef"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt\nQUFBQQ==\n"
         "-----END OPENSSH PRIVATE KEY-----\nnext line", "next line", "b3BlbnNzaC1rZXkt"),
        ("cut off: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "cut off", "MIIEowIBAAK"),
    ],
)  # fmt: skip
def test_url_credentials_and_private_keys_need_no_secret_word_nearby(text, kept, gone):
    redacted = redact_text(text)
    assert gone not in redacted and kept in redacted and REDACTED in redacted


def test_an_address_or_an_scp_remote_is_no_url_credential():
    text = "mail joe@example.com; remote git@github.com:me/x.git"
    assert redact_text(text) == text


def test_a_pem_header_named_in_code_takes_nothing_after_it():
    code = 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    parse(rest)\n'
    assert redact_text(code) == code
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAK\n-----END RSA PRIVATE KEY-----\nnext"
    assert redact_text(key) == f"-----BEGIN RSA PRIVATE KEY----- {REDACTED}\nnext"


@pytest.mark.timeout(20)
def test_a_long_run_before_a_url_is_scanned_once():
    # A scheme can start at every dot of "a.a.a..."; each start must not rescan the run
    # (160 KB took 50 s).
    text = "a." * 80000 + " see https://x@y"
    assert redact_text(text).endswith(f"https://{REDACTED}@y")


@pytest.mark.parametrize(
    "text",
    [
        'PASSWORD_MISMATCH = "Passwords do not match"',
        'INVALID_PASSWORD_MESSAGE = "The password you entered is incorrect"',
        'token_expired_msg: "Your session token has expired"',
        '{"password_help": "Use eight or more characters"}',
    ],
)
def test_a_sentence_about_a_secret_is_no_secret(text):
    # The name's last part is not the secret's word: a message, a help text (a login form).
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        # As JSON prints it, as Python's repr does, and echoed on one line (a CI log).
        '{"data": "-----BEGIN RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEAx1\\n-----END RSA '
        'PRIVATE KEY-----\\n"}',
        "b'-----BEGIN PRIVATE KEY-----\\nMIIEowIBAAKCAQEAx1\\n-----END PRIVATE KEY-----\\n'",
        "-----BEGIN OPENSSH PRIVATE KEY----- MIIEowIBAAKCAQEAx1 AAAAEbm9uZQAAAAAAAAAB "
        "-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\n\r\nMIIEowIBAAKCAQEAx1\r\n",
    ],
)
def test_a_private_key_not_on_lines_of_its_own_is_redacted_too(text):
    assert "MIIEowIBAAKCAQEAx1" not in redact_text(text)
    assert "PRIVATE KEY----- [REDACTED]" in redact_text(text)


@pytest.mark.parametrize(
    "encode",
    [
        lambda data: base64.encodebytes(data).decode(),  # `base64`: 76 characters a line
        lambda data: "\r\n".join(textwrap.wrap(base64.b64encode(data).decode(), 64)) + "\r\n",
    ],
    ids=["base64", "openssl-crlf"],
)
def test_a_secret_in_base64_wrapped_across_lines_is_redacted_and_its_neighbours_kept(
    monkeypatch, encode
):
    token = "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 4  # 84 bytes: its base64 takes two lines
    monkeypatch.setenv("NPM_TOKEN", token)
    for data in (token, "user:" + token, "x" * 50 + token):
        wrapped = encode(data.encode())
        text = redact_text(f"$ base64 creds\n{wrapped}after\n")
        assert text.startswith("$ base64 creds\n") and text.endswith("after\n")
        assert REDACTED in text
        assert base64.b64encode(token.encode()).decode()[8:80] not in joined_lines(text)
    unrelated = encode(b"\x00" * 120)  # wrapped base64 holding no secret is kept as it is
    assert redact_text(unrelated + "after\n") == unrelated + "after\n"


def joined_lines(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def _rows(data: bytes, width: int = 16):
    return [(at, data[at : at + width]) for at in range(0, len(data), width)]


def _od_c(byte: int) -> str:
    escapes = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"}
    if byte in escapes:
        return f"  {escapes[byte]}"
    return f"   {chr(byte)}" if 32 <= byte < 127 else f" {byte:03o}"


def _shown(row: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in row)


# What the tools print: xxd (2-byte groups in byte order, an ASCII column), hexdump -C (pairs,
# a gap after 8, |ASCII|), od -x (2-byte words little-endian, octal offsets), xxd -p (plain
# hex, 60 characters a line, upper case with -u); and rot13 (tr a-zA-Z n-za-mN-ZA-M).
HEX_DUMPS = {
    "xxd": lambda data: "".join(
        f"{at:08x}: {' '.join(row[i : i + 2].hex() for i in range(0, len(row), 2)):<39}  "
        f"{_shown(row)}\n"
        for at, row in _rows(data)
    ),
    "hexdump -C": lambda data: "".join(
        f"{at:08x}  {row[:8].hex(' '):<23}  {row[8:].hex(' '):<23}  |{_shown(row)}|\n"
        for at, row in _rows(data)
    ),
    "od -x": lambda data: "".join(
        f"{at:07o} "
        + " ".join((row + b"\0")[i : i + 2][::-1].hex() for i in range(0, len(row), 2))
        + "\n"
        for at, row in _rows(data)
    ),
    "xxd -p -u": lambda data: "".join(f"{row.hex().upper()}\n" for _, row in _rows(data, 30)),
    # od -c (a character, an escape or octal in 4 columns), xxd -e (4-byte groups little-endian,
    # a short last one right-aligned), and dumps after a prefix: quoted, a log line's.
    "od -c": lambda data: (
        "".join(
            f"{at:07o}" + "".join(_od_c(byte) for byte in row) + "\n" for at, row in _rows(data)
        )
        + f"{len(data):07o}\n"
    ),
    "xxd -e": lambda data: "".join(
        f"{at:08x}: "
        + f"{' '.join(row[i : i + 4][::-1].hex().rjust(8) for i in range(0, len(row), 4)):<35}"
        + f"  {_shown(row)}\n"
        for at, row in _rows(data)
    ),
    "> xxd": lambda data: "".join(f"> {line}\n" for line in HEX_DUMPS["xxd"](data).splitlines()),
    "log: hexdump -C": lambda data: "".join(
        f"12:00:01 INFO [task a] {line}\n" for line in HEX_DUMPS["hexdump -C"](data).splitlines()
    ),
    "rot13": lambda data: codecs.encode(data.decode(), "rot13") + "\n",
}


@pytest.mark.parametrize("dump", HEX_DUMPS.values(), ids=HEX_DUMPS.keys())
def test_a_secret_in_a_hex_dump_or_rot13_is_redacted_and_its_neighbours_kept(monkeypatch, dump):
    token = "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 2
    monkeypatch.setenv("NPM_TOKEN", token)
    for data in (token, "user:" + token + "\n", "x" * 21 + token + "!"):
        text = redact_text(f"$ xxd creds\n{dump(data.encode())}after\n")
        assert text.startswith("$ xxd creds\n") and text.endswith("after\n")
        assert REDACTED in text and readable_pieces(token, text) == []
    unrelated = dump(b"no secret here, only a dump of ordinary bytes\n")
    assert redact_text(unrelated + "after\n") == unrelated + "after\n"


def readable_pieces(token: str, text: str) -> list[str]:
    """The 8-character pieces of ``token`` still in ``text``: as they are (an ASCII column),
    spread over od -c's columns, or in hex, in byte order or in 2- or 4-byte words swapped
    (od -x, xxd -e) at each alignment."""
    hex_digits = re.sub(r"[^0-9a-f]", "", text.lower())
    pieces = [token[at : at + 8] for at in range(len(token) - 8)]

    def swapped(piece: bytes, size: int) -> str:
        return b"".join(piece[i : i + size][::-1] for i in range(0, len(piece), size)).hex()

    return [
        piece
        for piece in pieces
        if piece in text
        or "   ".join(piece) in text  # od -c
        or piece.encode().hex() in hex_digits
        or swapped(piece.encode(), 2) in hex_digits
        or swapped(piece.encode(), 4) in hex_digits
    ]


# A string literal, a URL or a byte array may spell each character of a secret as an escape.
ESCAPED_FORMS = {
    "\\x": lambda data: "".join(f"\\x{b:02x}" for b in data),
    "octal": lambda data: "".join(f"\\{b:03o}" for b in data),
    "%XX every byte": lambda data: "".join(f"%{b:02X}" for b in data),
    "\\u": lambda data: "".join(f"\\u{b:04x}" for b in data),
    "&#N;": lambda data: "".join(f"&#{b};" for b in data),
    "some \\x": lambda data: (
        data[:6].decode() + "".join(f"\\x{b:02x}" for b in data[6:14]) + data[14:].decode()
    ),
    "hex with spaces": lambda data: data.hex(" "),
    "hex with colons": lambda data: data.hex(":").upper(),
    "C array": lambda data: ",\n  ".join(f"0x{b:02x}" for b in data),
}


@pytest.mark.parametrize("escaped", ESCAPED_FORMS.values(), ids=ESCAPED_FORMS.keys())
def test_a_secret_spelled_in_escapes_is_redacted_and_its_neighbours_kept(monkeypatch, escaped):
    token = "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 2
    monkeypatch.setenv("NPM_TOKEN", token)
    text = f'KEY = b"{escaped(token.encode())}"  # {escaped(b"not a secret at all")}\n'

    for redacted in (redact_text(text), redact_known(text)):
        assert redacted == f'KEY = b"{REDACTED}"  # {escaped(b"not a secret at all")}\n'


def test_a_secrets_encodings_are_computed_once(monkeypatch):
    from aca_flows.session import secret_values as redactor

    monkeypatch.setenv("NPM_TOKEN", "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 2)
    redact_text("a line")
    computed = redactor._encodings.cache_info().misses
    for other in range(20):  # the environment changes: read again, nothing encoded again
        monkeypatch.setenv("UNRELATED", str(other))
        redact_text("a line", {"NPM_TOKEN": "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 2})
        redact_text("a line")
    assert redactor._encodings.cache_info().misses == computed


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_a_known_secret_is_redacted_as_urls_and_json_write_it():
    # An AWS secret key holds "/" and "+": a form body or a query string has them as %2F and
    # %2B (any case), JSON as "\/" (some encoders), a password with a quote as \".
    quoted = 'pa"ss\\word-991x'
    env = {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "DB_PASSWORD": quoted}
    for text in [
        "secret=wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY&x=1",
        "secret=wJalrXUtnFEMI%2fK7MDENG%2bbPxRfiCYEXAMPLEKEY&x=1",
        '{"k": "wJalrXUtnFEMI\\/K7MDENG+bPxRfiCYEXAMPLEKEY"}',
        '{"DB": "pa\\"ss\\\\word-991x"}',
    ]:
        redacted = redact_text(text, environ=env)
        assert REDACTED in redacted and "EXAMPLEKEY" not in redacted and "991x" not in redacted


@pytest.mark.parametrize(
    "name",
    [
        "MYSQL_PWD",
        "DB_PASS",
        "PREFECT_API_AUTH_STRING",
        "CI_JOB_JWT",
        "SLACK_WEBHOOK_URL",
        "SENTRY_DSN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "BASIC_AUTH",
        "PROXY_AUTH_HEADER",
        "GPG_PASSPHRASE",
        "AUTHORIZATION",
        "PROXY_AUTHORIZATION",
        # A personal access token (GitHub's docs, the Azure CLI), a webhook, a registry login:
        # sent to the model and committed when given with [sandbox] env.
        "GH_PAT",
        "CR_PAT",
        "LEGACY_PAT",
        "AZURE_DEVOPS_EXT_PAT",
        "SLACK_WEBHOOK",
        "DOCKER_AUTH_CONFIG",
    ],
)
def test_variables_named_for_a_credential_are_secret(name, monkeypatch):
    from aca_flows.session.secret_values import credential_values

    value = "hunter2-Xy7-secret-value"
    assert is_secret_variable(name)
    assert redact_text(f"it is {value}", environ={name: value}) == f"it is {REDACTED}"
    # What the model is sent and a commit is checked for: the credentials' rule, not only
    # the records'.
    monkeypatch.setenv(name, value)
    assert value in credential_values()


def test_a_key_handed_to_the_sandbox_is_secret_whatever_its_name(monkeypatch):
    # KUBE_CONFIG_DATA, HONEYCOMB_WRITEKEY: no rule reads these names as a credential's; the
    # user handed them to what runs, and their values went to the model and into a commit.
    from aca_flows.sandbox import sandbox_environment
    from aca_flows.session import secret_values
    from aca_flows.session.secret_values import credential_values
    from aca_flows.settings import SandboxSection

    monkeypatch.setattr(secret_values, "_REGISTERED", set())  # what it registers goes after
    key = "Lm3Nv9Rt2Yw8Xk4Zp6QaHc5"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P"
    monkeypatch.setenv("SERVICE_JWT_DATA", jwt)
    settings = {
        "DEPLOY_REGION": "eu-west-1-production",
        "AZURE_RESOURCE_GROUP": "OrdersProd2Group",
        "TF_WORKSPACE": "ProdEastUS2Cluster01",
        "WORKSPACE": "/home/runner/work/OrderService2/OrderService2",
        "TEST_FILE_PAT": "tests/**/test_*.py",
        "APP_NAME": "ThisIsMyProject2024Name",
        "DEPLOY_BRANCH": "feature/ABC-1234-login2",
        "TOOL_HOME": "/opt/Tool-17/bin2",
    }
    monkeypatch.setenv("HONEYCOMB_WRITEKEY", key)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert key not in credential_values()
    handed = ["HONEYCOMB_WRITEKEY", "SERVICE_JWT_DATA", *settings]
    env = sandbox_environment(SandboxSection(env=handed))
    assert env["HONEYCOMB_WRITEKEY"] == key  # the command still gets it
    assert key in credential_values() and jwt in credential_values()
    # Settings are no keys: the model may read them, and a task may write them.
    assert not set(settings.values()) & set(credential_values())
    assert redact_known(f"write {key} to cfg") == f"write {REDACTED} to cfg"


def test_a_secret_a_cut_went_through_is_not_kept_in_part(monkeypatch):
    # A check's output is kept to its last 4,000 characters: cut first, 26 of a token's 27
    # characters were in the task's failure, its log, the summary and Prefect's records.
    from aca_flows.session.redact import redacted_tail

    token = "dt_Q7mX2vL9kR4wZ8nP3tY6bH1c"
    monkeypatch.setenv("DEPLOY_TOKEN", token)
    output = "x" * 5000 + f"token in use: {token}" + "Z" * 3974
    tail = redacted_tail(output, 4000)
    assert token[1:] not in tail and tail.endswith("Z" * 3974)
    # Where the sandbox cut a long output (its mark), the part on either side goes too.
    cut = f"using {token[:20]}\n[... 5000 bytes omitted ...]\n{token[-9:]} done"
    assert redact_text(cut) == f"using {REDACTED}\n[... 5000 bytes omitted ...]\n{REDACTED} done"


@pytest.mark.parametrize(
    "name",
    [
        "PWD",
        "OLDPWD",
        "DIRENV_PWD",
        "SSH_AUTH_SOCK",
        "GIT_AUTHOR_NAME",
        "BYPASS_CACHE",
        "DSN_FILE",
        # Settings about a credential, not one: a verify needs them with the sandbox off.
        "AUTH_URL",
        "AUTH_TYPE",
        "AUTH_DOMAIN",
        "AUTH_TRUST_HOST",
        "HTTP_AUTH_USER",
        "JWT_ALGORITHM",
        "JWT_ISSUER",
        "WEBHOOK_PORT",
        "PASS_MIN_LEN",
        "DSN_NAME",
    ],
)
def test_working_folders_sockets_and_authors_are_not_secret(name):
    assert not is_secret_variable(name)


def test_the_password_in_a_url_a_variable_holds_is_a_secret(monkeypatch):
    # Redacted in the task log by its shape, it was kept in the saved patch and committed.
    from aca_flows.session.secret_values import credential_values, secret_values

    url = "postgres://app:Db9vKq2LmX7tR4wZ8nP3@db.internal:5432/app"
    assert "Db9vKq2LmX7tR4wZ8nP3" in secret_values({"DATABASE_URL": url})
    said = "password: Db9vKq2LmX7tR4wZ8nP3"
    assert redact_text(said, environ={"DATABASE_URL": url}) == f"password: {REDACTED}"
    # What the model is sent and a commit is checked for holds it too (it was sent, committed).
    monkeypatch.setenv("DATABASE_URL", url)
    assert "Db9vKq2LmX7tR4wZ8nP3" in credential_values()
    # A word is no secret to find everywhere: a task "password-reset" failed at its start.
    local = "postgres://postgres:password@localhost:5432/app"
    assert not {"postgres", "password"} & set(secret_values({"DATABASE_URL": local}))


def test_an_account_key_in_a_connection_string_is_redacted():
    text = "AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==;EndpointSuffix=x"
    assert (
        redact_text(text, environ={}) == f"AccountName=acct;AccountKey={REDACTED};EndpointSuffix=x"
    )
