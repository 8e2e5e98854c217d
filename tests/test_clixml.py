"""The CLIXML reader on small synthetic documents: every value type, every source kind,
streams, PSRP payloads, the frame rules and every kind of bad input."""

from __future__ import annotations

import io
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from bridge import read_clixml
from bridge.clixml import (
    SECURE_STRING,
    _document,
    iter_records,
    parse_element,
    parse_error_record,
    read_streams,
    records_to_frame,
)
from bridge.errors import ClixmlError, ExitCode

NS = 'xmlns="http://schemas.microsoft.com/powershell/2004/04"'


def doc(body: str) -> str:
    return f'<Objs Version="1.1.0.1" {NS}>{body}</Objs>'


def one(body: str) -> dict[str, object]:
    (record,) = iter_records(doc(body))
    return record


def value(element: str) -> object:
    """The value of one property element inside an object."""
    return one(f'<Obj RefId="0"><Props>{element}</Props></Obj>')["P"]


ENUM_TN = (
    '<TN RefId="{ref}"><T>{name}</T><T>System.Enum</T><T>System.ValueType</T>'
    "<T>System.Object</T></TN>"
)


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ('<S N="P">text</S>', "text"),
        ('<S N="P" />', ""),
        ('<C N="P">97</C>', "a"),
        ('<B N="P">true</B>', True),
        ('<B N="P">false</B>', False),
        ('<By N="P">255</By>', 255),
        ('<SB N="P">-128</SB>', -128),
        ('<U16 N="P">65535</U16>', 65535),
        ('<I16 N="P">-32768</I16>', -32768),
        ('<U32 N="P">4294967295</U32>', 4294967295),
        ('<I32 N="P">-2147483648</I32>', -2147483648),
        ('<U64 N="P">18446744073709551615</U64>', 18446744073709551615),
        ('<I64 N="P">-9223372036854775808</I64>', -9223372036854775808),
        ('<Sg N="P">1.5</Sg>', 1.5),
        ('<Db N="P">-INF</Db>', float("-inf")),
        ('<Db N="P">2.5E+20</Db>', 2.5e20),
        ('<D N="P">10.25</D>', Decimal("10.25")),
        ('<BA N="P">AQID</BA>', b"\x01\x02\x03"),
        (
            '<G N="P">792e6ad0-3a2d-4b37-8a1e-5b6b9e1f0a11</G>',
            "792e6ad0-3a2d-4b37-8a1e-5b6b9e1f0a11",
        ),
        ('<URI N="P">https://mail.contoso.com/owa</URI>', "https://mail.contoso.com/owa"),
        ('<Version N="P">15.2.1118.7</Version>', "15.2.1118.7"),
        ('<XD N="P">&lt;a&gt;1&lt;/a&gt;</XD>', "<a>1</a>"),
        ('<SBK N="P">Get-Mailbox -ResultSize 1</SBK>', "Get-Mailbox -ResultSize 1"),
        ('<SS N="P">AQAAANCMnd8BFdERjHoAwE</SS>', SECURE_STRING),
        ('<Nil N="P" />', None),
        # truncated to the microsecond, as dates are (never rounded up)
        ('<TS N="P">PT9.0269026S</TS>', timedelta(seconds=9, microseconds=26902)),
        ('<TS N="P">-P1DT2H3M</TS>', -timedelta(days=1, hours=2, minutes=3)),
        ('<DT N="P">2022-10-20T01:10:53Z</DT>', datetime(2022, 10, 20, 1, 10, 53, tzinfo=UTC)),
        (
            '<DT N="P">2022-10-19T18:10:53.1234567-07:00</DT>',
            datetime(2022, 10, 19, 18, 10, 53, 123456, tzinfo=timezone(timedelta(hours=-7))),
        ),
        ('<DT N="P">2015-04-23T00:00:00</DT>', datetime(2015, 4, 23, tzinfo=UTC)),  # no zone
        ('<DT N="P">9999-12-31T23:59:59.9999999</DT>', datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_primitive_values(element: str, expected: object) -> None:
    result = value(element)
    assert result == expected
    assert type(result) is type(expected)


def test_decimal_is_exact() -> None:
    assert value('<D N="P">79228162514264337593543950335</D>') == Decimal(2**96 - 1)
    assert str(value('<D N="P">1.10</D>')) == "1.10"  # the scale PowerShell wrote


def test_zone_is_kept_not_converted() -> None:
    when = value('<DT N="P">2022-10-19T18:10:53-07:00</DT>')
    assert isinstance(when, datetime) and when.utcoffset() == timedelta(hours=-7)


def test_escapes_in_strings_and_property_names() -> None:
    record = one(
        '<Obj RefId="0"><Props>'
        '<S N="Line_x0020_One">a_x000D__x000A_b</S>'
        '<S N="Literal">keep _x005F_x000D_ as text</S>'
        '<S N="Emoji">_xD83D__xDE00_</S>'
        "</Props></Obj>"
    )
    assert record == {
        "Line One": "a\r\nb",
        "Literal": "keep _x000D_ as text",
        "Emoji": "\U0001f600",
    }


def test_containers() -> None:
    record = one(
        '<Obj RefId="0"><Props>'
        '<Obj N="List" RefId="1"><TN RefId="0"><T>System.Object[]</T></TN>'
        "<LST><S>a</S><I32>1</I32><Nil /></LST></Obj>"
        '<Obj N="Enumerable" RefId="2"><IE><S>x</S></IE></Obj>'
        '<Obj N="Stack" RefId="3"><STK><S>top</S></STK></Obj>'
        '<Obj N="Queue" RefId="4"><QUE><S>first</S></QUE></Obj>'
        '<Obj N="Table" RefId="5"><DCT>'
        '<En><S N="Key">one</S><I32 N="Value">1</I32></En>'
        '<En><I32 N="Key">2</I32><S N="Value">two</S></En>'
        "</DCT></Obj>"
        "</Props></Obj>"
    )
    assert record == {
        "List": ["a", 1, None],
        "Enumerable": ["x"],
        "Stack": ["top"],
        "Queue": ["first"],
        "Table": {"one": 1, 2: "two"},
    }


def test_enums_and_flags_become_names() -> None:
    record = one(
        '<Obj RefId="0"><Props>'
        '<Obj N="State" RefId="1">'
        + ENUM_TN.format(ref=0, name="Microsoft.Exchange.Data.DeviceAccessState")
        + "<ToString>Quarantined</ToString><I32>3</I32></Obj>"
        '<Obj N="Auth" RefId="2">'
        + ENUM_TN.format(ref=1, name="Deserialized.System.Net.AuthenticationSchemes")
        + "<ToString>Tls, Integrated, BasicAuth</ToString><I32>100</I32></Obj>"
        "</Props></Obj>"
    )
    assert record == {"State": "Quarantined", "Auth": "Tls, Integrated, BasicAuth"}


EXCHANGE_VALUES = (
    '<Obj RefId="0"><TN RefId="0">'
    "<T>Deserialized.Microsoft.Exchange.Data.Directory.Management.Mailbox"
    "</T><T>Deserialized.System.Object</T></TN><ToString>Ann</ToString><Props>"
    '<S N="QuotaString">36 MB (37,748,736 bytes)</S>'
    '<Obj N="QuotaObject" RefId="1"><TN RefId="1">'
    "<T>Microsoft.Exchange.Data.ByteQuantifiedSize</T><T>System.ValueType</T></TN>"
    "<ToString>5 GB (5,368,709,120 bytes)</ToString></Obj>"
    '<Obj N="Limited" RefId="2"><TN RefId="2">'
    "<T>Microsoft.Exchange.Data.Unlimited`1[[Microsoft.Exchange.Data.ByteQuantifiedSize]]</T>"
    "</TN><ToString>500 MB (524,288,000 bytes)</ToString>"
    '<Props><B N="IsUnlimited">false</B><S N="Value">500 MB (524,288,000 bytes)</S></Props></Obj>'
    '<Obj N="Unlimited" RefId="3"><TNRef RefId="2" /><ToString>Unlimited</ToString>'
    '<Props><B N="IsUnlimited">true</B></Props></Obj>'
    '<Obj N="EmailAddresses" RefId="4"><TN RefId="3">'
    "<T>Deserialized.Microsoft.Exchange.Data.ProxyAddressCollection</T>"
    "<T>Deserialized.Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddress]]</T>"
    "<T>Deserialized.Microsoft.Exchange.Data.MultiValuedPropertyBase</T></TN>"
    "<LST><S>SMTP:ann@contoso.com</S><S>smtp:ann@contoso.onmicrosoft.com</S></LST></Obj>"
    '<Obj N="Database" RefId="5"><TN RefId="4">'
    "<T>Deserialized.Microsoft.Exchange.Data.Directory.ADObjectId</T></TN>"
    "<ToString>DB01</ToString>"
    '<Props><S N="Name">DB01</S><G N="ObjectGuid">5b1e0f0c-0000-4000-8000-000000000001</G>'
    "</Props></Obj>"
    "</Props></Obj>"
)


def test_exchange_value_rules() -> None:
    assert one(EXCHANGE_VALUES) == {
        "QuotaString": "36 MB (37,748,736 bytes)",  # a string: bridge.sizes, from frames
        "QuotaObject": 5_368_709_120,
        "Limited": 524_288_000,
        "Unlimited": None,
        "EmailAddresses": ["SMTP:ann@contoso.com", "smtp:ann@contoso.onmicrosoft.com"],
        "Database": "DB01",
    }


def test_structured_keeps_nested_exchange_objects() -> None:
    (record,) = iter_records(doc(EXCHANGE_VALUES), structured=True)
    assert record["Database"] == {
        "Name": "DB01",
        "ObjectGuid": "5b1e0f0c-0000-4000-8000-000000000001",
    }
    assert record["Unlimited"] == {"IsUnlimited": True}


def test_other_nested_objects_are_dicts_and_primitive_wrappers_their_value() -> None:
    record = one(
        '<Obj RefId="0"><Props>'
        '<Obj N="Version" RefId="1"><TN RefId="0"><T>System.Diagnostics.FileVersionInfo</T></TN>'
        '<ToString>File: x.dll</ToString><Props><S N="FileVersion">1.2</S></Props></Obj>'
        '<Obj N="Wrapped" RefId="2"><TN RefId="1"><T>System.String</T></TN><S>hello</S>'
        '<MS><S N="PSPath">C:\\x.txt</S></MS></Obj>'
        "</Props></Obj>"
    )
    assert record == {"Version": {"FileVersion": "1.2"}, "Wrapped": "hello"}


def test_refs_and_type_names_are_document_wide_at_any_depth() -> None:
    body = (
        '<Obj RefId="0"><TN RefId="0"><T>Thing</T></TN><Props><S N="Name">first</S>'
        '<Obj N="Owner" RefId="1"><TN RefId="1"><T>Person</T></TN><Props><S N="Alias">ann</S>'
        '<Obj N="Tags" RefId="2"><LST><S>a</S><S>b</S></LST></Obj></Props></Obj>'
        "</Props></Obj>"
        '<Obj RefId="3"><TNRef RefId="0" /><Props><S N="Name">second</S>'
        '<Ref N="Owner" RefId="1" /><Ref N="Tags" RefId="2" /></Props></Obj>'
    )
    first, second = iter_records(doc(body))
    assert second == {
        "Name": "second",
        "Owner": {"Alias": "ann", "Tags": ["a", "b"]},
        "Tags": ["a", "b"],
    }
    assert first["Owner"] == second["Owner"]


def test_redefined_refid_replaces_the_earlier_one() -> None:
    body = (
        '<Obj RefId="0"><MS><Obj N="A" RefId="1"><LST><S>old</S></LST></Obj></MS></Obj>'
        '<Obj RefId="0"><MS><Obj N="A" RefId="1"><LST><S>new</S></LST></Obj>'
        '<Ref N="B" RefId="1" /></MS></Obj>'
    )
    assert list(iter_records(doc(body)))[1] == {"A": ["new"], "B": ["new"]}


def test_top_level_primitives_interleave_with_objects_in_order() -> None:
    body = '<S>one</S><Obj RefId="0"><MS><I32 N="N">2</I32></MS></Obj><I32>3</I32>'
    assert list(iter_records(doc(body))) == [{"Value": "one"}, {"N": 2}, {"Value": 3}]


def test_empty_objs_gives_an_empty_frame() -> None:
    frame = read_clixml(f"<Objs Version='1.1.0.1' {NS} />")
    assert frame.empty and list(frame.columns) == []


def test_columns_are_the_union_in_first_seen_order() -> None:
    body = (
        '<Obj RefId="0"><MS><S N="A">1</S><S N="B">2</S></MS></Obj>'
        '<Obj RefId="1"><MS><S N="C">3</S><S N="A">4</S></MS></Obj>'
    )
    frame = read_clixml(doc(body))
    assert list(frame.columns) == ["A", "B", "C"]
    assert frame["A"].tolist() == ["1", "4"]
    assert pd.isna(frame["B"][1]) and pd.isna(frame["C"][0])


SAMPLE = doc('<Obj RefId="0"><Props><S N="Name">Ann</S><I32 N="Count">3</I32></Props></Obj>')


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-8"),
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
        lambda text: b"\xff\xfe" + text.encode("utf-16-le"),
        lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_encodings(tmp_path: Path, encode: object) -> None:
    data = encode(SAMPLE)  # type: ignore[operator]
    path = tmp_path / "sample.xml"
    path.write_bytes(data)
    expected = [{"Name": "Ann", "Count": 3}]
    assert list(iter_records(path)) == expected
    assert list(iter_records(str(path))) == expected
    assert list(iter_records(data)) == expected
    assert list(iter_records(io.BytesIO(data))) == expected


def test_text_source() -> None:
    assert list(iter_records("\ufeff" + SAMPLE)) == [{"Name": "Ann", "Count": 3}]


CLIXML_STREAM = (
    "#< CLIXML\r\n"
    f'<Objs Version="1.1.0.1" {NS}><Obj S="progress" RefId="0"><TN RefId="0">'
    '<T>System.Management.Automation.PSCustomObject</T></TN><MS><I64 N="SourceId">1</I64>'
    '<PR N="Record"><AV>Working</AV><AI>0</AI><Nil /><PI>-1</PI><PC>50</PC><T>Processing</T>'
    "<SR>-1</SR><SD>half way</SD></PR></MS></Obj>"
    '<S S="warning">Careful_x000D__x000A_</S>'
    '<Obj RefId="1"><TNRef RefId="0" /><MS><S N="Name">row one</S></MS></Obj></Objs>'
    f'<Objs Version="1.1.0.1" {NS}><S S="Error">Get-Thing : boom_x000D__x000A_</S>'
    '<S S="verbose">details</S>'
    '<Obj S="information" RefId="2"><TN RefId="1">'
    "<T>System.Management.Automation.InformationRecord</T>"
    '</TN><ToString>hello</ToString><Props><S N="MessageData">hello</S></Props></Obj>'
    '<Obj RefId="3"><TNRef RefId="0" /><MS><S N="Name">row two</S></MS></Obj></Objs>'
)


def test_clixml_stream_with_several_blocks_rows_and_streams_apart() -> None:
    assert list(iter_records(CLIXML_STREAM)) == [{"Name": "row one"}, {"Name": "row two"}]
    streams = read_streams(CLIXML_STREAM.encode("utf-8"))
    assert streams["warning"] == [{"Message": "Careful\r\n"}]
    assert streams["error"] == [{"Message": "Get-Thing : boom\r\n"}]
    assert streams["verbose"] == [{"Message": "details"}]
    assert streams["information"] == [{"MessageData": "hello"}]
    assert streams["progress"][0]["Record"]["PercentComplete"] == 50  # type: ignore[index]
    assert streams["debug"] == []


def test_clixml_stream_in_utf16_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "stderr.xml"
    path.write_bytes(b"\xff\xfe" + (CLIXML_STREAM + "\n<Oops").encode("utf-16-le"))
    with pytest.raises(ClixmlError) as caught:
        list(iter_records(path))
    assert str(caught.value).startswith(f"{path}: line 3, column 6: malformed XML")
    good = tmp_path / "good.xml"
    good.write_bytes(b"\xff\xfe" + CLIXML_STREAM.encode("utf-16-le"))
    assert len(list(iter_records(good))) == 2


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_declaration_and_wide_characters(tmp_path: Path, codec: str) -> None:
    # what Windows PowerShell writes: an encoding declaration, and characters past
    # U+FFFF as surrogate pairs
    text = '<?xml version="1.0" encoding="utf-16"?>\r\n' + SAMPLE.replace("Ann", "Ann \U0001f4f1")
    bom = b"\xff\xfe" if codec == "utf-16-le" else b"\xfe\xff"
    path = tmp_path / "declared.xml"
    path.write_bytes(bom + text.encode(codec))
    assert list(iter_records(path)) == [{"Name": "Ann \U0001f4f1", "Count": 3}]


def test_utf16_cut_in_the_middle_of_a_character(tmp_path: Path) -> None:
    path = tmp_path / "cut.xml"
    path.write_bytes(b"\xff\xfe" + SAMPLE.encode("utf-16-le") + b"<")
    with pytest.raises(ClixmlError) as caught:
        list(iter_records(path))
    assert str(caught.value) == (
        f"{path}: line 1, column 165: malformed XML: Invalid bytes in character encoding")


PSRP_OUTPUT = (
    '<Obj RefId="0"><TN RefId="0"><T>Microsoft.Exchange.Data.Directory.Management.Mailbox</T>'
    '<T>System.Object</T></TN><ToString>Ann</ToString><Props><S N="Alias">ann</S>'
    '<S N="ProhibitSendQuota">Unlimited</S>'
    '<S N="IssueWarningQuota">1.9 GB (2,040,109,056 bytes)</S>'
    '<Obj N="EmailAddresses" RefId="1"><TN RefId="1">'
    "<T>Microsoft.Exchange.Data.ProxyAddressCollection</T>"
    "</TN><LST><S>SMTP:ann@contoso.com</S></LST></Obj></Props></Obj>"
)


def test_parse_element_gives_what_iter_records_gives() -> None:
    record = parse_element(PSRP_OUTPUT)
    assert record == next(iter_records(doc(PSRP_OUTPUT)))
    assert record == {
        "Alias": "ann",
        "ProhibitSendQuota": "Unlimited",
        "IssueWarningQuota": "1.9 GB (2,040,109,056 bytes)",
        "EmailAddresses": ["SMTP:ann@contoso.com"],
    }
    assert parse_element(PSRP_OUTPUT.encode()) == record
    assert parse_element("<S>plain</S>") == {"Value": "plain"}


def test_parse_element_scopes_refids_to_the_element() -> None:
    parse_element(PSRP_OUTPUT)
    with pytest.raises(ClixmlError) as caught:
        parse_element('<Obj RefId="0"><TNRef RefId="0" /><MS><S N="A">1</S></MS></Obj>')
    assert str(caught.value) == (
        '<element>: line 1, column 16: <TNRef RefId="0"> refers to no earlier <TN>'
    )


def test_parse_error_record() -> None:
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T></TN>'
        "<ToString>The operation couldn't be performed because 'nobody' couldn't be found."
        "</ToString>"
        '<MS><Obj N="Exception" RefId="1"><TN RefId="1"><T>System.Exception</T></TN>'
        '<ToString>x</ToString><Props><S N="Message">The operation couldn\'t be performed because '
        "'nobody' couldn't be found.</S></Props></Obj>"
        '<S N="FullyQualifiedErrorId">[Server=EX1] 8D1A,'
        "Microsoft.Exchange.Management.RecipientTasks.GetMailbox</S>"
        '<I32 N="ErrorCategory_Category">0</I32>'
        '<S N="ErrorCategory_Reason">ManagementObjectNotFoundException</S>'
        '<S N="ErrorCategory_Message">'
        "NotSpecified: (:) [Get-Mailbox], ManagementObjectNotFoundException</S>"
        "</MS></Obj>"
    )
    fields = parse_error_record(xml)
    assert (
        fields["Message"]
        == "The operation couldn't be performed because 'nobody' couldn't be found."
    )
    assert fields["Reason"] == "ManagementObjectNotFoundException"
    assert (
        fields["CategoryInfo"]
        == "NotSpecified: (:) [Get-Mailbox], ManagementObjectNotFoundException"
    )
    assert str(fields["FullyQualifiedErrorId"]).endswith("GetMailbox")


def test_frame_types() -> None:
    records = [
        {
            "U64": 18446744073709551615,
            "Opt": 5,
            "Big": 2**70,
            "Flag": True,
            "Size": 10,
            "Dec": Decimal("1.5"),
            "When": datetime(2024, 1, 1, tzinfo=UTC),
        },
        {
            "U64": 1,
            "Opt": None,
            "Big": 1,
            "Flag": None,
            "Size": None,
            "Dec": None,
            "When": datetime(9999, 12, 31, tzinfo=UTC),
        },
        {
            "U64": 2,
            "Opt": 7,
            "Big": 2,
            "Flag": False,
            "Size": 20,
            "Dec": Decimal("-0.25"),
            "When": datetime(1, 1, 1, tzinfo=UTC),
        },
    ]
    frame = records_to_frame(records)
    assert str(frame["U64"].dtype) == "UInt64" and frame["U64"][0] == 18446744073709551615
    assert str(frame["Opt"].dtype) == "Int64" and frame["Opt"].tolist()[::2] == [5, 7]
    assert frame["Big"].dtype == object and frame["Big"][0] == 2**70
    assert str(frame["Flag"].dtype) == "boolean"
    assert frame["Size"].tolist()[::2] == [10, 20] and pd.isna(frame["Size"][1])
    # decimals stay exact: Arrow decimal128 (Parquet decimal, Excel number)
    assert str(frame["Dec"].dtype) == "decimal128(38, 2)[pyarrow]"
    assert frame["Dec"].tolist()[::2] == [Decimal("1.5"), Decimal("-0.25")]
    assert str(frame["When"].dtype) == "datetime64[ns, UTC]"
    assert frame["When"][0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert pd.isna(frame["When"][1]) and pd.isna(frame["When"][2])  # out of range: NaT


def test_frame_dates_convert_zones_to_utc_and_durations_overflow_to_nat() -> None:
    frame = records_to_frame(
        [
            {
                "When": datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))),
                "Span": timedelta(days=10675199),
            },
            {"When": None, "Span": timedelta(minutes=2)},
        ]
    )
    assert frame["When"][0] == pd.Timestamp("2023-12-31 23:00", tz="UTC")
    assert pd.isna(frame["When"][1])
    assert pd.isna(frame["Span"][0]) and frame["Span"][1] == pd.Timedelta(minutes=2)


BAD_INPUTS = [
    (
        "not-xml",
        b"hello world",
        "line 1, column 1: malformed XML: Start tag expected, '<' not found",
    ),
    (
        "truncated",
        f'<Objs {NS}>\n  <Obj RefId="0">\n    <Props>\n      <S N="A">x</S>\n'.encode(),
        "line 5, column 1: malformed XML: Premature end of data in tag Props line 3",
    ),
    (
        "wrong-root",
        b'<Root>\n  <Obj RefId="0"/>\n</Root>',
        "line 1, column 1: not CLIXML: the root element is <Root>, expected <Objs>",
    ),
    (
        "dangling-ref",
        f'<Objs {NS}>\n  <Obj RefId="0">\n'.encode()
        + b'    <Props><Ref N="A" RefId="7" /></Props>\n  </Obj>\n</Objs>',
        'line 3, column 12: <Ref RefId="7"> refers to no earlier object',
    ),
    (
        "dangling-tnref",
        f'<Objs {NS}>\n  <Obj RefId="0"><TNRef RefId="3" /></Obj>\n</Objs>'.encode(),
        'line 2, column 18: <TNRef RefId="3"> refers to no earlier <TN>',
    ),
    (
        "bad-number",
        f'<Objs {NS}>\n  <Obj RefId="0"><Props>\n'.encode()
        + b'  <I32 N="A">abc</I32></Props></Obj>\n</Objs>',
        "line 3, column 3: bad I32 value 'abc'",
    ),
    (
        "unknown-element",
        f'<Objs {NS}>\n  <Obj RefId="0"><Props><Foo N="A">1</Foo></Props></Obj>\n</Objs>'.encode(),
        "line 2, column 25: unexpected element <Foo>",
    ),
    ("empty", b"", "empty file: no CLIXML data"),
]


@pytest.mark.parametrize(("case", "data", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_line_and_column(
    tmp_path: Path, case: str, data: bytes, message: str
) -> None:
    path = tmp_path / f"{case}.xml"
    path.write_bytes(data)
    with pytest.raises(ClixmlError) as caught:
        read_clixml(path)
    assert str(caught.value) == f"{path}: {message}"
    assert caught.value.exit_code == ExitCode.INPUT


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClixmlError) as caught:
        read_clixml(tmp_path / "nope.xml")
    assert str(caught.value) == f"{tmp_path / 'nope.xml'}: no such file"


def _laughs(levels: int = 10) -> str:
    entities = '<!ENTITY lol0 "lol">\n' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, levels)
    )
    body = f"<Objs {NS}><S>&lol{levels - 1};</S></Objs>"
    return f'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n{entities}]>\n{body}'


@pytest.mark.parametrize("padding", [0, _document._CHUNK + 1000], ids=["at-start", "past-head"])
def test_billion_laughs_fails_fast_without_expanding(tmp_path: Path, padding: int) -> None:
    path = tmp_path / "laughs.xml"
    text = _laughs()
    if padding:  # past the quick look at the head: the parser's own guard must hold
        text = text.replace("<!DOCTYPE", f"<!--{'x' * padding}-->\n<!DOCTYPE")
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ClixmlError) as caught:
        list(iter_records(path))
    assert time.perf_counter() - started < 1.0
    assert str(caught.value).startswith(f"{path}: line ")
    assert "lollol" not in str(caught.value)


def test_external_entities_are_never_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()  # a fetch would connect (the kernel completes it) even before accept
    port = server.getsockname()[1]
    try:
        for target in (secret.as_uri(), f"http://127.0.0.1:{port}/dtd"):
            xml = (
                f'<?xml version="1.0"?>\n<!DOCTYPE Objs [<!ENTITY xxe SYSTEM "{target}">]>\n'
                f"<Objs {NS}><S>&xxe;</S></Objs>"
            )
            with pytest.raises(ClixmlError) as caught:
                list(iter_records(xml.encode()))
            assert "TOP-SECRET" not in str(caught.value)
            assert "not allowed" in str(caught.value)
            with pytest.raises(ClixmlError):
                parse_element(
                    xml.split("\n", 1)[1].replace(f"<Objs {NS}>", "").replace("</Objs>", "")
                )
        server.settimeout(0.05)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_dtd_past_the_head_is_refused_by_the_parser_check(tmp_path: Path) -> None:
    path = tmp_path / "late-dtd.xml"
    padding = "x" * (_document._CHUNK + 1000)  # past the first chunk the head check reads
    path.write_text(
        f'<!--{padding}-->\n<!DOCTYPE Objs SYSTEM "http://127.0.0.1:9/x.dtd">\n<Objs><S>x</S></Objs>'
    )
    with pytest.raises(ClixmlError) as caught:
        list(iter_records(path))
    assert str(caught.value) == (
        f"{path}: a DTD (<!DOCTYPE>) is not allowed in CLIXML; nothing was expanded or fetched"
    )


def test_values_that_look_like_markup_stay_intact() -> None:
    text = 'x xmlns="http://schemas.microsoft.com/powershell/2004/04" #< CLIXML _x005F_ y'
    escaped = text.replace("_x005F_", "_x005F_x005F_").replace("<", "&lt;")
    assert value(f'<S N="P">{escaped}</S>') == text


def test_an_object_output_twice_is_a_top_level_ref_and_the_same_row() -> None:
    body = (
        '<Obj RefId="0"><TN RefId="0"><T>System.IO.FileInfo</T></TN><Props>'
        '<S N="Name">a.txt</S><I64 N="Length">3</I64></Props></Obj><Ref RefId="0" />'
    )
    assert list(iter_records(doc(body))) == [{"Name": "a.txt", "Length": 3}] * 2


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ('<I32 N="P" />', "bad I32 value ''"),
        ('<DT N="P">yesterday</DT>', "bad DT value 'yesterday'"),
        ('<B N="P">maybe</B>', "bad B value 'maybe'"),
        ('<TS N="P">P1Y</TS>', "bad TS value 'P1Y'"),
        ('<BA N="P">!!!=</BA>', "bad BA value '!!!='"),
    ],
)
def test_bad_values_are_located(element: str, message: str) -> None:
    with pytest.raises(ClixmlError) as caught:
        value(element)
    assert str(caught.value).endswith(message)
    assert str(caught.value).startswith("<string>: line 1, column ")


def test_special_floats() -> None:
    assert value('<Db N="P">INF</Db>') == float("inf")
    nan = value('<Db N="P">NaN</Db>')
    assert isinstance(nan, float) and nan != nan
