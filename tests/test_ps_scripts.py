"""The PowerShell in ps_scripts/, read with the tree-sitter PowerShell grammar.

No PowerShell can run here, so these tests hold the scripts to what can be checked from
the syntax tree: they parse cleanly, declare the parameters psbridge passes, follow the
house rules for scripts (help, CmdletBinding, strict mode, approved verbs), never cut a
mailbox list at 1000, and use no variable they never set (strict mode would stop them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from bridge import scripts
from bridge.scripts import (
    EXO_SCRIPT,
    EXO_SCRIPT_PARAMETERS,
    EXPORT_SCRIPT,
    ExoApp,
    exo_parameters,
)

PS_SCRIPTS = Path(__file__).resolve().parent.parent / "ps_scripts"
ALL_SCRIPTS = sorted(PS_SCRIPTS.glob("*.ps1"))

# Get-Verb's list, the part a data-reading script could plausibly use.
APPROVED_VERBS = {
    "Add",
    "Clear",
    "Close",
    "Copy",
    "Enter",
    "Exit",
    "Find",
    "Format",
    "Get",
    "Hide",
    "Join",
    "Lock",
    "Move",
    "New",
    "Open",
    "Optimize",
    "Pop",
    "Push",
    "Redo",
    "Remove",
    "Rename",
    "Reset",
    "Resize",
    "Search",
    "Select",
    "Set",
    "Show",
    "Skip",
    "Split",
    "Step",
    "Switch",
    "Undo",
    "Unlock",
    "Watch",
    "Connect",
    "Disconnect",
    "Read",
    "Receive",
    "Send",
    "Write",
    "Compare",
    "Compress",
    "Convert",
    "ConvertFrom",
    "ConvertTo",
    "Expand",
    "Export",
    "Group",
    "Import",
    "Initialize",
    "Limit",
    "Merge",
    "Mount",
    "Out",
    "Publish",
    "Restore",
    "Save",
    "Sync",
    "Unpublish",
    "Update",
    "Debug",
    "Measure",
    "Ping",
    "Repair",
    "Resolve",
    "Test",
    "Trace",
    "Invoke",
    "Start",
    "Stop",
    "Submit",
    "Suspend",
    "Wait",
    "Use",
}
# Variables PowerShell itself provides.
AUTOMATIC = {
    "$_",
    "$true",
    "$false",
    "$null",
    "$pscmdlet",
    "$host",
    "$psversiontable",
    "$erroractionpreference",
    "$args",
    "$psitem",
}

Node = tree_sitter.Node


@cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


@cache
def _tree(path: Path) -> tree_sitter.Tree:
    return _parser().parse(path.read_bytes())


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def _script_param_block(path: Path) -> Node:
    blocks = [c for c in _tree(path).root_node.children if c.type == "param_block"]
    assert len(blocks) == 1, f"{path.name}: expected one script-level param() block"
    return blocks[0]


def _attribute_names(attribute_list: Node) -> list[str]:
    names = []
    for attribute in attribute_list.children:
        for child in attribute.children:
            if child.type in ("attribute_name", "type_literal"):
                names.append(_text(child).strip("[]"))
    return names


def declared_parameters(path: Path) -> dict[str, dict[str, object]]:
    """Each script parameter, by name: its attributes, mandatory flag and parameter set."""
    parameters: dict[str, dict[str, object]] = {}
    block = _script_param_block(path)
    (parameter_list,) = [c for c in block.children if c.type == "parameter_list"]
    for parameter in parameter_list.children:
        if parameter.type != "script_parameter":
            continue
        (variable,) = [c for c in parameter.children if c.type == "variable"]
        attributes = [c for c in parameter.children if c.type == "attribute_list"]
        attribute_text = " ".join(_text(a) for a in attributes)
        set_match = re.search(r"ParameterSetName\s*=\s*'([^']+)'", attribute_text)
        parameters[_text(variable).lstrip("$")] = {
            "attributes": _attribute_names(attributes[0]) if attributes else [],
            "mandatory": bool(re.search(r"Mandatory\s*=\s*\$true", attribute_text)),
            "set": set_match.group(1) if set_match else None,
        }
    return parameters


def test_scripts_exist_and_are_the_ones_psbridge_knows() -> None:
    assert [p.name for p in ALL_SCRIPTS] == sorted(scripts.SCRIPT_NAMES)


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_script_parses_without_syntax_errors(path: Path) -> None:
    root = _tree(path).root_node
    broken = [
        f"line {n.start_point[0] + 1}: {n.type} {_text(n)[:40]!r}"
        for n in _walk(root)
        if n.type == "ERROR" or n.is_missing
    ]
    assert not root.has_error and not broken, broken


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_script_follows_the_house_rules(path: Path) -> None:
    root = _tree(path).root_node
    # comment-based help first, naming every parameter
    help_text = _text(root.children[0])
    assert root.children[0].type == "comment" and help_text.startswith("<#")
    for keyword in (".SYNOPSIS", ".DESCRIPTION", ".EXAMPLE"):
        assert keyword in help_text
    for name in declared_parameters(path):
        assert f".PARAMETER {name}\n" in help_text, f"{name} has no .PARAMETER help"
    # [CmdletBinding()] on the script's param block
    block = _script_param_block(path)
    (attributes,) = [c for c in block.children if c.type == "attribute_list"]
    assert "CmdletBinding" in _attribute_names(attributes)
    # Set-StrictMode and stop-on-error as the first statements
    (statements,) = [c for c in root.children if c.type == "statement_list"]
    first = [_text(s) for s in statements.children[:2]]
    assert first == ["Set-StrictMode -Version 3.0", "$ErrorActionPreference = 'Stop'"]
    # approved verbs for the file and every function
    names = [path.stem] + [_text(n) for n in _walk(root) if n.type == "function_name"]
    for name in names:
        verb, _, noun = name.partition("-")
        assert verb in APPROVED_VERBS and noun, f"{name}: not Verb-Noun with an approved verb"


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_every_parameter_is_validated_or_a_switch(path: Path) -> None:
    for name, info in declared_parameters(path).items():
        attributes = info["attributes"]
        assert isinstance(attributes, list)
        validated = any(a.startswith("Validate") for a in attributes)
        assert validated or "switch" in attributes or "SecureString" in attributes, name


def unset_variables(root: Node, parameters: Iterable[str]) -> dict[str, int]:
    """Variables read but never assigned (first line of use), ignoring scopes: what
    Set-StrictMode would stop on. ``"$name:"`` in a string counts as unset: PowerShell
    reads it as a scope-qualified name."""
    assigned = {f"${name}".lower() for name in parameters}
    source = root.text or b""
    used: dict[str, int] = {}
    for node in _walk(root):
        if node.type == "assignment_expression":
            left = node.children[0]
            first = next((n for n in _walk(left) if n.type == "variable"), None)
            if first is not None:  # None: a static property such as [Console]::OutputEncoding
                assigned.add(_text(first).lower())
        elif node.type in ("foreach_statement", "script_parameter"):
            for child in node.children:
                if child.type == "variable":
                    assigned.add(_text(child).lower())
        elif node.type == "variable":
            # a splat (@name) reads the variable $name
            name = "$" + _text(node).lower()[1:]
            in_string = node.parent is not None and node.parent.type == "expandable_string_literal"
            if in_string and source[node.end_byte : node.end_byte + 1] == b":":
                name += ":"  # the grammar reads "$total: x" as $total; PowerShell does not
            used.setdefault(name, node.start_point[0] + 1)
    return {
        name: line
        for name, line in used.items()
        if name.endswith(":")
        or name not in assigned
        and name not in AUTOMATIC
        and ":" not in name.strip("${}")
    }


def test_unset_variable_check_finds_typos_and_colon_traps() -> None:
    snippet = b'$total = 1\n$x = "$total: done"\nWrite-Output $totl $env:PATH $_ @splat\n'
    found = unset_variables(_parser().parse(snippet).root_node, [])
    assert set(found) == {"$total:", "$totl", "$splat"}


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_script_uses_no_variable_it_never_sets(path: Path) -> None:
    assert unset_variables(_tree(path).root_node, declared_parameters(path)) == {}


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_mailboxes_are_read_with_result_size_unlimited(path: Path) -> None:
    entries = {
        _text(node.children[0]): _text(node.children[2])
        for node in _walk(_tree(path).root_node)
        if node.type == "hash_entry"
    }
    assert entries.get("RecipientTypeDetails") is not None
    assert entries.get("ResultSize") == "'Unlimited'"
    # the mailbox cmdlet is only ever called with that splat
    calls = [
        _text(node.children[-1]).strip()
        for node in _walk(_tree(path).root_node)
        if node.type == "command"
        and (
            _text(node.children[0]) in ("Get-EXOMailbox", "Get-Mailbox")
            or _text(node.children[0]) == "&"
            and _text(node.children[1]) == "$mailboxCmdlet"
        )
    ]
    assert calls and set(calls) == {"@mailboxParameters"}


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_per_mailbox_device_errors_are_caught_not_fatal(path: Path) -> None:
    tries = [n for n in _walk(_tree(path).root_node) if n.type == "try_statement"]
    device_tries = [
        t
        for t in tries
        if re.search(r"MobileDeviceStatistics|\$deviceCmdlet", _text(t.children[1]))
        and "-ErrorAction Stop" in _text(t.children[1])
        and t.children[2].type == "catch_clauses"
    ]
    assert len(device_tries) == 1, "the per-mailbox device call is not in a try/catch"
    catch = _text(device_tries[0].children[2])
    # the failure is recorded (the manifest's errors, or an Error object) and the loop goes on
    assert "$errors.Add(" in catch or "-Kind 'Error'" in catch
    assert "throw" not in catch


def test_exo_script_always_disconnects_in_finally() -> None:
    tries = [
        n for n in _walk(_tree(PS_SCRIPTS / EXO_SCRIPT).root_node) if n.type == "try_statement"
    ]
    connecting = [t for t in tries if "Connect-ExchangeOnline @connectParameters" in _text(t)]
    assert len(connecting) == 1
    finally_clauses = [c for c in connecting[0].children if c.type == "finally_clause"]
    assert finally_clauses and "Disconnect-ExchangeOnline" in _text(finally_clauses[0])


def test_export_script_writes_the_file_names_psbridge_reads() -> None:
    source = (PS_SCRIPTS / EXPORT_SCRIPT).read_text(encoding="utf-8")
    for name in ("Mailboxes.xml", "MobileDeviceStatistics.xml", "psbridge-manifest.json"):
        assert f"'{name}'" in source
    exports = [
        _text(node)
        for node in _walk(_tree(PS_SCRIPTS / EXPORT_SCRIPT).root_node)
        if node.type == "command" and _text(node.children[0]) == "Export-Clixml"
    ]
    assert len(exports) == 2
    assert all("-Encoding Unicode" in command for command in exports)
    assert "'Mailboxes.xml'" in source


APPS = {
    "thumbprint": ExoApp(
        "contoso.onmicrosoft.com",
        "0b5c2b43-8a0c-4e1f-9d4b-6f1e2a3b4c5d",
        certificate_thumbprint="0123456789ABCDEF0123456789ABCDEF01234567",
    ),
    "file": ExoApp(
        "contoso.onmicrosoft.com",
        "0b5c2b43-8a0c-4e1f-9d4b-6f1e2a3b4c5d",
        certificate_file="/secure/app.pfx",
    ),
}


def test_python_names_exactly_the_exo_scripts_parameters() -> None:
    declared = declared_parameters(PS_SCRIPTS / EXO_SCRIPT)
    # every name psbridge can pass is declared; the one it never passes is the SecureString
    assert EXO_SCRIPT_PARAMETERS <= set(declared)
    assert set(declared) - EXO_SCRIPT_PARAMETERS == {"CertificatePassword"}


@pytest.mark.parametrize("app_kind", sorted(APPS))
@pytest.mark.parametrize("all_devices", [True, False])
@pytest.mark.parametrize("password_variable", [None, "PSBRIDGE_CERTIFICATE_PASSWORD"])
def test_parameters_python_passes_bind_to_one_parameter_set(
    app_kind: str, all_devices: bool, password_variable: str | None
) -> None:
    declared = declared_parameters(PS_SCRIPTS / EXO_SCRIPT)
    passed = exo_parameters(
        APPS[app_kind],
        recipient_types=["UserMailbox", "SharedMailbox"],
        all_devices=all_devices,
        password_variable=password_variable,
    )
    assert set(passed) <= EXO_SCRIPT_PARAMETERS
    sets = {declared[name]["set"] for name in passed} - {None}
    assert len(sets) == 1, sets
    (chosen,) = sets
    mandatory = {
        n for n, info in declared.items() if info["mandatory"] and info["set"] in (None, chosen)
    }
    assert mandatory <= set(passed)
    assert ("OutlookOnly" in passed) is (not all_devices)
    assert "switch" in declared["OutlookOnly"]["attributes"]  # type: ignore[operator]


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_sandbox_param_reader_agrees_with_the_grammar(path: Path) -> None:
    """The emulated jump host binds parameters with its own small reader: same answers."""
    from bridge.sandbox.jumphost import parse_param_block

    _, parameters = parse_param_block(path.read_text(encoding="utf-8"))
    expected = declared_parameters(path)
    assert list(parameters) == list(expected)
    for name, spec in parameters.items():
        assert spec.mandatory == expected[name]["mandatory"], name
        assert spec.parameter_set == expected[name]["set"], name
        patterns = [a for a in expected[name]["attributes"] if a.startswith("ValidatePattern")]  # type: ignore[union-attr]
        assert len(spec.patterns) == len(patterns), name


def test_sandbox_export_manifest_has_the_export_scripts_keys(tmp_path: Path) -> None:
    """`psbridge sandbox export` stands in for Export-PsbridgeData.ps1: same manifest keys."""
    import json

    from bridge.sandbox.export import export_organisation
    from bridge.sandbox.organisation import Organisation

    root = _tree(PS_SCRIPTS / EXPORT_SCRIPT).root_node
    (manifest,) = [
        node
        for node in _walk(root)
        if node.type == "assignment_expression" and _text(node.children[0]) == "$manifest"
    ]
    hashtable = next(n for n in _walk(manifest) if n.type == "hash_literal_body")
    keys = [_text(entry.children[0]) for entry in hashtable.children if entry.type == "hash_entry"]
    export_organisation(Organisation(mailboxes=3, seed=1), tmp_path)
    written = json.loads((tmp_path / "psbridge-manifest.json").read_text(encoding="utf-8"))
    assert [key for key in written if key != "sandbox"] == keys


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_mailboxes_are_never_read_by_a_member_exchange_online_may_lack(path: Path) -> None:
    # Get-EXOMailbox's default property set has Id, not Identity: under strict mode
    # $_.Identity stops the script on the first mailbox. Mailbox properties are read
    # through Get-PsbridgeMailboxKey, which looks each one up by name.
    members = [
        _text(node)
        for node in _walk(_tree(path).root_node)
        if node.type == "member_access"
        and _text(node.children[-1]) in ("Identity", "ExternalDirectoryObjectId", "Id")
    ]
    assert members == []


def test_exchange_online_mailboxes_are_queried_by_directory_object_id() -> None:
    for path in (PS_SCRIPTS / EXO_SCRIPT, PS_SCRIPTS / EXPORT_SCRIPT):
        keys = [
            _text(node)
            for node in _walk(_tree(path).root_node)
            if node.type == "command" and _text(node.children[0]) == "Get-PsbridgeMailboxKey"
        ]
        # asked by ExternalDirectoryObjectId first (-Mailbox accepts it), named by UPN first
        assert any("-Name 'ExternalDirectoryObjectId', 'UserPrincipalName'" in k for k in keys)
        assert any("-Name 'UserPrincipalName', 'ExternalDirectoryObjectId'" in k for k in keys)
    source = (PS_SCRIPTS / EXO_SCRIPT).read_text(encoding="utf-8")
    assert "Get-EXOMobileDeviceStatistics -Mailbox $mailboxKey.Query" in source
    export = (PS_SCRIPTS / EXPORT_SCRIPT).read_text(encoding="utf-8")
    assert "& $deviceCmdlet -Mailbox $query -ErrorAction Stop" in export


def test_no_script_tells_objects_apart_by_type_name() -> None:
    # The type names Exchange Online returns are not documented: objects are matched on
    # their properties (and the EXO script's PsbridgeKind tag), never on PSTypeNames.
    for path in ALL_SCRIPTS:
        source = path.read_text(encoding="utf-8")
        assert "TypeNames" not in source and " -is [" not in source, path.name
