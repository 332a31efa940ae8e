"""Secrets cut by line breaks: base64 wrapped across lines, a token folded (``redact.py``'s
helper).

``base64`` wraps its output at 76 characters, ``openssl base64`` at 64 (with CRLF in some
tools), ``fold`` and a terminal's copy wherever they like: a secret, or its encoding, that
crosses a line break is in no line whole, so the redactor's search for it finds nothing. Here
the text's line breaks are taken out, the secrets are looked for in the joined text, and each
one found is replaced in the original, line breaks and all; the rest stays as it is.
"""

from __future__ import annotations

__all__ = ["redact_wrapped"]


def redact_wrapped(text: str, secrets: list[str], replacement: str) -> str:
    """``text`` with every one of ``secrets`` that a line break cuts replaced."""
    joined = text.replace("\r", "").replace("\n", "")
    # Only those cut somewhere: the ones whole on a line are replaced by a plain search.
    cut = [s for s in secrets if s in joined and joined.count(s) > text.count(s)]
    return _cut_secrets(text, cut, replacement) if cut else text


def _cut_secrets(block: str, secrets: list[str], replacement: str) -> str:
    joined = block.replace("\r", "").replace("\n", "")
    if not any(secret in joined for secret in secrets):
        return block
    where = [i for i, c in enumerate(block) if c not in "\r\n"]  # joined index -> block's
    spans = []
    for secret in secrets:
        found = joined.find(secret)
        while found != -1:
            spans.append((where[found], where[found + len(secret) - 1] + 1))
            found = joined.find(secret, found + len(secret))
    pieces, end = [], 0
    for first, last in sorted(spans):
        if first >= end:
            pieces += [block[end:first], replacement]
        end = max(end, last)
    return "".join(pieces) + block[end:]
