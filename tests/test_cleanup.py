"""The cleanup script: which partnerships, what it says, and identities that stay literal.

No PowerShell runs here: the script is parsed with the tree-sitter PowerShell grammar, and
each identity literal is read back by PowerShell's own rule for single-quoted strings
(tokenizer.cs ScanStringLiteral: any of ' U+2018 U+2019 U+201A U+201B ends the string
unless another of them follows; the pair stands for the second one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from bridge import cleanup, frames
from bridge.errors import OutputError
from tests.eas_org import SPECS, TRICKY_NAMES, known_organisation
from tests.test_ps_scripts import unset_variables

WRITTEN = datetime(2026, 12, 3, 21, 40, tzinfo=UTC)


def read_single_quoted(literal: str) -> str:
    """What PowerShell reads from a single-quoted literal; AssertionError if it ends early."""
    quotes = cleanup.SINGLE_QUOTES
    assert literal[0] in quotes and literal[-1] in quotes, literal
    inner, value, position = literal[1:-1], [], 0
    while position < len(inner):
        char = inner[position]
        if char in quotes:
            assert position + 1 < len(inner) and inner[position + 1] in quotes, (
                f"the string ends early at {position} in {literal!r}")
            position += 1
            char = inner[position]
        value.append(char)
        position += 1
    return "".join(value)


def _nodes(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    found = [node]
    for child in node.children:
        found += _nodes(child)
    return found


def _text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8")


def removals(script: str) -> list[tuple[str, list[str]]]:
    """Each Remove-MobileDevice command: the identity PowerShell reads, and its other
    arguments as written."""
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    root = parser.parse(script.encode("utf-8")).root_node
    broken = [_text(n)[:40] for n in _nodes(root) if n.type == "ERROR" or n.is_missing]
    assert not root.has_error and not broken, broken
    found = []
    for command in (n for n in _nodes(root) if n.type == "command"):
        if _text(command.children[0]) != "Remove-MobileDevice":
            continue
        (elements,) = [c for c in command.children if c.type == "command_elements"]
        parts = [c for c in elements.children if c.type != "command_argument_sep"]
        assert _text(parts[0]) == "-Identity"
        (literal,) = [n for n in _nodes(parts[1]) if n.type == "string_literal"]
        found.append((read_single_quoted(_text(literal)), [_text(p) for p in parts[2:]]))
    assert unset_variables(root, ["Execute"]) == {}
    return found


@pytest.mark.parametrize("text", [
    "", "plain", "O'Brien", "''", "$env:PATH", "`n`$x", "\u2018a\u2019", "\u201ab\u201b",
    "'\u2019\u2018'", "Zoë 王伟 §", "line\nbreak",
])
def test_quote_reads_back_as_the_same_text(text: str) -> None:
    assert read_single_quoted(cleanup.quote(text)) == text


def test_reader_catches_an_unescaped_unicode_quote() -> None:
    with pytest.raises(AssertionError, match="ends early"):
        read_single_quoted("'a\u2019b'")


def _report() -> tuple[frames.Report, list[str]]:
    org, entries = known_organisation()
    report = frames.build_report(org.mailboxes, org.devices,
                                 options=frames.ReportOptions(all_devices=True),
                                 run_started=org.reference_time)
    return report, [entry.identity for entry in entries]


def test_plan_removes_stale_and_old_never_synced_partnerships() -> None:
    report, identities = _report()
    plan = cleanup.plan_cleanup(report.devices, days=30, run_started=report.run_started)
    expected = {identity for identity, spec in zip(identities, SPECS, strict=True)
                if spec.removed}
    assert set(plan.devices["Identity"]) == expected and plan.count == 4
    reasons = dict(zip(plan.devices["Identity"], plan.devices["Reason"], strict=True))
    never = identities[3]  # 12.1, never synced, set up 40 days ago
    assert reasons.pop(never) == "never synced"
    assert set(reasons.values()) == {"stale"}
    # 29.5 days without a sync is 29 whole days: in with --cleanup-days 29, not 30
    assert identities[4] in set(cleanup.plan_cleanup(
        report.devices, days=29, run_started=report.run_started).devices["Identity"])
    # at 0 days every partnership with an identity goes, also one set up 3 days ago
    assert cleanup.plan_cleanup(report.devices, days=0,
                                run_started=report.run_started).count == len(SPECS)


def test_script_text_header_commands_and_summary(tmp_path: Path) -> None:
    report, _identities = _report()
    plan = cleanup.plan_cleanup(report.devices, days=30, run_started=report.run_started)
    text = cleanup.cleanup_script(plan, organisation="Contoso", report="mobile.xlsx",
                                  written=WRITTEN, scope="all devices; UserMailbox; none",
                                  psbridge_version="1.2.3", script_name="remove-stale.ps1")
    lines = text.split("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    as_of = report.run_started.strftime("%Y-%m-%d %H:%M UTC")
    assert lines[:13] == [
        "# Remove stale mobile device partnerships: a script written by psbridge 1.2.3 for "
        "review.",
        "# Written:       2026-12-03 21:40 UTC",
        "# Organisation:  Contoso",
        f"# Report:        mobile.xlsx (data as of {as_of})",
        "# Scope:         all devices; UserMailbox; none",
        "# Partnerships:  4 (no successful sync for 30 days or more, or never synced and set "
        "up 30 or more days ago)",
        "#",
        "# psbridge never changes Exchange; this script does, and only with -Execute.",
        "# Run it in the Exchange Management Shell, or in PowerShell after "
        "Connect-ExchangeOnline:",
        "#   .\\remove-stale.ps1            shows what would be removed (-WhatIf); changes "
        "nothing",
        "#   .\\remove-stale.ps1 -Execute   removes the partnerships listed below",
        "# A removed partnership comes back when its device syncs again.",
        "[CmdletBinding()]",
    ]
    assert "    [switch]$Execute" in lines and "$total = 4" in lines
    found = removals(text)
    assert [identity for identity, _rest in found] == list(plan.devices["Identity"])
    assert all(rest == ["-Confirm", "$false", "-WhatIf", "(-not $Execute)", "-ErrorVariable",
                        "+removalErrors"] for _identity, rest in found)
    # one comment line before each command names the user, the device and why
    pixel = next(n for n, line in enumerate(lines) if "Pixel 8:" in line)
    synced = plan.devices.set_index("Device").loc["Pixel 8", "LastSuccessSync"]
    assert lines[pixel] == (f"# {TRICKY_NAMES[1]}, Pixel 8: last successful sync "
                            f"{synced:%Y-%m-%d %H:%M} UTC")
    assert lines[pixel + 1].startswith("Remove-MobileDevice -Identity 'contoso.com/Staff/")
    assert lines[-8:] == [
        "",
        "$failed = $removalErrors.Count",
        "if ($Execute) {",
        "    Write-Output ('Removed {0} of {1} partnership(s); {2} failed (see the errors "
        "above).' -f ($total - $failed), $total, $failed)",
        "} else {",
        "    Write-Output ('What if: {0} partnership(s) would be removed ({1} failed). "
        "Nothing was changed; run again with -Execute to remove them.' -f ($total - $failed), "
        "$failed)",
        "}",
        "",
    ]


def test_every_identity_round_trips_through_the_written_file(tmp_path: Path) -> None:
    report, identities = _report()
    plan = cleanup.plan_cleanup(report.devices, days=0, run_started=report.run_started)
    path = tmp_path / "remove-stale.ps1"
    cleanup.write_cleanup_script(path, cleanup.cleanup_script(
        plan, organisation="Contoso \u2019s\r\nlab", report="r.xlsx", written=WRITTEN))
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Windows PowerShell 5.1 reads it right
    text = raw[3:].decode("utf-8")
    # the organisation's line break cannot end the comment early
    assert "# Organisation:  Contoso \u2019s lab\r\n" in text
    read = [identity for identity, _rest in removals(text)]
    assert sorted(read) == sorted(identities)
    tricky = [identity for identity in read
              if any(name in identity for name in TRICKY_NAMES)]
    assert len(tricky) == len(TRICKY_NAMES)
    assert list(tmp_path.iterdir()) == [path]


def test_an_unwritable_script_is_an_output_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "remove-stale.ps1"
    with pytest.raises(OutputError) as caught:
        cleanup.write_cleanup_script(target, "x")
    assert str(caught.value) == (f"cannot write the cleanup script {target}: No such file or "
                                 "directory.")
