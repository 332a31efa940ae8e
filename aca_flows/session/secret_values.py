"""The values aca knows to be secret, and the forms they take written out.

They are the environment's (each variable ``is_secret_variable`` names, by the rules of
``secret_names.py``) and those handed to ``register_secret`` (the Prefect Secret blocks a run
loads); each as written, percent-encoded and JSON-escaped, and, from 12 characters on, in hex,
rot13 and base64. ``credential_values`` are those that are credentials rather than words or
settings. The environment is read at every call (a comparison, without building anything), so
a key exported after import is still caught; a secret's encoded forms are computed once."""

from __future__ import annotations

import base64
import codecs
import functools
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

from aca_flows.session.secret_names import (
    MIN_NAMED_SECRET,
    PROVIDER_KEY_VARIABLES,
    is_secret_variable,
    looks_random,
    names_a_credential,
    names_a_location,
)

__all__ = [
    "SecretValues",
    "credential_values",
    "register_handed_over",
    "register_secret",
    "secret_values",
]

# Values known to be secret that are not in the environment (Prefect Secret blocks in use).
_REGISTERED: set[str] = set()

# Shorter values would redact ordinary words ("test", "dev"); a real key is never this short.
_MIN_PROVIDER_SECRET = 4

# Shorter secrets' encodings are too short to tell from other text.
_MIN_ENCODED_SECRET = 12


def register_secret(value: str | None) -> None:
    """Redact ``value`` from now on in this process (a key read from a Prefect Secret block)."""
    if value and len(value.strip()) >= _MIN_PROVIDER_SECRET:
        _REGISTERED.add(value.strip())


def register_handed_over(names: Iterable[str], environ: Mapping[str, str]) -> None:
    """Secret from now on: the values of the variables a user hands to a sandbox (``[sandbox]
    env``) shaped like keys (``_key_like``), whatever their names. ``KUBE_CONFIG_DATA``
    or ``HONEYCOMB_WRITEKEY`` name no credential by any rule, and their values were sent to
    the model and committed; the user chose to hand them to what runs."""
    for name in names:
        value = environ.get(name, "").strip()
        if _key_like(value) and not names_a_location(name.upper(), value):
            _REGISTERED.add(value)


def _key_like(value: str) -> bool:
    # A JSON Web Token, or random-looking (``looks_random``) with a key's length, digits here
    # and there, its characters' classes mixed as a random string's are, and a path only as
    # base64 has it: "OrdersProd2Group", "ProdEastUS2Cluster01", "feature/ABC-1234-login" or
    # "/opt/Java-17" are settings a task may well write, and would fail it as "a secret aca
    # knows". (Lowercase hex is left out: it is as often a commit's id.)
    if _JWT.fullmatch(value):
        return True
    return (
        len(value) >= 20
        and looks_random(value)
        and len(re.findall(r"\d+", value)) >= 2
        and ("/" not in value or re.fullmatch(r"[A-Za-z0-9+/]+=*", value) is not None)
        and _class_switches(value) >= 0.5
    )


def _class_switches(value: str) -> float:
    # How often a character's class (capital, small, digit, other) differs from the one
    # before it: about 0.6 in a random key, 0.2-0.45 in a name of words ("ProdEastUS2Cluster01").
    classes = [c.isupper() * 1 + c.islower() * 2 + c.isdigit() * 3 for c in value]
    switches = sum(a != b for a, b in itertools.pairwise(classes))
    return switches / max(len(classes) - 1, 1)


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The environment values (and registered secrets) never to be written, longest first."""
    if environ is None:
        return _cached()[0]
    return _with_forms(set(_plain_secrets(environ)))


def credential_values() -> list[str]:
    """Of ``secret_values``, those that are credentials rather than words or settings a file
    or a prompt holds for its own reasons (``password``, ``postgres``, a URL, a sentence, a
    ``PYTHON_KEYRING_BACKEND``): 12 characters or more, no whitespace, no ``://`` but in a
    webhook's or a DSN's URL, of a variable whose name names a credential; with their encoded
    forms. What the model is never
    sent (``redact_known``) and a commit never holds (``agent/secrets_in_work.py``)."""
    return _cached()[1]


def _cached() -> tuple[list[str], list[str]]:
    # Every record aca writes or logs asks for these: computed again only when the process
    # environment or the registered secrets change (a comparison of two dicts, without
    # building anything).
    global _CACHED
    current = getattr(os.environ, "_data", os.environ)
    if _CACHED is None or _CACHED[1] != len(_REGISTERED) or _CACHED[0] != current:
        named = _plain_secrets(os.environ)
        credentials = {value for value, name in named.items() if _a_credential(value, name)}
        all_forms, credential_forms = _with_forms(set(named)), _with_forms(credentials)
        _CACHED = (dict(current), len(_REGISTERED), all_forms, credential_forms)
    return _CACHED[2], _CACHED[3]


_CACHED: tuple[dict, int, list[str], list[str]] | None = None

# A credential is at least this long: shorter values are words ("password", "postgres").
_MIN_CREDENTIAL = 12


def _a_credential(value: str, name: str | None) -> bool:
    """A value (of the variable ``name``; None: a registered secret) that is a credential, not
    a setting whose name only holds a secret word (``PYTHON_KEYRING_BACKEND``,
    ``SSH_KEY_NAME``): its name names one as the redactor's name rule reads names, and it is
    no word, sentence or URL (a webhook's or a DSN's URL is the credential itself)."""
    if len(value) < _MIN_CREDENTIAL or any(c.isspace() for c in value):
        return False
    if name is None or name in PROVIDER_KEY_VARIABLES:
        return "://" not in value
    url_credential = any(phrase in name.upper() for phrase in _CREDENTIAL_URLS)
    return (names_a_credential(name) or url_credential) and ("://" not in value or url_credential)


# Variables whose URL is the credential: a webhook's, a DSN's, a connection string.
_CREDENTIAL_URLS = ("WEBHOOK", "DSN", "CONNECTION_STRING")


def _plain_secrets(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each secret value, and the variable that holds it (None: a registered secret, a
    credential whatever the name of a variable that holds it too)."""
    found: dict[str, str | None] = dict.fromkeys(_REGISTERED)
    for name, value in environ.items():
        value = value.strip()
        if name in PROVIDER_KEY_VARIABLES:
            if len(value) >= _MIN_PROVIDER_SECRET:
                found.setdefault(value, name)
        elif (
            is_secret_variable(name)
            and len(value) >= MIN_NAMED_SECRET
            and not names_a_location(name.upper(), value)
        ):
            found.setdefault(value, name)
        # The password of a URL's user (DATABASE_URL=postgres://app:PASSWORD@db/app), in
        # any variable: the records redacted it by its shape, the model and the commit did
        # not. A credential's length at least: "postgres" or "password" redacted a task's id
        # everywhere. Kept as a registered secret is: its variable names no credential.
        elif (password := _URL_PASSWORD.match(value)) and len(password[1]) >= _MIN_CREDENTIAL:
            found[password[1]] = None
    return found


_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:([^@/\s]+)@")


def _with_forms(values: set[str]) -> list[str]:
    found = set(values)
    for value in values:
        found.update(_escaped(value))
        if len(value) >= _MIN_ENCODED_SECRET:
            found.update(_encodings(value))
    # Longest first: a key that contains another key is removed whole.
    return SecretValues(sorted(found, key=len, reverse=True))


class SecretValues(list):
    """Secret values, longest first, and the texts already redacted for exactly these.

    What aca writes repeats most of its strings (field names, a conversation's system prompt
    and tool schemas sent again at every call, the run's task titles): each is redacted once.
    The memo belongs to this list, so a text redacted before a secret was added is never
    served for the list that holds it."""

    __slots__ = ("memo", "memo_chars")

    def __init__(self, values: list[str]):
        super().__init__(values)
        self.memo: dict[str, str] = {}
        self.memo_chars = 0

    def remember(self, text: str, redacted: str) -> None:
        if self.memo_chars > _MEMO_CHARS_KEPT:
            self.memo.clear()  # memory stays bounded: a long run's log lines are all new
            self.memo_chars = 0
        self.memo[text] = redacted
        self.memo_chars += len(text)


_MEMO_CHARS_KEPT = 200_000  # characters: about 2 MB of texts and their redactions


@functools.lru_cache(maxsize=256)
def _encodings(secret: str) -> tuple[str, ...]:
    """``secret`` in hex, in rot13, and in base64 after 0, 1 and 2 other bytes: of each, only
    the characters the secret alone decides (the first and last groups share bits with
    whatever stands beside it)."""
    raw = secret.encode()
    forms = [raw.hex(), raw.hex().upper(), codecs.encode(secret, "rot13")]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms.append(encoded[4 if shift else 0 : (len(raw) + shift) // 3 * 4])
    return tuple(forms)


@functools.lru_cache(maxsize=256)
def _escaped(secret: str) -> tuple[str, ...]:
    """``secret`` as a URL or JSON writes it, where that differs: percent-encoded (``/`` kept
    or not, spaces as ``+``; upper- or lower-case hex), and as a JSON string's inside
    (``\\"``, ``\\\\``, ``\\u00e9``, and ``\\/`` as some encoders write ``/``)."""
    percent = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    percent |= {_LOWER_PERCENT.sub(lambda m: m.group().lower(), form) for form in percent}
    inside = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    inside |= {form.replace("/", "\\/") for form in inside}
    return tuple(form for form in percent | inside if form != secret)


_LOWER_PERCENT = re.compile(r"%[0-9A-F]{2}")
