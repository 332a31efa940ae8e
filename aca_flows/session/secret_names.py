"""Which names hold a secret: environment variables (``is_secret_variable``) and the names
of fields and assignments in text (``names_a_secret``), and which values are file locations
rather than secrets. ``redact.py`` applies these rules; ``secret_values.py`` reads the
environment by them."""

from __future__ import annotations

import functools
import re

__all__ = [
    "LOCATION_VALUE",
    "MIN_NAMED_SECRET",
    "PROVIDER_KEY_VARIABLES",
    "is_secret_name",
    "is_secret_variable",
    "looks_random",
    "names_a_credential",
    "names_a_key_by_its_value",
    "names_a_location",
    "names_a_secret",
    "names_the_secret_itself",
]

# Always secret, whatever their length: the standard provider credentials.
PROVIDER_KEY_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "PREFECT_API_KEY",
)

_SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

# The last part of a variable's name (split at "_") that names a credential (MYSQL_PWD,
# DB_PASS, CI_JOB_JWT, SENTRY_DSN, BASIC_AUTH, GH_PAT, SLACK_WEBHOOK), and phrases that do
# anywhere (DOCKER_AUTH_CONFIG).
_SECRET_LAST_PARTS = frozenset({"PWD", "PASS", "JWT", "DSN", "AUTH", "PAT", "WEBHOOK"})

_SECRET_PHRASES = (
    "AUTH_STRING",
    "AUTH_HEADER",
    "AUTH_CONFIG",
    "WEBHOOK_URL",
    "CONNECTION_STRING",
)

# The shell's working folders, not passwords.
_NOT_SECRET_VARIABLES = frozenset({"PWD", "OLDPWD", "DIRENV_PWD"})

MIN_NAMED_SECRET = 8

_LOCATION_SUFFIXES = ("_PATH", "_FILE", "_DIR", "_SOCK", "_HOME")

# A name's parts: SECRET_KEY, x-api-key, spring.datasource.password, secretKey.
_NAME_PARTS = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")

# Secret wherever they stand in a name: DB_PASSWORD_PROD, SECRET_KEY_BASE, SLACK_TOKEN.
_SECRET_WORDS = frozenset(
    [
        "SECRET",
        "SECRETS",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "CREDENTIALS",
    ]
)

# Secret as the end of a name's last part (MYSECRET, dbpassword, csrftoken, x-apikey), as
# they always were; AUTH only as a last part (BASIC_AUTH, not AUTH_METHOD).
_SECRET_ENDINGS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "APIKEY", "AUTHORIZATION")

_LAST_SECRET_WORDS = frozenset({"AUTH"})

# KEY is a secret after these (API_KEY, private_key, secretKey), or last in a name in capitals
# as environment variables are (STRIPE_KEY). Any other name ending in KEY (stripe_key,
# signingKey, key) names a secret only when its value looks like one (``looks_random``):
# sort_key, cache_key, primary_key hold names; KEY_COUNT does not end in KEY.
_KEY_QUALIFIERS = frozenset(
    ["API", "ACCESS", "ACCOUNT", "PRIVATE", "SECRET", "SIGNING", "ENCRYPTION", "MASTER"]
)

_MIN_RANDOM_KEY = 16

# The name says the value is about a secret, not the secret: SSH_KEY_PATH, TOKEN_URL.
_NOT_THE_SECRET = frozenset({"PATH", "FILE", "DIR", "SOCK", "HOME", "URL", "URI", "NAME", "TYPE"})

# A file location: ~/.ssh/id, ~me/keys, ./key.pem, ../k, or /dir/... whose first directory is
# a plain name (/home/me/creds.json). /abc123secret or /tokenvalue is no path a key is kept at.
LOCATION_VALUE = re.compile(r"~[\w.\-]*/|\.\.?/|/[A-Za-z._\-]+/")


def is_secret_name(name: str) -> bool:
    """Whether a field or option called ``name`` holds a credential (``api_key``, ``token``,
    ``DB_PASSWORD``, ...): the name rule of ``redact_text``, whatever the value."""
    return names_a_secret(name)


def is_secret_variable(name: str) -> bool:
    """Whether the environment variable ``name`` holds a secret: a provider credential, a
    name containing KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL, or one with a part that
    names a credential as it ends (``MYSQL_PWD``, ``DB_PASS``, ``CI_JOB_JWT``, ``SENTRY_DSN``,
    ``BASIC_AUTH``, ``GH_PAT``, ``SLACK_WEBHOOK``; not ``AUTH_URL`` or ``JWT_ISSUER``) or
    anywhere (``..._AUTH_STRING``, ``..._AUTH_HEADER``, ``DOCKER_AUTH_CONFIG``,
    ``SLACK_WEBHOOK_URL``, ``..._CONNECTION_STRING``), or any name
    ``names_a_credential`` reads as one (``GPG_PASSPHRASE``, ``AUTHORIZATION``). Commands run
    without these when the sandbox is off (``sandbox.clean_environment``); their values are
    redacted (``secret_values``)."""
    upper = name.upper()
    if name in PROVIDER_KEY_VARIABLES or any(part in upper for part in _SECRET_NAME_PARTS):
        return True
    if upper in _NOT_SECRET_VARIABLES:
        return False
    # The rule of the redactor and the docs too: GPG_PASSPHRASE, AUTHORIZATION were taken
    # for plain settings, and their values were sent to the model and committed.
    return names_a_credential(name)


def names_a_location(upper_name: str, value: str) -> bool:
    # SSH_KEY_PATH=/home/me/.ssh/id: redacting the path would mangle every file path below it.
    # TEST_FILE_PAT=tests/**/test_*.py: a pattern, not a personal access token.
    return (
        upper_name.endswith(_LOCATION_SUFFIXES)
        or LOCATION_VALUE.match(value) is not None
        or (upper_name.endswith("_PAT") and any(c in value for c in "*?"))
    )


def names_the_secret_itself(name: str) -> bool:
    # Its last part is the secret's word (DB_PASSWORD, secret, apiKey), not a thing about it
    # (PASSWORD_MISMATCH, token_expired_msg, password_help).
    parts = _name_parts(name)
    last = parts[-1] if parts else ""
    return (
        last in _SECRET_WORDS
        or last.endswith(_SECRET_ENDINGS)
        or last in _LAST_SECRET_WORDS
        or _names_a_key(parts, in_capitals=name.isupper())
        or names_a_key_by_its_value(name)
    )


def names_a_secret(name: str) -> bool:
    # SECRET_KEY, db.password, x-api-key, secretKey; see the word lists above.
    parts = _name_parts(name)
    if not parts or parts[-1] in _NOT_THE_SECRET:
        return False
    return (
        not _SECRET_WORDS.isdisjoint(parts)
        or parts[-1].endswith(_SECRET_ENDINGS)
        or parts[-1] in _LAST_SECRET_WORDS
        or _names_a_key(parts, in_capitals=name.isupper())
    )


@functools.lru_cache(maxsize=1024)  # the same field names come in every record
def _name_parts(name: str) -> tuple[str, ...]:
    return tuple(part.upper() for part in _NAME_PARTS.split(name) if part)


def _names_a_key(parts: tuple[str, ...], in_capitals: bool) -> bool:
    after_qualifier = any(
        first in _KEY_QUALIFIERS and second == "KEY"
        for first, second in zip(parts, parts[1:], strict=False)
    )
    return after_qualifier or (in_capitals and parts[-1] == "KEY")


def names_a_key_by_its_value(name: str) -> bool:
    # stripe_key, signingKey, key: a key of some kind; its value says whether it is a secret.
    parts = _name_parts(name)
    return bool(parts) and parts[-1] == "KEY"


def looks_random(value: str) -> bool:
    # sk_live_4eC39HqLyjWDarjtT1zdp7dc, wJalrXUtnFEMI/K7MDENG: what keys look like; the names a
    # sort key or cache key holds ("user-profile", "task_v2") are not in both cases with digits,
    # an object key ("uploads/2024/Report.pdf") holds a dot.
    return (
        len(value) >= _MIN_RANDOM_KEY
        and "." not in value
        and not any(c.isspace() for c in value)
        and any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    )


def names_a_credential(name: str) -> bool:
    """Whether the variable or field ``name`` names a credential: by the name rule of the
    redactor (``names_a_secret``), or by a part that names one as it ends (``MYSQL_PWD``) or
    anywhere (``..._AUTH_STRING``), as ``is_secret_variable`` reads them."""
    upper = name.upper()
    return (
        names_a_secret(name)
        or upper.rsplit("_", 1)[-1] in _SECRET_LAST_PARTS
        or any(phrase in upper for phrase in _SECRET_PHRASES)
    )
