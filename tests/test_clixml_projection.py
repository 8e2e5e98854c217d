"""Projected reads (``columns=``) and the offline export's parallel reader (issue 14)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from bridge import frames
from bridge.clixml import iter_records, read_clixml, read_export
from bridge.errors import ClixmlError
from bridge.sandbox.export import export_organisation
from bridge.sandbox.organisation import Organisation

NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'


def doc(body: str) -> str:
    return f'<Objs Version="1.1.0.1" {NS}>{body}</Objs>'


ENUM_TN = ('<TN RefId="7"><T>System.ConsoleColor</T><T>System.Enum</T><T>System.ValueType</T>'
           "<T>System.Object</T></TN>")
# The first object's skipped member defines the enum's type names; the second object's
# kept member only refers to them (TNRef); the third refers to an object that the first
# object's skipped member defined (Ref).
DOCUMENT = doc(
    '<Obj RefId="0"><Props><S N="Name">a</S>'
    f'<Obj N="Skipped" RefId="1">{ENUM_TN}<ToString>Red</ToString><I32>12</I32></Obj>'
    '<Obj N="SkippedList" RefId="2"><TN RefId="8"><T>System.Object[]</T></TN>'
    "<LST><S>x</S></LST></Obj>"
    '<Obj N="Colour" RefId="3"><TNRef RefId="7" /><ToString>Blue</ToString><I32>9</I32></Obj>'
    "</Props></Obj>"
    '<Obj RefId="4"><Props><S N="Name">b</S>'
    '<Obj N="Colour" RefId="5"><TNRef RefId="7" /><ToString>Green</ToString><I32>10</I32></Obj>'
    "</Props></Obj>"
)
WITH_REF = DOCUMENT.replace(
    "</Objs>", '<Obj RefId="6"><Props><S N="Name">c</S><Ref N="Colour" RefId="2" /></Props>'
    "</Obj></Objs>")


def test_projection_skips_members_but_keeps_type_names_for_later_objects() -> None:
    assert list(iter_records(DOCUMENT, columns=["name", "COLOUR"])) == [
        {"Name": "a", "Colour": "Blue"},
        {"Name": "b", "Colour": "Green"},
    ]
    full = read_clixml(DOCUMENT)
    pd.testing.assert_frame_equal(read_clixml(DOCUMENT, columns=["Colour", "Name"]),
                                  full[["Name", "Colour"]])


@pytest.mark.parametrize("as_stream", [False, True], ids=["text", "binary-file"])
def test_a_kept_ref_to_a_skipped_object_reads_the_file_whole(as_stream: bool) -> None:
    full = read_clixml(WITH_REF)
    assert full["Colour"].tolist() == ["Blue", "Green", ["x"]]
    source: str | io.BytesIO = io.BytesIO(WITH_REF.encode()) if as_stream else WITH_REF
    projected = read_clixml(source, columns=["Name", "Colour"])
    pd.testing.assert_frame_equal(projected, full[["Name", "Colour"]])
    with pytest.raises(ClixmlError, match=r'<Ref RefId="2"> refers to an object the '
                       r"columns= projection skipped; read the file without columns="):
        list(iter_records(WITH_REF, columns=["Colour"]))


def test_rows_without_a_kept_property_are_still_rows() -> None:
    frame = read_clixml(doc('<S>plain</S><Obj RefId="0"><MS><S N="A">a</S></MS></Obj>'),
                        columns=["A"])
    assert len(frame) == 2 and frame["A"].tolist()[1] == "a"


def _report(mailboxes: object, devices: object) -> frames.Report:
    return frames.build_report(mailboxes, devices,  # type: ignore[arg-type]
                               options=frames.ReportOptions(all_devices=True),
                               run_started=datetime(2025, 6, 1, tzinfo=UTC))


def test_projected_parallel_read_and_full_read_give_the_same_report(tmp_path: Path) -> None:
    summary = export_organisation(Organisation(mailboxes=150, seed=3), tmp_path)
    mailbox_file, device_file, _manifest = summary.files
    full = _report(list(iter_records(mailbox_file)), list(iter_records(device_file)))
    export = frames.load_exports([tmp_path])  # projected, one process per file
    projected = _report(export.mailboxes, export.devices)
    assert isinstance(export.devices, pd.DataFrame)
    assert "/ExchangeActiveSyncDevices/" in str(next(export.device_identities))
    assert len(export.devices.columns) < len(read_clixml(device_file).columns)
    assert projected.figures == full.figures and full.figures.devices > 100
    for name in ("mailboxes", "devices", "users_without_devices", "by_platform"):
        pd.testing.assert_frame_equal(getattr(projected, name), getattr(full, name))


def test_read_export_concatenates_each_kinds_files_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    first.write_text(doc('<Obj RefId="0"><MS><S N="Name">1</S><S N="X">x</S></MS></Obj>'))
    second.write_text(doc('<Obj RefId="0"><MS><S N="Name">2</S></MS></Obj>'
                          '<Obj RefId="1"><MS><S N="Name">3</S></MS></Obj>'))
    files = {"mailboxes": [second, first], "devices": [first], "none": []}
    parallel = read_export(files, {"mailboxes": ["name"]}, processes=2)
    serial = read_export(files, {"mailboxes": ["name"]}, processes=1)
    assert parallel["mailboxes"]["Name"].tolist() == ["2", "3", "1"]
    assert list(parallel["devices"].columns) == ["Name", "X"]
    assert parallel["none"].empty
    for kind in files:
        pd.testing.assert_frame_equal(parallel[kind], serial[kind])


def test_read_export_reports_a_bad_file_from_its_worker(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_text(doc('<Obj RefId="0"><MS><S N="A">a</S></MS></Obj>'))
    bad.write_text(doc('<Obj RefId="0"><MS><I32 N="A">x</I32></MS></Obj>'))
    with pytest.raises(ClixmlError) as caught:
        read_export({"mailboxes": [good], "devices": [bad]}, processes=2)
    assert str(caught.value) == f"{bad}: line 1, column 100: bad I32 value 'x'"


def test_the_scan_reads_an_export_as_the_full_reader_does(tmp_path: Path) -> None:
    """The regular-expression scan (no tree) serves the report's projection of an export
    as Export-Clixml writes it, and gives what lxml gives."""
    from bridge.clixml._convert import Converter
    from bridge.clixml._document import Input
    from bridge.clixml._scan import scan_records

    summary = export_organisation(Organisation(mailboxes=60, seed=5), tmp_path)
    for path, schema in zip(summary.files, (frames.MAILBOX_SCHEMA, frames.DEVICE_SCHEMA),
                            strict=False):
        scanned = list(scan_records(Input(path), Converter(columns=list(schema))))
        assert scanned == list(iter_records(path, columns=list(schema)))
        assert len(scanned) > 50 and all(len(row) > 5 for row in scanned)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('<Obj RefId="0"><S>v</S><MS><S N="A">a</S></MS></Obj>', "a value of its own"),
        ('<Obj RefId="0" S="warning"><MS><S N="A">a</S></MS></Obj>', "another stream"),
        ('<!-- <Obj RefId="9"><MS><S N="A">x</S></MS></Obj> -->'
         '<Obj RefId="0"><MS><S N="A">a</S></MS></Obj>', "a comment"),
        ('<Obj RefId="0"><MS><S N="A">a &amp; b</S><Ref N="B" RefId="0" /></MS></Obj>', "a Ref"),
        ('<Obj RefId="0"><MS><S N="A">a</S></MS></Obj><S>top</S>', "a top-level value"),
        ('<Obj RefId="0"><MS><Obj N="A" RefId="1"><TN RefId="0"><T>System.Object[]</T></TN>'
         '<LST><S>x</S><S>y</S></LST></Obj></MS></Obj>', "none: a wanted nested object"),
    ],
)
def test_what_the_scan_does_not_read_the_full_reader_does(body: str, why: str) -> None:
    text = doc(body)
    full = read_clixml(text)
    wanted = [name for name in ("A", "B") if name in full.columns]
    pd.testing.assert_frame_equal(read_clixml(text, columns=["a", "b"]), full[wanted], obj=why)
    path_bytes = text.encode("utf-16")  # as Export-Clixml writes it, with a BOM
    pd.testing.assert_frame_equal(read_clixml(path_bytes, columns=["A", "B"]), full[wanted])


def test_projection_of_every_corpus_file_equals_the_full_read(corpus_dir: Path) -> None:
    for path in sorted(corpus_dir.glob("*.xml")):
        full = read_clixml(path)
        for columns in (list(full.columns), list(full.columns)[:3]):
            projected = read_clixml(path, columns=[str(name) for name in columns])
            pd.testing.assert_frame_equal(projected, full[columns], obj=path.name)


def test_the_scan_reads_across_chunks_with_nested_objects(tmp_path: Path) -> None:
    """Objects cut at every place by the reader's chunks, with enum and list members."""
    objects = []
    for n in range(3000):
        enum = (f'<Obj N="State" RefId="{3 * n + 1}">'
                + (ENUM_TN if n == 0 else '<TNRef RefId="7" />')
                + f"<ToString>{('Red', 'Blue')[n % 2]}</ToString><I32>{n % 2}</I32></Obj>")
        objects.append(
            f'<Obj RefId="{3 * n}"><Props><S N="Name">n{n} &amp; co</S>'
            f'<S N="Padding">{"x" * (n % 97)}</S>{enum}'
            f'<Obj N="List" RefId="{3 * n + 2}"><TN RefId="{10 + n}"><T>System.Object[]</T>'
            f"</TN><LST><I32>{n}</I32></LST></Obj></Props></Obj>\r\n")
    path = tmp_path / "big.xml"
    path.write_bytes(b"\xff\xfe" + doc("".join(objects)).encode("utf-16-le"))
    assert path.stat().st_size > 3 * 2**18  # several of the reader's chunks
    full = read_clixml(path)
    assert full["State"].tolist()[:3] == ["Red", "Blue", "Red"]
    from bridge.clixml._convert import Converter
    from bridge.clixml._document import Input
    from bridge.clixml._scan import scan_records

    for columns in (["name", "state", "list"], ["State"]):
        scanned = list(scan_records(Input(path), Converter(columns=columns)))  # no fallback
        assert len(scanned) == 3000
        projected = read_clixml(path, columns=columns)
        pd.testing.assert_frame_equal(projected, full[list(projected.columns)])
        assert len(projected.columns) == len(columns)
