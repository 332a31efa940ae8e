"""The repository's git config as a sandboxed command sees it: credentials removed."""

from __future__ import annotations

import subprocess

from aca_flows.sandbox.git_config import git_config_without_credentials, without_credentials

TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0" * 2

CONFIG = f"""[core]
\trepositoryformatversion = 0
\tbare = false
[remote "origin"]
\turl = https://{TOKEN}@github.com/o/r.git
\tpushurl = https://user:hunter2hunter2@example.com/r.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[remote "mirror"]
\turl = ssh://git@example.com/r.git
[url "https://x-access-token:{TOKEN}@github.com/"]
\tinsteadOf = https://github.com/
[http "https://github.com/"]
\textraheader = AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46c2VjcmV0
[hub]
\toauthtoken = plainwordsecret
"""


def test_credentials_are_removed_and_the_rest_is_kept(tmp_path):
    clean = without_credentials(CONFIG)

    for secret in (TOKEN, "hunter2hunter2", "eC1hY2Nlc3MtdG9rZW46c2VjcmV0", "plainwordsecret"):
        assert secret not in clean
    assert "url = ssh://git@example.com/r.git" in clean  # no credential there
    assert "fetch = +refs/heads/*:refs/remotes/origin/*" in clean and "bare = false" in clean
    (tmp_path / "config").write_text(clean)
    listed = subprocess.run(["git", "config", "--file", str(tmp_path / "config"), "--list"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "core.bare=false" in listed and "remote.origin.url=https://" in listed


def test_a_config_without_credentials_is_shown_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "config").write_text('[core]\n\tbare = false\n[remote "o"]\n\turl = /srv/r\n')
    assert git_config_without_credentials(tmp_path) is None
    (tmp_path / "config").write_text("[alias]\n\tlg = log --graph \\\n\t  --oneline\n")
    assert git_config_without_credentials(tmp_path) is None  # continued, but no credential

    (tmp_path / "config").write_text(CONFIG)
    copy = git_config_without_credentials(tmp_path)
    assert copy is not None and copy.parent == tmp_path / "home" / ".aca" / "sandbox" / "git-config"
    assert copy.read_text() == without_credentials(CONFIG)
    assert git_config_without_credentials(tmp_path) == copy  # one copy per content


def test_a_credential_split_over_lines_or_named_pass_is_removed_as_git_reads_it(tmp_path):
    config = (
        '[http "https://gitlab.com/"]\n'
        "\textraHeader = Authorization: Bearer \\\n"
        "CONTxK29fjQ1abcdefghijklmnop\n"
        '[remote "origin"]\n'
        "\turl = https://oauth2:\\\n"
        "CONT2xK29fjQ1abcdefghij@gitlab.com/r.git\n"
        "[sendemail]\n"
        "\tsmtpPass = SMTPPASSxK29fjQ1\n"
        "\tsslCertPasswordProtected = true\n"
        "# a comment's backslash continues nothing \\\n"
        "[core]\n"
        "\tbare = false\n"
        "\tpath = C:\\\\\n"  # an escaped backslash ends the value: no continuation
        "\teditor = vi\n"
    )
    (tmp_path / "config").write_text(without_credentials(config))
    listed = subprocess.run(["git", "config", "--file", str(tmp_path / "config"), "--list"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip

    for secret in ("CONTxK29fjQ1", "CONT2xK29fjQ1", "SMTPPASSxK29fjQ1"):
        assert secret not in listed
    assert "core.bare=false" in listed and "core.editor=vi" in listed
    assert "core.path=C:\\" in listed and "remote.origin.url=" in listed
    assert "sendemail.sslcertpasswordprotected=true" in listed  # a bool git must still read


def test_a_credential_named_key_or_pat_or_on_its_sections_line_is_removed(tmp_path):
    # git reads `[section] key = value` on one line; Azure DevOps tools name a token `pat`.
    config = (
        '[http "https://github.com/"] extraheader = AUTHORIZATION: basic SAMELINExK29fjQ1\n'
        "[azure]\n"
        "\tpat = PATVALUExK29fjQ1\n"
        "[deploy]\n"
        "\tkey = KEYVALUExK29fjQ1\n"
        "\tapiKey = APIKEYxK29fjQ1\n"
        "[user]\n"
        "\tname = Ada\n"
        "\temail = ada@example.com\n"
    )
    (tmp_path / "config").write_text(without_credentials(config))
    listed = subprocess.run(["git", "config", "--file", str(tmp_path / "config"), "--list"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip

    for secret in ("SAMELINExK29fjQ1", "PATVALUExK29fjQ1", "KEYVALUExK29fjQ1", "APIKEYxK29fjQ1"):
        assert secret not in listed
    assert "http.https://github.com/.extraheader=[REDACTED]" in listed
    assert "user.name=Ada" in listed and "user.email=ada@example.com" in listed
