"""The reader against other implementations' test inputs (issue 12).

Each CLIXML snippet below is taken from the test suites of psrpcore 0.3.1
(tests/test_types/test_primitive.py, test_serializer.py, test_collection.py) or pypsrp
0.9.1 (tests/tests_pypsrp/test_serializer.py); the comment says what that suite
expects. Where psbridge differs, the test names the design choice.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bridge import frames, sizes
from bridge.clixml import iter_records, parse_element, read_clixml, read_streams
from bridge.errors import ClixmlError
from bridge.output import write_frame

NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'


def doc(body: str) -> str:
    return f'<Objs Version="1.1.0.1" {NS}>{body}</Objs>'


# --- a value that carries extended properties --------------------------------------------

# Get-Content C:\notes.txt | Export-Clixml: each line is a string with four note properties
GET_CONTENT = doc(
    "".join(
        f'<Obj RefId="{n}">'
        + (
            '<TN RefId="0"><T>System.String</T><T>System.Object</T></TN>'
            if n == 0
            else '<TNRef RefId="0" />'
        )
        + f"<ToString>{line}</ToString><S>{line}</S><MS>"
        '<S N="PSPath">C:\\notes.txt</S><S N="PSParentPath">C:\\</S>'
        f'<S N="PSChildName">notes.txt</S><I64 N="ReadCount">{n + 1}</I64></MS></Obj>'
        for n, line in enumerate(["first line", "second line", ""])
    )
)


def test_get_content_export_keeps_every_line_beside_its_notes() -> None:
    records = list(iter_records(GET_CONTENT))
    assert [r["Value"] for r in records] == ["first line", "second line", ""]
    assert records[1] == {
        "Value": "second line",
        "PSPath": "C:\\notes.txt",
        "PSParentPath": "C:\\",
        "PSChildName": "notes.txt",
        "ReadCount": 2,
    }
    frame = read_clixml(GET_CONTENT)
    assert list(frame.columns)[:2] == ["Value", "PSPath"]
    assert frame["Value"].tolist() == ["first line", "second line", ""]


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        # psrpcore test_primitive.py: a value with an extended property is the value
        ('<B>true</B><MS><I32 N="Test Property">1</I32></MS>', True),
        ('<D>1.302000</D><MS><D N="Test Property">0</D></MS>', Decimal("1.302000")),
        (
            '<DT>2000-02-29T15:43:10.00001Z</DT><MS><I32 N="Test Property">1</I32></MS>',
            datetime(2000, 2, 29, 15, 43, 10, 10, tzinfo=UTC),
        ),
        (
            '<G>00000000-0000-0000-0000-000000000001</G><MS><I32 N="Test Property">1</I32></MS>',
            "00000000-0000-0000-0000-000000000001",
        ),
        # psrpcore test_collection.py: a list with an extended property is the list
        (
            '<TN RefId="0"><T>System.Collections.ArrayList</T><T>System.Object</T></TN>'
            '<MS><I32 N="Test Property">1</I32></MS><LST><I32>0</I32><C>97</C></LST>',
            [0, "a"],
        ),
    ],
)
def test_value_with_extended_properties_keeps_the_value(element: str, expected: object) -> None:
    record = parse_element(f'<Obj RefId="0">{element}</Obj>')
    assert record["Value"] == expected
    assert list(record)[1:] == ["Test Property"]
    # nested, the value is the value alone (as PowerShell's table view shows it)
    outer = f'<Obj RefId="9"><MS><Obj N="P" RefId="0">{element}</Obj></MS></Obj>'
    (nested,) = iter_records(doc(outer))
    assert nested == {"P": expected}


def test_hashtable_with_extended_properties_is_its_entries_then_its_properties() -> None:
    record = parse_element(
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T>'
        '</TN><MS><S N="Note">n</S></MS><DCT><En><S N="Key">abc</S><S N="Value">def</S></En>'
        '<En><I32 N="Key">1</I32><I32 N="Value">2</I32></En></DCT></Obj>'
    )
    assert record == {"abc": "def", "1": 2, "Note": "n"}


def test_a_note_property_named_value_wins_as_in_powershell() -> None:
    record = parse_element('<Obj RefId="0"><S>text</S><MS><I32 N="Value">7</I32></MS></Obj>')
    assert record == {"Value": 7}


# --- strings ---------------------------------------------------------------------------

# psrpcore conftest.COMPLEX_ENCODED_STRING
COMPLEX = "treble clef_x000A_ _x005F_x0000_ _x005F_X0000_ _xD834__xDD1E_ café _xD83C_ _x005F_x001G_"


def test_unpaired_surrogate_escape_is_kept_as_written() -> None:
    """psrpcore gives the lone surrogate U+D83C; psbridge keeps the escape text, since no
    writer can encode a lone surrogate (design choice); a pair is one character."""
    (record,) = iter_records(doc(f"<S>{COMPLEX}</S>"))
    text = record["Value"]
    assert text == "treble clef\n _x0000_ _X0000_ \U0001d11e café _xD83C_ _x001G_"
    assert isinstance(text, str) and "\ufffd" not in text
    text.encode("utf-8")  # every writer can write it
    assert parse_element("<S>surrogate low _xDFB5_</S>") == {"Value": "surrogate low _xDFB5_"}
    assert parse_element("<S>pair _xD83C__xDFB5_</S>") == {"Value": "pair \U0001f3b5"}
    assert parse_element("<S>lower case hex _x005f_</S>") == {"Value": "lower case hex _"}


def test_a_string_that_looks_like_a_size_stays_a_string() -> None:
    record = parse_element(
        '<Obj RefId="0"><Props><S N="ProhibitSendQuota">30 GB (32,212,254,720 bytes)</S>'
        '<S N="IssueWarningQuota">Unlimited</S></Props></Obj>'
    )
    assert record == {
        "ProhibitSendQuota": "30 GB (32,212,254,720 bytes)",
        "IssueWarningQuota": "Unlimited",
    }


def test_sizes_are_converted_where_the_schema_says_so() -> None:
    rows = [
        {"ProhibitSendQuota": "30 GB (32,212,254,720 bytes)"},
        {"ProhibitSendQuota": "Unlimited"},
        {"ProhibitSendQuota": "109.8 MB (115,131,392 bytes)"},
        {"ProhibitSendQuota": None},
    ]
    frame = frames.typed_frame(rows, {"ProhibitSendQuota": "size"})
    assert str(frame["ProhibitSendQuota"].dtype) == "Int64"
    assert frame["ProhibitSendQuota"].tolist()[::2] == [32_212_254_720, 115_131_392]
    assert frame["ProhibitSendQuota"].isna().tolist() == [False, True, False, True]
    assert sizes.size_bytes("1,2 KB (1.234 bytes)") == 1234  # a culture's group separator
    assert sizes.size_bytes("not a size") is None


def test_char_is_a_one_character_string() -> None:
    """psrpcore's PSChar is the number (97); psbridge gives the character (design choice:
    what PowerShell shows, and what a spreadsheet cell should hold)."""
    assert parse_element("<C>97</C>") == {"Value": "a"}


# --- dates, durations, decimals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        # psrpcore: PSDuration(seconds=9, microseconds=26902, nanoseconds=600)
        ("<TS>PT9.0269026S</TS>", timedelta(seconds=9, microseconds=26902)),
        ("<TS>P10675199DT2H48M5.4775807S</TS>", timedelta(days=10675199, seconds=10085,
                                                            microseconds=477580)),
        ("<TS>-PT0.0000019S</TS>", -timedelta(microseconds=1)),
        ("<TS>PT0.000099S</TS>", timedelta(microseconds=99)),
        # psrpcore: PSDateTime(..., 273199, nanosecond=300)
        (
            "<DT>2008-04-11T10:42:32.2731993-07:00</DT>",
            datetime(2008, 4, 11, 10, 42, 32, 273199, tzinfo=timezone(timedelta(hours=-7))),
        ),
        ("<DT>1999-01-25T05:22:14.9999103</DT>", datetime(1999, 1, 25, 5, 22, 14, 999910,
                                                          tzinfo=UTC)),
    ],
)
def test_durations_truncate_to_the_microsecond_like_dates(element: str, expected: object) -> None:
    assert parse_element(element) == {"Value": expected}


@pytest.mark.parametrize(("text", "expected"), [("1", "1"), ("1.10", "1.10"), ("-1", "-1"),
                                                ("0", "0"), ("1.1", "1.1")])
def test_decimal_is_exact(text: str, expected: str) -> None:
    value = parse_element(f"<D>{text}</D>")["Value"]
    assert isinstance(value, Decimal) and str(value) == expected


def test_decimal_columns_render_exactly(tmp_path: Path) -> None:
    """Frames: Arrow decimal128; Parquet: a decimal column; JSON and CSV: the digits."""
    frame = read_clixml(doc(
        '<Obj RefId="0"><MS><D N="Price">1.10</D></MS></Obj>'
        '<Obj RefId="1"><MS><D N="Price">79228162514264337593543.5</D></MS></Obj>'))
    assert frame["Price"].tolist() == [Decimal("1.10"), Decimal("79228162514264337593543.5")]
    write_frame(tmp_path / "p.parquet", frame)
    assert str(pq.read_table(tmp_path / "p.parquet").schema.field("Price").type) == (
        "decimal128(38, 2)")
    write_frame(tmp_path / "p.csv", frame)
    assert (tmp_path / "p.csv").read_text(encoding="utf-8-sig").splitlines() == [
        "Price", "1.10", "79228162514264337593543.50"]


# --- streams and dictionaries ------------------------------------------------------------


def test_an_unknown_stream_name_is_output_as_psrpcore_reads_it() -> None:
    text = doc('<S S="unknown">foo</S><S S="Output">bar</S><S S="verbose">v</S>'
               '<Obj RefId="0" S="Host"><MS><S N="A">a</S></MS></Obj>')
    assert list(iter_records(text)) == [{"Value": "foo"}, {"Value": "bar"}, {"A": "a"}]
    streams = read_streams(io.BytesIO(text.encode()))
    assert streams["verbose"] == [{"Message": "v"}]
    assert "unknown" not in streams and "host" not in streams


@pytest.mark.parametrize("part", ['<S N="NotKey">1</S><S N="Value">test</S>',
                                  '<S N="Key">1</S><S N="NotValue">test</S>'])
def test_dictionary_entry_without_key_or_value_is_an_error(part: str) -> None:
    """psrpcore: 'Failed to find dict Key/Value attribute'; no silent None key."""
    element = (
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T>'
        f"</TN><DCT><En>{part}</En></DCT></Obj>"
    )
    missing = "Key" if "NotKey" in part else "Value"
    with pytest.raises(ClixmlError, match=f'without its N="{missing}" element'):
        parse_element(element)


def test_frame_of_mixed_value_rows_keeps_the_value_column() -> None:
    frame = read_clixml(GET_CONTENT, columns=["value", "ReadCount"])
    assert list(frame.columns) == ["Value", "ReadCount"]
    pd.testing.assert_frame_equal(frame, read_clixml(GET_CONTENT)[["Value", "ReadCount"]])
