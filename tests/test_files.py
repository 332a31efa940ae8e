"""Whole-file writes: text that is not UTF-8 keeps its bytes, JSON shows it readably."""

from __future__ import annotations

import json
import os

from aca_flows._files import readable, write_json_atomic, write_text_atomic

# A name git or the system gives as bytes that are not UTF-8: Python keeps them as surrogates.
LATIN1_NAME = os.fsdecode(b"na\xefve.txt")


def test_text_keeps_the_bytes_it_was_read_from(tmp_path):
    write_text_atomic(tmp_path / "patch", f"+{LATIN1_NAME}\n")

    assert (tmp_path / "patch").read_bytes() == b"+na\xefve.txt\n"


def test_json_shows_such_a_name_with_the_replacement_character(tmp_path):
    write_json_atomic(tmp_path / "data.json", {"files": [LATIN1_NAME], LATIN1_NAME: 1})

    assert json.loads((tmp_path / "data.json").read_text(encoding="utf-8")) == {
        "files": ["na\ufffdve.txt"],
        "na\ufffdve.txt": 1,
    }


def test_a_surrogate_that_stands_for_no_byte_is_shown_alike():
    # JSON can carry one ("\ud800"); the bytes escaped beside it keep their U+FFFD.
    assert readable(f"{LATIN1_NAME} \ud800") == "na\ufffdve.txt \ufffd"
