"""The columnar reader (bridge/clixml/_columnar.py, issue 14): what it reads is what the
full reader reads, and what it is not sure of it leaves to the full reader."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bridge.clixml import _export, iter_records, read_clixml, read_export, records_to_frame
from bridge.clixml._columnar import read_part, split_points
from bridge.clixml._convert import Converter, Reread
from bridge.errors import ClixmlError
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation

NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'
MAILBOX_TYPE = ("Deserialized.Microsoft.Exchange.Data.Directory.Management.Mailbox",
                "Deserialized.System.Object")
ENUM = ('<Obj N="Kind" RefId="{ref}">\n  {head}\n  <ToString>{name}</ToString>\n'
        "  <I32>{number}</I32>\n</Obj>")
ENUM_TN = ('<TN RefId="1">\n    <T>Microsoft.Exchange.Data.Directory.Recipient.RecipientType'
           "Details</T>\n    <T>System.Enum</T>\n    <T>System.Object</T>\n  </TN>")
LIST = ('<Obj N="Addresses" RefId="{ref}">\n  <TN RefId="{tn}">\n    <T>System.Object[]</T>\n'
        "  </TN>\n  <LST>\n    <S>smtp:{name}@contoso.com</S>\n  </LST>\n</Obj>")


def export_text(objects: list[list[str]], types: tuple[str, ...] = MAILBOX_TYPE,
                newline: str = "\r\n") -> str:
    """An Export-Clixml document as PowerShell writes it: two spaces a level, each
    object's members (XML at member level, lines relative to it) in <Props>."""
    lines = [f'<Objs Version="1.1.0.1" {NS}>']
    for index, members in enumerate(objects):
        lines.append(f'  <Obj RefId="{100 * index}">')
        if index == 0:
            lines += ['    <TN RefId="0">', *[f"      <T>{name}</T>" for name in types],
                      "    </TN>"]
        else:
            lines.append('    <TNRef RefId="0" />')
        lines += ["    <ToString>x</ToString>", "    <Props>"]
        lines += ["      " + line for member in members for line in member.split("\n")]
        lines += ["    </Props>", "  </Obj>"]
    lines.append("</Objs>")
    return newline.join(lines)


def write(path: Path, text: str, encoding: str = "utf-16") -> Path:
    path.write_bytes(text.encode(encoding))  # utf-16: little-endian with a BOM, as Windows
    return path


def columnar(path: Path, columns: list[str]) -> pd.DataFrame:
    return read_part(path, Converter(columns=columns))


def full(path: Path, columns: list[str]) -> pd.DataFrame:
    """The full reader's (lxml's) answer, projected afterwards."""
    whole = records_to_frame(iter_records(path))
    wanted = {name.casefold() for name in columns}
    return whole[[name for name in whole.columns if str(name).casefold() in wanted]]


def rich_objects() -> list[list[str]]:
    """Members of every plain kind, escapes, zones, characters beyond Latin-1, an enum
    (its type names first in the first object) and a list."""
    names = ["Ada & Co", "홍길동", "Zoë 😀", "tab\tand _x000D__x000A_ new line", " padded "]
    objects = []
    for n, name in enumerate(names):
        head = ENUM_TN if n == 0 else '<TNRef RefId="1" />'
        objects.append([
            f'<S N="Name">{name.replace("&", "&amp;")}</S>',
            f'<S N="Alias">a{n} &lt;b&gt;</S>' if n != 2 else '<S N="Alias"></S>',
            '<Nil N="Skipped" />',
            ['<DT N="WhenCreated">2024-02-24T20:03:00.5378931+01:00</DT>',
             '<DT N="WhenCreated">2024-02-24T20:03:00Z</DT>',
             '<DT N="WhenCreated">2024-02-24T20:03:00.1</DT>',
             '<DT N="WhenCreated">0001-01-01T00:00:00</DT>',
             '<Nil N="WhenCreated" />'][n],
            f'<B N="Enabled">{"true" if n % 2 else "false"}</B>',
            f'<I32 N="Count">{n - 2}</I32>',
            ENUM.format(ref=100 * n + 1, head=head, name=("UserMailbox", "SharedMailbox")[n % 2],
                        number=n),
            LIST.format(ref=100 * n + 2, tn=10 + n, name=f"u{n}"),
            f'<G N="Guid">0000000{n}-0000-0000-0000-000000000000</G>',
            '<S N="Empty" />' if n == 1 else '<S N="Empty">e</S>',
        ])
    return objects


COLUMN_SETS = [
    ["name", "whencreated"],  # few of many members: found one by one
    ["Name", "Alias", "WhenCreated", "Enabled", "Count", "Kind", "Addresses", "Guid", "Empty"],
]


@pytest.mark.parametrize("columns", COLUMN_SETS, ids=["few", "most"])
@pytest.mark.parametrize(("encoding", "newline"),
                         [("utf-16", "\r\n"), ("utf-8-sig", "\r\n"), ("utf-8", "\n")])
def test_columnar_reads_what_the_full_reader_reads(
        tmp_path: Path, columns: list[str], encoding: str, newline: str) -> None:
    path = write(tmp_path / "m.xml", export_text(rich_objects(), newline=newline), encoding)
    got = columnar(path, columns)
    pd.testing.assert_frame_equal(got, full(path, columns))
    pd.testing.assert_frame_equal(read_clixml(path, columns=columns), got)
    assert got["Name"].tolist()[1:3] == ["홍길동", "Zoë 😀"]


def test_a_nested_member_of_the_same_name_is_not_the_objects_own(tmp_path: Path) -> None:
    owner = ('<Obj N="Owner" RefId="{ref}">\n  <TN RefId="{tn}">\n    <T>Owner</T>\n  </TN>\n'
             '  <Props>\n    <S N="Name">inner</S>\n  </Props>\n</Obj>')
    objects = [[owner.format(ref=100 * n + 1, tn=5 + n), f'<S N="Name">outer{n}</S>']
               for n in range(3)]
    path = write(tmp_path / "m.xml", export_text(objects))
    assert columnar(path, ["name"])["Name"].tolist() == ["outer0", "outer1", "outer2"]


def test_an_object_without_a_member_gets_a_missing_value(tmp_path: Path) -> None:
    objects = [['<S N="Name">a</S>', '<S N="Alias">x</S>'], ['<S N="Name">b</S>'],
               ['<S N="Alias">y</S>', '<S N="Name">c</S>']]
    path = write(tmp_path / "m.xml", export_text(objects))
    got = columnar(path, ["name", "alias"])
    assert got["Name"].tolist() == ["a", "b", "c"]
    assert got["Alias"].isna().tolist() == [False, True, False]
    pd.testing.assert_frame_equal(got, full(path, ["name", "alias"]))


def dense_objects(count: int) -> list[list[str]]:
    """Objects whose members are mostly wanted (read a column at a time for a run of
    objects), with empty values, escapes and text beyond Latin-1 here and there, and two
    neighbours with other members whose counts balance: one more, one fewer."""
    notes = ["plain", "Ada &amp; Co", "홍길동", "Zoë 😀", "a_x000D__x000A_b", "é"]
    objects = []
    for n in range(count):
        alias = [f'<S N="Alias">a{n}</S>', '<Nil N="Alias" />', '<S N="Alias" />'][n % 3]
        members = [f'<S N="Name">n{n}</S>', alias, f'<I32 N="Count">{n}</I32>',
                   f'<DT N="WhenCreated">2024-02-{1 + n % 28:02d}T20:03:00.5378931+01:00</DT>',
                   f'<B N="Enabled">{"true" if n % 2 else "false"}</B>',
                   f'<S N="Note">{notes[n % len(notes)] if n % 7 == 0 else "n"}</S>',
                   '<S N="Unwanted">u</S>']
        if n == count // 2:
            members.append('<S N="Extra">one more</S>')
        if n == count // 2 + 1:
            members.pop(1)  # no Alias
        objects.append(members)
    return objects


@pytest.mark.parametrize("chunk", [None, 4096], ids=["one chunk", "many chunks"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_runs_of_objects_read_a_column_at_a_time_read_as_the_full_reader_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None,
        encoding: str) -> None:
    from bridge.clixml import _columnar

    if chunk is not None:
        monkeypatch.setattr(_columnar, "CHUNK", chunk)
    path = write(tmp_path / "m.xml", export_text(dense_objects(300)), encoding)
    columns = ["Name", "Alias", "Count", "WhenCreated", "Enabled", "Note"]
    got = columnar(path, columns)
    pd.testing.assert_frame_equal(got, full(path, columns))
    assert got["Name"].tolist() == [f"n{n}" for n in range(300)]
    assert got["Note"].tolist()[14:22:7] == ["홍길동", "Zoë 😀"]


def test_a_local_export_with_enum_objects_is_read_without_the_full_reader(
        tmp_path: Path) -> None:
    """Enums as objects (the Exchange snap-in loaded in the session, not remoting) and
    empty elements without the space before "/>" (lxml's way): still the columnar
    reader's, and what the full reader reads."""
    from benchmarks.clixml_read import write_sample
    from bridge.frames import DEVICE_SCHEMA

    path = tmp_path / "devices.xml"
    write_sample(path, 40)
    assert '<Nil N="LastSuccessSync"/>' in path.read_text("utf-16")
    columns = [*DEVICE_SCHEMA, "SupportedProtocolVersions"]
    got = columnar(path, columns)  # no Reread
    pd.testing.assert_frame_equal(got, full(path, columns))
    assert got["LastSuccessSync"].isna().any() and got["LastSuccessSync"].notna().any()
    assert set(got["DeviceAccessState"]) <= {"Allowed", "Blocked", "Quarantined",
                                             "DeviceDiscovery", "Unknown"}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda text: text.replace("<Props>", '<Props>\r\n      <!-- <S N="Name">fake</S> -->', 1),
         "a comment"),
        (lambda text: text.replace("  <", "<").replace("\r\n", ""), "not indented"),
        (lambda text: text.replace("\r\n      ", "").replace("\r\n    ", ""),
         "each object on one line"),
        (lambda text: text.replace("\r\n      ", ""), "members side by side"),
        (lambda text: text.replace(MAILBOX_TYPE[0], "System.Management.Automation.PSCustomObject"),
         "not an Exchange type"),
        (lambda text: text.replace('<S N="Alias">x</S>', '<S N="Alias">x</S>\r\n      '
                                   '<S N="Name">again</S>'), "two members of one name"),
        (lambda text: text.replace('<Obj RefId="100">', '<Obj RefId="100" S="warning">'),
         "another stream"),
        (lambda text: text.replace("    <ToString>x</ToString>", "    <S>own value</S>", 1),
         "a value of its own"),
        (lambda text: text.replace('<S N="Name">b</S>', '<Ref N="Name" RefId="0" />'), "a Ref"),
    ],
)
def test_what_columnar_is_not_sure_of_the_full_reader_reads(
        tmp_path: Path, change: object, why: str) -> None:
    objects = [['<S N="Name">a</S>', '<S N="Alias">x</S>'], ['<S N="Name">b</S>']]
    assert callable(change)
    path = write(tmp_path / "m.xml", change(export_text(objects)))
    with pytest.raises(Reread):
        columnar(path, ["Name", "Alias"])
    pd.testing.assert_frame_equal(read_clixml(path, columns=["Name", "Alias"]),
                                  full(path, ["Name", "Alias"]), obj=why)


def test_a_bad_value_is_reported_by_the_full_reader(tmp_path: Path) -> None:
    objects = [['<S N="Name">a</S>', '<DT N="WhenCreated">yesterday</DT>']]
    path = write(tmp_path / "m.xml", export_text(objects))
    with pytest.raises(Reread):
        columnar(path, ["WhenCreated"])
    with pytest.raises(ClixmlError, match="bad DT value 'yesterday'"):
        read_clixml(path, columns=["WhenCreated"])


def test_parts_of_a_file_read_apart_give_the_whole(tmp_path: Path) -> None:
    objects = [[f'<S N="Name">n{n}</S>', f'<S N="Pad">{"x" * (n % 50)}</S>',
                ENUM.format(ref=100 * n + 1, head=ENUM_TN if n == 0 else '<TNRef RefId="1" />',
                            name="UserMailbox", number=1)] for n in range(400)]
    path = write(tmp_path / "m.xml", export_text(objects))
    points = split_points(path, 7)
    assert len(points) == 6  # each part after the first starts with a type it must look up
    bounds = [0, *points, None]
    parts = [read_part(path, Converter(columns=["name", "kind"]), start, stop)
             for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    assert all(len(part) > 20 for part in parts)
    pd.testing.assert_frame_equal(_export.concat(parts), full(path, ["name", "kind"]))


def test_the_sandbox_export_is_read_in_parts_as_the_full_reader_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.frames import DEVICE_SCHEMA, MAILBOX_SCHEMA

    summary = export_organisation(Organisation(mailboxes=120, seed=7), tmp_path)
    mailbox_file, device_file, _manifest = summary.files
    for path, schema in ((mailbox_file, MAILBOX_SCHEMA), (device_file, DEVICE_SCHEMA)):
        pd.testing.assert_frame_equal(columnar(path, list(schema)), full(path, list(schema)))
    monkeypatch.setattr(_export, "PART_BYTES", 200_000)  # several parts a file
    files = {"mailboxes": [mailbox_file], "devices": [device_file]}
    columns = {"mailboxes": list(MAILBOX_SCHEMA), "devices": list(DEVICE_SCHEMA)}
    assert len(_export._parts(mailbox_file, columns["mailboxes"], 2)) > 3
    parallel = read_export(files, columns, processes=2)
    serial = read_export(files, columns, processes=1)
    for kind in files:
        pd.testing.assert_frame_equal(parallel[kind], serial[kind])
    assert len(parallel["devices"]) == summary.devices


def test_a_full_read_of_the_sandbox_export_is_the_tree_readers(tmp_path: Path) -> None:
    """Every property of Get-Mailbox and Get-MobileDeviceStatistics objects, lists empty
    (<LST />) and not among them: the columnar reader's, and what lxml's tree gives."""
    summary = export_organisation(Organisation(mailboxes=40, seed=5), tmp_path)
    for path in summary.files[:2]:
        got = read_part(path, Converter())  # no Reread
        pd.testing.assert_frame_equal(got, records_to_frame(iter_records(path)))
        pd.testing.assert_frame_equal(read_clixml(path), got)
    mailboxes = read_part(summary.files[0], Converter())
    assert len(mailboxes.columns) > 150
    assert any(isinstance(value, list) and value for value in mailboxes["EmailAddresses"])
    assert any(value == [] for value in mailboxes["AuditOwner"])


def test_a_part_it_is_not_sure_of_has_its_file_read_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = [[f'<S N="Name">n{n}</S>', f'<S N="Pad">{"x" * 400}</S>'] for n in range(300)]
    text = export_text(objects).replace('<S N="Name">n250</S>',
                                        '<S N="Name">n250</S><!-- a comment -->')
    path = write(tmp_path / "m.xml", text)
    monkeypatch.setattr(_export, "PART_BYTES", 50_000)
    read = read_export({"mailboxes": [path]}, {"mailboxes": ["name"]}, processes=2)
    assert read["mailboxes"]["Name"].tolist() == [f"n{n}" for n in range(300)]


def test_concat_gives_a_column_missing_in_one_part_the_others_type() -> None:
    first = pd.DataFrame({"A": pd.array(["x"], dtype="str"), "B": [None]})
    second = pd.DataFrame({"A": pd.array([None], dtype="object"),
                           "B": pd.array(["y"], dtype="str")})
    third = pd.DataFrame({"B": pd.array(["z"], dtype="str")})
    joined = _export.concat([first, second, third])
    assert joined["A"].dtype == first["A"].dtype and joined["B"].dtype == third["B"].dtype
    assert joined["B"].tolist()[1:] == ["y", "z"]
