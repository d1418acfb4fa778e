"""The long commands' progress: a tqdm bar on a terminal, plain lines
elsewhere, and the summary each command ends with."""

from __future__ import annotations

import io

from mcp_oauth_proxy.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_where_there_is_no_terminal() -> None:
    out = io.StringIO()
    with Progress("re-encrypting", "record", out, every=0) as progress:
        progress.advance(500)
        progress.advance(250)
    assert progress.done == 750
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("re-encrypting: 500 record(s) so far")
    assert lines[1].startswith("re-encrypting: 750 record(s) so far")
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal() -> None:
    out = _Terminal()
    with Progress("removing expired records", "record", out, every=0) as progress:
        progress.advance(3)
    assert "removing expired records" in out.getvalue() and "\r" in out.getvalue()
    assert "so far" not in out.getvalue()


def test_the_commands_end_with_a_summary(tmp_path, capsys) -> None:
    from mcp_oauth_proxy import cli

    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert cli.main(["db", "upgrade", "--database", db]) == 0
    assert cli.main(["db", "gc", "--database", db]) == 0
    assert "removed 0 expired record(s) in " in capsys.readouterr().out
    from mcp_oauth_proxy.storage.keys import load_or_create_keyring

    load_or_create_keyring(str(tmp_path / "keys"))
    assert cli.main(["keys", "rotate", "--key-file", str(tmp_path / "keys")]) == 0
    assert cli.main(["keys", "reencrypt", "--database", db, "--key-file", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    assert "moved 0 record(s) to key" in out and "skipped 0, in " in out
