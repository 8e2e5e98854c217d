"""Export files are told apart by type names, and by properties when the type names are
unknown (Exchange Online's REST-backed cmdlets: nothing public shows theirs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.frames import export_kind

EXPORT = Path(__file__).resolve().parent.parent / "samples" / "exchange-export"


def _with_unknown_type_names(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"
    text = re.sub(r"<T>[^<]*</T>", "<T>Deserialized.Some.Unknown.Type</T>",
                  data.decode(encoding))
    target.write_bytes(text.encode(encoding))
    return target


@pytest.mark.parametrize(("name", "kind"), [("Mailboxes.xml", "mailboxes"),
                                            ("MobileDeviceStatistics.xml", "devices")])
def test_unknown_type_names_are_told_apart_by_properties(tmp_path: Path, name: str,
                                                         kind: str) -> None:
    assert export_kind(EXPORT / name) == kind
    assert export_kind(_with_unknown_type_names(EXPORT / name, tmp_path / name)) == kind


def test_a_file_of_something_else_is_neither(tmp_path: Path) -> None:
    other = tmp_path / "x.xml"
    other.write_text('<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
                     '2004/04"><Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><Props>'
                     '<S N="Name">x</S></Props></Obj></Objs>', encoding="utf-8")
    assert export_kind(other) is None
